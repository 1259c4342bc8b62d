"""The train step: micro-batching by token budget must not change the optimizer step."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from larpo.config import TrainConfig
from larpo.logprobs import list_logps
from larpo.losses import LambdaRankLoss
from larpo.training.loop import train_on_lists
from tests.helpers.tiny import ROWS, tiny_policy


def one_step(max_tokens: int):
    model, tok = tiny_policy()
    rows = copy.deepcopy(ROWS)
    for row, lp in zip(rows, list_logps(model, tok, rows, 10**6)):
        row["ref_logps"] = lp
    cfg = OmegaConf.structured(TrainConfig(lr=1e-2, epochs=1, lists_per_step=3, max_tokens=max_tokens, warmup_ratio=0.0,
                                weight_decay=0.0, max_grad_norm=1e9, logprob_max_tokens=10**6))
    logged = []
    torch.manual_seed(0)
    stats, _ = train_on_lists(model, tok, rows, LambdaRankLoss(beta=0.5), cfg, seed=0, log=logged.append)
    return model, stats, logged


def test_micro_batches_give_the_same_step_as_one_batch():
    whole, stats_whole, log_whole = one_step(10**6)
    split, stats_split, log_split = one_step(30)  # each list alone
    assert stats_whole["steps"] == stats_split["steps"] == 1
    # Adam's first step is nearly scale-free, so compare the gradient itself (its norm) too.
    assert log_split[0]["train/grad_norm"] == pytest.approx(log_whole[0]["train/grad_norm"], rel=1e-5)
    assert log_split[0]["train/loss"] == pytest.approx(log_whole[0]["train/loss"], rel=1e-6)
    for a, b in zip(whole.parameters(), split.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_first_step_under_the_behaviour_reference_has_zero_margin():
    _, stats, _ = one_step(10**6)
    first = stats["first_step"]
    assert first["margin"] == pytest.approx(0.0, abs=1e-6) and first["chosen_reward"] == pytest.approx(0.0, abs=1e-6)
    assert first["loss"] == pytest.approx(sum(n_pairs for n_pairs in (6, 3, 3)) / 3 * 0.6931471805599453, rel=1e-5)


def test_fused_adamw_is_the_default_and_makes_the_same_steps():
    """train.fused_optimizer: torch's fused AdamW kernel gives the per-parameter loop's update (float rounding)."""
    from larpo.training.loop import make_optimizer

    torch.manual_seed(0)
    params = {}
    for fused in (True, False):
        model, _ = tiny_policy()
        opt, _ = make_optimizer(model, 1e-2, 0.1, 0, 10, fused=fused)
        assert bool(opt.defaults.get("fused")) is fused
        for step in range(3):  # a different fixed gradient each step, weight decay on matrices only
            for i, p in enumerate(model.parameters()):
                p.grad = torch.sin(torch.arange(p.numel(), dtype=p.dtype) * (i + 1) + step).reshape(p.shape)
            opt.step()
        params[fused] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(params[True], params[False]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # the train stage passes the switch through, the default is on
    assert TrainConfig.fused_optimizer is True


class NaNFromCall(LambdaRankLoss):
    """LambdaRank whose policy log-probs turn NaN from its ``n``-th call on (weights gone bad)."""

    def __init__(self, n: int, **kw) -> None:
        super().__init__(**kw)
        self.n, self.calls = n, 0

    def __call__(self, policy_logps, **kw):
        self.calls += 1
        return super().__call__(policy_logps=policy_logps * float("nan") if self.calls >= self.n else policy_logps, **kw)


@pytest.mark.parametrize(("loss", "step"), [(NaNFromCall(2, beta=0.5), 2), (LambdaRankLoss(beta=float("inf")), 1)],
                         ids=["nan at step 2", "beta=inf"])
def test_training_stops_at_the_first_non_finite_loss_naming_the_step(loss, step):
    """Issue 19, 12: a loss that turns NaN/inf stops training before that step's update (no NaN weights)."""
    from larpo.errors import NonFiniteLossError

    model, tok = tiny_policy()
    rows = copy.deepcopy(ROWS)
    for row, lp in zip(rows, list_logps(model, tok, rows, 10**6)):
        row["ref_logps"] = lp
    cfg = OmegaConf.structured(TrainConfig(lr=1e-2, epochs=1, lists_per_step=1, max_tokens=10**6, warmup_ratio=0.0,
                                weight_decay=0.0, max_grad_norm=1.0, logprob_max_tokens=10**6))
    with pytest.raises(NonFiniteLossError, match=rf"the loss is (nan|inf) at optimizer step {step} of 3 \(epoch 1\)"):
        train_on_lists(model, tok, rows, loss, cfg, seed=0, log=lambda m: None)
    assert all(torch.isfinite(p).all() for p in model.parameters())

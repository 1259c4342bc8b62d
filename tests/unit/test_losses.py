"""Unit tests of the list losses, with expected values worked out by hand (a new loss: a yaml and a hand-computed unit test)."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from larpo.losses import (
    ContrastiveLoss,
    LambdaRankLoss,
    ListMLELoss,
    PairwiseLoss,
    contrastive_loss,
    lambdarank_loss,
    listmle_loss,
    pairwise_loss,
    sort_by_reward,
)

CONF = Path(__file__).resolve().parents[2] / "conf" / "loss"


def nls(x: float) -> float:
    """−log σ(x) = log(1 + e^{−x})."""
    return math.log1p(math.exp(-x))


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def t(rows: list[list[float]], **kw) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, **kw)


# The worked example. β = 0.5, P − R = [0.8, 2.4, −2.0] → γ = [0.4, 1.2, −1.0].
# Rewards [0.9, 0.1, 0.5]: reward order is index 0 ≻ index 2 ≻ index 1, i.e. in that order
# γ = (0.4, −1.0, 1.2): the policy currently prefers the worst candidate.
BETA = 0.5
P = [[1.0, 3.0, -2.0]]
R = [[0.2, 0.6, 0.0]]
S = [[0.9, 0.1, 0.5]]
G0, G1, G2 = 0.4, 1.2, -1.0  # γ by index

ALL_LOSSES = [
    PairwiseLoss,
    ContrastiveLoss,
    LambdaRankLoss,
    lambda **kw: LambdaRankLoss(weights="ndcg", **kw),
    ListMLELoss,
]
IDS = ["pairwise", "contrastive", "lambdarank", "lambdarank_ndcg", "listmle"]


def run(loss_fn, p=P, r=R, s=S, **kw):
    return loss_fn(policy_logps=t(p), ref_logps=t(r), rewards=t(s), **kw)


# ---------------------------------------------------------------- hand-computed values


def test_pairwise_value():
    # best = index 0 (γ 0.4), worst = index 1 (γ 1.2): −log σ(0.4 − 1.2)
    out = run(PairwiseLoss(beta=BETA))
    assert out.loss.item() == pytest.approx(nls(G0 - G1))


def test_contrastive_value_one_positive():
    # positive index 0; negatives index 2 and 1 (both strictly lower)
    expected = -(G0 - lse(G0, G2, G1))
    assert run(ContrastiveLoss(beta=BETA)).loss.item() == pytest.approx(expected)


def test_contrastive_value_two_positives():
    # positives index 0, 2; negative index 1: −(lse(γ_pos) − lse(γ_pos ∪ neg))
    expected = -(lse(G0, G2) - lse(G0, G2, G1))
    out = run(ContrastiveLoss(beta=BETA, n_pos=2))
    assert out.loss.item() == pytest.approx(expected)


def test_lambdarank_value():
    # pairs 0≻2, 0≻1, 2≻1
    expected = nls(G0 - G2) + nls(G0 - G1) + nls(G2 - G1)
    assert run(LambdaRankLoss(beta=BETA)).loss.item() == pytest.approx(expected)


def test_lambdarank_ndcg_value():
    gain = [2**0.9 - 1, 2**0.1 - 1, 2**0.5 - 1]  # G = 2^r − 1 by index
    # ranks under γ = [0.4, 1.2, −1.0] (descending): index 1 → 1, index 0 → 2, index 2 → 3
    disc = [1 / math.log2(3), 1 / math.log2(2), 1 / math.log2(4)]

    def w(i: int, j: int) -> float:
        return abs(gain[i] - gain[j]) * abs(disc[i] - disc[j])

    expected = w(0, 2) * nls(G0 - G2) + w(0, 1) * nls(G0 - G1) + w(2, 1) * nls(G2 - G1)
    out = run(LambdaRankLoss(beta=BETA, weights="ndcg"))
    assert out.loss.item() == pytest.approx(expected)


def test_listmle_value():
    # Plackett–Luce over the order (0, 2, 1): γ = (0.4, −1.0, 1.2); the last term is log 1
    expected = -(G0 - lse(G0, G2, G1)) - (G2 - lse(G2, G1))
    assert run(ListMLELoss(beta=BETA)).loss.item() == pytest.approx(expected)


def test_metrics_values():
    out = run(LambdaRankLoss(beta=BETA))
    m = out.metrics
    # pairs 0≻2 (0.4 > −1.0 ✓), 0≻1 (0.4 > 1.2 ✗), 2≻1 (−1.0 > 1.2 ✗)
    assert m["reward_accuracy"] == pytest.approx(1 / 3)
    assert m["margin"] == pytest.approx(G0 - G1)
    assert m["chosen_reward"] == pytest.approx(G0)
    assert m["rejected_reward"] == pytest.approx(G1)
    assert all(isinstance(v, float) for v in m.values())
    assert "nll" not in m


def test_loss_is_mean_over_prompts():
    # second prompt: all rewards tied → no preference → 0; the batch loss halves
    p, r, s = P + [[0.0, 1.0, 2.0]], R + [[0.0, 0.0, 0.0]], S + [[1.0, 1.0, 1.0]]
    out = run(LambdaRankLoss(beta=BETA), p, r, s)
    single = nls(G0 - G2) + nls(G0 - G1) + nls(G2 - G1)
    assert out.per_prompt.tolist() == pytest.approx([single, 0.0])
    assert out.loss.item() == pytest.approx(single / 2)


# ---------------------------------------------------------------- ties


@pytest.mark.parametrize("make", ALL_LOSSES, ids=IDS)
def test_all_tied_is_zero(make):
    out = run(make(), [[1.0, -2.0, 3.0, 0.5]], [[0.0] * 4], [[0.7] * 4])
    assert out.loss.item() == 0.0


def test_contrastive_ties_are_not_negatives():
    # 0/1 verifier rewards [1, 1, 0, 0], β = 1: positive = index 0 (stable); index 1 ties
    # with it, so it is neither positive nor negative; negatives = index 2, 3
    g = [0.3, 2.0, -0.5, 1.0]
    out = run(ContrastiveLoss(beta=1.0), [g], [[0.0] * 4], [[1.0, 1.0, 0.0, 0.0]])
    assert out.loss.item() == pytest.approx(-(g[0] - lse(g[0], g[2], g[3])))


def test_listmle_ties():
    # rewards [1, 1, 0]: positions 0 and 1 each compete only with index 2 (strictly lower)
    a, b, c = 0.3, -0.4, 1.1
    expected = (lse(a, c) - a) + (lse(b, c) - b)
    out = run(ListMLELoss(beta=1.0), [[a, b, c]], [[0.0] * 3], [[1.0, 1.0, 0.0]])
    assert out.loss.item() == pytest.approx(expected)
    # and swapping the two tied candidates changes nothing
    swapped = run(ListMLELoss(beta=1.0), [[b, a, c]], [[0.0] * 3], [[1.0, 1.0, 0.0]])
    assert swapped.loss.item() == pytest.approx(expected)


def test_lambdarank_ties_and_mean():
    # rewards [1, 1, 0]: pairs 0≻2 and 1≻2 only (the tied pair carries no preference)
    a, b, c = 0.3, -0.4, 1.1
    total = nls(a - c) + nls(b - c)
    args = ([[a, b, c]], [[0.0] * 3], [[1.0, 1.0, 0.0]])
    assert run(LambdaRankLoss(beta=1.0), *args).loss.item() == pytest.approx(total)
    mean = run(LambdaRankLoss(beta=1.0, reduction="mean"), *args).loss.item()
    assert mean == pytest.approx(total / 2)


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize("make", ALL_LOSSES, ids=IDS)
def test_permutation_invariance(make):
    gen = torch.Generator().manual_seed(0)
    p, r = torch.randn(4, 5, generator=gen), torch.randn(4, 5, generator=gen)
    s = torch.rand(4, 5, generator=gen)  # distinct almost surely
    perm = torch.stack([torch.randperm(5, generator=gen) for _ in range(4)])
    loss_fn = make()
    a = loss_fn(policy_logps=p, ref_logps=r, rewards=s)
    b = loss_fn(
        policy_logps=p.gather(1, perm),
        ref_logps=r.gather(1, perm),
        rewards=s.gather(1, perm),
    )
    torch.testing.assert_close(a.per_prompt, b.per_prompt)
    assert a.metrics == pytest.approx(b.metrics)


@pytest.mark.parametrize("make", ALL_LOSSES, ids=IDS)
def test_masked_candidates_ignored(make):
    # the list of the worked example plus a padded candidate at index 1 holding garbage
    p = t([[1.0, float("nan"), 3.0, -2.0]], requires_grad=True)
    r = t([[0.2, 1e6, 0.6, 0.0]])
    s = t([[0.9, float("nan"), 0.1, 0.5]])
    mask = torch.tensor([[True, False, True, True]])
    loss_fn = make(beta=BETA)
    out = loss_fn(policy_logps=p, ref_logps=r, rewards=s, mask=mask)
    ref = run(loss_fn)
    assert out.loss.item() == pytest.approx(ref.loss.item())
    assert out.metrics == pytest.approx(ref.metrics)
    out.loss.backward()
    assert p.grad[0, 1].item() == 0.0
    assert torch.isfinite(p.grad).all()


def test_k2_all_losses_agree_with_dpo():
    # K = 2, the winner at index 1: every family reduces to −log σ(γ_w − γ_l)
    p, r, s = [[0.7, -0.2]], [[0.1, 0.3]], [[0.0, 1.0]]
    g_l, g_w = BETA * (0.7 - 0.1), BETA * (-0.2 - 0.3)
    expected = nls(g_w - g_l)
    # (not ndcg: its weight |G_w − G_l| · |1 − 1/log2 3| rescales the single pair)
    for make in [PairwiseLoss, ContrastiveLoss, LambdaRankLoss, ListMLELoss]:
        assert run(make(beta=BETA), p, r, s).loss.item() == pytest.approx(expected)


@pytest.mark.parametrize("make", ALL_LOSSES, ids=IDS)
def test_gradient_sign(make):
    # β = 1, γ = 0: raising the best candidate's γ lowers the loss, raising the worst's raises it
    p = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    s = t([[0.2, 0.9, -1.0, 0.4]])  # best index 1, worst index 2
    make(beta=1.0)(
        policy_logps=p, ref_logps=torch.zeros_like(p), rewards=s
    ).loss.backward()
    assert p.grad[0, 1] < 0
    assert p.grad[0, 2] > 0


@pytest.mark.parametrize("make", ALL_LOSSES, ids=IDS)
def test_huge_log_ratios_are_finite(make):
    # γ differences of ±2e4 in float32, well-ordered (row 0) and reversed (row 1)
    p = torch.tensor(
        [[1e4, 0.0, -1e4, 5e3], [-1e4, 0.0, 1e4, -5e3]], requires_grad=True
    )
    s = torch.tensor([[3.0, 2.0, 1.0, 2.5], [3.0, 2.0, 1.0, 2.5]])
    out = make(beta=1.0)(policy_logps=p, ref_logps=torch.zeros_like(p), rewards=s)
    out.loss.backward()
    assert torch.isfinite(out.per_prompt).all()
    assert torch.isfinite(p.grad).all()
    assert out.per_prompt[0].item() == pytest.approx(0.0, abs=1e-3)
    assert out.per_prompt[1].item() > 1e3


def test_reduction_mean_vs_sum():
    # K = 3, distinct rewards: 3 pairs (lambdarank), 2 contributing positions (listmle),
    # one pair / one term (pairwise, contrastive: mean == sum)
    for make, count in [
        (LambdaRankLoss, 3),
        (ListMLELoss, 2),
        (PairwiseLoss, 1),
        (ContrastiveLoss, 1),
    ]:
        total = run(make(beta=BETA)).loss.item()
        mean = run(make(beta=BETA, reduction="mean")).loss.item()
        assert mean == pytest.approx(total / count)


def test_nll_weight_term():
    # top candidate = index 0: logp 1.0 over 4 tokens → nll = −1.0 / 4
    lengths = torch.tensor([[4, 10, 2]])
    out = run(LambdaRankLoss(beta=BETA, nll_weight=0.5), lengths=lengths)
    base = nls(G0 - G2) + nls(G0 - G1) + nls(G2 - G1)
    assert out.loss.item() == pytest.approx(base + 0.5 * (-1.0 / 4))
    assert out.metrics["nll"] == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="nll_weight=0.5 > 0 needs lengths"):
        run(LambdaRankLoss(nll_weight=0.5))


def test_bf16_inputs_upcast():
    p = torch.tensor([[1.0, 3.0, -2.0]], dtype=torch.bfloat16)
    # bf16 log-probs are computed on in float32 (rewards follow the log-probs' dtype)
    out = ListMLELoss()(policy_logps=p, ref_logps=torch.zeros_like(p), rewards=t(S))
    assert out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss)


def test_sort_by_reward_stable_invalid_last():
    s = torch.tensor([[1.0, 0.0, 1.0, 5.0, -float("inf")]])
    mask = torch.tensor([[True, True, True, False, True]])
    assert sort_by_reward(s, mask).tolist() == [[0, 2, 1, 4, 3]]


def test_pure_functions_accept_no_mask():
    g, s = t([[G0, G1, G2]]), t(S)
    assert pairwise_loss(g, s).item() == pytest.approx(nls(G0 - G1))
    assert contrastive_loss(g, s).item() == pytest.approx(-(G0 - lse(G0, G1, G2)))
    assert lambdarank_loss(g, s).shape == (1,)
    assert listmle_loss(g, s).shape == (1,)


# ---------------------------------------------------------------- errors


def test_error_k1():
    with pytest.raises(ValueError, match=r"loss 'listmle' needs at least 2 .* got K=1"):
        run(ListMLELoss(), [[1.0]], [[0.0]], [[1.0]])


def test_error_row_with_one_valid_candidate():
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[3, 1:] = False
    msg = "loss 'lambdarank' needs at least 2 candidates per list; prompt index 3 has 1"
    with pytest.raises(ValueError, match=msg):
        run(LambdaRankLoss(), P * 4, R * 4, S * 4, mask=mask)


def test_error_ref_none():
    with pytest.raises(ValueError, match="loss 'pairwise' requires ref_logps"):
        PairwiseLoss()(policy_logps=t(P), ref_logps=None, rewards=t(S))


def test_error_shapes():
    with pytest.raises(
        ValueError, match=r"loss 'contrastive': rewards has shape \(1, 2\)"
    ):
        run(ContrastiveLoss(), s=[[1.0, 0.0]])
    with pytest.raises(ValueError, match="must be 2-D"):
        ContrastiveLoss()(policy_logps=t(P)[0], ref_logps=t(R)[0], rewards=t(S)[0])


def test_error_bad_hyperparameters():
    with pytest.raises(ValueError, match="reduction"):
        LambdaRankLoss(reduction="avg")
    with pytest.raises(ValueError, match="weights"):
        LambdaRankLoss(weights="dcg")
    with pytest.raises(ValueError, match="n_pos"):
        ContrastiveLoss(n_pos=0)


# ---------------------------------------------------------------- Hydra configs


@pytest.mark.parametrize(
    "name", ["pairwise", "contrastive", "lambdarank", "listmle", "listwise"]
)
def test_yaml_instantiates(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    loss_fn = instantiate(cfg)
    # yaml keys are exactly the constructor's arguments, so every one is overridable
    params = set(inspect.signature(type(loss_fn)).parameters)
    assert set(cfg.keys()) - {"_target_"} == params
    out = run(loss_fn)
    assert out.loss.dim() == 0 and out.per_prompt.shape == (1,)
    assert isinstance(out.metrics, dict)
    override = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["beta=0.2"]))
    assert instantiate(override).beta == 0.2


def test_listwise_is_lambdarank():
    listwise = instantiate(OmegaConf.load(CONF / "listwise.yaml"))
    lambdarank = instantiate(OmegaConf.load(CONF / "lambdarank.yaml"))
    assert run(listwise).loss.item() == run(lambdarank).loss.item()
    assert type(listwise) is type(lambdarank)

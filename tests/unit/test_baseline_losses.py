"""Unit tests of the Table 2 baselines, expected values worked out by hand (a new loss: a yaml and a hand-computed unit test).

TRL equivalence: CPOTrainer.cpo_loss (sigmoid / hinge / ipo / simpo) is TRL's own code, run
here from the installed source without importing the trainer stack (15 s of imports); the
DPOTrainer and KTOTrainer losses live inside ``_compute_loss`` (needs a model and an
accelerator), so their formula lines are reproduced and checked to still be in the source.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from larpo.losses import (
    CPOLoss,
    IPOLoss,
    KTOLoss,
    PairwiseLoss,
    RDPOLoss,
    RRHFLoss,
    SFTLoss,
    SimPOLoss,
    SLiCLoss,
    rrhf_loss,
    simpo_loss,
)

CONF = Path(__file__).resolve().parents[2] / "conf" / "loss"


def nls(x: float) -> float:
    """−log σ(x)."""
    return math.log1p(math.exp(-x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def t(rows, **kw) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, **kw)


# The worked example, B = 2, K = 3.
# row 0: rewards [0.9, 0.1, 0.5] → best index 0, worst index 1 (order 0 ≻ 2 ≻ 1)
#        h = P − R = [1, −1, −1]; lengths [2, 3, 4]; P/L = [−2, −2, −2.25]
# row 1: rewards [0.2, 0.8, 0.5] → best index 1, worst index 0 (order 1 ≻ 2 ≻ 0)
#        h = P − R = [0, −1, −1]; lengths [1, 4, 5]; P/L = [−1, −0.5, −2]
P = [[-4.0, -6.0, -9.0], [-1.0, -2.0, -10.0]]
R = [[-5.0, -5.0, -8.0], [-1.0, -1.0, -9.0]]
S = [[0.9, 0.1, 0.5], [0.2, 0.8, 0.5]]
L = [[2, 3, 4], [1, 4, 5]]


def run(loss_fn, p=P, r=R, s=S, lengths=L, mask=None):
    ref = t(r) if loss_fn.requires_reference else None
    m = None if mask is None else torch.tensor(mask)
    return loss_fn(policy_logps=t(p), ref_logps=ref, rewards=t(s), mask=m, lengths=torch.tensor(lengths))


def per_prompt(loss_fn, **kw) -> list[float]:
    return run(loss_fn, **kw).per_prompt.tolist()


# ---------------------------------------------------------------- hand-computed values


def test_dpo_yaml_is_pairwise_value():
    # β = 0.5 → γ = h/2: row 0: γ_w − γ_l = 0.5 − (−0.5) = 1; row 1: −0.5 − 0 = −0.5
    loss_fn = instantiate(OmegaConf.merge(OmegaConf.load(CONF / "dpo.yaml"), {"beta": 0.5}))
    assert isinstance(loss_fn, PairwiseLoss)
    assert per_prompt(loss_fn) == pytest.approx([nls(1.0), nls(-0.5)])


def test_ipo_value():
    # τ = 0.5 → 1/(2τ) = 1. Summed h: row 0 (1 − (−1) − 1)² = 1; row 1 (−1 − 0 − 1)² = 4
    assert per_prompt(IPOLoss(beta=0.5, length_normalize=False)) == pytest.approx([1.0, 4.0])
    # per token h/|y|: row 0 [0.5, −1/3, −0.25] → (0.5 + 1/3 − 1)² = 1/36
    #                  row 1 [0, −0.25, −0.2]  → (−0.25 − 0 − 1)² = 1.5625
    assert per_prompt(IPOLoss(beta=0.5)) == pytest.approx([1 / 36, 1.5625])


def test_rdpo_value():
    # β = 0.5, α = 0.1. row 0: γ_w − γ_l = 1, |y_w| − |y_l| = 2 − 3 = −1 → 1 − 0.1 = 0.9
    # row 1: γ_w − γ_l = −0.5, |y_w| − |y_l| = 4 − 1 = 3 → −0.5 + 0.3 = −0.2
    assert per_prompt(RDPOLoss(beta=0.5, alpha=0.1)) == pytest.approx([nls(0.9), nls(-0.2)])


def test_kto_value_zero_reference():
    # β = 1, λ_D = 1, λ_U = 2, z = 0. row 0: h_w = 1, h_l = −1 → (1 − σ(1)) + 2(1 − σ(1))
    # row 1: h_w = −1, h_l = 0 → (1 − σ(−1)) + 2(1 − σ(0)) = σ(1) + 1
    loss_fn = KTOLoss(beta=1.0, undesirable_weight=2.0, kl_estimate="zero")
    assert per_prompt(loss_fn) == pytest.approx([3 * (1 - sig(1)), sig(1) + 1])
    # batch estimate: mean h = (1 − 1 − 1 + 0 − 1 − 1)/6 = −0.5 → clamped to 0: same values
    loss_batch = KTOLoss(beta=1.0, undesirable_weight=2.0)
    assert per_prompt(loss_batch) == pytest.approx([3 * (1 - sig(1)), sig(1) + 1])


def test_kto_value_batch_reference():
    # h = [2, 0, 1] (R = 0), rewards [0.9, 0.1, 0.5]: best h 2, worst h 0; z = mean h = 1
    # batch: (1 − σ(2 − 1)) + (1 − σ(1 − 0)) = 2(1 − σ(1)); zero: (1 − σ(2)) + (1 − σ(0))
    args = dict(p=[[2.0, 0.0, 1.0]], r=[[0.0] * 3], s=[S[0]], lengths=[L[0]])
    assert per_prompt(KTOLoss(beta=1.0), **args) == pytest.approx([2 * (1 - sig(1))])
    zero = per_prompt(KTOLoss(beta=1.0, kl_estimate="zero"), **args)
    assert zero == pytest.approx([1 - sig(2) + 0.5])


def test_kto_batch_reference_ignores_padding():
    # the batch example above with a padded candidate (h = 7 in its slot): z stays mean(2, 0, 1) = 1
    out = KTOLoss(beta=1.0)(
        policy_logps=t([[2.0, 7.0, 0.0, 1.0]]), ref_logps=t([[0.0] * 4]), rewards=t([[0.9, 5.0, 0.1, 0.5]]),
        mask=torch.tensor([[True, False, True, True]]),
    )
    assert out.per_prompt.tolist() == pytest.approx([2 * (1 - sig(1))])


def test_pure_functions_mask_garbage():
    # called directly (not through the class, which zeroes padding first): a nan in a padded slot
    p = t([[-4.0, float("nan"), -6.0, -9.0]])
    s, lengths = t([[0.9, 0.0, 0.1, 0.5]]), t([[2.0, 1.0, 3.0, 4.0]])
    mask = torch.tensor([[True, False, True, True]])
    p.requires_grad_(True)
    rank = rrhf_loss(p, s, lengths, mask)
    assert rank.tolist() == pytest.approx([0.25])
    rank.sum().backward()
    assert p.grad[0, 1] == 0 and torch.isfinite(p.grad).all()
    assert simpo_loss(p, s, lengths, mask, beta=2.0, margin=1.0).tolist() == pytest.approx([nls(-1.0)])


def test_simpo_value():
    # β = 2, margin = 0.5·2 = 1. row 0: 2(−2 − (−2)) − 1 = −1; row 1: 2(−0.5 − (−1)) − 1 = 0
    assert per_prompt(SimPOLoss(beta=2.0, gamma_beta_ratio=0.5)) == pytest.approx([nls(-1.0), nls(0.0)])


def test_cpo_value():
    # β = 0.5. row 0: Δlogp = −4 − (−6) = 2 → −log σ(1), NLL(best) = 4/2 = 2
    # row 1: Δlogp = −2 − (−1) = −1 → −log σ(−0.5), NLL(best) = 2/4 = 0.5
    out = run(CPOLoss(beta=0.5, nll_weight=1.0))
    assert out.per_prompt.tolist() == pytest.approx([nls(1.0) + 2.0, nls(-0.5) + 0.5])
    assert out.metrics["nll"] == pytest.approx(1.25)


def test_slic_value():
    # δ = 3, λ = 0.5. row 0: max(0, 3 − 2) + 0.5·2 = 2; row 1: max(0, 3 − (−1)) + 0.5·0.5 = 4.25
    assert per_prompt(SLiCLoss(delta=3.0, nll_weight=0.5)) == pytest.approx([2.0, 4.25])
    # δ = 1: row 0 is past the margin, max(0, 1 − 2) = 0 → 0 + 1; row 1: max(0, 1 + 1) + 0.25
    assert per_prompt(SLiCLoss(delta=1.0, nll_weight=0.5)) == pytest.approx([1.0, 2.25])


def test_rrhf_value():
    # row 0: p = [−2, −2, −2.25], pairs 0≻2: max(0, −2.25 + 2) = 0; 0≻1: 0; 2≻1: max(0, −2 + 2.25)
    #        = 0.25; + NLL(best) 2 → 2.25
    # row 1: p = [−1, −0.5, −2], pairs 1≻2: 0; 1≻0: 0; 2≻0: max(0, −1 + 2) = 1; + NLL 0.5 → 1.5
    assert per_prompt(RRHFLoss()) == pytest.approx([2.25, 1.5])
    # mean over the 3 pairs of each row
    assert per_prompt(RRHFLoss(reduction="mean")) == pytest.approx([0.25 / 3 + 2, 1 / 3 + 0.5])


def test_sft_value_and_single_candidate():
    # −logp(best)/|best|: row 0: 4/2; row 1: 2/4
    assert per_prompt(SFTLoss()) == pytest.approx([2.0, 0.5])
    assert per_prompt(SFTLoss(), p=[[-3.0]], r=[[0.0]], s=[[0.0]], lengths=[[6]]) == pytest.approx([0.5])


# ---------------------------------------------------------------- structure

ALL = {
    "dpo": lambda: PairwiseLoss(beta=0.5),
    "ipo": lambda: IPOLoss(beta=0.5),
    "ipo_sum": lambda: IPOLoss(beta=0.5, length_normalize=False),
    "rdpo": lambda: RDPOLoss(beta=0.5, alpha=0.1),
    "kto": lambda: KTOLoss(beta=1.0, undesirable_weight=2.0),
    "kto_zero": lambda: KTOLoss(beta=1.0, kl_estimate="zero"),
    "simpo": SimPOLoss,
    "cpo": CPOLoss,
    "slic": lambda: SLiCLoss(delta=3.0, nll_weight=0.5),
    "rrhf": RRHFLoss,
    "sft": SFTLoss,
}


@pytest.mark.parametrize("name", ALL)
def test_order_invariance(name):
    gen = torch.Generator().manual_seed(0)
    p, r = -5 * torch.rand(3, 4, generator=gen, dtype=torch.float64), -5 * torch.rand(3, 4, generator=gen)
    s, lengths = torch.rand(3, 4, generator=gen), torch.randint(1, 9, (3, 4), generator=gen)
    perm = torch.stack([torch.randperm(4, generator=gen) for _ in range(3)])
    loss_fn = ALL[name]()
    a = run(loss_fn, p.tolist(), r.tolist(), s.tolist(), lengths.tolist())
    b = run(loss_fn, *(x.gather(1, perm).tolist() for x in (p, r, s, lengths)))
    torch.testing.assert_close(a.per_prompt, b.per_prompt)
    assert a.metrics == pytest.approx(b.metrics)


@pytest.mark.parametrize("name", ALL)
def test_padded_candidate_changes_nothing(name):
    # the worked example plus a padded candidate at index 1 holding garbage
    def pad(rows, junk):
        return [[row[0], junk, *row[1:]] for row in rows]

    mask = [[True, False, True, True]] * 2
    p = t(pad(P, float("nan")), requires_grad=True)
    loss_fn = ALL[name]()
    out = loss_fn(
        policy_logps=p, ref_logps=t(pad(R, 1e6)), rewards=t(pad(S, 1e9)), mask=torch.tensor(mask),
        lengths=torch.tensor(pad(L, 0)),
    )
    ref = run(loss_fn)
    torch.testing.assert_close(out.per_prompt, ref.per_prompt)
    assert out.metrics == pytest.approx(ref.metrics)
    out.loss.backward()
    assert (p.grad[:, 1] == 0).all() and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", [n for n in ALL if n != "sft"])
def test_no_preference_is_zero(name):
    # row 1 all tied → 0 whatever the log-probs; row 0 unchanged
    out = run(ALL[name](), s=[S[0], [0.3, 0.3, 0.3]])
    assert out.per_prompt[1].item() == 0.0
    assert out.per_prompt[0].item() == pytest.approx(run(ALL[name]()).per_prompt[0].item())


def test_sft_trains_on_a_tied_list():
    # SFT has no pairs: a tied list still has a top candidate (the first, stable order)
    assert per_prompt(SFTLoss(), s=[S[0], [0.3, 0.3, 0.3]]) == pytest.approx([2.0, 1.0])


@pytest.mark.parametrize("name", ALL)
def test_gradient_sign(name):
    # from a neutral point (logp = ref = −3, equal lengths): raising the best candidate's logp
    # lowers the loss, raising the worst's does not lower it (SFT ignores it)
    p = torch.full((2, 3), -3.0, dtype=torch.float64, requires_grad=True)
    ALL[name]()(policy_logps=p, ref_logps=torch.full((2, 3), -3.0, dtype=torch.float64), rewards=t(S),
                lengths=torch.full((2, 3), 2)).loss.backward()
    assert p.grad[0, 0] < 0 and p.grad[1, 1] < 0  # the best of each row
    assert p.grad[0, 1] >= 0 and p.grad[1, 0] >= 0  # the worst of each row


def test_ipo_pulls_back_past_its_target():
    # row 0 of the worked example with summed h: Δh = 2 > 1/(2τ) = 1, so IPO lowers the best's logp
    p = t(P, requires_grad=True)
    IPOLoss(beta=0.5, length_normalize=False)(policy_logps=p, ref_logps=t(R), rewards=t(S)).loss.backward()
    assert p.grad[0, 0] > 0


# ---------------------------------------------------------------- validation and configs


def test_reference_free_flags():
    for cls in (SimPOLoss, CPOLoss, SLiCLoss, RRHFLoss, SFTLoss):
        assert cls.requires_reference is False
    for cls in (IPOLoss, RDPOLoss, KTOLoss):
        assert cls.requires_reference is True and cls.min_candidates == 2
    assert SFTLoss.min_candidates == 1 and SimPOLoss.min_candidates == 2


def test_errors():
    with pytest.raises(ValueError, match="loss 'ipo' requires ref_logps"):
        IPOLoss()(policy_logps=t(P), ref_logps=None, rewards=t(S), lengths=torch.tensor(L))
    with pytest.raises(ValueError, match="loss 'simpo' needs lengths"):
        SimPOLoss()(policy_logps=t(P), ref_logps=None, rewards=t(S))
    with pytest.raises(ValueError, match="loss 'rdpo': rewards has shape"):
        RDPOLoss()(policy_logps=t(P), ref_logps=t(R), rewards=t([[1.0]]), lengths=torch.tensor(L))
    with pytest.raises(ValueError, match="loss 'cpo' needs at least 2 candidates per list; got K=1"):
        CPOLoss()(policy_logps=t([[1.0]]), ref_logps=None, rewards=t([[1.0]]), lengths=torch.tensor([[1]]))
    with pytest.raises(ValueError, match="kl_estimate"):
        KTOLoss(kl_estimate="mismatched")


NAMES = ["dpo", "ipo", "rdpo", "kto", "simpo", "cpo", "slic", "rrhf", "sft"]


@pytest.mark.parametrize("name", NAMES)
def test_yaml_instantiates(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    loss_fn = instantiate(cfg)
    # yaml keys are exactly the constructor's arguments, so every one is overridable
    assert set(cfg.keys()) - {"_target_"} == set(inspect.signature(type(loss_fn)).parameters)
    out = run(loss_fn)
    assert out.loss.dim() == 0 and out.per_prompt.shape == (2,) and torch.isfinite(out.loss)


# ---------------------------------------------------------------- TRL equivalence


def trl_source(relpath: str) -> str:
    """Source text of an installed TRL module, found without importing TRL."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("trl not installed")
    return (Path(next(iter(spec.submodule_search_locations))) / relpath).read_text()


def trl_cpo_loss(loss_type: str, beta: float, simpo_gamma: float = 0.5):
    """TRL's own ``CPOTrainer.cpo_loss`` (trl/experimental/cpo/cpo_trainer.py), bound to a stub self."""
    tree = ast.parse(trl_source("experimental/cpo/cpo_trainer.py"))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "cpo_loss")
    namespace = {"torch": torch, "F": F}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "cpo_trainer.py", "exec"), namespace)
    stub = SimpleNamespace(alpha=0.0, loss_type=loss_type, beta=beta, simpo_gamma=simpo_gamma,
                           label_smoothing=0.0, accelerator=SimpleNamespace(device="cpu"))
    return lambda chosen, rejected: namespace["cpo_loss"](stub, chosen, rejected)[0]


# chosen / rejected of the worked example: row 0 (index 0, index 1), row 1 (index 1, index 0)
PW, PL, RW, RL = t([-4.0, -2.0]), t([-6.0, -1.0]), t([-5.0, -1.0]), t([-5.0, -1.0])
LW, LL = t([2.0, 4.0]), t([3.0, 1.0])


def test_trl_dpo_sigmoid():
    # DPOTrainer (trl/trainer/dpo_trainer.py:1389): −logsigmoid(β · delta_score); cpo_loss on
    # log-ratios with loss_type "sigmoid" is the same expression.
    assert "per_sequence_loss = -F.logsigmoid(self.beta * delta_score)" in trl_source("trainer/dpo_trainer.py")
    trl = trl_cpo_loss("sigmoid", beta=0.5)(PW - RW, PL - RL)
    torch.testing.assert_close(run(PairwiseLoss(beta=0.5)).per_prompt, trl, rtol=0, atol=1e-12)


def test_trl_ipo():
    src = trl_source("trainer/dpo_trainer.py")
    # DPOTrainer (dpo_trainer.py:1393-1404): per-token averaged log-ratios, (Δ − 1/(2β))²
    assert "per_sequence_loss = (ipo_delta - 1 / (2 * self.beta)) ** 2" in src
    assert "chosen_avg_score = chosen_scores / chosen_mask.sum(dim=1).clamp(min=1.0)" in src
    dpo_trl = ((PW - RW) / LW - (PL - RL) / LL - 1 / (2 * 0.5)) ** 2
    torch.testing.assert_close(run(IPOLoss(beta=0.5)).per_prompt, dpo_trl, rtol=0, atol=1e-12)
    # CPOTrainer's ipo (its own code) on the same per-token log-ratios, and on summed ones
    trl = trl_cpo_loss("ipo", beta=0.5)
    torch.testing.assert_close(run(IPOLoss(beta=0.5)).per_prompt, trl((PW - RW) / LW, (PL - RL) / LL))
    torch.testing.assert_close(run(IPOLoss(beta=0.5, length_normalize=False)).per_prompt, trl(PW - RW, PL - RL))


def test_trl_simpo():
    # CPOTrainer loss_type "simpo" takes per-token averaged log-probs (average_log_prob=True)
    trl = trl_cpo_loss("simpo", beta=2.0, simpo_gamma=1.0)(PW / LW, PL / LL)
    torch.testing.assert_close(run(SimPOLoss(beta=2.0, gamma_beta_ratio=0.5)).per_prompt, trl, rtol=0, atol=1e-12)


def test_trl_cpo():
    # CPOTrainer: losses.mean() + cpo_alpha · CE(chosen), CE = token mean over all chosen tokens
    # (cpo_trainer.py:842-846, 890): equal to our per-prompt mean when chosen lengths are equal.
    lengths = [[4, 3, 4], [1, 4, 5]]  # both chosen have 4 tokens
    ours = run(CPOLoss(beta=0.5, nll_weight=1.0), lengths=lengths).loss
    trl = trl_cpo_loss("sigmoid", beta=0.5)(PW, PL).mean() + 1.0 * (-(PW.sum()) / 8)
    torch.testing.assert_close(ours, trl, rtol=0, atol=1e-12)


def test_trl_cpo_hinge_is_slic():
    # CPO hinge: relu(1 − β Δlogp) = β · relu(1/β − Δlogp) → SLiC-HF with δ = 1/β, times β
    trl = trl_cpo_loss("hinge", beta=1 / 3.0)(PW, PL)
    ours = run(SLiCLoss(delta=3.0, nll_weight=0.0)).per_prompt
    torch.testing.assert_close(ours, 3.0 * trl, rtol=0, atol=1e-12)


def test_trl_kto():
    # KTOTrainer._compute_loss (trl/trainer/kto_trainer.py:1443-1483), reproduced: kl = mean
    # log-ratio of the KL completions, detached, clamped ≥ 0; chosen 1 − σ(β(h_w − kl)),
    # rejected 1 − σ(β(kl − h_l)); loss = mean of the concatenated weighted losses. With one
    # chosen and one rejected per prompt that mean is our per-prompt sum / 2.
    src = trl_source("trainer/kto_trainer.py")
    assert "chosen_losses = 1 - F.sigmoid(self.beta * (chosen_logratios - kl))" in src
    assert "rejected_losses = 1 - F.sigmoid(self.beta * (kl - rejected_logratios))" in src
    p, r = [[2.0, 0.0, 1.0], [0.5, 3.0, 1.0]], [[0.0] * 3, [0.0] * 3]
    h = t(p)
    kl = h.mean().clamp(min=0)  # our KL completions: every candidate of the batch
    hw, hl = t([2.0, 3.0]), t([0.0, 0.5])  # rewards S: best/worst of row 0 (0, 1) and row 1 (1, 0)
    chosen, rejected = 1 - torch.sigmoid(0.1 * (hw - kl)), 1 - torch.sigmoid(0.1 * (kl - hl))
    trl = torch.cat((1.0 * chosen, 2.0 * rejected)).mean()
    ours = run(KTOLoss(beta=0.1, undesirable_weight=2.0), p=p, r=r).loss
    torch.testing.assert_close(ours / 2, trl, rtol=0, atol=1e-12)

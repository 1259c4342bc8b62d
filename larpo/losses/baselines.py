"""Table 2 baselines that use a reference model: IPO, R-DPO, KTO (DPO itself is ``PairwiseLoss``).

Every baseline reduces a list to its best and worst valid candidate by reward (stable ties,
as ``best_worst``) — except RRHF, which uses every preference pair — and a prompt whose best
and worst rewards are equal has no preference and contributes 0. ``BaselineLoss`` is the
shared callable: the Loss API (docs/design.md, "Loss API"), fed with raw log-probs and lengths rather than γ.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from larpo.losses.base import (
    ListLoss,
    LossOutput,
    best_worst,
    full_mask,
    preference_metrics,
    top_candidate_nll,
)

KL_ESTIMATES = ("batch", "zero")


def pick(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b]]`` for x [B, K], index [B] → [B]."""
    return x.gather(-1, index[:, None]).squeeze(-1)


def chosen_rejected(rewards: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(best [B], worst [B], has_preference [B] bool): r_best > r_worst, else a tie (no preference)."""
    best, worst = best_worst(rewards, mask)
    return best, worst, pick(rewards, best) > pick(rewards, worst)


def _norm_lengths(lengths: Tensor | None, like: Tensor) -> Tensor:
    """Lengths as float ≥ 1 (padded candidates may carry 0); ones when absent."""
    if lengths is None:
        return torch.ones_like(like)
    return lengths.to(like.dtype).clamp(min=1)


def ipo_loss(
    logratios: Tensor, rewards: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None, tau: float = 0.1
) -> Tensor:
    """IPO (Azar et al. 2023, Eq. 17): (h_w − h_l − 1/(2τ))², h = logp_θ − logp_ref on best vs worst.

    Args:
        logratios: [B, K] logp_θ − logp_ref (summed over response tokens, not scaled by β).
        rewards: [B, K]; mask: [B, K] bool (None = all valid).
        lengths: [B, K] response lengths; when given, h is divided by |y| (TRL ≥ 0.x DPOTrainer
            ``loss_type="ipo"`` does this, per the IPO authors); None = the paper's summed form.
        tau: the IPO regulariser τ (TRL's ``beta``).

    Returns: [B]; 0 where best and worst rewards tie.
    """
    best, worst, has = chosen_rejected(rewards, mask)
    h = logratios / _norm_lengths(lengths, logratios)
    loss = (pick(h, best) - pick(h, worst) - 1.0 / (2.0 * tau)) ** 2
    return torch.where(has, loss, torch.zeros_like(loss))


def rdpo_loss(
    gamma: Tensor, rewards: Tensor, lengths: Tensor, mask: Tensor | None = None, alpha: float = 0.05
) -> Tensor:
    """R-DPO (Park et al. 2024, as in SimPO's Table 1): −log σ(γ_w − γ_l + α(|y_w| − |y_l|)).

    The length term is *added*: a longer chosen response already explains part of the
    preference, so the policy is pushed less to favour it (the length-exploitation guard).

    Args:
        gamma: [B, K] β (logp_θ − logp_ref); rewards, lengths: [B, K]; mask: [B, K] bool.
        alpha: length-regularisation weight α.

    Returns: [B]; 0 where best and worst rewards tie.
    """
    best, worst, has = chosen_rejected(rewards, mask)
    length = lengths.to(gamma.dtype)
    logits = pick(gamma, best) - pick(gamma, worst) + alpha * (pick(length, best) - pick(length, worst))
    loss = -F.logsigmoid(logits)
    return torch.where(has, loss, torch.zeros_like(loss))


def kto_loss(
    logratios: Tensor,
    rewards: Tensor,
    mask: Tensor | None = None,
    beta: float = 0.1,
    z_ref: Tensor | float = 0.0,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tensor:
    """KTO (Ethayarajh et al. 2024, Eq. 7) with the best desirable and the worst undesirable:

        λ_D (1 − σ(β(h_w − z_ref))) + λ_U (1 − σ(β(z_ref − h_l))),   h = logp_θ − logp_ref.

    Args:
        logratios: [B, K] h; rewards: [B, K]; mask: [B, K] bool (None = all valid).
        z_ref: the reference point (scalar or [B]), treated as a constant (detach it).

    Returns: [B]; 0 where best and worst rewards tie (neither is desirable over the other).
    """
    best, worst, has = chosen_rejected(rewards, mask)
    desirable = 1 - torch.sigmoid(beta * (pick(logratios, best) - z_ref))
    undesirable = 1 - torch.sigmoid(beta * (z_ref - pick(logratios, worst)))
    loss = desirable_weight * desirable + undesirable_weight * undesirable
    return torch.where(has, loss, torch.zeros_like(loss))


class BaselineLoss(ListLoss):
    """A ``ListLoss`` whose subclasses see raw log-probs and lengths (not only γ).

    Subclasses implement ``baseline_loss(policy, ref, rewards, mask, lengths) -> [B]``; ``ref``
    is zeros for reference-free losses (``ref_logps`` is then ignored), ``lengths`` is float ≥ 1 or
    None. The optional ``nll_weight`` term (−logp/|y| of the best) is zeroed on tied lists,
    which carry no "chosen" response.
    """

    needs_lengths: ClassVar[bool] = False

    def baseline_loss(
        self, policy: Tensor, ref: Tensor, rewards: Tensor, mask: Tensor, lengths: Tensor | None
    ) -> Tensor:
        raise NotImplementedError

    def implicit_reward(self, policy: Tensor, ref: Tensor, lengths: Tensor | None) -> Tensor:
        """[B, K] reward logged in the metrics; default γ = β (logp_θ − logp_ref)."""
        return self.beta * (policy - ref)

    def __call__(
        self,
        *,
        policy_logps: Tensor,
        ref_logps: Tensor | None,
        rewards: Tensor,
        mask: Tensor | None = None,
        lengths: Tensor | None = None,
    ) -> LossOutput:
        mask = self._validate(policy_logps, ref_logps, rewards, mask, lengths)
        if self.needs_lengths and lengths is None:
            raise ValueError(f"loss '{self.name}' needs lengths (response lengths), got None")
        dtype = torch.promote_types(policy_logps.dtype, torch.float32)
        # Padded entries may hold garbage (nan, 1e6): zero them so no pairwise term sees them.
        policy = torch.where(mask, policy_logps.to(dtype), torch.zeros((), dtype=dtype))
        # A reference-free loss ignores ref_logps even when given (they are the trainer's business).
        if ref_logps is None or not self.requires_reference:
            ref = torch.zeros_like(policy)
        else:
            ref = torch.where(mask, ref_logps.to(dtype), 0.0)
        rewards = rewards.to(dtype)
        length = None if lengths is None else torch.where(mask, lengths.to(dtype), 1.0).clamp(min=1)
        per_prompt = self.baseline_loss(policy, ref, rewards, mask, length)
        metrics = preference_metrics(self.implicit_reward(policy, ref, length).detach(), rewards, mask)
        if self.nll_weight > 0:
            _, _, has = chosen_rejected(rewards, mask)
            nll = torch.where(has, top_candidate_nll(policy, rewards, mask, length), 0.0)
            per_prompt = per_prompt + self.nll_weight * nll
            metrics["nll"] = nll.detach().mean().item()
        return LossOutput(loss=per_prompt.mean(), per_prompt=per_prompt, metrics=metrics)


class IPOLoss(BaselineLoss):
    """``ipo``: (h_w − h_l − 1/(2β))², β = IPO's τ; ``length_normalize`` as TRL's DPOTrainer."""

    name = "ipo"

    def __init__(self, beta: float = 0.1, length_normalize: bool = True) -> None:
        super().__init__(beta=beta)
        self.length_normalize = bool(length_normalize)
        self.needs_lengths = self.length_normalize

    def baseline_loss(self, policy, ref, rewards, mask, lengths):
        return ipo_loss(policy - ref, rewards, mask, lengths if self.length_normalize else None, tau=self.beta)


class RDPOLoss(BaselineLoss):
    """``rdpo``: DPO with the length term α(|y_w| − |y_l|) inside the sigmoid."""

    name = "rdpo"
    needs_lengths = True

    def __init__(self, beta: float = 0.1, alpha: float = 0.05) -> None:
        super().__init__(beta=beta)
        self.alpha = float(alpha)

    def baseline_loss(self, policy, ref, rewards, mask, lengths):
        return rdpo_loss(self.beta * (policy - ref), rewards, lengths, mask, alpha=self.alpha)


class KTOLoss(BaselineLoss):
    """``kto``: best of the list desirable, worst undesirable.

    ``kl_estimate``: ``batch`` (default) — z_ref = max(0, mean of h over every valid candidate
    in the batch), detached: TRL's KTOTrainer estimate (mean log-ratio, detached, clamped at 0)
    on the list's own samples, since a list has no mismatched (x, y') pairs; ``zero`` — z_ref = 0
    (TRL's ``apo_zero_unpaired`` reference point).
    """

    name = "kto"

    def __init__(
        self,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        kl_estimate: str = "batch",
    ) -> None:
        super().__init__(beta=beta)
        if kl_estimate not in KL_ESTIMATES:
            raise ValueError(f"loss 'kto': kl_estimate must be one of {KL_ESTIMATES}, got {kl_estimate!r}")
        if desirable_weight < 0 or undesirable_weight < 0:
            raise ValueError("loss 'kto': desirable_weight and undesirable_weight must be >= 0")
        self.desirable_weight = float(desirable_weight)
        self.undesirable_weight = float(undesirable_weight)
        self.kl_estimate = kl_estimate

    def baseline_loss(self, policy, ref, rewards, mask, lengths):
        h = policy - ref
        z_ref = torch.zeros((), dtype=h.dtype)
        if self.kl_estimate == "batch":
            z_ref = (h.detach().sum() / mask.sum()).clamp(min=0)  # padded h are zeroed by __call__
        return kto_loss(
            h, rewards, full_mask(mask, h), self.beta, z_ref, self.desirable_weight, self.undesirable_weight
        )

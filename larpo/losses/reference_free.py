"""Reference-free Table 2 baselines: SimPO, CPO, SLiC-HF, RRHF, and SFT on the top candidate.

All take the policy's summed response log-probs (``requires_reference = False``: the trainer
passes ``ref_logps=None``). The NLL anchor of CPO / SLiC-HF / RRHF is ``nll_weight`` ·
(−logp_θ(y_best) / |y_best|), the per-sequence token mean of the chosen response's
cross-entropy (TRL's CPOTrainer takes the token mean over the whole batch of chosen responses;
the two agree when chosen lengths are equal).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from larpo.losses.base import full_mask, preference_pairs, reduce_terms
from larpo.losses.baselines import BaselineLoss, chosen_rejected, pick


def simpo_loss(
    policy_logps: Tensor,
    rewards: Tensor,
    lengths: Tensor,
    mask: Tensor | None = None,
    beta: float = 2.0,
    margin: float = 1.0,
) -> Tensor:
    """SimPO (Meng et al. 2024, Eq. 6): −log σ(β/|y_w| logp_θ(y_w) − β/|y_l| logp_θ(y_l) − γ).

    Args:
        policy_logps: [B, K] summed response log-probs; rewards, lengths: [B, K]; mask: [B, K].
        beta: β; margin: the target reward margin γ (absolute, = TRL's ``simpo_gamma``).

    Returns: [B]; 0 where best and worst rewards tie.
    """
    best, worst, has = chosen_rejected(rewards, mask)
    avg = policy_logps / lengths.to(policy_logps.dtype).clamp(min=1)
    loss = -F.logsigmoid(beta * (pick(avg, best) - pick(avg, worst)) - margin)
    return torch.where(has, loss, torch.zeros_like(loss))


def cpo_loss(policy_logps: Tensor, rewards: Tensor, mask: Tensor | None = None, beta: float = 0.1) -> Tensor:
    """CPO preference term (Xu et al. 2024, Eq. 3): −log σ(β (logp_θ(y_w) − logp_θ(y_l))).

    Args:
        policy_logps: [B, K] summed response log-probs; rewards: [B, K]; mask: [B, K] bool.

    Returns: [B]; 0 where best and worst rewards tie. (The NLL term is the class's ``nll_weight``.)
    """
    best, worst, has = chosen_rejected(rewards, mask)
    loss = -F.logsigmoid(beta * (pick(policy_logps, best) - pick(policy_logps, worst)))
    return torch.where(has, loss, torch.zeros_like(loss))


def slic_loss(policy_logps: Tensor, rewards: Tensor, mask: Tensor | None = None, delta: float = 1.0) -> Tensor:
    """SLiC-HF calibration term (Zhao et al. 2023, Eq. 2): max(0, δ − logp_θ(y_w) + logp_θ(y_l)).

    Args:
        policy_logps: [B, K] summed response log-probs; rewards: [B, K]; mask: [B, K] bool.
        delta: the margin δ.

    Returns: [B]; 0 where best and worst rewards tie. (The regulariser is ``nll_weight``.)
    """
    best, worst, has = chosen_rejected(rewards, mask)
    loss = torch.relu(delta - pick(policy_logps, best) + pick(policy_logps, worst))
    return torch.where(has, loss, torch.zeros_like(loss))


def rrhf_loss(
    policy_logps: Tensor, rewards: Tensor, lengths: Tensor, mask: Tensor | None = None, reduction: str = "sum"
) -> Tensor:
    """RRHF ranking term (Yuan et al. 2023, Eq. 2): Σ_{r_i < r_j} max(0, p_i − p_j), p = logp_θ / |y|.

    Args:
        policy_logps: [B, K] summed response log-probs; rewards, lengths: [B, K]; mask: [B, K].
        reduction: ``sum`` over pairs (paper) or ``mean`` (divide by the number of pairs).

    Returns: [B]; 0 for a prompt without a preference pair (ties carry none).
    """
    mask = full_mask(mask, policy_logps)
    p = policy_logps / lengths.to(policy_logps.dtype).clamp(min=1)
    pref = preference_pairs(rewards, mask)  # (i, j): r_i > r_j, so j is the lower-rewarded
    hinge = torch.relu(p[:, None, :] - p[:, :, None])  # [b, i, j] = max(0, p_j − p_i)
    # torch.where, not a product: a padded p (nan, inf) is dropped from value and gradient.
    total = torch.where(pref, hinge, torch.zeros_like(hinge)).sum((-1, -2))
    return reduce_terms(total, pref.sum((-1, -2)), reduction)


def sft_loss(policy_logps: Tensor, rewards: Tensor, lengths: Tensor, mask: Tensor | None = None) -> Tensor:
    """SFT / rejection-sampling fine-tuning: −logp_θ(y_best) / |y_best| (token-mean NLL).

    Args:
        policy_logps, rewards, lengths: [B, K]; mask: [B, K] bool (None = all valid).

    Returns: [B]. No tie rule: a list always has a top candidate (K = 1 included).
    """
    best = chosen_rejected(rewards, mask)[0]
    return -pick(policy_logps, best) / pick(lengths.to(policy_logps.dtype), best).clamp(min=1)


class SimPOLoss(BaselineLoss):
    """``simpo``: margin = ``gamma_beta_ratio`` · β (SimPO's own parametrisation)."""

    name = "simpo"
    requires_reference = False
    needs_lengths = True

    def __init__(self, beta: float = 2.0, gamma_beta_ratio: float = 0.5) -> None:
        super().__init__(beta=beta)
        self.gamma_beta_ratio = float(gamma_beta_ratio)

    def baseline_loss(self, policy, ref, rewards, mask, lengths):
        return simpo_loss(policy, rewards, lengths, mask, self.beta, self.gamma_beta_ratio * self.beta)

    def implicit_reward(self, policy, ref, lengths):
        return self.beta * policy / lengths


class CPOLoss(BaselineLoss):
    """``cpo``: −log σ(β Δlogp) + ``nll_weight`` · NLL(best); ``nll_weight`` = TRL's ``cpo_alpha``."""

    name = "cpo"
    requires_reference = False

    def __init__(self, beta: float = 0.1, nll_weight: float = 1.0) -> None:
        super().__init__(beta=beta, nll_weight=nll_weight)

    def baseline_loss(self, policy, ref, rewards, mask, lengths):
        return cpo_loss(policy, rewards, mask, self.beta)

    def implicit_reward(self, policy, ref, lengths):
        return self.beta * policy


class SLiCLoss(BaselineLoss):
    """``slic``: SLiC-HF's original reference-free hinge on summed log-probs + λ · NLL(best).

    Not TRL DPOTrainer's ``hinge`` (max(0, 1 − β Δ log-ratio), the reference-based RSO form);
    it equals TRL CPOTrainer's ``hinge`` with β = 1/δ, divided by β.
    """

    name = "slic"
    requires_reference = False

    def __init__(self, delta: float = 1.0, nll_weight: float = 0.1) -> None:
        super().__init__(beta=1.0, nll_weight=nll_weight)
        self.delta = float(delta)

    def baseline_loss(self, policy, ref, rewards, mask, lengths):
        return slic_loss(policy, rewards, mask, self.delta)


class RRHFLoss(BaselineLoss):
    """``rrhf``: hinge over every preference pair of length-normalised log-probs + NLL(best)."""

    name = "rrhf"
    requires_reference = False
    needs_lengths = True

    def __init__(self, nll_weight: float = 1.0, reduction: str = "sum") -> None:
        super().__init__(beta=1.0, nll_weight=nll_weight, reduction=reduction)

    def baseline_loss(self, policy, ref, rewards, mask, lengths):
        return rrhf_loss(policy, rewards, lengths, mask, self.reduction)

    def implicit_reward(self, policy, ref, lengths):
        return policy / lengths


class SFTLoss(BaselineLoss):
    """``sft``: NLL of the top candidate, reference-free, lists of one allowed."""

    name = "sft"
    requires_reference = False
    min_candidates = 1
    needs_lengths = True

    def __init__(self) -> None:
        super().__init__(beta=1.0)

    def baseline_loss(self, policy, ref, rewards, mask, lengths):
        return sft_loss(policy, rewards, lengths, mask)

    def implicit_reward(self, policy, ref, lengths):
        return policy / lengths

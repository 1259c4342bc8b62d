"""Pairwise (DPO-style) list loss: the best candidate against the worst one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from larpo.losses.base import ListLoss, best_worst, full_mask


def pairwise_loss(gamma: Tensor, rewards: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-prompt −log σ(γ_1 − γ_K), y_1 / y_K the best / worst valid candidate by reward.

    Args:
        gamma: [B, K] implicit rewards γ = β (logp_θ − logp_ref).
        rewards: [B, K] reward-model scores (the reranker's order).
        mask: [B, K] bool, False for padding (None = all valid).

    Returns:
        [B]. Ties are broken stably (lowest index is "best", highest is "worst"); a prompt
        whose best and worst rewards are equal has no preference and contributes 0.
        With K = 2 this is DPO.
    """
    mask = full_mask(mask, gamma)
    best, worst = best_worst(rewards, mask)
    g_best = gamma.gather(-1, best[:, None]).squeeze(-1)
    g_worst = gamma.gather(-1, worst[:, None]).squeeze(-1)
    r_best = rewards.gather(-1, best[:, None]).squeeze(-1)
    r_worst = rewards.gather(-1, worst[:, None]).squeeze(-1)
    nll = -F.logsigmoid(g_best - g_worst)
    return torch.where(r_best > r_worst, nll, torch.zeros_like(nll))


class PairwiseLoss(ListLoss):
    """``pairwise``: DPO on (best, worst) of each list. One pair, so ``reduction`` has no effect."""

    name = "pairwise"

    def per_prompt_loss(self, gamma: Tensor, rewards: Tensor, mask: Tensor) -> Tensor:
        return pairwise_loss(gamma, rewards, mask)

"""Contrastive (InfoNCE) list loss: top candidates against strictly worse ones."""

from __future__ import annotations

import torch
from torch import Tensor

from larpo.losses.base import ListLoss, full_mask, neg_fill, sort_by_reward


def contrastive_loss(
    gamma: Tensor, rewards: Tensor, mask: Tensor | None = None, n_pos: int = 1
) -> Tensor:
    """Per-prompt InfoNCE: −log [exp γ_pos / (exp γ_pos + Σ_{j ∈ neg} exp γ_j)].

    With several positives: −(logsumexp_{pos} γ − logsumexp_{pos ∪ neg} γ).

    Args:
        gamma: [B, K] implicit rewards γ = β (logp_θ − logp_ref).
        rewards: [B, K] reward-model scores.
        mask: [B, K] bool, False for padding (None = all valid).
        n_pos: number of positives, the top ``n_pos`` valid candidates by reward (stable order).

    Returns:
        [B]. Negatives are the valid candidates whose reward is strictly below the lowest
        positive's: with 0/1 verifier rewards a candidate tied with a positive is a correct
        answer, and pushing it down would contradict the reranker. No negative → 0.
    """
    mask = full_mask(mask, gamma)
    order = sort_by_reward(rewards, mask)
    k = mask.sum(-1).clamp(max=n_pos)
    ranks = torch.arange(gamma.shape[-1], device=gamma.device)
    pos = torch.zeros_like(mask).scatter(-1, order, ranks[None, :] < k[:, None])
    inf = torch.full_like(rewards, float("inf"))
    lowest_pos = torch.where(pos, rewards, inf).amin(-1)
    neg = mask & (rewards < lowest_pos[:, None])
    fill = torch.full_like(gamma, neg_fill(gamma.dtype))
    # torch.where (not multiplication) so padded γ gets neither value nor gradient.
    lse_pos = torch.where(pos, gamma, fill).logsumexp(-1)
    lse_all = torch.where(pos | neg, gamma, fill).logsumexp(-1)
    loss = lse_all - lse_pos
    return torch.where(neg.any(-1), loss, torch.zeros_like(loss))


class ContrastiveLoss(ListLoss):
    """``contrastive``: InfoNCE with ``n_pos`` positives. One term per prompt, so ``reduction``
    has no effect."""

    name = "contrastive"

    def __init__(
        self,
        beta: float = 0.1,
        nll_weight: float = 0.0,
        reduction: str = "sum",
        n_pos: int = 1,
    ) -> None:
        super().__init__(beta=beta, nll_weight=nll_weight, reduction=reduction)
        if int(n_pos) < 1:
            raise ValueError(f"loss '{self.name}': n_pos must be >= 1, got {n_pos}")
        self.n_pos = int(n_pos)

    def per_prompt_loss(self, gamma: Tensor, rewards: Tensor, mask: Tensor) -> Tensor:
        return contrastive_loss(gamma, rewards, mask, n_pos=self.n_pos)

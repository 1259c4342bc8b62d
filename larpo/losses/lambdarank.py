"""LambdaRank-style list loss: a logistic loss on every preference pair (the paper's listwise)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from larpo.losses.base import ListLoss, full_mask, preference_pairs, reduce_terms

WEIGHTS = ("none", "ndcg")


def gamma_ranks(gamma: Tensor, mask: Tensor) -> Tensor:
    """1-based rank [B, K] of each candidate under descending γ (valid first, stable ties)."""
    key = torch.where(mask, gamma, torch.full_like(gamma, -float("inf")))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    ranks = torch.arange(1, gamma.shape[-1] + 1, device=gamma.device).expand_as(order)
    return torch.empty_like(order).scatter(-1, order, ranks)


@torch.no_grad()
def ndcg_weights(gamma: Tensor, rewards: Tensor, mask: Tensor) -> Tensor:
    """LiPO-λ / LambdaRank ΔNDCG weights [B, K, K]: |G_i − G_j| · |1/log2(1+τ_i) − 1/log2(1+τ_j)|.

    G = 2^r − 1 (so rewards should be on a modest scale, e.g. 0/1 or normalised scores);
    τ is the rank under the current γ. Detached: the weights rescale pairs, not a target.
    """
    gains = torch.exp2(rewards) - 1
    disc = 1.0 / torch.log2(1.0 + gamma_ranks(gamma, mask).to(gamma.dtype))
    return (gains[:, :, None] - gains[:, None, :]).abs() * (
        disc[:, :, None] - disc[:, None, :]
    ).abs()


def lambdarank_loss(
    gamma: Tensor,
    rewards: Tensor,
    mask: Tensor | None = None,
    weights: str = "none",
    reduction: str = "sum",
) -> Tensor:
    """Per-prompt −Σ_{i, j valid, r_i > r_j} w_ij log σ(γ_i − γ_j).

    Args:
        gamma: [B, K] implicit rewards γ = β (logp_θ − logp_ref).
        rewards: [B, K] reward-model scores; tied pairs carry no preference.
        mask: [B, K] bool, False for padding (None = all valid).
        weights: ``"none"`` (w = 1, the paper) or ``"ndcg"`` (LiPO-λ ΔNDCG weights).
        reduction: ``"sum"`` over pairs (paper) or ``"mean"`` (divide by the number of pairs).

    Returns:
        [B]; 0 for a prompt without any preference pair.
    """
    if weights not in WEIGHTS:
        raise ValueError(
            f"lambdarank weights must be one of {WEIGHTS}, got {weights!r}"
        )
    mask = full_mask(mask, gamma)
    # Zero padded γ first: their values (possibly inf/nan) must not leak into γ_i − γ_j.
    gamma = torch.where(mask, gamma, torch.zeros_like(gamma))
    pref = preference_pairs(rewards, mask)
    nll = -F.logsigmoid(gamma[:, :, None] - gamma[:, None, :])
    if weights == "ndcg":
        w = ndcg_weights(
            gamma, torch.where(mask, rewards, torch.zeros_like(rewards)), mask
        )
        # Weights of non-pairs (e.g. tied huge gains: inf − inf) must not reach the backward.
        nll = nll * torch.where(pref, w, torch.zeros_like(w))
    total = torch.where(pref, nll, torch.zeros_like(nll)).sum((-1, -2))
    return reduce_terms(total, pref.sum((-1, -2)), reduction)


class LambdaRankLoss(ListLoss):
    """``lambdarank`` / ``listwise``: logistic loss over all preference pairs of the list."""

    name = "lambdarank"

    def __init__(
        self,
        beta: float = 0.1,
        nll_weight: float = 0.0,
        reduction: str = "sum",
        weights: str | None = "none",
    ) -> None:
        super().__init__(beta=beta, nll_weight=nll_weight, reduction=reduction)
        # yaml `null` reads as "no weights" rather than an error
        weights = "none" if weights is None else weights
        if weights not in WEIGHTS:
            raise ValueError(
                f"loss '{self.name}': weights must be one of {WEIGHTS}, got {weights!r}"
            )
        self.weights = weights

    def per_prompt_loss(self, gamma: Tensor, rewards: Tensor, mask: Tensor) -> Tensor:
        return lambdarank_loss(
            gamma, rewards, mask, weights=self.weights, reduction=self.reduction
        )

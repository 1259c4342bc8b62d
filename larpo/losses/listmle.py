"""ListMLE (Plackett–Luce) list loss over the reward order, tie-aware."""

from __future__ import annotations

import torch
from torch import Tensor

from larpo.losses.base import (
    ListLoss,
    full_mask,
    neg_fill,
    preference_pairs,
    reduce_terms,
)


def listmle_loss(
    gamma: Tensor, rewards: Tensor, mask: Tensor | None = None, reduction: str = "sum"
) -> Tensor:
    """Per-prompt Plackett–Luce NLL of the reward order: −Σ_i log [exp γ_i / Σ_{j≥i} exp γ_j].

    Tie-aware form: position i's denominator is exp γ_i + Σ_{j valid, r_j < r_i} exp γ_j, and
    a position without a strictly-lower candidate contributes nothing. For distinct rewards
    this is exactly the textbook sum (its last term, log 1, is the dropped one); with ties it
    does not depend on how tied candidates are ordered, and an all-tied list gives 0.

    Args:
        gamma: [B, K] implicit rewards γ = β (logp_θ − logp_ref).
        rewards: [B, K] reward-model scores.
        mask: [B, K] bool, False for padding (None = all valid).
        reduction: ``"sum"`` over positions (paper) or ``"mean"`` (divide by contributing ones).

    Returns:
        [B].
    """
    mask = full_mask(mask, gamma)
    pref = preference_pairs(rewards, mask)  # (b, i, j): j is strictly below i
    eye = torch.eye(gamma.shape[-1], dtype=torch.bool, device=gamma.device)
    in_denominator = pref | eye
    # Row i holds γ_i and the γ_j below it; the rest is a finite fill (never -inf: no 0 * inf).
    # Padded γ is zeroed first: a nan there would turn the masked-out gradient 0 into 0 * nan.
    safe_gamma = torch.where(mask, gamma, torch.zeros_like(gamma))
    rows = safe_gamma[:, None, :].expand_as(pref)
    rows = torch.where(
        in_denominator, rows, torch.full_like(rows, neg_fill(gamma.dtype))
    )
    terms = rows.logsumexp(-1) - safe_gamma
    contributes = pref.any(-1)
    total = torch.where(contributes, terms, torch.zeros_like(terms)).sum(-1)
    return reduce_terms(total, contributes.sum(-1), reduction)


class ListMLELoss(ListLoss):
    """``listmle``: Plackett–Luce likelihood of the reranker's order."""

    name = "listmle"

    def per_prompt_loss(self, gamma: Tensor, rewards: Tensor, mask: Tensor) -> Tensor:
        return listmle_loss(gamma, rewards, mask, reduction=self.reduction)

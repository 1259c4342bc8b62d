"""Shared plumbing for the list losses: input checks, γ, the NLL term, metrics (docs/design.md, "Loss API").

The family modules hold pure tensor functions ``f(gamma, rewards, mask) -> [B]``; the
``ListLoss`` classes here wrap them into the Hydra-instantiated callable of the Loss API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

REDUCTIONS = ("sum", "mean")


@dataclass
class LossOutput:
    """``loss``: scalar (mean over prompts); ``per_prompt``: [B]; ``metrics``: detached floats."""

    loss: Tensor
    per_prompt: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def neg_fill(dtype: torch.dtype) -> float:
    """A finite "minus infinity" for logsumexp: exp(fill - max) == 0, but no -inf * 0 = nan."""
    return torch.finfo(dtype).min


def full_mask(mask: Tensor | None, like: Tensor) -> Tensor:
    """``mask`` as bool [B, K]; ``None`` means every candidate is valid."""
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    return mask.bool()


def sort_by_reward(rewards: Tensor, mask: Tensor | None = None) -> Tensor:
    """Indices [B, K] ordering each row by descending reward, ties in index order, invalid last.

    Two stable sorts (by reward, then by validity) so that invalid candidates come last even
    when a valid reward is itself -inf.
    """
    mask = full_mask(mask, rewards)
    key = torch.where(mask, rewards, torch.full_like(rewards, -float("inf")))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    by_valid = torch.sort(
        mask.gather(-1, order).to(torch.uint8), dim=-1, descending=True, stable=True
    )
    return order.gather(-1, by_valid.indices)


def best_worst(rewards: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Indices [B] of the best (first in stable order) and worst (last valid) candidate."""
    mask = full_mask(mask, rewards)
    order = sort_by_reward(rewards, mask)
    last = (mask.sum(-1) - 1).clamp(min=0)
    return order[:, 0], order.gather(-1, last[:, None]).squeeze(-1)


def preference_pairs(rewards: Tensor, mask: Tensor | None = None) -> Tensor:
    """Bool [B, K, K]: entry (b, i, j) is True iff i and j are valid and r_i > r_j (ties: no pair)."""
    mask = full_mask(mask, rewards)
    both = mask[:, :, None] & mask[:, None, :]
    return both & (rewards[:, :, None] > rewards[:, None, :])


def reduce_terms(total: Tensor, count: Tensor, reduction: str) -> Tensor:
    """Paper's ``sum`` over pairs/positions, or ``mean`` (divide by their count, 0 if none)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if reduction == "mean":
        return total / count.clamp(min=1).to(total.dtype)
    return total


class ListLoss:
    """Base of the list losses: ``loss_fn(policy_logps=, ref_logps=, rewards=, mask=, lengths=)``.

    Subclasses set ``name`` and implement ``per_prompt_loss(gamma, rewards, mask) -> [B]``.
    Constructor arguments stay plain scalars so Hydra overrides (``loss.beta=0.2``) work.
    """

    name: ClassVar[str] = "list"
    requires_reference: ClassVar[bool] = True
    min_candidates: ClassVar[int] = 2

    def __init__(
        self, beta: float = 0.1, nll_weight: float = 0.0, reduction: str = "sum"
    ) -> None:
        if beta <= 0:
            raise ValueError(f"loss '{self.name}': beta must be > 0, got {beta}")
        if nll_weight < 0:
            raise ValueError(
                f"loss '{self.name}': nll_weight must be >= 0, got {nll_weight}"
            )
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"loss '{self.name}': reduction must be one of {REDUCTIONS}, got {reduction!r}"
            )
        self.beta = float(beta)
        self.nll_weight = float(nll_weight)
        self.reduction = reduction

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def per_prompt_loss(self, gamma: Tensor, rewards: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

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
        # Upcast half precision: γ differences of nearby log-probs lose their digits in bf16.
        dtype = torch.promote_types(policy_logps.dtype, torch.float32)
        policy = policy_logps.to(dtype)
        ref = torch.zeros_like(policy) if ref_logps is None else ref_logps.to(dtype)
        rewards = rewards.to(dtype)
        gamma = self.beta * (policy - ref)
        per_prompt = self.per_prompt_loss(gamma, rewards, mask)
        metrics = preference_metrics(gamma.detach(), rewards, mask)
        if self.nll_weight > 0:
            nll = top_candidate_nll(policy, rewards, mask, lengths)
            per_prompt = per_prompt + self.nll_weight * nll
            metrics["nll"] = nll.detach().mean().item()
        return LossOutput(
            loss=per_prompt.mean(), per_prompt=per_prompt, metrics=metrics
        )

    def _validate(
        self,
        policy_logps: Tensor,
        ref_logps: Tensor | None,
        rewards: Tensor,
        mask: Tensor | None,
        lengths: Tensor | None,
    ) -> Tensor:
        """Raise a ValueError naming the loss and the problem; return the bool mask."""
        who = f"loss '{self.name}'"
        if policy_logps.dim() != 2:
            raise ValueError(
                f"{who}: policy_logps must be 2-D [B, K], got shape {tuple(policy_logps.shape)}"
            )
        shape = policy_logps.shape
        if ref_logps is None and self.requires_reference:
            raise ValueError(
                f"{who} requires ref_logps (reference log-probs), got None"
            )
        named = {
            "ref_logps": ref_logps,
            "rewards": rewards,
            "mask": mask,
            "lengths": lengths,
        }
        for key, value in named.items():
            if value is not None and value.shape != shape:
                raise ValueError(
                    f"{who}: {key} has shape {tuple(value.shape)}, expected {tuple(shape)} like policy_logps"
                )
        if shape[0] == 0:
            raise ValueError(f"{who}: empty batch (B=0)")
        need = self.min_candidates
        if shape[1] < need:
            raise ValueError(
                f"{who} needs at least {need} candidates per list; got K={shape[1]}"
            )
        mask = full_mask(mask, policy_logps)
        counts = mask.sum(-1)
        short = torch.nonzero(counts < need).flatten()
        if short.numel():
            i = int(short[0])
            raise ValueError(
                f"{who} needs at least {need} candidates per list; prompt index {i} has {int(counts[i])}"
            )
        if self.nll_weight > 0 and lengths is None:
            raise ValueError(
                f"{who}: nll_weight={self.nll_weight} > 0 needs lengths (response lengths), got None"
            )
        return mask


def top_candidate_nll(
    policy: Tensor, rewards: Tensor, mask: Tensor, lengths: Tensor
) -> Tensor:
    """[B]: −logp_θ(y_best) / |y_best| (RPO-style anchor; beyond the paper)."""
    best, _ = best_worst(rewards, mask)
    logp = policy.gather(-1, best[:, None]).squeeze(-1)
    length = lengths.gather(-1, best[:, None]).squeeze(-1).clamp(min=1).to(policy.dtype)
    return -logp / length


@torch.no_grad()
def preference_metrics(
    gamma: Tensor, rewards: Tensor, mask: Tensor
) -> dict[str, float]:
    """Means over prompts: pairwise ranking accuracy of γ, best−worst margin, best/worst γ."""
    pref = preference_pairs(rewards, mask)
    correct = pref & (gamma[:, :, None] > gamma[:, None, :])
    n_pairs = pref.sum((-1, -2))
    has = n_pairs > 0
    # Prompts without any preference pair (all tied) have no accuracy; 0.0 if none has one.
    acc = correct.sum((-1, -2))[has].float() / n_pairs[has].float()
    best, worst = best_worst(rewards, mask)
    chosen = gamma.gather(-1, best[:, None]).squeeze(-1)
    rejected = gamma.gather(-1, worst[:, None]).squeeze(-1)
    return {
        "reward_accuracy": acc.mean().item() if has.any() else 0.0,
        "margin": (chosen - rejected).mean().item(),
        "chosen_reward": chosen.mean().item(),
        "rejected_reward": rejected.mean().item(),
        "pairs": n_pairs.float().mean().item(),
    }

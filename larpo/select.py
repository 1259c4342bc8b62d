"""Stage ``select``: rank each prompt's candidates by reward and pick the training list.

Selectors are chosen in ``conf/select/`` by ``_target_``. A selector maps one prompt's
rewards to the indices of the candidates it keeps, ordered best first (stable on ties).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from larpo.artifacts import ArtifactError
from larpo.schemas import Table

logger = logging.getLogger(__name__)


def rank_by_reward(rewards: Sequence[float]) -> list[int]:
    """Indices sorted by reward, best first; ties keep their original order (stable)."""
    return sorted(range(len(rewards)), key=lambda i: -rewards[i])


class Selector:
    """Base: keeps every candidate, best first. ``drop_ties`` skips lists with one reward value.

    Such lists carry no preference, so every ranking loss gives them zero loss and gradient;
    dropping them saves their forward passes (the count is logged, nothing is lost silently).
    """

    def __init__(self, drop_ties: bool = True) -> None:
        self.drop_ties = drop_ties

    def list_size(self, n_samples: int) -> int:
        return n_samples

    def validate(self, n_samples: int) -> None:
        """Fail at start-up, not mid-run, when the sampling config cannot feed this selector."""

    def __call__(self, rewards: Sequence[float]) -> list[int]:
        return rank_by_reward(rewards)


class AllCandidates(Selector):
    """``select=all``: the whole list of ``n_samples`` candidates."""


class TopBottom(Selector):
    """``select=top_bottom``: the ``n_top`` best and ``n_bottom`` worst candidates.

    The paper's lists: contrastive top-1 vs bottom-3, LambdaRank/ListMLE top-2 + bottom-2,
    pairwise top-1 vs bottom-1 (of 10 samples).
    """

    def __init__(self, n_top: int = 2, n_bottom: int = 2, drop_ties: bool = True) -> None:
        super().__init__(drop_ties)
        if n_top < 1 or n_bottom < 1:
            raise ValueError(f"select.n_top ({n_top}) and select.n_bottom ({n_bottom}) must both be >= 1")
        self.n_top, self.n_bottom = n_top, n_bottom

    def list_size(self, n_samples: int) -> int:
        return self.n_top + self.n_bottom

    def validate(self, n_samples: int) -> None:
        if self.n_top + self.n_bottom > n_samples:
            raise ValueError(
                f"select.n_top + select.n_bottom = {self.n_top} + {self.n_bottom} = "
                f"{self.n_top + self.n_bottom} exceeds sampling.n_samples = {n_samples}: "
                "lower them or sample more candidates"
            )

    def __call__(self, rewards: Sequence[float]) -> list[int]:
        if len(rewards) < self.n_top + self.n_bottom:
            # Slicing would hand the same candidate to both ends of the list.
            raise ValueError(f"{len(rewards)} candidates cannot give the top {self.n_top} and the bottom "
                             f"{self.n_bottom} (select.n_top + select.n_bottom)")
        order = rank_by_reward(rewards)
        return order[: self.n_top] + order[len(order) - self.n_bottom :]


def build_lists(selector: Selector, generations: Table, scores: Table) -> list[dict]:
    """Join validated generations and scores by prompt_id and apply the selector (no log-probs yet)."""
    pos = scores.index()
    lists, n_tied = [], 0
    for i, gen in enumerate(generations):
        pid = gen["prompt_id"]
        rewards = scores.rows[pos[pid]]["rewards"]
        try:
            keep = selector(rewards)
        except ValueError as e:
            raise ArtifactError(f"{generations.where(i)}: prompt_id {pid!r}: {e}") from None
        if selector.drop_ties and len({rewards[i] for i in keep}) < 2:
            n_tied += 1
            continue
        lists.append({
            "prompt_id": pid,
            "prompt": gen["prompt"],
            "responses": [gen["responses"][i] for i in keep],
            "finished": [gen["finished"][i] for i in keep],
            "rewards": [rewards[i] for i in keep],
        })
    if n_tied:
        logger.info("select: %d of %d lists had a single reward value and carry no preference: skipped",
                    n_tied, len(generations))
    return lists

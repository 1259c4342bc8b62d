"""The reranker's interface and the score stage's library: rewards for every candidate of ``generations.jsonl``.

Every reward (``larpo/rewards/``: the task's verifier, sequence-classification reward models,
PairRM) implements the same interface, chosen in ``conf/reward/`` by ``_target_``::

    reward.name                                   # recorded in scores.jsonl
    reward.list_relative                          # scores comparable only within one list?
    reward.score(prompts, responses, finished)    # [P] str, [P][K] str, [P][K] bool -> [P][K] float
    reward.loaded()                               # optional: a context that keeps a model loaded
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

logger = logging.getLogger(__name__)


class Reward(Protocol):
    name: str
    list_relative: bool  # True: scores mean something only within one list (PairRM)

    def score(
        self, prompts: Sequence[str], responses: Sequence[Sequence[str]], finished: Sequence[Sequence[bool]]
    ) -> list[list[float]]: ...


def score_rows(reward: Reward, rows: Sequence[dict]) -> list[dict]:
    """``scores.jsonl`` rows for ``generations.jsonl`` rows, checking the reward's output.

    A reward model's output is checked like a file: one finite number per candidate. A NaN
    would otherwise be ranked best by the selection's sort, and a short list would lose
    candidates silently.
    """
    rewards = reward.score(
        [row["prompt"] for row in rows], [row["responses"] for row in rows], [row["finished"] for row in rows]
    )
    if len(rewards) != len(rows):
        raise ValueError(f"reward {reward.name!r} returned {len(rewards)} score lists for {len(rows)} prompts")
    out = []
    for row, rs in zip(rows, rewards):
        where = f"reward {reward.name!r}, prompt {row['prompt_id']!r}"
        if len(rs) != len(row["responses"]):
            raise ValueError(f"{where}: {len(rs)} scores for {len(row['responses'])} candidates")
        for j, x in enumerate(rs):
            if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
                raise ValueError(f"{where}: candidate {j} got the score {x!r}, not a finite number")
        out.append({"prompt_id": row["prompt_id"], "rewards": [float(x) for x in rs], "reward_model": reward.name})
    return out


def loaded(reward) -> AbstractContextManager:
    """The reward's ``loaded()`` context (a reward model stays loaded inside it), or a no-op."""
    return reward.loaded() if hasattr(reward, "loaded") else nullcontext()

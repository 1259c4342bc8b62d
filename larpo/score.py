"""Stage ``score``: the reranker. Rewards for every candidate of ``generations.jsonl``.

Every reward (the embedded task's verifier now; sequence-classification reward models and
PairRM later) implements the same interface, chosen in ``conf/reward/`` by ``_target_``::

    reward.name                                   # recorded in scores.jsonl
    reward.score(prompts, responses, finished)    # [P] str, [P][K] str, [P][K] bool -> [P][K] float
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from typing import Protocol

logger = logging.getLogger(__name__)


class Reward(Protocol):
    name: str

    def score(
        self, prompts: Sequence[str], responses: Sequence[Sequence[str]], finished: Sequence[Sequence[bool]]
    ) -> list[list[float]]: ...


class VerifierReward:
    """The task's own verifier as a reward model: graded correctness in [0, 1]."""

    def __init__(self, task) -> None:
        if not hasattr(task, "verify"):
            raise ValueError(f"reward=verifier needs a task with a verifier; task {type(task).__name__} has none")
        self.task = task
        self.name = f"verifier:{getattr(task, 'name', type(task).__name__)}"

    def score(
        self, prompts: Sequence[str], responses: Sequence[Sequence[str]], finished: Sequence[Sequence[bool]]
    ) -> list[list[float]]:
        return [
            [float(self.task.verify(p, r, f)) for r, f in zip(rs, fs)]
            for p, rs, fs in zip(prompts, responses, finished)
        ]


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

"""The task's own verifier as the reranker (the embedded default, GSM8K): graded correctness."""

from __future__ import annotations

from collections.abc import Sequence


class VerifierReward:
    """The task's own verifier as a reward model: graded correctness in [0, 1]."""

    def __init__(self, task) -> None:
        if not hasattr(task, "verify"):
            raise ValueError(f"reward=verifier needs a task with a verifier; task {type(task).__name__} has none")
        self.task = task
        self.name = f"verifier:{getattr(task, 'name', type(task).__name__)}"

    list_relative = False  # a candidate's score does not depend on the other candidates
    open_ended = False  # it scores its own task's prompts only (no judge of a benchmark's open questions)

    def score(
        self, prompts: Sequence[str], responses: Sequence[Sequence[str]], finished: Sequence[Sequence[bool]]
    ) -> list[list[float]]:
        return [
            [float(self.task.verify(p, r, f)) for r, f in zip(rs, fs)]
            for p, rs, fs in zip(prompts, responses, finished)
        ]

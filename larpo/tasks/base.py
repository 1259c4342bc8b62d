"""What every task provides: prompts in named splits and a reward for (prompt, response)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Example:
    """One prompt with its gold response.

    prompt_id: unique within the task and stable across processes and runs: "<split>-<index>" for the
        embedded task (e.g. "eval-00042"), "<split>-<sha256 of the prompt>[:12]" for hub datasets.
    prompt: the user message (rendered later with the model's chat template).
    answer: the gold response text, without EOS.
    family: the task family that produced the prompt (for per-family metrics).
    """

    prompt_id: str
    prompt: str
    answer: str
    family: str


@runtime_checkable
class Task(Protocol):
    """A verifiable task; `verify` needs only (prompt, response), like a reward model."""

    name: str

    def split(self, name: str) -> list[Example]:
        """Examples of split `name` ("sft" | "train" | "eval")."""
        ...

    def verify(self, prompt: str, response: str, finished: bool = True) -> float:
        """Reward in [0, 1] for `response` to `prompt`."""
        ...

    def answer(self, prompt: str) -> str:
        """The gold response computed from the prompt text alone."""
        ...

    # Optional: ``is_correct(prompt, response, finished) -> bool`` says what "correct" means for
    # the task (accuracy and Pass@N use it). A task without it has no accuracy, only rewards.

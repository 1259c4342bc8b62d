"""Verifiable tasks (the embedded reward) and the embedded tokenizer."""

from larpo.tasks.arithmetic import FAMILIES, OPERATIONS, ArithmeticTask, Family, Operation, operation_of
from larpo.tasks.base import Example, Task
from larpo.tasks.tokenizer import TOKENIZER_DIR, build_tokenizer

__all__ = [
    "FAMILIES",
    "TOKENIZER_DIR",
    "ArithmeticTask",
    "Example",
    "Family",
    "OPERATIONS",
    "Operation",
    "Task",
    "build_tokenizer",
    "operation_of",
]

"""GSM8K in miniature: arithmetic and sorting prompts whose verifier is the reward.

An *operation* (add, sub, sort, max) knows how to recognise a prompt format, solve it from
the prompt text alone and grade a response, so the reward needs only (prompt, response),
exactly like a reward model. A *family* is a prompt distribution for one operation (operand
sizes and counts); families are graded in difficulty so a tiny model after a short SFT is
competent but imperfect, leaving room for preference optimisation to help.

Families (prompt -> answer), easy to hard:
    sort9   "sort:5,1,9,2="    -> "1,2,5,9"       3-4 numbers in 0-9, ascending
    add21   "37+5="            -> "42"            2-digit + 1-digit
    max     "max:5,31,9,2="    -> "31"            3-4 numbers in 0-99
    sort    "sort:5,31,9,2="   -> "2,5,9,31"      3-4 numbers in 0-99, ascending
    sub     "45-73="           -> "-28"           2-digit - 2-digit, may be negative
    add2    "37+45="           -> "82"            2-digit + 2-digit
    sub3    "12-345="          -> "-333"          2-3-digit operands
    sum3    "12+45+33="        -> "90"            three 2-digit numbers
    add3    "348+571="         -> "919"           3-digit + 3-digit
The default mix is add21, max, sort, sub, add2.

Demonstrations versus preferences (`demo_noise`). Alignment starts from demonstrations that
are not what the reward prefers. Here the SFT split is written by a sloppy annotator: with
probability `demo_noise` a demonstration is the operation's *slip* -- carries forgotten
(37+45 -> 72), the minus sign dropped (45-73 -> 28), numbers compared as strings
(sort:5,31 -> 31,5; max:9,31 -> 9) -- where the slip changes the answer. The verifier always
grades against the gold answer. With demo_noise 0.5 the round-0 policy has learned both
habits and often says the sloppy one greedily, while its samples contain the right one: the
gap a reranker-guided retriever closes. Measured in the pipeline (1.06 M-parameter Llama,
1,200 SFT steps of batch 128, seed 0, 1,000 held-out prompts): with gold demonstrations
(demo_noise 0) round-0 greedy accuracy was 71.7 % and LarPO kept it level (the model is at
the ceiling of what its parameters learned); with demo_noise 0.5 it was 58.0 % and three
rounds of listwise LarPO (lr 5e-5) raised it to 69.1 % (add21 .78 -> .96, add2 .59 -> .88,
sub .59 -> .67).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from larpo.tasks.base import Example

# [0-9] rather than \d: \d also matches non-ASCII digits, which the tokenizer cannot encode.
NUMBER = re.compile(r"-?[0-9]+")
NUMBER_LIST = re.compile(r"[0-9]+(?:,[0-9]+)*")


def number_credit(pred: str, gold: str) -> float:
    """0.5 x fraction of digit positions (aligned from the right) that agree.

    Positions run over max(len(pred digits), len(gold digits)); a wrong sign is one more
    wrong position. E.g. gold "82", pred "72" -> 0.5 * 1/2 = 0.25.
    """
    pred_digits, gold_digits = pred.lstrip("-"), gold.lstrip("-")
    hits = sum(a == b for a, b in zip(reversed(pred_digits), reversed(gold_digits)))
    wrong_sign = pred.startswith("-") != gold.startswith("-")
    return 0.5 * hits / (max(len(pred_digits), len(gold_digits)) + wrong_sign)


def list_credit(pred: str, gold: str) -> float:
    """0.5 x fraction of list positions (aligned from the left) that agree, over max length."""
    pred_items, gold_items = pred.split(","), gold.split(",")
    hits = sum(a == b for a, b in zip(pred_items, gold_items))
    return 0.5 * hits / max(len(pred_items), len(gold_items))


@dataclass(frozen=True)
class Operation:
    """How to recognise, solve and grade one prompt format (shared by several families)."""

    name: str
    pattern: re.Pattern[str]  # full-matches the prompts of this format
    solve: Callable[[re.Match[str]], str]
    response: re.Pattern[str]  # well-formed responses; anything else scores 0
    credit: Callable[[str, str], float]  # partial credit for a well-formed wrong response
    slip: Callable[[re.Match[str]], str]  # a sloppy annotator's systematic mistake (see demo_noise)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _add_without_carry(operands: list[str]) -> str:
    """Column-wise sum mod 10, the carries forgotten: 37+45 -> "72", 95+17 -> "2"."""
    width = max(len(x) for x in operands)
    cols = [sum(int(x.rjust(width, "0")[i]) for x in operands) % 10 for i in range(width)]
    return str(int("".join(map(str, cols))))


# Patterns accept any operand sizes, so the verifier answers every prompt of a format,
# not only the sizes the samplers draw (the reward needs nothing but the prompt text).
OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            "add",
            re.compile(r"[0-9]+(?:\+[0-9]+)+="),
            lambda m: str(sum(int(x) for x in m[0][:-1].split("+"))),
            NUMBER,
            number_credit,
            lambda m: _add_without_carry(m[0][:-1].split("+")),
        ),
        Operation(
            "sub",
            re.compile(r"([0-9]+)-([0-9]+)="),
            lambda m: str(int(m[1]) - int(m[2])),
            NUMBER,
            number_credit,
            lambda m: str(abs(int(m[1]) - int(m[2]))),  # the minus sign dropped
        ),
        Operation(
            "sort",
            re.compile(r"sort:([0-9]+(?:,[0-9]+)*)="),
            lambda m: ",".join(map(str, sorted(_ints(m[1])))),
            NUMBER_LIST,
            list_credit,
            lambda m: ",".join(sorted(m[1].split(","))),  # sorted as strings: 5,31 -> 31,5
        ),
        Operation(
            "max",
            re.compile(r"max:([0-9]+(?:,[0-9]+)*)="),
            lambda m: str(max(_ints(m[1]))),
            NUMBER,
            number_credit,
            lambda m: max(m[1].split(",")),  # compared as strings: max(9, 31) -> 9
        ),
    )
}


@dataclass(frozen=True)
class Family:
    """A prompt distribution (operand sizes and counts) for one operation."""

    name: str
    operation: Operation
    sample: Callable[[random.Random], str]


def _digits(rng: random.Random, n: int) -> int:
    """A number with exactly n digits."""
    return rng.randint(10 ** (n - 1), 10**n - 1)


def _list(rng: random.Random, counts: tuple[int, int], hi: int) -> str:
    return ",".join(str(rng.randint(0, hi)) for _ in range(rng.randint(*counts)))


# Ordered easy -> hard (see the module docstring). Prompts <= 24 characters, answers <= 12.
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("sort9", OPERATIONS["sort"], lambda r: f"sort:{_list(r, (3, 4), 9)}="),
        Family("add21", OPERATIONS["add"], lambda r: f"{_digits(r, 2)}+{r.randint(0, 9)}="),
        Family("max", OPERATIONS["max"], lambda r: f"max:{_list(r, (3, 4), 99)}="),
        Family("sort", OPERATIONS["sort"], lambda r: f"sort:{_list(r, (3, 4), 99)}="),
        Family("sub", OPERATIONS["sub"], lambda r: f"{_digits(r, 2)}-{_digits(r, 2)}="),
        Family("add2", OPERATIONS["add"], lambda r: f"{_digits(r, 2)}+{_digits(r, 2)}="),
        Family("sub3", OPERATIONS["sub"], lambda r: f"{_digits(r, r.randint(2, 3))}-{_digits(r, r.randint(2, 3))}="),
        Family("sum3", OPERATIONS["add"], lambda r: f"{_digits(r, 2)}+{_digits(r, 2)}+{_digits(r, 2)}="),
        Family("add3", OPERATIONS["add"], lambda r: f"{_digits(r, 3)}+{_digits(r, 3)}="),
    )
}

DEFAULT_FAMILIES = ("add21", "max", "sort", "sub", "add2")
SPLITS = ("sft", "train", "eval")  # the position seeds each split's generator


def operation_of(prompt: str) -> tuple[Operation, re.Match[str]]:
    """The operation whose format `prompt` has, with the parsed match."""
    for op in OPERATIONS.values():
        match = op.pattern.fullmatch(prompt)
        if match:
            return op, match
    raise ValueError(f"prompt {prompt!r} matches no arithmetic task format (operations {list(OPERATIONS)})")


class ArithmeticTask:
    """Arithmetic/sorting prompts with a graded, verifiable reward.

    Reward of `verify(prompt, response, finished)`, always in [0, 1]:
      * exact match with the gold answer (after stripping surrounding whitespace) -> 1.0;
      * unparsable (empty, or not the operation's format: "-?[0-9]+" for numbers,
        "[0-9]+(,[0-9]+)*" for lists) -> 0.0;
      * well-formed but wrong -> partial credit in [0, 0.5): for numbers 0.5 x fraction of
        digit positions correct, aligned from the right, over max(len(pred), len(gold))
        digits, a wrong sign counting as one more wrong position; for lists 0.5 x fraction
        of positions correct over the longer list's length;
      * not finished (no EOS, `finished=False`) -> the above x 0.5, so a correct but
        unterminated answer (0.5) scores below a correct terminated one (1.0).
    """

    name = "arithmetic"

    def __init__(
        self,
        families: Sequence[str] = DEFAULT_FAMILIES,
        seed: int = 0,
        n_sft: int = 20000,
        n_train: int = 4096,
        n_eval: int = 1000,
        partial_credit: bool = True,
        demo_noise: float = 0.0,
    ) -> None:
        if isinstance(demo_noise, bool) or not isinstance(demo_noise, (int, float)) or not 0.0 <= demo_noise <= 1.0:
            raise ValueError(f"task.demo_noise={demo_noise!r} must be a probability in [0, 1]")
        for key, value in (("n_sft", n_sft), ("n_train", n_train), ("n_eval", n_eval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"invalid option: task.{key}={value!r} is out of range: allowed >= 1")
        for fam in families:
            if fam not in FAMILIES:
                raise ValueError(f"unknown task family {fam!r} in task.families; choose from {list(FAMILIES)}")
        if not families:
            raise ValueError(f"task.families is empty; choose from {list(FAMILIES)}")
        self.families = [FAMILIES[f] for f in families]
        self.seed = seed
        # False: a wrong answer scores 0 whatever its digits (the paper's GSM8K setup, where
        # only correctness ranks candidates); True: near misses get partial credit.
        self.partial_credit = partial_credit
        self.sizes = {"sft": n_sft, "train": n_train, "eval": n_eval}
        # The SFT demonstrations come from a sloppy annotator: with this probability a
        # demonstration is the operation's systematic slip (carries forgotten, minus sign
        # dropped, numbers compared as strings) instead of the gold answer. The verifier, and
        # so the reward, always uses the gold answer.
        self.demo_noise = demo_noise
        self._cache: dict[str, list[Example]] = {}

    def split(self, name: str) -> list[Example]:
        """Examples of split `name`, deterministic from the seed; eval prompts never
        appear in sft or train (so eval measures generalisation), sft and train may overlap."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose from {list(SPLITS)}")
        if name not in self._cache:
            # Eval is drawn first and de-duplicated, then excluded from the other splits.
            exclude = set() if name == "eval" else {e.prompt for e in self.split("eval")}
            self._cache[name] = self._generate(name, exclude, unique=name == "eval")
        return self._cache[name]

    def _generate(self, name: str, exclude: set[str], unique: bool) -> list[Example]:
        # Derived arithmetically (never hash()) so splits are identical across processes.
        rng = random.Random(self.seed * 1000 + SPLITS.index(name))
        # A separate stream, so the prompts are the same whatever demo_noise is.
        noise_rng = random.Random(self.seed * 1000 + 100 + SPLITS.index(name))
        noisy = name == "sft" and self.demo_noise > 0
        examples = []
        for i in range(self.sizes[name]):
            family = self.families[i % len(self.families)]  # uniform, balanced mix
            prompt = self._draw(family, rng, exclude)
            if unique:
                exclude.add(prompt)
            answer = self.answer(prompt)
            if noisy and noise_rng.random() < self.demo_noise:
                answer = self.slip(prompt)
            examples.append(Example(f"{name}-{i:05d}", prompt, answer, family.name))
        return examples

    @staticmethod
    def _draw(family: Family, rng: random.Random, exclude: set[str]) -> str:
        for _ in range(1000):
            prompt = family.sample(rng)
            if prompt not in exclude:
                return prompt
        raise ValueError(f"family {family.name!r} ran out of distinct prompts; lower n_eval")

    def answer(self, prompt: str) -> str:
        """Gold answer computed from the prompt text alone."""
        op, match = operation_of(prompt)
        return op.solve(match)

    def slip(self, prompt: str) -> str:
        """The sloppy annotator's answer (equal to the gold one where the slip changes nothing)."""
        op, match = operation_of(prompt)
        return op.slip(match)

    def verify(self, prompt: str, response: str, finished: bool = True) -> float:
        """Graded reward in [0, 1]; see the class docstring for the rules."""
        op, match = operation_of(prompt)
        gold, pred = op.solve(match), response.strip()
        if pred == gold:
            reward = 1.0
        elif op.response.fullmatch(pred):
            reward = op.credit(pred, gold) if self.partial_credit else 0.0
        else:
            reward = 0.0
        return reward if finished else 0.5 * reward

    def is_correct(self, prompt: str, response: str, finished: bool = True) -> bool:
        """Correct = the gold answer exactly, terminated by EOS (a verify() reward of 1.0)."""
        return finished and response.strip() == self.answer(prompt)

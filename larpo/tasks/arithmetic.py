"""GSM8K in miniature: arithmetic and sorting prompts whose verifier is the reward.

Each family is a pair of small functions: `sample` draws a prompt from a `random.Random`,
`solve` computes the gold answer from the prompt text alone, so the reward needs only
(prompt, response), exactly like a reward model. Families are graded in difficulty so a
tiny model after a short SFT is competent but imperfect, leaving room for preference
optimisation to help.

Formats (prompt -> answer):
    add2  "37+45="          -> "82"          two 2-digit numbers
    add3  "348+571="        -> "919"         two 3-digit numbers
    sum3  "12+45+33="       -> "90"          three 2-digit numbers
    sub   "12-345="         -> "-333"        2-3-digit numbers, result may be negative
    sort  "sort:5,31,9,2="  -> "2,5,9,31"    3-4 numbers in 0-99, ascending
    max   "max:5,31,9,2="   -> "31"          3-5 numbers in 0-99 (not in the default mix)
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
class Family:
    """One prompt family: how to draw prompts, recognise them, solve and grade them."""

    name: str
    pattern: re.Pattern[str]  # full-matches this family's prompts (and no other family's)
    sample: Callable[[random.Random], str]
    solve: Callable[[re.Match[str]], str]
    response: re.Pattern[str]  # well-formed responses; anything else scores 0
    credit: Callable[[str, str], float]  # partial credit for a well-formed wrong response


def _digits(rng: random.Random, n: int) -> int:
    return rng.randint(10 ** (n - 1), 10**n - 1)


def _numbers(rng: random.Random, lo: int, hi: int) -> str:
    return ",".join(str(rng.randint(0, 99)) for _ in range(rng.randint(lo, hi)))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _number_family(name: str, pattern: str, sample: Callable[[random.Random], str],
                   solve: Callable[[re.Match[str]], str]) -> Family:
    return Family(name, re.compile(pattern), sample, solve, NUMBER, number_credit)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        _number_family(
            "add2", r"([0-9]{2})\+([0-9]{2})=",
            lambda r: f"{_digits(r, 2)}+{_digits(r, 2)}=",
            lambda m: str(int(m[1]) + int(m[2])),
        ),
        _number_family(
            "add3", r"([0-9]{3})\+([0-9]{3})=",
            lambda r: f"{_digits(r, 3)}+{_digits(r, 3)}=",
            lambda m: str(int(m[1]) + int(m[2])),
        ),
        _number_family(
            "sum3", r"([0-9]{2})\+([0-9]{2})\+([0-9]{2})=",
            lambda r: f"{_digits(r, 2)}+{_digits(r, 2)}+{_digits(r, 2)}=",
            lambda m: str(int(m[1]) + int(m[2]) + int(m[3])),
        ),
        _number_family(
            "sub", r"([0-9]{2,3})-([0-9]{2,3})=",
            # Digit counts drawn first so 2- and 3-digit operands are equally common.
            lambda r: f"{_digits(r, r.randint(2, 3))}-{_digits(r, r.randint(2, 3))}=",
            lambda m: str(int(m[1]) - int(m[2])),
        ),
        Family(
            "sort", re.compile(r"sort:([0-9]+(?:,[0-9]+)*)="),
            # At most 4 numbers keeps the answer within 12 characters.
            lambda r: f"sort:{_numbers(r, 3, 4)}=",
            lambda m: ",".join(map(str, sorted(_ints(m[1])))),
            NUMBER_LIST, list_credit,
        ),
        _number_family(
            "max", r"max:([0-9]+(?:,[0-9]+)*)=",
            lambda r: f"max:{_numbers(r, 3, 5)}=",
            lambda m: str(max(_ints(m[1]))),
        ),
    )
}

DEFAULT_FAMILIES = ("add2", "add3", "sum3", "sub", "sort")
SPLITS = ("sft", "train", "eval")  # the position seeds each split's generator


def family_of(prompt: str) -> tuple[Family, re.Match[str]]:
    """The family whose pattern matches `prompt` (any registered family, not just the mix)."""
    for family in FAMILIES.values():
        match = family.pattern.fullmatch(prompt)
        if match:
            return family, match
    raise ValueError(f"prompt {prompt!r} matches no arithmetic task family ({list(FAMILIES)})")


class ArithmeticTask:
    """Arithmetic/sorting prompts with a graded, verifiable reward.

    Reward of `verify(prompt, response, finished)`, always in [0, 1]:
      * exact match with the gold answer (after stripping surrounding whitespace) -> 1.0;
      * unparsable (empty, or not the family's format: "-?[0-9]+" for numbers,
        "[0-9]+(,[0-9]+)*" for lists) -> 0.0;
      * well-formed but wrong -> partial credit in [0, 0.5): for numbers 0.5 x fraction of
        digit positions correct, aligned from the right, over max(len(pred), len(gold))
        digits, a wrong sign counting as one more wrong position; for lists 0.5 x fraction
        of positions correct over the longer list's length;
      * not finished (no EOS, `finished=False`) -> the above x 0.5, so a correct but
        unterminated answer (0.5) scores below a correct terminated one (1.0).
    """

    name = "arithmetic"

    def __init__(self, families: Sequence[str] = DEFAULT_FAMILIES, seed: int = 0,
                 n_sft: int = 20000, n_train: int = 4096, n_eval: int = 1000) -> None:
        for fam in families:
            if fam not in FAMILIES:
                raise ValueError(
                    f"unknown task family {fam!r} in task.families; choose from {list(FAMILIES)}"
                )
        if not families:
            raise ValueError(f"task.families is empty; choose from {list(FAMILIES)}")
        self.families = [FAMILIES[f] for f in families]
        self.seed = seed
        self.sizes = {"sft": n_sft, "train": n_train, "eval": n_eval}
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
        examples = []
        for i in range(self.sizes[name]):
            family = self.families[i % len(self.families)]  # uniform, balanced mix
            prompt = self._draw(family, rng, exclude)
            if unique:
                exclude.add(prompt)
            examples.append(Example(f"{name}-{i:05d}", prompt, self.answer(prompt), family.name))
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
        family, match = family_of(prompt)
        return family.solve(match)

    def verify(self, prompt: str, response: str, finished: bool = True) -> float:
        """Graded reward in [0, 1]; see the class docstring for the rules."""
        family, match = family_of(prompt)
        gold, pred = family.solve(match), response.strip()
        if pred == gold:
            reward = 1.0
        elif family.response.fullmatch(pred):
            reward = family.credit(pred, gold)
        else:
            reward = 0.0
        return reward if finished else 0.5 * reward

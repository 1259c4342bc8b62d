"""Word problems for real chat models: a seeded generator in GSM8K's format, with its verifier.

The embedded arithmetic task speaks a terse prompt language a 1 M-parameter model learns from
scratch; a pretrained chat model (SmolLM2-135M-Instruct, ``experiment=smollm2_cpu``) gets
English instead: short one- and two-step problems, each with a worked solution ending in
GSM8K's ``#### <number>`` line (the SFT target, if one is wanted, and the gold number). The
data are written here, by this code: nothing is downloaded, and the same ``seed`` gives the
same problems on every machine.

Families (question -> gold number):
    add       "Mia has 7 stickers. Her friend gives her 5 more. How many stickers does Mia have now?" -> 12
    sub       "Leo had 15 marbles and lost 6 of them. How many marbles does Leo have left?"          -> 9
    mul       "There are 4 boxes with 6 pencils in each box. How many pencils are there in all?"     -> 24
    compare   "Ava has 13 shells and Ben has 8 shells. How many more shells does Ava have than Ben?" -> 5
    two_step  "Sam buys 3 packs with 4 cards in each pack, then gives away 5 cards. How many cards
               does Sam have now?"                                                                   -> 7

Splits: ``eval`` is drawn first from its own random stream; ``train`` and ``sft`` are drawn from
theirs and never contain an eval question (nor, for train, one another's duplicates), so the
held-out split is never trained on. Families are dealt round-robin within each split.

The verifier is GSM8K's (:func:`larpo.tasks.gsm8k.extract_number`): the number after the last
``####``, else in the last ``\\boxed{}``, else after "answer is"/"answer:", else the last number
of the response; 1.0 when it equals the gold number, x ``unfinished_factor`` without EOS.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from decimal import Decimal

from larpo.tasks.base import Example
from larpo.tasks.gsm8k import extract_number, format_number
from larpo.tasks.hf_data import normalise

NAMES = ("Mia", "Leo", "Ava", "Ben", "Sam", "Zoe", "Max", "Lily", "Noah", "Emma", "Omar", "Ruby", "Ivan", "Nina",
         "Theo", "Chloe", "Ali", "Grace", "Luis", "Hana", "Tom", "Ella", "Ravi", "Sofia")
THINGS = ("stickers", "marbles", "apples", "pencils", "shells", "cards", "books", "stamps", "cookies", "coins",
          "beads", "balloons", "crayons", "oranges", "buttons", "toy cars", "flowers", "eggs", "rocks", "candies")
CONTAINERS = ("boxes", "bags", "jars", "baskets", "packs", "trays", "bowls", "crates")
DEFAULT_TEMPLATE = '{question}\nGive the final answer on the last line as "#### <number>".'


def _add(rng: random.Random) -> tuple[str, str, int]:
    name, friend, thing = rng.choice(NAMES), rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 30), rng.randint(2, 30)
    if friend == name:
        friend = "a friend"
    q = f"{name} has {a} {thing}. {friend} gives {name} {b} more. How many {thing} does {name} have now?"
    return q, f"{name} has {a} + {b} = {a + b} {thing} now.", a + b


def _sub(rng: random.Random) -> tuple[str, str, int]:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a = rng.randint(8, 40)
    b = rng.randint(1, a - 1)
    q = f"{name} had {a} {thing} and lost {b} of them. How many {thing} does {name} have left?"
    return q, f"{name} has {a} - {b} = {a - b} {thing} left.", a - b


def _mul(rng: random.Random) -> tuple[str, str, int]:
    thing, box = rng.choice(THINGS), rng.choice(CONTAINERS)
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    q = f"There are {a} {box} with {b} {thing} in each. How many {thing} are there in all?"
    return q, f"There are {a} * {b} = {a * b} {thing} in all.", a * b


def _compare(rng: random.Random) -> tuple[str, str, int]:
    first, second = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    b = rng.randint(2, 25)
    a = b + rng.randint(1, 20)
    q = (f"{first} has {a} {thing} and {second} has {b} {thing}. How many more {thing} does {first} have "
         f"than {second}?")
    return q, f"{first} has {a} - {b} = {a - b} more {thing} than {second}.", a - b


def _two_step(rng: random.Random) -> tuple[str, str, int]:
    name, thing, box = rng.choice(NAMES), rng.choice(THINGS), rng.choice(CONTAINERS)
    a, b = rng.randint(2, 6), rng.randint(2, 10)
    c = rng.randint(1, a * b - 1)
    q = (f"{name} buys {a} {box} with {b} {thing} in each, then gives away {c} {thing}. How many {thing} "
         f"does {name} have now?")
    return q, f"{name} buys {a} * {b} = {a * b} {thing} and has {a * b} - {c} = {a * b - c} left.", a * b - c


FAMILIES: dict[str, Callable[[random.Random], tuple[str, str, int]]] = {
    "add": _add, "sub": _sub, "mul": _mul, "compare": _compare, "two_step": _two_step}
SPLITS = ("eval", "train", "sft")


class WordProblemsTask:
    """Seeded English word problems (see the module docstring); GSM8K's final-number verifier.

    families: which of :data:`FAMILIES`, dealt round-robin. seed: the data seed (every run seed
    sees the same problems). n_train / n_eval / n_sft: split sizes. prompt_template: the user
    prompt, ``{question}`` replaced by the problem. unfinished_factor: reward x this without EOS.
    """

    name = "word_problems"

    def __init__(self, families: Sequence[str] = tuple(FAMILIES), seed: int = 0, n_train: int = 4096,
                 n_eval: int = 500, n_sft: int = 2000, prompt_template: str = DEFAULT_TEMPLATE,
                 unfinished_factor: float = 0.5) -> None:
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise ValueError(f"task.families={list(families)!r}: unknown {unknown or 'none given'}; "
                             f"choose from {sorted(FAMILIES)}")
        if "{question}" not in prompt_template:
            raise ValueError(f"task.prompt_template={prompt_template!r} must contain {{question}}")
        if isinstance(unfinished_factor, bool) or not 0.0 <= float(unfinished_factor) <= 1.0:
            raise ValueError(f"task.unfinished_factor={unfinished_factor!r} must be a number in [0, 1]")
        for key, n in (("n_train", n_train), ("n_eval", n_eval), ("n_sft", n_sft)):
            if int(n) < 0:
                raise ValueError(f"task.{key}={n} must be >= 0")
        self.families, self.seed = list(families), int(seed)
        self.sizes = {"train": int(n_train), "eval": int(n_eval), "sft": int(n_sft)}
        self.prompt_template, self.unfinished_factor = prompt_template, float(unfinished_factor)
        self._splits: dict[str, list[Example]] = {}
        self._gold: dict[str, Decimal] = {}

    def _render(self, question: str) -> str:
        return self.prompt_template.replace("{question}", question)

    def _generate(self) -> None:
        seen: set[str] = set()
        for split in SPLITS:  # eval first: the other splits exclude its questions
            rng = random.Random(f"word_problems:{self.seed}:{split}")
            out: list[Example] = []
            misses = 0
            while len(out) < self.sizes[split]:
                family = self.families[len(out) % len(self.families)]
                question, solution, gold = FAMILIES[family](rng)
                prompt = self._render(question)
                key = normalise(prompt)
                if key in seen:  # 10,000 repeats in a row: the families hold no more distinct problems
                    misses += 1
                    if misses > 10_000:
                        raise ValueError(f"task word_problems: cannot draw {self.sizes[split]} distinct {split} "
                                         f"problems of families {self.families}; lower task.n_{split}")
                    continue
                seen.add(key)
                misses = 0
                self._gold[key] = Decimal(gold)
                out.append(Example(f"{split}-{len(out):05d}", prompt, f"{solution}\n#### {gold}", family))
            self._splits[split] = out

    def split(self, name: str) -> list[Example]:
        if name not in SPLITS:
            raise ValueError(f"task word_problems has no split {name!r}; splits: {list(SPLITS)}")
        if not self._splits:
            self._generate()
        return list(self._splits[name])

    def gold(self, prompt: str) -> Decimal:
        """The gold number of a prompt of this task (any split); ValueError if unknown."""
        if not self._splits:
            self._generate()
        key = normalise(prompt)
        if key not in self._gold:
            raise ValueError(f"prompt not in task word_problems (seed {self.seed}): {prompt[:200]!r}")
        return self._gold[key]

    def answer(self, prompt: str) -> str:
        return format_number(self.gold(prompt))

    def verify(self, prompt: str, response: str, finished: bool = True) -> float:
        """1.0 if the response's final number equals the gold one, else 0.0; x unfinished_factor without EOS."""
        pred = extract_number(response)
        reward = 1.0 if pred is not None and pred == self.gold(prompt) else 0.0
        return reward if finished else reward * self.unfinished_factor

    def is_correct(self, prompt: str, response: str, finished: bool = True) -> bool:
        return self.verify(prompt, response, finished) >= 1.0

"""GSM8K: grade-school math word problems with a binary verifier (the paper's GSM8K setup).

Default source: openai/gsm8k, config "main" (train 7,473 / test 1,319; fields question,
answer). `answer` is a worked solution ending in a line "#### <number>": it is the SFT target
("sft" split) and its number is the gold final answer the verifier compares with. A row whose
answer has no "#### <number>" is left out (counted in the split's "dropped", rows logged): its
gold number would be a guess.

Verifier: 1.0 when the final number of the response equals the gold number (numerically:
42 == 42.0, "1,000" == 1000), else 0.0; a response cut off before EOS (finished=False) gets
that times `unfinished_factor` (default 0.5, as in the embedded task: a correct but
unterminated response ranks between a correct finished one and a wrong one; 0.0 makes the
reward strictly binary, 1.0 ignores EOS). `is_correct` means "full reward".

The final number of a response: after the last "####" if there is one, else inside the last
"\\boxed{...}", else after the last "answer is" / "answer:", else the last number in the
text. Thousands commas, "$" and a leading minus are understood; fractions are not.

Splits, prompt ids and filters are those of `larpo.tasks.hf_data.HFPromptTask`.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal

from larpo.tasks.hf_data import HFPromptTask, Item, SkipRow, normalise, text_field

logger = logging.getLogger(__name__)

# A number: a sign (a minus not glued to a preceding word or number, so "3-4" is 3 and 4),
# an optional "$", digits with thousands commas or plain, and decimals. [0-9], not \d: \d
# also matches non-ASCII digits that Decimal would read differently.
NUMBER = re.compile(r"(?<![\w.])(-)?\$?(-)?([0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?|\.[0-9]+)")
HASHES = re.compile(r"####")
BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
ANSWER_IS = re.compile(r"answer\s*(?:is\b|:|=)", re.IGNORECASE)
CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations, e.g. "<<48/2=24>>"

DEFAULT_TEMPLATE = '{question}\n\nSolve step by step, then give the final answer on its own line as "#### <number>".'


def _number(match: re.Match[str]) -> Decimal:
    value = Decimal(match[3].replace(",", ""))
    return -value if match[1] or match[2] else value


def _first_number(text: str) -> Decimal | None:
    match = NUMBER.search(text)
    return _number(match) if match else None


def extract_number(text: str) -> Decimal | None:
    """The final answer of `text` as a number (None when it has none); see the module docstring."""
    hashes = list(HASHES.finditer(text))
    if hashes:
        found = _first_number(text[hashes[-1].end() :].lstrip().split("\n", 1)[0])
        if found is not None:
            return found
    boxed = BOXED.findall(text)
    if boxed:
        found = _first_number(boxed[-1])
        if found is not None:
            return found
    marks = list(ANSWER_IS.finditer(text))
    if marks:
        found = _first_number(text[marks[-1].end() :].lstrip().split("\n", 1)[0])
        if found is not None:
            return found
    numbers = list(NUMBER.finditer(text))
    return _number(numbers[-1]) if numbers else None


def gold_number(solution: str) -> Decimal | None:
    """The gold answer of a GSM8K solution: the number after its last "####", None without one."""
    hashes = list(HASHES.finditer(solution))
    return _first_number(solution[hashes[-1].end() :].lstrip().split("\n", 1)[0]) if hashes else None


def format_number(value: Decimal) -> str:
    """Plain decimal notation without trailing zeros: 72, 1234.5, -7."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")  # "f": never exponent notation (1E+3 -> 1000)


class GSM8KTask(HFPromptTask):
    """GSM8K-style word problems with a verifiable final number.

    path / config / train_split / eval_split / sft_split / eval_path: the source, as in
    `UltraFeedbackTask`. question_field / answer_field: the problem and its worked solution.
    prompt_template: the user prompt, "{question}" replaced by the problem. seed, n_*: the
    seeded order and split sizes (None: all). max_prompt_tokens / tokenizer: optional length
    filter. dedup: drop repeated problems. unfinished_factor: reward multiplier without EOS.
    strip_calculator: remove "<<a*b=c>>" annotations from the SFT targets.
    """

    name = "gsm8k"

    def __init__(
        self,
        path: str = "openai/gsm8k",
        config: str | None = "main",
        train_split: str = "train",
        eval_split: str = "test",
        sft_split: str | None = None,
        eval_path: str | None = None,
        question_field: str = "question",
        answer_field: str = "answer",
        prompt_template: str = DEFAULT_TEMPLATE,
        seed: int = 0,
        n_train: int | None = None,
        n_eval: int | None = None,
        n_sft: int | None = None,
        max_prompt_tokens: int | None = None,
        tokenizer: str | None = None,
        dedup: bool = True,
        unfinished_factor: float = 0.5,
        strip_calculator: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        if "{question}" not in prompt_template:
            raise ValueError(f"task.prompt_template={prompt_template!r} must contain {{question}}")
        if isinstance(unfinished_factor, bool) or not isinstance(unfinished_factor, (int, float)) \
                or not 0.0 <= unfinished_factor <= 1.0:
            raise ValueError(f"task.unfinished_factor={unfinished_factor!r} must be a number in [0, 1]")
        super().__init__(path, config, train_split, eval_split, sft_split, eval_path, seed, n_train, n_eval,
                         n_sft, max_prompt_tokens, tokenizer, dedup, cache_dir)
        self.question_field, self.answer_field = question_field, answer_field
        self.prompt_template = prompt_template
        self.unfinished_factor = float(unfinished_factor)
        self.strip_calculator = strip_calculator
        # normalised prompt -> gold number, for every row of every source read so far.
        self._gold: dict[str, Decimal] = {}

    def _fields(self) -> tuple[list[str], list[str]]:
        return [self.question_field, self.answer_field], []

    def _item(self, row: dict) -> Item:
        question, solution = text_field(row, self.question_field), text_field(row, self.answer_field)
        # str.replace, not str.format: a template may contain literal braces (e.g. "\boxed{}").
        prompt = self.prompt_template.replace("{question}", question.strip())
        # The gold number is the one after "####", never a guess: "9 + 12 = 21 apples, 2 of them red."
        # would verify against 2. A row without it is left out and counted.
        gold = gold_number(solution)
        if gold is None:
            raise SkipRow(f"no '#### <number>' final answer in field {self.answer_field!r}")
        if self._gold.setdefault(normalise(prompt), gold) != gold:
            logger.warning("task gsm8k: %r appears with gold %s and %s; verifying against %s", question[:80],
                           self._gold[normalise(prompt)], gold, self._gold[normalise(prompt)])
        if self.strip_calculator:
            solution = CALCULATOR.sub("", solution)
        return prompt, solution, self.name

    def gold(self, prompt: str) -> Decimal:
        """The gold final number of a prompt of this task (any split); ValueError if unknown."""
        key = normalise(prompt)
        if key not in self._gold:
            # A stage re-run in a fresh process may verify before any split was asked for.
            for name in self.sources:
                self._source_items(name)
        if key not in self._gold:
            raise ValueError(f"prompt not in task gsm8k's data ({self.path}): {prompt[:200]!r}")
        return self._gold[key]

    def answer(self, prompt: str) -> str:
        """The gold final number as a string, e.g. "72"."""
        return format_number(self.gold(prompt))

    def verify(self, prompt: str, response: str, finished: bool = True) -> float:
        """1.0 if the response's final number equals the gold one, else 0.0; x unfinished_factor
        when the response did not finish (no EOS)."""
        pred = extract_number(response)
        reward = 1.0 if pred is not None and pred == self.gold(prompt) else 0.0
        return reward if finished else reward * self.unfinished_factor

    def is_correct(self, prompt: str, response: str, finished: bool = True) -> bool:
        """Correct = full reward: the right final number and (unless unfinished_factor is 1) EOS."""
        return self.verify(prompt, response, finished) >= 1.0

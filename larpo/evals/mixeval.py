"""MixEval / MixEval-Hard (arXiv 2406.06565), re-implemented: no package exists.

Follows the reference code of ``Psycoy/MixEval`` (commit 7c52b41): data layout
(``mix_eval/utils/dataset.py``), input prompts (``mix_eval/prompts/evaluation_prompts.py``), rule
parsers and ``[[…]]`` extraction (``mix_eval/utils/metric_utils.py``), judge calls
(``judge_freeform_parser.py``, ``judge_multichoice_parser.py``) and scoring
(``mix_eval/compute_metrics.py``). Scores are in [0, 1]: free-form items score in [0, 1] (model
parser) or 0/1 (rule parser), multiple-choice items 0/1. The overall ``score`` is MixEval's own
(``compute_metrics.py`` ~l.180 and ~l.790-804): each split's mean rounded to 3 decimals, then the two
weighted by their sizes; per source benchmark the same way. ``score_unrounded`` is the plain mean over
all items (they differ by up to 5e-4). Every item records the parser that scored it.

Chat models answer zero-shot with MixEval's ChatModel's default system message "You are a helpful
assistant." (``system_message``; MixEval's own model classes set it to None for some models, e.g.
Gemma and Mistral, whose templates refuse it); base models get a 5-shot prefix that is not reproduced
here (it is benchmark data).

One official behaviour differs on purpose: where MixEval falls back to a random letter (rule parser)
or a random score (model parser after its retries), it draws from one seeded stream in item order;
here each item draws from its own generator seeded by (seed, split, id), so a fallback's draw does not
depend on which other items fell back. Scores with no fallback (``n_random == 0``) are unaffected.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from larpo.evals.judges import ASSETS

logger = logging.getLogger(__name__)

FREE_FORM, MULTIPLE_CHOICE = "free_form", "multiple_choice"
FILES = {FREE_FORM: "free-form.json", MULTIPLE_CHOICE: "multiple-choice.json"}  # MixEval's repo layout
HUB_DATASET = "MixEval/MixEval"
MULTI_CHOICE_PROMPT = "Answer with the option letter from the given choices directly."
FREE_FORM_PROMPT = "Answer the question shortly."
STEP_BY_STEP_PROMPT = "Answer the question. \nLet's think step by step."
STEP_BY_STEP_BENCHMARKS = frozenset({"BBH", "GSM8k", "MATH"})
JUDGE_PROMPTS = ASSETS / "mixeval" / "judge_prompts.yaml"
SYSTEM_MESSAGE = "You are a helpful assistant."  # MixEval's ChatModel.SYSTEM_MESSAGE (mix_eval/models/base.py)


@dataclass(frozen=True)
class MixEvalItem:
    id: str
    split: str  # free_form | multiple_choice
    prompt: str
    context: str | None
    target: tuple  # free form: gold strings; multiple choice: (index of the right option,)
    benchmark_name: str
    options: tuple[str, ...] | None = None


def _item(split: str, item_id: Any, row: dict) -> MixEvalItem:
    target = tuple(row["target"])
    if split == MULTIPLE_CHOICE:
        target = tuple(int(t) for t in target)  # some exports store the index as a string
    options = tuple(row["options"]) if split == MULTIPLE_CHOICE else None
    return MixEvalItem(id=str(item_id), split=split, prompt=row["prompt"], context=row.get("context"),
                       target=target, benchmark_name=row["benchmark_name"], options=options)


def _from_json_folder(folder: Path) -> list[MixEvalItem]:
    items = []
    for split, filename in FILES.items():
        data = json.loads((folder / filename).read_text(encoding="utf-8"))
        # The repo's files are a dict of id -> item; accept a list too (ids then from "id" or position).
        pairs = data.items() if isinstance(data, dict) else ((r.get("id", i), r) for i, r in enumerate(data))
        items += [_item(split, i, row) for i, row in pairs]
    return items


def _from_datasets(dataset_dict: Any) -> list[MixEvalItem]:
    return [_item(split, row.get("id", i), row) for split in FILES for i, row in enumerate(dataset_dict[split])]


def load_mixeval(source: str | Path | None = None, config: str = "MixEval_Hard") -> list[MixEvalItem]:
    """MixEval items of both splits (free form first), from a local folder or the hub.

    ``source``: a folder in the repo's JSON layout (``…/mixeval-hard`` with ``free-form.json`` and
    ``multiple-choice.json``), a ``DatasetDict.save_to_disk`` folder of the hub dataset, or None
    for ``datasets.load_dataset("MixEval/MixEval", config)`` (splits ``free_form`` /
    ``multiple_choice``; config ``MixEval_Hard`` or ``MixEval``).
    """
    if source is not None:
        folder = Path(source)
        if all((folder / f).is_file() for f in FILES.values()):
            return _from_json_folder(folder)
        if (folder / "dataset_dict.json").is_file():
            from datasets import load_from_disk

            return _from_datasets(load_from_disk(str(folder)))
        raise FileNotFoundError(f"{folder}: neither MixEval's JSON layout ({', '.join(FILES.values())}) "
                                f"nor a datasets save_to_disk folder")
    try:
        from datasets import load_dataset

        return _from_datasets(load_dataset(HUB_DATASET, config))
    except Exception as err:  # offline or hub down: ask for a local copy
        raise FileNotFoundError(f"MixEval: no source folder set and loading {HUB_DATASET} ({config}) failed "
                                f"({type(err).__name__}: {err}); set source to a local copy") from None


# --- prompts (evaluation_prompts.py) ------------------------------------------------------------


def option_letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def format_options(options: Sequence[str]) -> str:
    return "\n".join(f"{letter}. {option}" for letter, option in zip(option_letters(len(options)), options))


def _has_context(context: Any) -> bool:
    # MixEval's test: str(context) is not "none"/"null" (any case) and not blank.
    text = str(context)
    return text.lower() not in ("none", "null") and text.replace(" ", "") != ""


def build_prompt(item: MixEvalItem) -> str:
    """The user message MixEval sends for an item (``construct_prompt_freeform/multichoice``)."""
    if item.split == MULTIPLE_CHOICE:
        body = f"{item.prompt}\n{format_options(item.options)}\n{MULTI_CHOICE_PROMPT}"
        return f"{item.context}\n{body}" if _has_context(item.context) else body
    if item.benchmark_name == "QuAc":
        raise NotImplementedError("MixEval has no free-form prompt for QuAc")
    instruction = STEP_BY_STEP_PROMPT if item.benchmark_name in STEP_BY_STEP_BENCHMARKS else FREE_FORM_PROMPT
    body = f"{item.prompt}\n{instruction}"
    return f"Question: {item.context}\n{body}" if _has_context(item.context) else f"Question: {body}"


# --- rule parsers (metric_utils.py) ------------------------------------------------------------

_CHOICE_PATTERNS = (" {} ", " {}\n", "\n{} ", "\n{}\n", " {}. ", " {}.\n", "\n{}. ", "\n{}.\n", "({})",
                    "**{} ", " {}**", "**{}. ", " {}.**")


def parse_multiple_choice_rule(response: str, options: Sequence[str], rng: random.Random) -> tuple[str, bool]:
    """(letter, is_random): the earliest letter in one of MixEval's patterns; else, for answers
    of more than 5 words, the earliest option text; else a random letter, as MixEval does."""
    letters = option_letters(len(options))
    text = response
    for char in ",.!?;:'":
        text = text.strip(char)
    text = f" {text} "  # so that a bare "B" matches " B "
    found = [(text.find(p.format(c)), c) for c in letters for p in _CHOICE_PATTERNS if p.format(c) in text]
    if not found and len(text.split()) > 5:
        found = [(text.lower().find(o.lower()), c) for c, o in zip(letters, options) if o.lower() in text.lower()]
    if not found:
        return rng.choice(letters), True
    return min(found)[1], False


_NUMBER_PATTERNS = (r"-?\b\d{1,3}(?:,\d{3})+\b", r"-?\d+(?:\.\d+)?[eE][+-]?\d+",
                    r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")


def _normalize(text: str) -> list[str | float]:
    text = text.strip()
    try:
        return [round(float(text.replace(",", "")), 2)]
    except ValueError:
        text = text.lower()
        return [f" {text}", f"{text} "] if len(text) == 1 else [text]  # a lone letter must not match anywhere


def _key_parts(response: str) -> list[str]:
    # The shortest tail after an indicator ("so ", "is ", "answer ", ...) of each sentence or line.
    sentences = re.split(r"\.\s(?=[A-Z])|\n", response.strip().strip(".").lower())
    keys = []
    for index, sentence in enumerate(sentences):
        indicators = _KEY_INDICATORS + (("=",) if index == len(sentences) - 1 else ())
        shortest = None
        for tail in (sentence.split(ind)[-1].strip() for ind in indicators if ind in sentence):
            # MixEval's order of updates: an empty tail is replaced by the next one, whatever its length.
            if not shortest or len(tail) < len(shortest):
                shortest = tail
        if shortest and shortest not in (":", ",", ".", "!", "?", ";", "'"):
            keys.append(shortest)
    return keys or [response.strip().strip(".").lower()]


def parse_free_form_rule(response: str) -> list[str | float]:
    """Candidate answers in a free-form response (normalised strings and numbers), MixEval's rule."""
    keys = _key_parts(response)
    candidates = list(keys) + [n for k in keys for p in _NUMBER_PATTERNS for n in re.findall(p, k)]
    return list({v: None for c in candidates for v in _normalize(c)})


def free_form_rule_correct(targets: Sequence[str], predictions: Sequence[str | float]) -> bool:
    """A string gold answer inside a string prediction, or an equal number (MixEval's ``eval_freeform_rule``)."""
    golds = [g for t in targets for g in _normalize(str(t))]
    for pred in predictions:
        if isinstance(pred, str) and any(isinstance(g, str) and g in pred for g in golds):
            return True
        if not isinstance(pred, str) and pred in golds:
            return True
    return False


# --- model parser (judge_*_parser.py) ----------------------------------------------------------


def extract_option(judgment: str) -> str | None:
    """The letter in ``[[X]]`` (else ``[X]``), MixEval's ``get_option_from_judge``; None if absent."""
    match = re.search(r"\[\[([A-Z])\]\]", judgment) or re.search(r"\[([A-Z])\]", judgment)
    return match.group(1) if match else None


def extract_score(judgment: str) -> float | None:
    """The score in ``[[s]]`` (else ``[s]``) when 0 <= s <= 1, MixEval's ``get_score_from_judge``."""
    match = re.search(r"\[\[(\d+\.?\d*)\]\]", judgment) or re.search(r"\[(\d+\.?\d*)\]", judgment)
    score = float(match.group(1)) if match else None
    return score if score is not None and 0.0 <= score <= 1.0 else None


def load_judge_prompts(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    import yaml

    return yaml.safe_load(Path(path or JUDGE_PROMPTS).read_text(encoding="utf-8"))


def judge_messages(item: MixEvalItem, response: str, prompts: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    """The judge's chat for an item: the item's bare ``prompt`` (no context), gold answers as
    ``<answer 1> a; <answer 2> b`` or the lettered options, and the model's answer."""
    values = {"question": item.prompt, "response": response}
    if item.split == FREE_FORM:
        values["gold"] = "; ".join(f"<answer {i + 1}> {a}" for i, a in enumerate(item.target))
    else:
        values["options"] = format_options(item.options)
    template = prompts[item.split]
    # One pass over the template, so a placeholder-like text inside an answer is never substituted.
    user = re.sub(r"\{(question|gold|options|response)\}", lambda m: values[m.group(1)], template["user"])
    return [{"role": "system", "content": template["system"]}, {"role": "user", "content": user}]


def _judge_all(items: Sequence[MixEvalItem], answers: Sequence[str], judge: Any, prompts: dict,
               retries: int) -> list[str | float | None]:
    """Parsed judgments; unparsable ones are asked again (MixEval: up to 10 rounds), then None."""
    parsed: list[str | float | None] = [None] * len(items)
    todo = list(range(len(items)))
    for _ in range(max(1, retries)):
        texts = judge.complete([judge_messages(items[i], answers[i], prompts) for i in todo])
        for i, text in zip(todo, texts):
            parsed[i] = extract_score(text) if items[i].split == FREE_FORM else extract_option(text)
        todo = [i for i in todo if parsed[i] is None]
        if not todo:
            break
    return parsed


# --- scoring (compute_metrics.py) --------------------------------------------------------------


def _score_item(item: MixEvalItem, answer: str, parsed: Any, parser: str, rng: random.Random) -> dict:
    if item.split == MULTIPLE_CHOICE:
        is_random = parsed is None
        if parser == "rule":
            parsed, is_random = parse_multiple_choice_rule(answer, item.options, rng)
        elif is_random:
            parsed = rng.choice(option_letters(len(item.options)))
        score = float(parsed == option_letters(len(item.options))[item.target[0]])
    elif parser == "rule":
        parsed, is_random = parse_free_form_rule(answer), False
        score = float(free_form_rule_correct(item.target, parsed))
    else:
        is_random = parsed is None  # MixEval: a random score in {0.0, 0.1, ..., 1.0} after the retries
        score = parsed = round(rng.random(), 1) if is_random else parsed
    return {"id": item.id, "split": item.split, "benchmark_name": item.benchmark_name, "score": score,
            "parsed": parsed, "parser": f"{parser}:random" if is_random else parser}


def official_scores(records: Sequence[dict]) -> dict[str, float]:
    """MixEval's aggregation (``compute_metrics.py``): within each split, the mean of every key (``overall``
    and each ``benchmark_name``) rounded to 3 decimals; then each key over the splits as
    ``ff * (n_ff / (n_ff + n_mc)) + mc * (n_mc / (n_ff + n_mc))`` with the key's item counts."""
    lists: dict[str, dict[str, list[float]]] = {FREE_FORM: defaultdict(list), MULTIPLE_CHOICE: defaultdict(list)}
    for r in records:
        lists[r["split"]]["overall"].append(r["score"])
        lists[r["split"]][r["benchmark_name"]].append(r["score"])
    means = {split: {k: round(sum(v) / len(v), 3) for k, v in keys.items()} for split, keys in lists.items()}
    counts = {split: {k: len(v) for k, v in keys.items()} for split, keys in lists.items()}
    ff, mc = FREE_FORM, MULTIPLE_CHOICE
    out = {}
    for k in set(means[ff]) | set(means[mc]):
        n_ff, n_mc = counts[ff].get(k, 0), counts[mc].get(k, 0)
        out[k] = means[ff].get(k, 0) * (n_ff / (n_ff + n_mc)) + means[mc].get(k, 0) * (n_mc / (n_ff + n_mc))
    return out


def evaluate_mixeval(items: Sequence[MixEvalItem], answers: Sequence[str], parser: str = "rule", judge: Any = None,
                     seed: int = 0, judge_retries: int = 10, judge_prompts: str | Path | None = None,
                     max_random_share: float | None = None) -> dict[str, Any]:
    """Score answers MixEval's way. ``parser``: ``rule`` (offline; MixEval calls it less stable) or
    ``model`` (``judge.complete`` on MixEval-style judge prompts, ``[[…]]`` extraction).

    Returns score (MixEval's aggregation: :func:`official_scores`), score_unrounded (mean over all items),
    per_split (rounded means), per_benchmark (by ``benchmark_name``, MixEval's aggregation), n, n_per_split,
    n_per_benchmark, parser, judge (name or None), judge_prompts, n_random (items scored by the random
    fallback) and ``records`` (one per item).

    ``max_random_share`` (model parser): when more than this share of the items fell back to a random
    draw (the judge's verdict unreadable after ``judge_retries`` asks), score, per_split and
    per_benchmark are withheld (None / empty) and ``score_withheld`` says why: such a number measures
    the draws, not the policy. The rule parser's fallbacks are MixEval's own metric, always reported.
    """
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} MixEval items but {len(answers)} answers")
    if parser not in ("rule", "model"):
        raise ValueError(f"MixEval parser must be 'rule' or 'model', got {parser!r}")
    if parser == "model" and judge is None:
        raise ValueError("MixEval parser=model needs a judge (MixEval's default: gpt-3.5-turbo-0125)")
    parsed = [None] * len(items)
    if parser == "model":
        parsed = _judge_all(items, answers, judge, load_judge_prompts(judge_prompts), judge_retries)
    # Per-item generators: a fallback's draw does not depend on which other items fell back.
    records = [_score_item(it, a, p, parser, random.Random(f"{seed}:{it.split}:{it.id}"))
               for it, a, p in zip(items, answers, parsed)]
    by_split, by_bench = defaultdict(list), defaultdict(list)
    for r in records:
        by_split[r["split"]].append(r["score"])
        by_bench[r["benchmark_name"]].append(r["score"])
    scores = [r["score"] for r in records]
    n_random = sum(r["parser"].endswith(":random") for r in records)
    official = official_scores(records)
    out = {"score": official.get("overall", float("nan")),
           "score_unrounded": sum(scores) / len(scores) if scores else float("nan"),
           "per_split": {k: round(sum(v) / len(v), 3) for k, v in by_split.items()},
           "per_benchmark": {k: official[k] for k in sorted(by_bench)},
           "n": len(records), "n_per_split": {k: len(v) for k, v in by_split.items()},
           "n_per_benchmark": {k: len(v) for k, v in sorted(by_bench.items())}, "parser": parser,
           "judge": judge.name if (judge is not None and parser == "model") else None,
           "judge_prompts": str(judge_prompts or "larpo") if parser == "model" else None,
           "n_random": n_random, "records": records}
    if parser == "model" and max_random_share is not None and records and n_random / len(records) > max_random_share:
        out["score_withheld"] = (
            f"{n_random} of {len(records)} items fell back to a random draw (the judge's verdict could not be read "
            f"after {judge_retries} asks), more than max_random_share={max_random_share:g}: the score measures the "
            "draws, not the policy; see the records' 'parser' field and the judge's replies")
        logger.warning("MixEval: %s", out["score_withheld"])
        out.update(score=None, score_unrounded=None, per_split={}, per_benchmark={})
    return out


class MixEval:
    """The ``eval`` node for MixEval(-Hard): ``MixEval(...)(generate_fn) -> dict``; ``generate_fn(prompts,
    system=...)`` answers each prompt after the system message (``system_message``; None sends none)."""

    def __init__(self, source: str | None = None, config: str = "MixEval_Hard", parser: str = "rule",
                 judge: Any = None, max_items: int | None = None, seed: int = 0, judge_retries: int = 10,
                 judge_prompts: str | None = None, system_message: str | None = SYSTEM_MESSAGE,
                 max_random_share: float | None = 0.1) -> None:
        if parser == "model" and judge is None:  # fail before any generation work
            raise ValueError("MixEval parser=model needs a judge")
        self.source, self.config, self.parser, self.judge = source, config, parser, judge
        self.max_items, self.seed, self.judge_retries = max_items, seed, judge_retries
        self.judge_prompts, self.system_message = judge_prompts, system_message
        self.max_random_share = max_random_share
        self.name = "mixeval_hard" if config == "MixEval_Hard" else "mixeval"

    def check(self) -> None:
        """Start-up: the items load (a local folder, or the hub), the judge prompts too, and a model parser
        has a judge that writes its verdicts."""
        if self.parser == "model" and not getattr(self.judge, "writes_text", True):
            raise ValueError(f"MixEval parser=model needs a judge that writes its verdict; judge "
                             f"{self.judge.name!r} only ranks pairs (use parser=rule, or judge=gpt35_turbo, "
                             "openai_compatible, hf_local)")
        if not load_mixeval(self.source, self.config):
            raise ValueError(f"MixEval: no items in {self.source or HUB_DATASET}")
        if self.parser == "model":
            load_judge_prompts(self.judge_prompts)

    def __call__(self, generate_fn: Callable[..., list[str]], generator_name: str | None = None) -> dict:
        from larpo.errors import ConfigError, SystemMessageError

        items = load_mixeval(self.source, self.config)[: self.max_items]
        try:
            answers = list(generate_fn([build_prompt(it) for it in items], system=self.system_message))
        except SystemMessageError as e:
            raise ConfigError(f"{self.name}: {e}; MixEval sends no system message to such models: set "
                             f"eval.{self.name}.system_message=null") from None
        out = evaluate_mixeval(items, answers, self.parser, self.judge, self.seed, self.judge_retries,
                               self.judge_prompts, self.max_random_share)
        for record, it, answer in zip(out["records"], items, answers):
            record.update(prompt=build_prompt(it), answer=answer)
        return out | {"benchmark": self.name, "generator": generator_name, "subset": self.max_items is not None,
                      "system_message": self.system_message}


def item_dict(item: MixEvalItem) -> dict[str, Any]:
    """An item as a plain dict (e.g. for a W&B table or a JSONL dump)."""
    return asdict(item)

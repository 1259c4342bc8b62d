"""Prompt data from the Hugging Face hub or local files, and what the hub-backed tasks share.

`load_rows` reads one split of a dataset, wherever it lives:
  * a hub id ("openai/gsm8k"): `datasets.load_dataset(path, config, split=...)` (cached offline
    copies work with HF_HUB_OFFLINE=1);
  * a local .json / .jsonl / .parquet / .csv file: one split, so `split` is ignored;
  * a folder written by `save_to_disk`: a Dataset (one split) or a DatasetDict (pick `split`);
  * any other local folder (e.g. a downloaded hub snapshot): `datasets.load_dataset(folder, ...)`.

`HFPromptTask` turns rows into the `Example` splits of a task: de-duplication of identical
prompts, the paper's prompt-length filter (tokens of the policy's tokenizer), a seeded order
and the exclusion of eval prompts from the other splits. Loading is lazy (on the first
`split()` call) because Hydra instantiates tasks at start-up, before any stage needs data.

Prompt ids are "<split>-<sha256 of the whitespace-normalised prompt, 12 hex digits>": a pure
function of the prompt text, so they are stable across processes, seeds, sizes and
additions to the source (unlike "<split>-<index>", which shifts when rows are added).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from larpo.errors import RowError, TaskDataError, TaskDataMissing, TaskDataOffline
from larpo.tasks.base import Example

logger = logging.getLogger(__name__)

# datasets' builder for each local file type we read.
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
# A path ending in one of these is meant to be local, never a hub id.
LOCAL_SUFFIXES = {*FILE_BUILDERS, ".arrow", ".tsv", ".txt", ".gz", ".zst", ".zip"}
SPLITS = ("sft", "train", "eval")


def _looks_local(path: str) -> bool:
    return (
        os.path.isabs(path)
        or path.startswith(("./", "../", "~", ".\\", "..\\"))
        or Path(path).suffix.lower() in LOCAL_SUFFIXES
    )


def load_rows(
    path: str,
    split: str | None = None,
    config: str | None = None,
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    cache_dir: str | None = None,
) -> list[dict]:
    """Rows (dicts) of one split of the dataset at `path` (a hub id, a file or a folder).

    `required` fields must exist (else ValueError naming the field and the fields present);
    `optional` ones are kept when present. Only these fields are returned, so wide columns
    nobody asked for (e.g. UltraFeedback's rejected responses) are never materialised; with
    neither given, every field is. `cache_dir` is where datasets keeps its conversions.
    """
    local = Path(path).expanduser()
    if local.exists():
        ds = _load_local(local, split, config, cache_dir)
    elif _looks_local(path):
        raise TaskDataMissing(f"no such file or folder: {local.absolute()}")
    else:
        ds = _load_hub(path, split, config, cache_dir)
    if isinstance(ds.column_names, dict):  # a DatasetDict: no split was named
        raise TaskDataError(f"{path} has several splits; name one of {sorted(ds)}")
    return _select_fields(ds, f"{path} [{split}]", required, optional)


def _json_problem(path: Path) -> str | None:
    """Where a .json/.jsonl file stops being JSON (``path:line: ...``), None if it parses."""
    import json

    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        json.loads(text)  # one JSON document (a list of rows, or datasets' {"data": [...]})
        return None
    except json.JSONDecodeError:
        pass
    for lineno, line in enumerate(text.splitlines(), start=1):  # JSON Lines: one object a line
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            return f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})"
        if not isinstance(row, dict):
            return f"{path}:{lineno}: expected a JSON object (one row) per line, got {type(row).__name__}"
    return None


def _load_file(path: Path, builder: str, cache_dir: str | None):
    """One local file through ``datasets``; an empty or malformed file is named with the fix, never
    datasets' bare StopIteration or DatasetGenerationError."""
    import datasets

    fix = "fix the file or point task.path (task.eval_path) at another one"
    if not path.read_bytes().strip():
        raise TaskDataError(f"{path}: the file is empty; it should hold the task's rows (prompts); {fix}")
    try:
        # A file holds a single split: datasets names it "train" whatever was asked.
        return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir)
    except (Exception, StopIteration) as e:  # noqa: BLE001  (datasets and pyarrow have no common base)
        where = _json_problem(path) if builder == "json" else None
        cause = e.__cause__ or e
        raise TaskDataError(f"{where or f'{path}: cannot be read as a {builder} file'}"
                            f"{'' if where else f' ({type(cause).__name__}: {cause})'}; {fix}") from None


def _load_local(path: Path, split: str | None, config: str | None, cache_dir: str | None):
    import datasets

    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise TaskDataError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(FILE_BUILDERS)}")
        return _load_file(path, builder, cache_dir)
    if (path / "dataset_dict.json").exists():
        dd = datasets.load_from_disk(str(path))
        if split not in dd:
            raise TaskDataError(f"{path} has no split {split!r}; available splits: {sorted(dd)}")
        return dd[split]
    if (path / "state.json").exists():  # save_to_disk of a single Dataset: one split
        return datasets.load_from_disk(str(path))
    # Any other folder (a hub snapshot, data files): datasets resolves it like a hub repo.
    return datasets.load_dataset(str(path), config, split=split, cache_dir=cache_dir)


def _load_hub(path: str, split: str | None, config: str | None, cache_dir: str | None):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    hint = (
        f"download it where there is a network (`datasets.load_dataset({path!r}, {config!r})"
        f".save_to_disk(dir)`) and pass task.path=<dir>"
    )
    try:
        return datasets.load_dataset(path, config, split=split, cache_dir=cache_dir)
    except (ConnectionError, TimeoutError) as err:  # OfflineModeIsEnabled is a ConnectionError too
        raise TaskDataOffline(
            f"could not load dataset '{path}' from the Hugging Face hub (no network?) — {hint}"
        ) from err
    except DatasetNotFoundError as err:
        raise TaskDataMissing(
            f"dataset '{path}' is neither a local file or folder nor found on the Hugging Face hub "
            f"(misspelt, gated without `hf auth login`, or no network?) — {hint}"
        ) from err


def _select_fields(ds, source: str, required: Sequence[str], optional: Sequence[str]) -> list[dict]:
    present = list(ds.column_names)
    for name in required:
        if name not in present:
            raise TaskDataError(f"{source}: no field {name!r}; the fields present are {present}")
    wanted = [c for c in (*required, *optional) if c in present]
    if wanted:
        ds = ds.select_columns(list(dict.fromkeys(wanted)))
    return ds.to_list()


def normalise(text: str) -> str:
    """Whitespace-normalised text: the identity of a prompt for de-duplication and exclusion."""
    return " ".join(text.split())


def prompt_id(split: str, prompt: str) -> str:
    """Stable id of a prompt: "<split>-" + 12 hex digits of sha256(normalised prompt)."""
    return f"{split}-{hashlib.sha256(normalise(prompt).encode()).hexdigest()[:12]}"


def seeded_key(seed: int, prompt: str) -> str:
    """Sort key of the seeded shuffle. Each prompt's place depends only on (seed, text), so
    rows added to the source do not reshuffle the others and source row order is irrelevant."""
    return hashlib.sha256(f"{seed}:{normalise(prompt)}".encode()).hexdigest()


class PromptLengthFilter:
    """Counts prompt tokens with the policy's tokenizer, loaded lazily, once.

    A prompt is counted as the model will see it: rendered with the tokenizer's chat template
    (`apply_chat_template(..., add_generation_prompt=True)`, then encoded without extra
    special tokens, as larpo.model.prompt_ids renders it); a tokenizer without a template counts the raw text with
    its special tokens.
    """

    def __init__(self, tokenizer: str, max_tokens: int) -> None:
        self.name, self.max_tokens = tokenizer, max_tokens
        self._tok = None

    def lengths(self, prompts: Sequence[str]) -> list[int]:
        """Token counts of `prompts`."""
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.name)
        tok = self._tok
        if getattr(tok, "chat_template", None):
            texts = [
                tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                for p in prompts
            ]
            return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        return [len(ids) for ids in tok(list(prompts), add_special_tokens=True)["input_ids"]]

    def keep(self, prompts: Sequence[str]) -> list[bool]:
        """Whether each prompt fits in `max_tokens`."""
        return [n <= self.max_tokens for n in self.lengths(prompts)]


# A row as a task sees it: (prompt, answer, family); an empty prompt drops the row.
Item = tuple[str, str, str]


class SkipRow(Exception):  # noqa: N818  (a signal to the loader, not an error)
    """A row the task leaves out, for a stated reason that is counted and logged (``dropped: 3 <reason>``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def text_field(row: dict, name: str) -> str:
    """A text field of a row: a string, or null (= empty); anything else is a :class:`RowError`."""
    value = row.get(name)
    if value is None or isinstance(value, str):
        return value or ""
    raise RowError(f"field {name!r} is {type(value).__name__} {short(value)}, expected a string")


def short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_size(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"task.{name}={value!r} must be a positive integer or null (all)")


def _dedup(items: list[Item]) -> tuple[list[Item], int]:
    """First occurrence of each normalised prompt, in source order, and how many were dropped."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = normalise(item[0])
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out, len(items) - len(out)


def _examples(split: str, items: list[Item]) -> list[Example]:
    """Examples with text-derived ids; a repeated id (dedup off, or a hash collision) gets
    "-2", "-3", ... in order, so ids stay unique keys of the run-directory files."""
    used: dict[str, int] = {}
    out = []
    for prompt, answer, family in items:
        base = prompt_id(split, prompt)
        used[base] = used.get(base, 0) + 1
        out.append(Example(base if used[base] == 1 else f"{base}-{used[base]}", prompt, answer, family))
    return out


class HFPromptTask:
    """Base of the tasks whose prompts come from a dataset; see the module docstring.

    Splits: "eval" from (eval_path or path, eval_split); "train" from (path, train_split);
    "sft" from (path, sft_split or train_split), rows without an answer dropped. Each split:
    rows -> de-duplicated (normalised prompt, first occurrence kept) -> eval prompts removed
    (train and sft) -> seeded order -> prompts over `max_prompt_tokens` dropped -> first n.
    A single-file source serves every split: eval is then its first n_eval prompts in the
    seeded order and train/sft the rest. Subclasses define `name`, `_fields` and `_item`.
    """

    name = "hf"

    def __init__(
        self, path: str, config: str | None, train_split: str, eval_split: str, sft_split: str | None,
        eval_path: str | None, seed: int, n_train: int | None, n_eval: int | None, n_sft: int | None,
        max_prompt_tokens: int | None, tokenizer: str | None, dedup: bool, cache_dir: str | None,
    ) -> None:
        for key, value in (("n_train", n_train), ("n_eval", n_eval), ("n_sft", n_sft),
                           ("max_prompt_tokens", max_prompt_tokens)):
            _check_size(key, value)
        self.path, self.config, self.seed, self.dedup, self.cache_dir = path, config, seed, dedup, cache_dir
        self.sources = {"eval": (eval_path or path, eval_split), "train": (path, train_split),
                        "sft": (path, sft_split or train_split)}
        self.sizes = {"eval": n_eval, "train": n_train, "sft": n_sft}
        self.max_prompt_tokens = max_prompt_tokens
        self.length_filter = PromptLengthFilter(tokenizer, max_prompt_tokens) if tokenizer and max_prompt_tokens else None
        # Nothing is read here: Hydra builds the task at start-up, before any stage needs data.
        self._items: dict[tuple[str, str], list[Item]] = {}
        self._skipped: dict[tuple[str, str], dict[str, int]] = {}  # rows left out, by reason (SkipRow)
        self._cache: dict[str, list[Example]] = {}

    def _fields(self) -> tuple[list[str], list[str]]:
        """(required, optional) dataset fields that `_item` reads."""
        raise NotImplementedError

    def _item(self, row: dict) -> Item:
        """(prompt, answer, family) of one dataset row."""
        raise NotImplementedError

    def split(self, name: str) -> list[Example]:
        """Examples of split `name` ("sft" | "train" | "eval"), loaded on first use and cached."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose from {list(SPLITS)}")
        if name not in self._cache:
            # Eval is prepared first so train and sft can exclude its prompts (eval measures
            # generalisation to prompts never trained on).
            exclude = set() if name == "eval" else {normalise(e.prompt) for e in self.split("eval")}
            self._cache[name] = self._prepare(name, exclude)
        return self._cache[name]

    def _source_items(self, name: str) -> list[Item]:
        key = self.sources[name]
        if key not in self._items:  # train and sft often share a source: read it once
            required, optional = self._fields()
            rows = load_rows(key[0], key[1], self.config, required, optional, self.cache_dir)
            items, skipped = [], {}
            for i, row in enumerate(rows, start=1):
                try:
                    items.append(self._item(row))
                except SkipRow as skip:
                    skipped.setdefault(skip.reason, []).append(i)
                except RowError as e:
                    raise TaskDataError(f"task {self.name}: {key[0]} [{key[1]}] row {i}: {e}; fix the data, or "
                                        "name the right field (task.*_field)") from None
            for reason, where in skipped.items():
                shown = ", ".join(map(str, where[:5])) + (", ..." if len(where) > 5 else "")
                logger.warning("task %s: %d of %d rows of %s [%s] left out: %s (rows %s)", self.name, len(where),
                               len(rows), key[0], key[1], reason, shown)
            self._items[key], self._skipped[key] = items, {r: len(w) for r, w in skipped.items()}
        return self._items[key]

    def _prepare(self, name: str, exclude: set[str]) -> list[Example]:
        items = self._source_items(name)
        dropped: dict[str, int] = dict(self._skipped.get(self.sources[name], {}))

        def drop(reason: str, keep: Callable[[Item], bool]) -> None:
            nonlocal items
            kept = [it for it in items if keep(it)]
            dropped[reason] = len(items) - len(kept)
            items = kept

        drop("empty prompt", lambda it: bool(it[0].strip()))
        if name == "sft":
            drop("no answer", lambda it: bool(it[1].strip()))
        if self.dedup:
            items, dropped["duplicate"] = _dedup(items)
        drop("in eval", lambda it: normalise(it[0]) not in exclude)
        items.sort(key=lambda it: seeded_key(self.seed, it[0]))
        items, dropped[f"over {self.max_prompt_tokens} tokens"] = self._take(items, self.sizes[name])
        examples = _examples(name, items)
        self._check_and_log(name, examples, dropped)
        return examples

    def _take(self, items: list[Item], n: int | None) -> tuple[list[Item], int]:
        """The first n items that fit the length limit, and how many were dropped on the way.
        Only as many prompts are tokenised as it takes to find n (UltraFeedback has 61k)."""
        if self.length_filter is None:
            return items[:n], 0
        kept: list[Item] = []
        dropped, chunk = 0, 1024
        for start in range(0, len(items), chunk):
            if n is not None and len(kept) >= n:
                break
            block = items[start : start + chunk]
            fits = self.length_filter.keep([it[0] for it in block])
            kept += [item for item, ok in zip(block, fits) if ok]
            dropped += fits.count(False)
        return kept[:n], dropped

    def _check_and_log(self, name: str, examples: list[Example], dropped: dict[str, int]) -> None:
        path, split = self.sources[name]
        why = ", ".join(f"{n} {reason}" for reason, n in dropped.items() if n) or "none"
        if not examples:
            raise TaskDataError(f"task {self.name}: split {name!r} from {path} [{split}] is empty (dropped: {why}); "
                             f"check task.path / task.{name}_split, or lower task.n_eval if eval took every prompt")
        logger.info("task %s: %s split from %s [%s]: %d examples (dropped: %s)",
                    self.name, name, path, split, len(examples), why)
        if self.sizes[name] is not None and len(examples) < self.sizes[name]:
            logger.warning("task %s: n_%s=%d asked, only %d prompts available", self.name, name,
                           self.sizes[name], len(examples))
        if self.max_prompt_tokens and self.length_filter is None and name == "eval":  # eval comes first: once
            logger.warning("task %s: no tokenizer given, so prompts are not filtered by length "
                           "(max_prompt_tokens=%d needs task.tokenizer)", self.name, self.max_prompt_tokens)

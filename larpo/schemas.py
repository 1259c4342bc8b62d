"""Validating readers of the run-directory artifacts (docs/design.md, "Run directory contract").

Every stage reads its inputs through :func:`read_table`: each line is checked against the
artifact's schema — field types, finite numbers, list fields of one length, the number of
candidates, unique prompt ids — and cross-file checks (:func:`check_ids`) match rows of two
files by prompt id. Errors are :class:`~larpo.artifacts.ArtifactError` naming file, line and
field, so a bad file stops the stage before it computes anything from it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from larpo.artifacts import iter_jsonl_lines
from larpo.errors import ArtifactError


def _is_number(v: Any) -> bool:
    # bool is an int in Python, but `true` is not a reward.
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Kind:
    """A field type: its name in messages and its check (``item`` set for list kinds)."""

    name: str
    check: Callable[[Any], bool]
    item: Kind | None = None


STR = Kind("a string", lambda v: isinstance(v, str))
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
NUMBER = Kind("a finite number", _is_number)
OBJECT = Kind("a JSON object", lambda v: isinstance(v, dict))
INT = Kind("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))


def list_of(item: Kind) -> Kind:
    return Kind(f"a list of ({item.name})", lambda v: isinstance(v, list), item)


@dataclass(frozen=True)
class Schema:
    """Fields of one artifact; ``candidates``: list fields holding one entry per candidate."""

    fields: dict[str, Kind]
    candidates: tuple[str, ...] = ()
    optional: dict[str, Kind] = field(default_factory=dict)  # checked when present


GENERATIONS = Schema(
    {"prompt_id": STR, "prompt": STR, "responses": list_of(STR), "finished": list_of(BOOL), "sampling": OBJECT},
    candidates=("responses", "finished"),
)
SCORES = Schema({"prompt_id": STR, "rewards": list_of(NUMBER), "reward_model": STR}, candidates=("rewards",))
LISTS = Schema(
    {"prompt_id": STR, "prompt": STR, "responses": list_of(STR), "finished": list_of(BOOL),
     "rewards": list_of(NUMBER), "ref_logps": list_of(NUMBER)},
    candidates=("responses", "finished", "rewards", "ref_logps"),
    optional={"source_rounds": list_of(INT)},  # select.pool other than current: each candidate's round
)
EVAL_OUTPUTS = Schema({"prompt_id": STR, "family": STR, "response": STR, "finished": BOOL, "reward": NUMBER},
                      optional={"correct": BOOL, "tokens": INT})


@dataclass
class Table:
    """The validated rows of one JSONL artifact, with the line each came from."""

    path: Path
    rows: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def where(self, i: int) -> str:
        return f"{self.path}:{self.lines[i]}"

    def index(self) -> dict[str, int]:
        """Row position of each prompt id."""
        return {row["prompt_id"]: i for i, row in enumerate(self.rows)}

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)


def _check_field(name: str, value: Any, kind: Kind) -> str | None:
    """None if ``value`` is a ``kind``, else what is wrong with it."""
    if not kind.check(value):
        return f"field {name!r} is {json_repr(value)}, expected {kind.name}"
    if kind.item is not None:
        for j, item in enumerate(value):
            if not kind.item.check(item):
                return f"field {name!r}: element {j} is {json_repr(item)}, expected {kind.item.name}"
    return None


def json_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_row(row: dict, schema: Schema, n_candidates: tuple[int, int | None]) -> str | None:
    missing = [k for k in schema.fields if k not in row]
    if missing:
        return f"missing field(s) {missing}"
    present = {**schema.fields, **{k: v for k, v in schema.optional.items() if k in row}}
    for name, kind in present.items():
        problem = _check_field(name, row[name], kind)
        if problem:
            return problem
    if schema.candidates:
        sizes = {k: len(row[k]) for k in schema.candidates}
        if len(set(sizes.values())) > 1:
            return "fields of one entry per candidate differ in length (" + ", ".join(
                f"{k} {n}" for k, n in sizes.items()) + ")"
        n = next(iter(sizes.values()))
        lo, hi = n_candidates
        if n < lo or (hi is not None and n > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            return f"{n} candidate(s), expected {want}"
    return None


def read_table(path: str | os.PathLike, schema: Schema, n_candidates: tuple[int, int | None] = (1, None)) -> Table:
    """Read and validate a JSONL artifact; ``n_candidates``: (min, max or None) per row."""
    table = Table(Path(path))
    seen: dict[str, int] = {}
    for lineno, row in iter_jsonl_lines(path):
        problem = _check_row(row, schema, n_candidates)
        if problem:
            raise ArtifactError(f"{path}:{lineno}: {problem}")
        pid = row.get("prompt_id")
        if pid in seen:
            raise ArtifactError(f"{path}:{lineno}: prompt_id {pid!r} appears again (first on line {seen[pid]})")
        seen[pid] = lineno
        table.rows.append(row)
        table.lines.append(lineno)
    if not table.rows:
        raise ArtifactError(f"{path}: no rows (the stage that writes it was interrupted or given nothing)")
    return table


def check_ids(table: Table, reference: Table, exact: bool = True) -> None:
    """Every prompt id of ``table`` is in ``reference`` (and, if ``exact``, the other way round)."""
    known = reference.index()
    for i, row in enumerate(table.rows):
        if row["prompt_id"] not in known:
            raise ArtifactError(f"{table.where(i)}: prompt_id {row['prompt_id']!r} is not in {reference.path}")
    if exact and len(table) != len(reference):
        have = set(table.index())
        lost = next(i for i, row in enumerate(reference.rows) if row["prompt_id"] not in have)
        raise ArtifactError(
            f"{table.path}: no row for prompt_id {reference.rows[lost]['prompt_id']!r} of {reference.where(lost)}"
        )


def check_candidates(table: Table, reference: Table, key: str, ref_key: str) -> None:
    """Row by row (matched by prompt id), ``key`` has one entry per ``ref_key`` entry of ``reference``."""
    pos = reference.index()
    for i, row in enumerate(table.rows):
        other = reference.rows[pos[row["prompt_id"]]]
        if len(row[key]) != len(other[ref_key]):
            raise ArtifactError(
                f"{table.where(i)}: field {key!r} has {len(row[key])} entries for the {len(other[ref_key])} "
                f"{ref_key} of {reference.where(pos[row['prompt_id']])}"
            )

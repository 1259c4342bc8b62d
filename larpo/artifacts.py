"""Run-directory layout and atomic I/O (DESIGN §3).

Every stage reads and writes only the files named here. Writes go to ``*.tmp`` and are
moved into place with ``os.replace`` so a killed process never leaves a half-written
artifact behind; a stage's ``.done/<stage>`` marker is written last.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

STAGES = ("sft", "generate", "score", "select", "train", "evaluate")


class ArtifactError(ValueError):
    """A run-directory file is missing or malformed; the message names the file (and line)."""


class RunDir:
    """Paths of one run directory. Pure path arithmetic: nothing is created on construction."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def round_dir(self, r: int) -> Path:
        return self.root / f"round_{r}"

    def generations(self, r: int) -> Path:
        return self.round_dir(r) / "generations.jsonl"

    def scores(self, r: int) -> Path:
        return self.round_dir(r) / "scores.jsonl"

    def lists(self, r: int) -> Path:
        return self.round_dir(r) / "lists.jsonl"

    def checkpoint(self, r: int) -> Path:
        return self.round_dir(r) / "checkpoint"

    def eval(self, r: int) -> Path:
        return self.round_dir(r) / "eval.json"

    def eval_outputs(self, r: int) -> Path:
        """Greedy held-out responses and rewards (needed for win rates against round 0)."""
        return self.round_dir(r) / "eval_outputs.jsonl"

    def train_log(self, r: int) -> Path:
        return self.round_dir(r) / "train.json"

    def marker(self, r: int, stage: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; choose from {list(STAGES)}")
        return self.round_dir(r) / ".done" / stage

    def is_done(self, r: int, stage: str) -> bool:
        return self.marker(r, stage).exists()

    def mark_done(self, r: int, stage: str) -> None:
        write_text(self.marker(r, stage), "")

    def clear_done(self, r: int, stage: str) -> None:
        self.marker(r, stage).unlink(missing_ok=True)


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically (tmp file + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing artifact: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"malformed JSON in {path}: {e}") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def iter_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[dict]:
    """Yield the rows of a JSONL file; a bad line raises ArtifactError naming file and line."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing artifact: {path} (an earlier stage writes it; run without stage= first)")
    required = tuple(required)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ArtifactError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None
            if not isinstance(row, dict):
                raise ArtifactError(f"{path}:{lineno}: expected a JSON object per line")
            missing = [k for k in required if k not in row]
            if missing:
                raise ArtifactError(f"{path}:{lineno}: missing field(s) {missing}")
            yield row


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    return list(iter_jsonl(path, required))


class JsonlJournal:
    """Append-only journal of a stage's partial output (``<file>.partial``).

    A long stage appends one batch at a time; after a crash the complete lines are read
    back and the stage continues where it stopped. ``commit`` moves it into place atomically.
    """

    def __init__(self, final: str | os.PathLike) -> None:
        self.final = Path(final)
        self.path = self.final.with_name(self.final.name + ".partial")

    def completed(self) -> list[dict]:
        """Rows fully written before an interruption; a torn last line is dropped."""
        if not self.path.exists():
            return []
        rows = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # torn write: the process died mid-line
                rows.append(json.loads(line))
        # Rewrite without the torn tail so appends start on a line boundary.
        write_jsonl(self.path, rows)
        return rows

    def append(self, rows: Iterable[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(row) + "\n" for row in rows))
            f.flush()
            os.fsync(f.fileno())

    def commit(self) -> None:
        os.replace(self.path, self.final)

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


def _write_all(f, data: bytes) -> None:
    """Every artifact byte goes through here (one seam for fault injection in the tests)."""
    f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically (tmp file + fsync + os.replace); a failed write leaves no tmp."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as f:
            _write_all(f, text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def dump_jsonl(rows: Iterable[dict]) -> str:
    # allow_nan=False: NaN/inf are not JSON; refusing them here keeps every artifact readable.
    return "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    write_text(path, dump_jsonl(rows))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def iter_jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row) of a JSONL file; a bad line raises ArtifactError naming file and line."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing artifact: {path} (an earlier stage writes it; run without stage= first)")
    with open(path, "rb") as f:  # bytes, decoded line by line, so a bad byte is reported on its own line
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ArtifactError(f"{path}:{lineno}: not UTF-8 text ({e.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line, parse_constant=_reject_constant)
            except (json.JSONDecodeError, ValueError) as e:
                raise ArtifactError(f"{path}:{lineno}: malformed JSON line ({getattr(e, 'msg', e)})") from None
            if not isinstance(row, dict):
                raise ArtifactError(f"{path}:{lineno}: expected a JSON object per line")
            yield lineno, row


def iter_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[dict]:
    """Yield the rows of a JSONL file, checking that ``required`` fields are present."""
    required = tuple(required)
    for lineno, row in iter_jsonl_lines(path):
        missing = [k for k in required if k not in row]
        if missing:
            raise ArtifactError(f"{path}:{lineno}: missing field(s) {missing}")
        yield row


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    return list(iter_jsonl(path, required))


class BatchJournal:
    """Append-only journal of a long stage's output, committed one *batch* at a time.

    Each batch is one JSON line ``{"batch": b, "rows": [...]}`` written with a single write and
    an fsync, so a batch is in the journal whole or not at all: a process that dies mid-write
    (kill, power loss, disk full) leaves a torn last line, which :meth:`completed` drops (and
    truncates away, so the next append starts on a line boundary). The stage then redoes
    exactly the batches that are missing. :meth:`commit` writes the final JSONL file, rows in
    batch order, atomically, and removes the journal.
    """

    def __init__(self, final: str | os.PathLike) -> None:
        self.final = Path(final)
        self.path = self.final.with_name(self.final.name + ".partial")

    def completed(self) -> dict[int, list[dict]]:
        """Batches fully written before an interruption, by batch index."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
        batches: dict[int, list[dict]] = {}
        for lineno, line in enumerate(data[:end].splitlines(), start=1):
            try:
                entry = json.loads(line)
                b, rows = int(entry["batch"]), list(entry["rows"])
            except (ValueError, KeyError, TypeError) as e:
                raise ArtifactError(
                    f"{self.path}:{lineno}: corrupt journal line ({e}); delete the file to redo the stage"
                ) from None
            batches[b] = rows
        if end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
        return batches

    def append(self, batch: int, rows: Iterable[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"batch": batch, "rows": list(rows)}, allow_nan=False) + "\n"
        with open(self.path, "ab") as f:
            _write_all(f, line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def commit(self) -> None:
        batches = self.completed()
        write_jsonl(self.final, (row for b in sorted(batches) for row in batches[b]))
        self.path.unlink(missing_ok=True)


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    """An exclusive lock on a run directory: ``<root>/.lock``, held with ``flock``.

    The kernel drops an ``flock`` when its process dies, however it dies, so a lock left by a
    killed run never blocks the resume; the file's text (host, pid, start time) only serves to
    name the holder in the refusal. ``flock`` is advisory and local: on a network file system
    shared by several hosts it may not exclude a process on another host.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.path = Path(root) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl
        import socket
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown holder"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by another run ({holder}); wait for it to finish or stop it, "
                "then run the same command again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                  .encode(), 0)
        self._fd = fd

    def release(self) -> None:
        import fcntl

        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        if self._fd is None:  # taken already (``RunLock(root).acquire()`` then ``with``): keep it
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

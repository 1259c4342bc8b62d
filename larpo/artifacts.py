"""Run-directory layout and atomic I/O (docs/design.md, "Run directory contract").

Every stage reads and writes only the files named here. Writes go to ``*.tmp`` and are
moved into place with ``os.replace`` so a killed process never leaves a half-written
artifact behind; a stage's ``.done/<stage>`` marker is written last.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from larpo.errors import ArtifactError, RunLockedError

STAGES = ("sft", "generate", "score", "select", "train", "evaluate")


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

    def train_steps(self, r: int) -> Path:
        """The train stage's per-step metrics (the accelerate worker's, replayed into the parent's logger)."""
        return self.round_dir(r) / "train_steps.jsonl"

    def marker(self, r: int, stage: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; choose from {list(STAGES)}")
        return self.round_dir(r) / ".done" / stage

    def is_done(self, r: int, stage: str) -> bool:
        return self.marker(r, stage).exists()

    def mark_done(self, r: int, stage: str, outputs: Iterable[Path] = ()) -> None:
        """The stage's marker, holding the sha256 of every file of its ``outputs`` (files or folders)."""
        write_json(self.marker(r, stage), {"sha256": hash_files(self.root, outputs)})

    def clear_done(self, r: int, stage: str) -> None:
        self.marker(r, stage).unlink(missing_ok=True)

    def recorded(self, r: int, stage: str) -> dict[str, str] | None:
        """The sha256 of each output (by path relative to the root) the stage's marker recorded; None when
        there is no marker, or an empty one (written before markers held checksums)."""
        path = self.marker(r, stage)
        if not path.exists() or not path.read_bytes().strip():
            return None
        try:
            return dict(json.loads(path.read_text(encoding="utf-8"))["sha256"])
        except (ValueError, KeyError, TypeError) as e:
            raise ArtifactError(f"{path}: damaged done marker ({e}); re-create the stage's outputs with "
                                f"`{redo(r, stage)}`") from None

    def missing(self, r: int, stage: str) -> list[str]:
        """Outputs the stage's marker recorded that are no longer on disk (relative paths)."""
        return sorted(rel for rel in self.recorded(r, stage) or {} if not (self.root / rel).is_file())

    def verify(self, r: int, stage: str, paths: Iterable[Path], hashes: bool = True) -> None:
        """Before a stage reads ``paths`` (files or folders): each file the producing stage's marker
        recorded under them is there and (``hashes``) has the recorded sha256. A file changed since (a
        flipped bit, an edit) or gone raises ArtifactError naming it and the command that re-creates it."""
        recorded = self.recorded(r, stage)
        if not recorded:
            return
        wanted = [Path(p).resolve().relative_to(self.root.resolve()).as_posix() for p in paths]
        rels = sorted(rel for rel in recorded if any(rel == w or rel.startswith(w + "/") for w in wanted))
        gone = [rel for rel in rels if not (self.root / rel).is_file()]
        if gone:
            raise ArtifactError(f"{self.root / gone[0]} is missing, though round {r}'s {stage} stage is marked done "
                                f"({self.marker(r, stage)}); re-create it with `{redo(r, stage)}`")
        if not hashes:
            return
        actual = hash_files(self.root, [self.root / rel for rel in rels])
        for rel in rels:
            if actual[rel] != recorded[rel]:
                raise ArtifactError(
                    f"{self.root / rel}: its sha256 differs from the one recorded when round {r}'s {stage} stage "
                    f"wrote it ({self.marker(r, stage)}): it was changed or damaged since; re-create it with "
                    f"`{redo(r, stage)}`")


def checkpoint_stage(r: int) -> str:
    """The stage that writes round r's checkpoint (round 0: the start policy)."""
    return "sft" if r == 0 else "train"


def redo(r: int, stage: str) -> str:
    """The command (its overrides) that re-creates one stage's outputs."""
    return f"stage={stage} round={r}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_files(root: Path, paths: Iterable[Path]) -> dict[str, str]:
    """sha256 of every file of ``paths`` (a folder: all files inside), by path relative to ``root``.

    About 1 GB/s a core (hashlib's SHA-NI kernel; a 7B checkpoint of 14 GB in ~14 s on one core); the
    files are hashed on up to 4 threads (hashlib releases the GIL), so sharded weights go faster.
    """
    from concurrent.futures import ThreadPoolExecutor

    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.is_file() else []
    base = Path(root).resolve()
    rels = [f.resolve().relative_to(base).as_posix() for f in files]
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1, len(files)))) as pool:
        return dict(zip(rels, pool.map(sha256_file, files)))


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
        self._holder = ""
        self._children: dict[int, str] = {}

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
        self._fd = fd
        self._holder = f"host {socket.gethostname()}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        self._write_holder()
        # A child process (accelerate launch, a vLLM engine) inherits the descriptor, and with it the
        # lock: the directory stays locked until the child's group is gone, even if this process is killed.
        from larpo.processes import hold_across_children

        hold_across_children(self)

    def _write_holder(self) -> None:
        children = "".join(f"; child pid {pid} ({what})" for pid, what in self._children.items())
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (self._holder + children).encode(), 0)

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("the run lock is not held")
        return self._fd

    def note_child(self, pid: int, what: str | None) -> None:
        """Name a child that holds the lock too (``what`` None: it is gone) in the lock file's text."""
        if what is None:
            self._children.pop(pid, None)
        else:
            self._children[pid] = what
        if self._fd is not None:
            self._write_holder()

    def release(self) -> None:
        from larpo.processes import release_from_children

        release_from_children(self)
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closed, not unlocked: a child that still holds the descriptor keeps the lock until it is gone.
            os.close(fd)

    def __enter__(self) -> RunLock:
        if self._fd is None:  # taken already (``RunLock(root).acquire()`` then ``with``): keep it
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

"""Runs the faulted config in its own process and kills it (SIGKILL) at a chosen point.

usage: python -m tests.helpers.fault_driver RUN_DIR POINT N [overrides...]
POINT names a function; on its N-th call the process SIGKILLs itself, before the call
("before") or after it returned ("after"), or — for the write points — half-way through
the bytes being written. POINT "none" runs to the end.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def wait_for_release(path: Path, limit: float = 600.0) -> None:
    """Block until the test creates ``path`` (an event, not a pause of a guessed length); bounded."""
    import time

    deadline = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody created {path} in {limit:.0f} s")
        time.sleep(0.05)


def patch_call(owner, name: str, nth: int, when: str, release: Path | None = None) -> None:
    """``when``: "before"/"after" the N-th call SIGKILL; "sigint": Ctrl-C before it; "hold": wait before it
    until the file ``release`` exists."""
    import time

    original = getattr(owner, name)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] == nth and when == "before":
            die()
        if count["n"] == nth and when == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the KeyboardInterrupt is raised here
        if count["n"] == nth and when == "hold":
            wait_for_release(release)
        out = original(*args, **kwargs)
        if count["n"] == nth and when == "after":
            die()
        return out

    setattr(owner, name, wrapper)


def patch_torn_write(suffix: str, nth: int) -> None:
    """The N-th write to a file whose name ends with ``suffix`` stops half-way: a torn write."""
    from larpo import artifacts

    original = artifacts._write_all
    count = {"n": 0}

    def torn(f, data: bytes) -> None:
        if f.name.endswith(suffix):
            count["n"] += 1
            if count["n"] == nth:
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                die()
        original(f, data)

    artifacts._write_all = torn


def release_file(run_dir: Path) -> Path:
    """The file a "hold_*" point waits for: beside the run directory, so the run's digest never sees it."""
    return Path(run_dir).with_name(Path(run_dir).name + ".release")


def install(point: str, nth: int, run_dir: Path) -> None:
    import transformers

    from larpo import artifacts, logprobs
    from larpo.evals import held_out
    from larpo.tasks import arithmetic
    from larpo.training import loop, sft

    points = {
        "sft_step": lambda: patch_call(sft, "sequence_logps", nth, "before"),
        "eval_sample": lambda: patch_call(held_out, "sample", nth, "before"),
        "journal_append": lambda: patch_call(artifacts.BatchJournal, "append", nth, "after"),
        "journal_torn": lambda: patch_torn_write(".partial", nth),
        "score_verify": lambda: patch_call(arithmetic.ArithmeticTask, "verify", nth, "before"),
        "select_logps": lambda: patch_call(logprobs, "sequence_logps", nth, "before"),
        "train_micro": lambda: patch_call(loop, "_micro_step", nth, "after"),
        "checkpoint_save": lambda: patch_call(transformers.PreTrainedTokenizerBase, "save_pretrained", nth, "after"),
        "json_torn": lambda: patch_torn_write("eval.json.tmp", nth),
        "mark_done": lambda: patch_call(artifacts.RunDir, "mark_done", nth, "after"),
        "sigint_train": lambda: patch_call(loop, "_micro_step", nth, "sigint"),
        "hold_train": lambda: patch_call(loop, "_micro_step", nth, "hold", release_file(run_dir)),
    }
    if point != "none":
        points[point]()


def main() -> None:
    run_dir, point, nth, *overrides = sys.argv[1:]
    from tests.helpers.faults import FAULT_OVERRIDES, REPO, fault_cfg

    install(point, int(nth), Path(run_dir))
    if overrides[:1] == ["--run.py"]:  # through the real entry point, as a user types it
        import runpy

        sys.argv = ["run.py", *FAULT_OVERRIDES, f"hydra.run.dir={run_dir}", *overrides[1:]]
        runpy.run_path(str(REPO / "run.py"), run_name="__main__")
        return
    from larpo.pipeline import run

    run(fault_cfg(Path(run_dir), *overrides))


if __name__ == "__main__":
    main()

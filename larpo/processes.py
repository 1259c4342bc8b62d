"""Child process groups that never outlive the stage that started them.

Two stages hand their work to other programs: the train stage to ``accelerate launch`` (and
its ranks), the generate stage to vLLM engines (each with an engine-core and worker processes
of its own). Both go through :func:`supervised`, which gives every child

- **its own session** (``start_new_session``), so one ``killpg`` reaches the child and every
  process it started, however deep;
- **a death signal** (Linux ``PR_SET_PDEATHSIG`` = SIGTERM): if the pipeline itself is killed
  with SIGKILL (the OOM killer, ``kill -9``), the child is told, and a child that is ours
  (:func:`die_with_group`) takes its whole group down with it;
- **the group stopped on every exit path**: a normal exit (stragglers such as a vLLM engine
  core are killed), an error, Ctrl-C, SIGTERM/SIGHUP: SIGTERM to the group, then SIGKILL to
  whatever is left after ``grace`` seconds;
- **its output in a log file** when one is given, whose last lines :func:`log_tail` quotes
  when the child fails.

Only the standard library is imported: children import this module before anything heavy.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _on_parent_death(sig: int = signal.SIGTERM) -> None:
    """In the child, between fork and exec: receive ``sig`` when the parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the parent's own clean-up paths still apply
        pass


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` is still there."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the id was reused by someone else's group
        return False
    return True


def stop_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM to ``proc``'s whole group, SIGKILL after ``grace`` s; returns when the group is gone.

    ``proc`` was started with ``start_new_session=True``, so its pid is its group's id.
    """
    pgid = proc.pid
    if proc.poll() is None or group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    if group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    proc.wait()
    # Members of the group other than the leader are reaped by init; wait until they are gone,
    # so that a caller that starts the next stage never shares the machine with them.
    deadline = time.monotonic() + grace
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def supervised(cmd: Sequence[str], env: dict[str, str] | None = None, log_path: Path | None = None,
               grace: float = 30.0, pass_fds: Sequence[int] = ()) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` in a new session (output to ``log_path`` if given); stop its group on leaving.

    ``pass_fds``: file descriptors the child inherits (e.g. the pipes of larpo/generation/vllm_server.py).

    The body waits for the child (``proc.wait()``) and reads its return code; leaving the
    block in any way (return, exception, KeyboardInterrupt, SystemExit from a signal handler)
    stops whatever of the group is still running.
    """
    out = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "wb")  # noqa: SIM115  (closed in the finally below)
    try:
        proc = subprocess.Popen(list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True, preexec_fn=_on_parent_death, pass_fds=tuple(pass_fds))
        try:
            yield proc
        finally:
            stop_group(proc, grace)
    finally:
        if out is not None:
            out.close()


def die_with_group() -> None:
    """In a child of :func:`supervised`: on SIGTERM/SIGHUP (the parent stopping it, or dying), kill the
    child's whole group at once (its own helpers, e.g. a vLLM engine core, included) and exit."""

    def handler(signum, frame):  # noqa: ARG001
        os.killpg(os.getpgid(0), signal.SIGKILL)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def log_tail(path: Path, lines: int = 15) -> str:
    """The last non-empty ``lines`` of a child's log (for the error message), or ``(no log)``."""
    try:
        text = [t.rstrip() for t in path.read_text(errors="replace").splitlines() if t.strip()]
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])

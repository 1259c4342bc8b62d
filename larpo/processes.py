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
  when the child fails;
- **the run's lock**: the lock file's descriptor (:func:`hold_across_children`) is passed down
  (``pass_fds``), and ``flock`` locks belong to the open file description, so the run directory
  stays locked while the child lives, even if the pipeline itself is killed; the lock file's text
  names the child's pid. A resume started at once waits for (is refused by) the old group.

The pipeline's own SIGTERM (what SLURM preemption sends) and SIGHUP are turned into an interrupt
(:func:`signals_as_interrupts`): the same clean-up as Ctrl-C runs, the children's groups included.

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


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP to the pipeline, raised like Ctrl-C so every clean-up path runs; ``signum`` gives
    the exit status (128 + signum: 143, 129)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_as_interrupts(signums: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """While the block runs, the first SIGTERM/SIGHUP raises :class:`Terminated`; a later one (SLURM may
    repeat itself) is logged and does not interrupt the clean-up the first one started."""
    state = {"raised": False}

    def handler(signum, frame):  # noqa: ARG001
        if state["raised"]:
            logger.warning("%s again: still stopping", signal.Signals(signum).name)
            return
        state["raised"] = True
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signums}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# Locks whose descriptor every supervised child inherits (the run directory's RunLock).
_HELD: list = []


def hold_across_children(lock) -> None:
    """``lock`` (``fileno()``, ``note_child(pid, what)``) stays held by every child started from now on."""
    _HELD.append(lock)


def release_from_children(lock) -> None:
    if lock in _HELD:
        _HELD.remove(lock)


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
    locks = list(_HELD)
    try:
        proc = subprocess.Popen(list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True, preexec_fn=_on_parent_death,
                                pass_fds=tuple(pass_fds) + tuple(lock.fileno() for lock in locks))
        try:
            for lock in locks:
                lock.note_child(proc.pid, _what(cmd))
            yield proc
        finally:
            stop_group(proc, grace)
            for lock in locks:
                lock.note_child(proc.pid, None)
    finally:
        if out is not None:
            out.close()


def _what(cmd: Sequence[str]) -> str:
    """A short name of a child's command for the lock file: its modules (``-m x``), script or program."""
    cmd = list(cmd)
    modules = [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "-m"]
    scripts = [Path(a).name for a in cmd[1:] if a.endswith(".py")]
    return " ".join(modules) if modules else scripts[0] if scripts else Path(cmd[0]).name


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

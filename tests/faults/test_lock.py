"""Two processes on one run directory: the second is refused at once, naming the holder, and
changes nothing; a lock left by a dead process does not block the resume."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from larpo.artifacts import RunLock
from larpo.errors import RunLockedError
from larpo.pipeline import run
from tests.helpers.fault_driver import release_file
from tests.helpers.faults import REPO, digest, fault_cfg, raw_digest, run_driver


def test_second_lock_in_another_descriptor_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=rf"in use by another run \(host {socket.gethostname()}, "
                                                 rf"pid {os.getpid()}, since "):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released on exit: free again
        pass


def test_same_command_twice_at_once(tmp_path, reference_digest):
    """Finding 2: the second process is refused with the holder's host and pid; the first finishes intact.

    Every wait is on an event: the first run holds its first train step until the test releases it
    (after the second was refused), so a slow start of the second (a busy machine) changes nothing.
    """
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "tests.helpers.fault_driver", str(run_dir), "hold_train", "1"],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = run_dir / ".lock"
        deadline = time.monotonic() + 600  # only a bound on a broken run, never the expected wait
        while not (lock.exists() and f"pid {first.pid}," in lock.read_text()):
            assert time.monotonic() < deadline and first.poll() is None, "the first run never took the lock"
            time.sleep(0.2)
        second = run_driver(run_dir, "none", "0")
        assert second.returncode != 0
        assert f"is in use by another run (host {socket.gethostname()}, pid {first.pid}, since" in second.stderr
        assert first.poll() is None  # still holding: the refusal came at start-up, not after waiting for it
        release_file(run_dir).touch()
        assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert digest(run_dir) == reference_digest


def test_lock_of_a_killed_process_does_not_block(tmp_path, reference_digest):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from larpo.artifacts import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)",
                               str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = raw_digest(run_dir)
        with pytest.raises(RunLockedError, match=f"pid {holder.pid},"):
            run(fault_cfg(run_dir))
        assert raw_digest(run_dir) == before  # the refused run changed nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run(fault_cfg(run_dir))  # the dead holder's lock file is still there; it must not block
    assert digest(run_dir) == reference_digest

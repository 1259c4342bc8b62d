"""The child-process supervisor (larpo/processes.py) with real processes: a child that starts a
grandchild of its own, as ``accelerate launch`` (ranks) and a vLLM engine (engine core, workers) do.

Processes are found by session id in /proc; every wait is on an event (a file the child writes, a
process that goes away), bounded so that a broken supervisor fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from larpo.processes import group_alive, log_tail, supervised

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")

# The child: starts a grandchild (same session) that sleeps, writes both pids, then sleeps or fails.
CHILD = textwrap.dedent("""
    import subprocess, sys, time
    from pathlib import Path
    from larpo.processes import die_with_group
    if sys.argv[3] == "ours":
        die_with_group()
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("child says hello", flush=True)
    Path(sys.argv[1]).write_text(f"{g.pid}")
    if sys.argv[2] == "fail":
        print("ValueError: the child's own reason", flush=True)
        sys.exit(3)
    if sys.argv[2] == "exit":
        sys.exit(0)  # leaves its grandchild running
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def child_cmd(tmp_path: Path, mode: str, kind: str = "ours") -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return [sys.executable, str(script), str(tmp_path / "pids"), mode, kind]


def grandchild(tmp_path: Path) -> int:
    wait_until(lambda: (tmp_path / "pids").exists() and (tmp_path / "pids").read_text(), "the grandchild")
    return int((tmp_path / "pids").read_text())


def test_a_normal_exit_takes_the_stragglers_down(tmp_path):
    with supervised(child_cmd(tmp_path, "exit"), log_path=tmp_path / "log", grace=5) as proc:
        assert proc.wait() == 0
        g = grandchild(tmp_path)
        assert alive(g)  # the child left it running
    assert not alive(g) and not group_alive(proc.pid)
    assert "child says hello" in log_tail(tmp_path / "log")


@pytest.mark.parametrize("kind", ["ours", "foreign"])
def test_an_exception_in_the_parent_stops_the_whole_group(tmp_path, kind):
    """``foreign``: a child that ignores nothing and knows nothing of us (SIGTERM to the group suffices)."""
    with pytest.raises(KeyboardInterrupt):
        with supervised(child_cmd(tmp_path, "sleep", kind), grace=5) as proc:
            g = grandchild(tmp_path)
            raise KeyboardInterrupt
    assert not alive(g) and not alive(proc.pid) and not group_alive(proc.pid)


def test_a_failing_child_leaves_its_reason_in_the_log(tmp_path):
    with supervised(child_cmd(tmp_path, "fail"), log_path=tmp_path / "log", grace=5) as proc:
        assert proc.wait() == 3
    assert log_tail(tmp_path / "log", 1) == "ValueError: the child's own reason"
    assert log_tail(tmp_path / "missing") == "(no log)"


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    ready = str(tmp_path / "ready")
    cmd = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
           f"open({ready!r}, 'w').write('ready'); time.sleep(600)"]
    t0 = time.monotonic()
    with supervised(cmd, grace=0.5) as proc:
        wait_until(lambda: (tmp_path / "ready").exists(), "the child to ignore SIGTERM")
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 30


def test_a_parent_killed_with_sigkill_takes_our_child_and_its_group_along(tmp_path):
    """The pipeline itself dies (OOM killer, kill -9): no clean-up of its own runs, yet the child's
    group goes: the child gets SIGTERM from the kernel (death signal) and kills its group."""
    parent = tmp_path / "parent.py"
    parent.write_text(textwrap.dedent(f"""
        import sys, time
        from larpo.processes import supervised
        with supervised({child_cmd(tmp_path, 'sleep')!r}) as proc:
            open({str(tmp_path / 'child')!r}, "w").write(str(proc.pid))
            proc.wait()
    """))
    p = subprocess.Popen([sys.executable, str(parent)], env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    try:
        g = grandchild(tmp_path)
        child = int((tmp_path / "child").read_text())
        assert alive(child) and alive(g)
    finally:
        p.kill()
        p.wait()
    wait_until(lambda: not alive(child) and not alive(g), "the orphaned group to die")


def test_a_killed_parent_leaves_the_run_lock_with_its_child_until_the_group_is_gone(tmp_path):
    """Issue 19, 9: "resuming at once took the lock and started a second trainer". The pipeline is SIGKILLed;
    its child takes its time to stop (it waits for the test's word after the death signal, as a trainer
    finishing a step would): every resume attempt meanwhile is refused naming the child, and the lock
    comes free only when no process of the child's session is left."""
    from larpo.artifacts import RunLock
    from larpo.errors import RunLockedError

    run_dir, release = tmp_path / "run", tmp_path / "release"
    slow = textwrap.dedent(f"""
        import signal, sys, time
        from pathlib import Path
        def stop(signum, frame):  # a slow, orderly stop: until the test says so
            Path({str(tmp_path / 'stopping')!r}).write_text("stopping")
            while not Path({str(release)!r}).exists():
                time.sleep(0.01)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        Path({str(tmp_path / 'ready')!r}).write_text("ready")
        time.sleep(600)
    """)
    (tmp_path / "slow.py").write_text(slow)
    parent = tmp_path / "parent.py"
    parent.write_text(textwrap.dedent(f"""
        import sys
        from larpo.artifacts import RunLock
        from larpo.processes import supervised
        with RunLock({str(run_dir)!r}), supervised([sys.executable, {str(tmp_path / 'slow.py')!r}]) as proc:
            proc.wait()
    """))
    p = subprocess.Popen([sys.executable, str(parent)], env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    child = None
    try:
        wait_until(lambda: (tmp_path / "ready").exists(), "the child")
        child = int(re.search(r"child pid (\d+) \(", (run_dir / ".lock").read_text()).group(1))
        p.kill()
        p.wait()
        wait_until(lambda: (tmp_path / "stopping").exists(), "the child's death signal")
        with pytest.raises(RunLockedError, match=rf"; child pid {child} \(slow.py\)"):
            RunLock(run_dir).acquire()  # the resume, at once: refused while the child lives
        release.touch()
        wait_until(lambda: not alive(child), "the child to stop")
        lock = RunLock(run_dir)
        lock.acquire()  # free now
        lock.release()
    finally:
        release.touch()
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)


def test_sigterm_and_sighup_are_interrupts_with_their_exit_status():
    """SIGTERM/SIGHUP to the pipeline run the clean-up of Ctrl-C (exit 128 + signum: 143, 129); a repeated
    signal does not interrupt that clean-up."""
    from larpo.processes import Terminated, signals_as_interrupts

    for sig, status in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        before = signal.getsignal(sig)
        cleaned = []
        with pytest.raises(Terminated) as err:
            with signals_as_interrupts():
                try:
                    os.kill(os.getpid(), sig)
                    time.sleep(5)  # the handler raises here, at once
                finally:
                    os.kill(os.getpid(), sig)  # again, during the clean-up: logged, not raised
                    cleaned.append(True)
        assert 128 + err.value.signum == status and isinstance(err.value, KeyboardInterrupt) and cleaned
        assert signal.getsignal(sig) == before  # restored

"""A write that fails half-way (ENOSPC injected at the I/O layer): the run stops with a clear
error, and once the disk has room the same command resumes to identical artifacts."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from larpo import artifacts
from larpo.errors import PipelineError
from larpo.pipeline import run
from tests.helpers.faults import REPO, digest, fault_cfg


def disk_full_on(monkeypatch, suffix: str, nth: int = 1) -> None:
    """The N-th write to a file named ``*suffix`` writes half its bytes, then fails with ENOSPC."""
    original = artifacts._write_all
    count = {"n": 0}

    def full(f, data: bytes) -> None:
        if f.name.endswith(suffix):
            count["n"] += 1
            if count["n"] == nth:
                f.write(data[: len(data) // 2])
                f.flush()
                raise OSError(errno.ENOSPC, "No space left on device", f.name)
        original(f, data)

    monkeypatch.setattr(artifacts, "_write_all", full)


@pytest.mark.parametrize(("suffix", "nth", "stage"), [
    ("generations.jsonl.partial", 2, "generate"),  # the journal: second batch torn
    ("scores.jsonl.tmp", 1, "score"),  # an atomic write
    ("lists.jsonl.tmp", 1, "select"),
    ("eval_outputs.jsonl.tmp", 2, "evaluate"),  # round 1's evaluation
])
def test_disk_full_mid_write_then_resume(suffix, nth, stage, tmp_path, monkeypatch, reference_digest):
    run_dir = tmp_path / "run"
    disk_full_on(monkeypatch, suffix, nth)
    with pytest.raises(PipelineError, match=rf"round 1, stage {stage}: No space left on device .*run the same "
                                            "command to resume"):
        run(fault_cfg(run_dir))
    assert not list(run_dir.rglob("*.tmp"))  # a failed atomic write leaves no tmp file
    monkeypatch.undo()  # space freed
    run(fault_cfg(run_dir))
    assert digest(run_dir) == reference_digest


def safetensors_full(filename: str) -> Exception:
    """What safetensors (Rust) really raises on a full disk: its own type, the errno only in the text."""
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("error", [lambda f: OSError(errno.ENOSPC, "No space left on device", f), safetensors_full],
                         ids=["OSError", "SafetensorError"])
def test_disk_full_while_saving_a_checkpoint(tmp_path, monkeypatch, reference_digest, error):
    """safetensors writes the weights itself; a failure there half-way must not leave a usable-looking
    checkpoint, and its own error type (issue 19, 13: a raw `SafetensorError ... os error 28`) gets the
    storage message too."""
    import transformers.modeling_utils as mu

    original = mu.safe_save_file
    count = {"n": 0}

    def full(tensors, filename, *args, **kwargs):
        count["n"] += 1
        if count["n"] == 2:  # round 1's checkpoint (round 0's is the first)
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)
            raise error(filename)
        return original(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(mu, "safe_save_file", full)
    run_dir = tmp_path / "run"
    with pytest.raises(PipelineError, match=r"^round 1, stage train: No space left on device \(.*round_1/checkpoint"
                                            r"\.tmp.*\); .*free the space and run the same command to resume$"):
        run(fault_cfg(run_dir))
    assert not (run_dir / "round_1/checkpoint.tmp").exists()  # its space is freed at once
    monkeypatch.undo()
    run(fault_cfg(run_dir))
    assert digest(run_dir) == reference_digest


def test_a_file_size_limit_while_saving_a_checkpoint_then_resume(tmp_path, reference_digest):
    """Issue 19, 13: `ulimit -f` (a real RLIMIT_FSIZE: writes past it fail with EFBIG) while the warm-start's
    checkpoint is saved: one message through run.py, no traceback; without the limit the same command resumes."""
    import resource

    run_dir = tmp_path / "run"
    limit = 20_000  # bytes: above every JSON file before the checkpoint, below its weights (~49 kB)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "tests.helpers.fault_driver", str(run_dir), "none", "0", "--run.py"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert (f"round 0, stage sft: File too large ({run_dir}/round_0/checkpoint.tmp); nothing of this stage was "
            "kept but its journal; raise the file-size limit (`ulimit -f`) and run the same command to resume") in output
    assert "Traceback" not in output
    assert not (run_dir / "round_0/checkpoint.tmp").exists() and not (run_dir / "round_0/checkpoint").exists()
    run(fault_cfg(run_dir))
    assert digest(run_dir) == reference_digest


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write: its mode for a user, a read-only tmpfs for root (whom modes do not stop)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"root without mount(2) here: no read-only folder to test with ({mounted.stderr.strip()!r})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_run_directory_is_named_with_the_fix(read_only_dir, tmp_path):
    """Issue 19, 13: through run.py, one message before Hydra's log file there fails (it showed a logging
    traceback first); in the pipeline itself, a PipelineError naming the folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "run.py"), "experiment=smoke", f"run_dir={read_only_dir}",
                           f"hydra.run.dir={read_only_dir}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output, output[-3000:]
    assert proc.stderr.startswith(f"run_dir={read_only_dir}: {read_only_dir} is ")
    assert proc.stderr.rstrip().endswith("; make it writable or choose another folder")
    with pytest.raises(PipelineError, match=rf"^cannot write to the run directory {read_only_dir}/run \("
                                            r".*\): make it writable, or choose another run_dir=$"):
        run(fault_cfg(read_only_dir / "run"))

"""A write that fails half-way (ENOSPC injected at the I/O layer): the run stops with a clear
error, and once the disk has room the same command resumes to identical artifacts."""

from __future__ import annotations

import errno

import pytest

from larpo import artifacts
from larpo.pipeline import run
from larpo.stages import PipelineError
from tests.faults.conftest import digest, fault_cfg


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


def test_disk_full_while_saving_a_checkpoint(tmp_path, monkeypatch, reference_digest):
    """safetensors writes the weights itself; a failure there half-way must not leave a usable-looking checkpoint."""
    import transformers.modeling_utils as mu

    original = mu.safe_save_file
    count = {"n": 0}

    def full(tensors, filename, *args, **kwargs):
        count["n"] += 1
        if count["n"] == 2:  # round 1's checkpoint (round 0's is the first)
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return original(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(mu, "safe_save_file", full)
    run_dir = tmp_path / "run"
    with pytest.raises(PipelineError, match="round 1, stage train: No space left on device"):
        run(fault_cfg(run_dir))
    monkeypatch.undo()
    run(fault_cfg(run_dir))
    assert digest(run_dir) == reference_digest

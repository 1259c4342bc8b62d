"""Ctrl-C: a one-line message saying where and how to resume, exit code 130, no traceback."""

from __future__ import annotations

from larpo.pipeline import run
from tests.helpers.faults import digest, fault_cfg, run_driver


def test_ctrl_c_through_run_py_then_resume(tmp_path, reference_digest):
    run_dir = tmp_path / "run"
    proc = run_driver(run_dir, "sigint_train", "1", "--run.py")
    assert proc.returncode == 130, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr  # Hydra's job logging writes to stdout
    assert "interrupted in round 1, stage train; run the same command to resume" in output
    assert "Traceback" not in output
    run(fault_cfg(run_dir))
    assert digest(run_dir) == reference_digest

"""Finding 7: `rounds=N` after a finished shorter run resumes it, in the same directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers.faults import REPO

COMMON = ["experiment=smoke", "sft.steps=20", "eval.pass_at_max=0", "threads=1"]


def test_more_rounds_resume_the_same_run_directory(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for rounds in (0, 1):  # cwd=tmp_path: the default run directory runs/<name>/<overrides> lands there
        proc = subprocess.run([sys.executable, str(REPO / "run.py"), *COMMON, f"rounds={rounds}"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    runs = [p.parent for p in (tmp_path / "runs").rglob("manifest.json")]
    assert len(runs) == 1, runs
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert "rounds" not in runs[0].name

"""A Hydra multirun logged to W&B (offline): one group per sweep, each job named by its overrides,
and the study's table and plot in the same group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from larpo.studies import aggregate

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("wandb")


def test_a_sweep_is_one_wandb_group_and_the_study_joins_it(tmp_path, monkeypatch, caplog):
    root = tmp_path / "study_toy"
    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    cmd = [sys.executable, str(REPO / "run.py"), "-m", "experiment=smoke", "rounds=0", "sft.steps=10",
           "eval.pass_at_max=0", "logger=wandb", "loss=pairwise,listmle", "seed=0", f"hydra.sweep.dir={root}"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in root.iterdir() if p.is_dir())
    assert [p.name.startswith(("tiny-listmle-", "tiny-pairwise-")) for p in jobs] == [True, True]
    for job, loss in zip(jobs, ("listmle", "pairwise")):
        records = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(records) == 1, job
        # group = the sweep directory's name, run name = the job's overrides (Hydra's override_dirname),
        # as the wandb run object reports them
        name = f"eval.pass_at_max=0,loss={loss},seed=0,sft.steps=10"
        assert f"W&B run '{name}' in group 'study_toy' (offline)" in (job / "run.log").read_text()

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))
    study = {"name": "toy", "sweep": ["loss=pairwise,listmle", "seed=0"], "factor": "loss", "metric": "accuracy"}
    with caplog.at_level("INFO", logger="larpo.loggers"):
        aggregate(study, root=root, out_dir=tmp_path / "out")
    assert "W&B run 'toy (study)' in group 'study_toy' (offline)" in caplog.text
    runs = [p for p in (root / "wandb").glob("offline-run-*") if p.is_dir()]
    assert len(runs) == 1
    table = json.loads(next(runs[0].rglob("*.table.json")).read_text())
    assert table["columns"] == ["accuracy", "factor", "seed"]
    assert sorted(row[1] for row in table["data"]) == ["listmle", "pairwise"]
    assert list(runs[0].rglob("*.png"))  # the plot

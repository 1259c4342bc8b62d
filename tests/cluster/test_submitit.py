"""Cluster launch through hydra-submitit-launcher (README "Running at scale").

A ``-m`` sweep of two shrunk runs through ``hydra/launcher=submitit_local`` (the same launcher
code path as ``submitit_slurm``, with local processes instead of sbatch), and the shipped SLURM
example composing with the real configs. Skipped with a reason without the ``cluster`` extra.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.config import CONF_DIR

REPO = Path(__file__).resolve().parents[2]
HAVE_SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
needs_submitit = pytest.mark.skipif(not HAVE_SUBMITIT, reason="hydra-submitit-launcher missing: pip install -e '.[cluster]'")

SWEEP = ["experiment=smoke", "seed=0,1", "rounds=1", "sft.steps=0", "eval.pass_at_max=0", "threads=1",
         "task.n_train=16", "task.n_eval=8", "sampling.prompts_per_round=8", "sampling.n_samples=4"]


@needs_submitit
def test_a_sweep_of_two_runs_through_submitit_local(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "run.py", "-m", "hydra/launcher=submitit_local", *SWEEP,
           f"hydra.sweep.dir={tmp_path}", "hydra.launcher.timeout_min=5"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One run directory per job, named by what it computes (deterministic: a requeued job lands there again).
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [name.rsplit("-", 1)[0] for name in runs] == ["tiny-listwise-s0", "tiny-listwise-s1"], runs
    seeds = set()
    for name in runs:
        run = tmp_path / name
        assert [r["round"] for r in json.loads((run / "summary.json").read_text())["rounds"]] == [0, 1]
        assert all((run / "round_1" / ".done" / s).exists() for s in ("generate", "score", "select", "train", "evaluate"))
        seeds.add(json.loads((run / "manifest.json").read_text())["seed"])
    assert seeds == {0, 1}
    assert any((tmp_path / ".submitit").rglob("*_result.pkl"))  # it really went through submitit


@needs_submitit
def test_the_slurm_example_composes_and_names_no_run_dir(tmp_path):
    from hydra import compose, initialize_config_dir

    (tmp_path / "local").mkdir()
    shutil.copy(CONF_DIR / "local.example" / "slurm.yaml", tmp_path / "local" / "slurm.yaml")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["local=slurm", "loss=pairwise", "seed=2", f"hydra.searchpath=[file://{tmp_path}]"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.max_num_timeout) == ("gpu", 8, 20)
    # `local` is not part of a run's identity (its directory's name) nor of a W&B run's name: where a job runs
    # is not what it computes.
    from larpo.runs import IDENTITY_GROUPS

    assert "local" not in IDENTITY_GROUPS and "local" in cfg.hydra.job.config.override_dirname.exclude_keys

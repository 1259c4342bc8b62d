"""The new user's walk, as the README documents it, each step through `run.py` in a fresh directory:
1. a run; 2. a benchmark added to that finished run with one short command; 3. a sweep with -m;
4. `make table-real` over the sweep (the shell's glob, multirun.yaml and all); and `python -m larpo.runs`.
Step 5, the offline AlpacaEval path, needs the real SmolLM2 weights: tests/real/test_walk_real.py.
(`make run` runs the default; the walk shrinks it with experiment=smoke to stay within seconds.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from larpo.artifacts import read_json
from tests.helpers.runs import run_py

REPO = Path(__file__).resolve().parents[2]
MIXEVAL = REPO / "tests" / "fixtures" / "evals" / "mixeval-hard"
RUN = ["experiment=smoke", "rounds=1", "sft.steps=40", "eval.pass_at_max=0", "threads=1"]


def test_the_new_users_walk(tmp_path):
    # 1. a run
    first = run_py(tmp_path, *RUN)
    assert first.returncode == 0, first.stderr[-3000:]
    # a quiet console in a redirected log: no progress-bar carriage returns, no third-party warnings
    assert "\r" not in first.stdout + first.stderr and "Warning" not in first.stderr, first.stderr[-3000:]
    (run_dir,) = [p.parent for p in (tmp_path / "runs").rglob("manifest.json")]
    before = read_json(run_dir / "round_1" / "eval.json")

    # 2. add a benchmark to that finished run: the run's command plus the stage, the round and the benchmark
    added = run_py(tmp_path, *RUN, "stage=evaluate", "round=1", "eval=[mixeval_hard]",
                   f"eval.mixeval_hard.source={MIXEVAL}", "eval.benchmark_max_new_tokens=8")
    assert added.returncode == 0, added.stderr[-3000:]
    assert [p.parent for p in (tmp_path / "runs").rglob("manifest.json")] == [run_dir]
    after = read_json(run_dir / "round_1" / "eval.json")
    assert {k: after[k] for k in before} == before and after["mixeval_hard/n"] == 20
    assert "MixEval-Hard" in added.stdout  # the per-round table shows it

    # 3. a sweep: two names of one objective and two seeds, one run directory per job
    sweep = run_py(tmp_path, "-m", *RUN, "loss=listwise,lambdarank", "seed=0,1")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "multirun" / "smoke").iterdir())
    assert len(jobs) == 5 and "multirun.yaml" in jobs, jobs

    # 4. the paper's table over the sweep, as `make table-real RUNS="multirun/smoke/*"` runs it
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    table = subprocess.run(f"{sys.executable} -m larpo.tables tables/real multirun/smoke/*", shell=True, cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr[-3000:]
    assert "skipped multirun/smoke/multirun.yaml" in table.stderr
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.stdout.splitlines()[2:]]
    assert sorted((r[1].split(" ")[0], r[2]) for r in rows if r[3] == "1") == [
        ("lambdarank", "0"), ("lambdarank", "1"), ("listwise", "0"), ("listwise", "1")]
    assert (tmp_path / "tables" / "real.md").exists() and (tmp_path / "tables" / "real.csv").exists()

    # and the listing of every run with the overrides that made it
    listing = subprocess.run([sys.executable, "-m", "larpo.runs"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert len(listing.stdout.splitlines()) == 1 + 5 and "loss=lambdarank seed=1" in listing.stdout

"""benchmarks/real_round.py: the stage times read from a run's log, the work counted, the one-GPU estimate."""

from __future__ import annotations

import sys

import pytest

from tests.helpers.runs import run_py
from tests.helpers.scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("real_round")


def test_stage_times_are_the_pipelines_own(bench, tmp_path):
    (tmp_path / "run.log").write_text(
        "[x][larpo.pipeline][INFO] - round 0: evaluate done in 162.1 s\n"
        "[x][larpo.pipeline][INFO] - round 1: generate done in 175.1 s\n"
        "[x][larpo.pipeline][INFO] - round 1: train done in 109.4 s\n"
        "[x][larpo.pipeline][INFO] - round 1: train ...\n")
    assert bench.stage_times(tmp_path) == {0: {"evaluate": 162.1}, 1: {"generate": 175.1, "train": 109.4}}


def test_gpu_estimate_by_hand(bench):
    w = {"generated": 1e6, "generate_steps": 64, "eval_generated": 0, "eval_steps": 128, "reference": 1e6,
         "trained": 1e6}
    psi = 1e8
    # generate: 30 s start-up + max(1e6 x 2 x 1e8 / (989e12 x 0.35) = 0.5778 s, 64 x 4 ms = 0.256 s)
    assert bench.gpu_estimate("generate", w, psi) == pytest.approx(30 + 2e14 / (989e12 * 0.35))
    # evaluate: no tokens, 128 decode steps of 4 ms
    assert bench.gpu_estimate("evaluate", w, psi) == pytest.approx(30 + 0.512)
    # train: 5 s + 6 x 1e8 x 1e6 / 346.15e12 = 1.733 s
    assert bench.gpu_estimate("train", w, psi) == pytest.approx(5 + 6e14 / (989e12 * 0.35))
    assert bench.gpu_estimate("score", w, psi) == 0.0


def test_reads_a_finished_run(bench, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"  # run.py, so the run writes its run.log as a real one does
    proc = run_py(tmp_path, "experiment=smoke", "rounds=1", "sft.steps=0", "eval.pass_at_max=0", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.setattr(sys, "argv", ["real_round.py", "--runs", str(run_dir), "--out", str(tmp_path / "out")])
    bench.main()
    text = (tmp_path / "out" / "real_round.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"generate", "score", "select", "train", "evaluate", "round"}
    generated = int(text.split("Work in round 1 of run: ")[1].split(" new tokens")[0].replace(",", ""))
    assert generated > 0

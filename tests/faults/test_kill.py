"""SIGKILL inside every stage and at every stage boundary; the same command then resumes to
artifacts identical (sha256) to an uninterrupted run's.

The faulted run is one round of experiment=smoke; stage calls in order: sft, evaluate (round 0),
generate, score, select, train, evaluate (round 1).
"""

from __future__ import annotations

import signal

import pytest

from larpo.artifacts import RunDir
from larpo.pipeline import run
from tests.helpers.faults import digest, fault_cfg, run_driver

# (point, N): the N-th call of the point's function is where the process dies.
INSIDE = {
    "sft: mid warm-start": ("sft_step", 20),
    "evaluate r0: first greedy batch": ("eval_sample", 1),
    "generate: after one journaled batch": ("journal_append", 1),
    "generate: a torn journal line": ("journal_torn", 2),
    "score: mid scoring": ("score_verify", 30),
    "select: mid reference log-probs": ("select_logps", 1),
    "train: after a micro-step": ("train_micro", 2),
    "train: checkpoint half saved": ("checkpoint_save", 2),
    "evaluate r1: mid evaluation": ("eval_sample", 3),
    "evaluate r1: eval.json half written": ("json_torn", 2),
}
BOUNDARIES = ("sft", "evaluate r0", "generate", "score", "select", "train", "evaluate r1")


@pytest.mark.parametrize(("point", "nth"), list(INSIDE.values()), ids=list(INSIDE))
def test_sigkill_then_resume_gives_identical_artifacts(point, nth, tmp_path, reference_digest):
    run_dir = tmp_path / "run"
    proc = run_driver(run_dir, point, str(nth))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not RunDir(run_dir).is_done(1, "evaluate")  # it really died before the end
    run(fault_cfg(run_dir))  # the same command again
    assert digest(run_dir) == reference_digest


def test_sigkill_at_every_boundary_in_a_row(tmp_path, reference_digest):
    """Killed right after each stage's done marker, 7 times in a row, each time resumed by the same
    command (a new process): every stage runs once, and the end equals an uninterrupted run."""
    run_dir = tmp_path / "run"
    for done, stage in enumerate(BOUNDARIES, start=1):
        proc = run_driver(run_dir, "mark_done", "1")  # the first marker this process writes
        assert proc.returncode == -signal.SIGKILL, (stage, proc.stderr[-2000:])
        markers = sorted(p.parent.name + "/" + p.name for p in run_dir.glob("round_*/.done/*"))
        assert len(markers) == done, (stage, markers)  # exactly one more stage finished
    run(fault_cfg(run_dir))  # nothing left but the summary
    assert digest(run_dir) == reference_digest


def test_torn_journal_line_is_dropped_not_duplicated(tmp_path):
    """Finding 1: a batch half-written when the process died is redone once, not appended twice."""
    run_dir = tmp_path / "run"
    proc = run_driver(run_dir, "journal_torn", "2")
    assert proc.returncode == -signal.SIGKILL
    journal = (RunDir(run_dir).generations(1)).with_name("generations.jsonl.partial")
    assert not journal.read_bytes().endswith(b"\n")  # the torn tail is there
    run(fault_cfg(run_dir))
    ids = [line.split('"prompt_id": ')[1].split(",")[0] for line in
           RunDir(run_dir).generations(1).read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 16

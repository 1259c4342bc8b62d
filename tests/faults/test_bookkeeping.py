"""Issue 19, the run directory's bookkeeping: checksums in the done markers, markers whose files are
gone, a summary of every finished round, evaluations on different prompt sets, and forced
evaluations that fail. Each test starts from a copy of one finished faulted-config run (1 round)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from larpo.artifacts import RunDir
from larpo.errors import ArtifactError, PipelineError
from larpo.pipeline import run
from tests.helpers.faults import digest, fault_cfg, raw_digest


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run(fault_cfg(run_dir))
    return run_dir


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    return run_dir


def unchanged(before: dict, run_dir: Path) -> bool:
    """Byte for byte the same files, the lock's holder text aside."""
    after = raw_digest(run_dir)
    return {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


def flip_a_bit(path: Path, offset_from_end: int = 16) -> None:
    """One bit of the last weights of a safetensors file: it still loads, with a damaged weight."""
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- 7: checksums


def test_markers_record_the_sha256_of_every_output(finished):
    import hashlib

    rd = RunDir(finished)
    recorded = rd.recorded(0, "sft")
    assert "round_0/checkpoint/model.safetensors" in recorded and "round_0/train.json" in recorded
    assert set(rd.recorded(1, "evaluate")) == {"round_1/eval.json", "round_1/eval_outputs.jsonl"}
    for rel, sha in {**recorded, **rd.recorded(1, "score")}.items():
        assert hashlib.sha256((finished / rel).read_bytes()).hexdigest() == sha


def test_a_flipped_bit_in_a_checkpoint_is_caught_before_a_stage_reads_it(copy):
    """Issue 19, 7: the next round trained on damaged weights; now the stage refuses, naming the file
    and the command that re-creates it, and changes nothing."""
    rd = RunDir(copy)
    weights = rd.checkpoint(0) / "model.safetensors"
    flip_a_bit(weights)
    for stage in ("generate", "score", "select", "train", "evaluate"):
        rd.clear_done(1, stage)
    before = raw_digest(copy)
    with pytest.raises(ArtifactError) as err:
        run(fault_cfg(copy))
    assert str(err.value) == (f"{weights}: its sha256 differs from the one recorded when round 0's sft stage wrote it "
                              f"({rd.marker(0, 'sft')}): it was changed or damaged since; re-create it with "
                              "`stage=sft round=0`")
    assert unchanged(before, copy)


def test_an_edited_jsonl_that_still_parses_is_caught(copy):
    """A valid-looking change (one reward) passes every line check; the checksum still catches it."""
    rd = RunDir(copy)
    rows = [json.loads(line) for line in rd.scores(1).read_text().splitlines()]
    rows[2]["rewards"][0] = 0.123
    rd.scores(1).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for stage in ("select", "train", "evaluate"):
        rd.clear_done(1, stage)
    with pytest.raises(ArtifactError, match=r"round_1/scores.jsonl: its sha256 differs .* re-create it with "
                                            r"`stage=score round=1`$"):
        run(fault_cfg(copy))


def test_the_redo_command_of_a_damaged_checkpoint_resumes_to_the_same_artifacts(copy, reference_digest):
    rd = RunDir(copy)
    flip_a_bit(rd.checkpoint(1) / "model.safetensors")
    rd.clear_done(1, "evaluate")
    with pytest.raises(ArtifactError, match="re-create it with `stage=train round=1`"):
        run(fault_cfg(copy))
    run(fault_cfg(copy, "stage=train", "round=1"))
    run(fault_cfg(copy))
    assert digest(copy) == reference_digest


# ---------------------------------------------------------------- 6: a marker whose files are gone


def test_an_evaluation_whose_eval_json_is_gone_is_redone(copy, reference_digest):
    """Issue 19, 6: round_1/eval.json deleted, its marker kept: the summary stopped at round 0."""
    rd = RunDir(copy)
    rd.eval(1).unlink()
    summary = run(fault_cfg(copy))
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert digest(copy) == reference_digest


def test_a_missing_output_of_another_stage_is_refused_with_its_name(copy):
    rd = RunDir(copy)
    rd.lists(1).unlink()
    rd.clear_done(1, "train")
    with pytest.raises(ArtifactError, match=rf"^{rd.lists(1)} is missing, though round 1's select stage is marked "
                                            r"done \(.*\); re-create it with `stage=select round=1`$"):
        run(fault_cfg(copy))


# ---------------------------------------------------------------- 5: the summary covers every finished round


def test_fewer_rounds_never_shrink_the_summary(copy):
    """Issue 19, 5: `rounds` lowered on a finished run rewrote summary.json (and .png) to fewer rounds."""
    before = json.loads((copy / "summary.json").read_text())
    summary = run(fault_cfg(copy, "rounds=0"))
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert json.loads((copy / "summary.json").read_text()) == before


# ---------------------------------------------------------------- 4: one prompt set for every round compared


def test_rounds_evaluated_on_different_prompt_sets_are_never_compared(copy, reference_digest, caplog):
    """Issue 19, 4: `stage=evaluate round=0 eval.n_prompts=8`, then a plain run: round 1 (24 prompts) was
    compared with the 8-prompt baseline (accuracy_gain 0.0). Now it is refused before any generation,
    and re-evaluating round 0 with the run's settings brings back the uninterrupted run's artifacts."""
    from larpo.evals import held_out as evaluate

    rd = RunDir(copy)
    run(fault_cfg(copy, "stage=evaluate", "round=0", "eval.n_prompts=8"))
    assert json.loads(rd.eval(0).read_text())["n_eval"] == 8 and not rd.is_done(1, "evaluate")
    calls = {"n": 0}
    original = evaluate.greedy_outputs

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    evaluate.greedy_outputs = counted
    try:
        with pytest.raises(PipelineError, match=r"^round 1's held-out evaluation is on 24 prompts, round 0's \(.*\) "
                                                r"was on 8 \(8 in common\): rounds evaluated on different prompt "
                                                r"sets are never compared"):
            run(fault_cfg(copy))
    finally:
        evaluate.greedy_outputs = original
    assert calls["n"] == 0  # refused before round 1 generated anything
    run(fault_cfg(copy, "stage=evaluate", "round=0"))
    run(fault_cfg(copy))
    assert digest(copy) == reference_digest


# ---------------------------------------------------------------- 11: a failed evaluation changes nothing


def test_a_forced_evaluation_that_fails_changes_nothing(copy, monkeypatch):
    """Issue 19, 11: a failed benchmark attempt cleared round 1's evaluate marker and rewrote
    eval_outputs.jsonl; now nothing is written before every part of the evaluation succeeded."""
    from larpo.evals import bench

    def judge_down(*args, **kwargs):
        raise PipelineError("the judge went away")

    monkeypatch.setattr(bench, "run_benchmarks", judge_down)
    before = raw_digest(copy)
    with pytest.raises(PipelineError, match="the judge went away"):
        run(fault_cfg(copy, "stage=evaluate", "round=1"))
    assert unchanged(before, copy)
    with pytest.raises(PipelineError, match="the judge went away"):
        run(fault_cfg(copy, "stage=evaluate", "round=0"))  # later rounds' markers are kept too
    assert unchanged(before, copy)

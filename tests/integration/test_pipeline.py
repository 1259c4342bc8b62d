"""End-to-end: the whole pipeline on the shrunk `experiment=smoke` config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from larpo import stages
from larpo.artifacts import JsonlJournal, RunDir, read_json, read_jsonl
from larpo.pipeline import run

ROUNDS = 2  # experiment=smoke

GEN_FIELDS = {"prompt_id", "prompt", "responses", "finished", "sampling"}
SCORE_FIELDS = {"prompt_id", "rewards", "reward_model"}
LIST_FIELDS = {"prompt_id", "prompt", "responses", "finished", "rewards", "ref_logps"}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def check_contract(rd: RunDir, n_samples: int, list_size: int) -> None:
    """Every artifact of DESIGN §3, to the field name."""
    manifest = read_json(rd.manifest)
    assert {"config", "git_sha", "versions", "seed"} <= set(manifest)
    assert "stage" not in manifest["config"]  # volatile keys are not part of the run's identity
    for r in range(ROUNDS + 1):
        assert (rd.checkpoint(r) / "config.json").exists()
        assert (rd.checkpoint(r) / "tokenizer_config.json").exists()
        ev = read_json(rd.eval(r))
        assert {"accuracy", "accuracy_se", "mean_reward", "win_rate", "pass@1", "pass@4"} <= set(ev)
        assert 0.0 <= ev["accuracy"] <= 1.0 and 0.0 <= ev["win_rate"] <= 1.0
        # Same prompts every round: the mean paired difference is the difference of accuracies.
        assert ev["accuracy_gain"] == pytest.approx(ev["accuracy"] - read_json(rd.eval(0))["accuracy"])
        assert ev["pass@1"] <= ev["pass@2"] <= ev["pass@4"]
        stages_r = ("sft", "evaluate") if r == 0 else ("generate", "score", "select", "train", "evaluate")
        assert all(rd.is_done(r, s) for s in stages_r)
        if r == 0:
            continue
        gens = read_jsonl(rd.generations(r))
        assert gens and all(set(g) == GEN_FIELDS and len(g["responses"]) == n_samples for g in gens)
        assert all(len(g["finished"]) == n_samples for g in gens)
        scores = read_jsonl(rd.scores(r))
        assert [s["prompt_id"] for s in scores] == [g["prompt_id"] for g in gens]
        assert all(set(s) == SCORE_FIELDS and len(s["rewards"]) == n_samples for s in scores)
        assert all(0.0 <= x <= 1.0 for s in scores for x in s["rewards"])
        lists = read_jsonl(rd.lists(r))
        for row in lists:
            assert set(row) == LIST_FIELDS
            assert len(row["responses"]) == len(row["rewards"]) == len(row["ref_logps"]) == list_size
            assert row["rewards"] == sorted(row["rewards"], reverse=True)
            assert all(lp < 0 for lp in row["ref_logps"])
    summary = read_json(rd.summary)
    assert [x["round"] for x in summary["rounds"]] == list(range(ROUNDS + 1))
    assert (rd.root / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(rd.root.rglob("*.tmp")) and not list(rd.root.rglob("*.partial"))


def test_smoke_end_to_end_and_rerun_does_no_work(smoke_cfg, tmp_path, monkeypatch):
    cfg = smoke_cfg()
    summary = run(cfg)
    rd = RunDir(cfg.run_dir)
    check_contract(rd, n_samples=cfg.sampling.n_samples, list_size=cfg.select.n_top + cfg.select.n_bottom)
    assert len(summary["rounds"]) == ROUNDS + 1
    # The policy changed: round 2's weights differ from round 0's.
    w0, w2 = weights(rd.checkpoint(0)), weights(rd.checkpoint(ROUNDS))
    assert any(not torch.equal(w0[k], w2[k]) for k in w0)
    # The same command again does no work: every stage is skipped.
    for name in list(stages.STAGE_FUNCS):
        monkeypatch.setitem(stages.STAGE_FUNCS, name, lambda ctx, r, name=name: pytest.fail(f"{name} re-ran"))
    mtimes = {p: p.stat().st_mtime_ns for p in rd.root.rglob("*") if p.is_file() and p.suffix != ".png"}
    mtimes.pop(rd.summary)
    assert run(cfg)["rounds"] == summary["rounds"]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way catches it."""


def test_interrupted_stage_resumes_to_identical_artifacts(smoke_cfg, tmp_path, monkeypatch):
    ref_cfg = smoke_cfg(run_dir=tmp_path / "uninterrupted")
    run(ref_cfg)

    cfg = smoke_cfg(run_dir=tmp_path / "interrupted")
    original_append = JsonlJournal.append
    calls = {"n": 0}

    def append_then_die(self, rows):
        original_append(self, rows)
        calls["n"] += 1
        if "round_2" in str(self.path) and calls["n"] >= 3:  # round 2, after one batch is written
            raise Interrupt

    monkeypatch.setattr(JsonlJournal, "append", append_then_die)
    with pytest.raises(Interrupt):
        run(cfg)
    rd = RunDir(cfg.run_dir)
    partial = JsonlJournal(rd.generations(2)).path
    assert partial.exists() and not rd.generations(2).exists()
    assert 0 < len(partial.read_text().splitlines()) < cfg.sampling.prompts_per_round
    monkeypatch.setattr(JsonlJournal, "append", original_append)
    run(cfg)

    ref = RunDir(ref_cfg.run_dir)
    for r in range(1, ROUNDS + 1):
        for name in ("generations.jsonl", "scores.jsonl", "lists.jsonl", "eval.json", "eval_outputs.jsonl"):
            assert (rd.round_dir(r) / name).read_text() == (ref.round_dir(r) / name).read_text(), (r, name)
    wa, wb = weights(rd.checkpoint(ROUNDS)), weights(ref.checkpoint(ROUNDS))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert untimed(read_json(rd.summary)) == untimed(read_json(ref.summary))


def untimed(summary: dict) -> dict:
    """summary.json without wall-clock figures, which legitimately differ between runs."""
    timing = {"wall_s", "tokens_per_s"}
    return [{**r, "train": {k: v for k, v in r["train"].items() if k not in timing}} for r in summary["rounds"]]

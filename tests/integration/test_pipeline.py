"""End-to-end: the whole pipeline on the shrunk `experiment=smoke` config.

Beyond "every artifact exists", the contract check pins the artifacts to values computed here
independently of the code under test: each round's prompt slice, per-batch sampling seeds, the
verifier's rewards, the top/bottom selection, the reference log-probs (a plain forward of the
behaviour checkpoint, one sequence at a time), the evaluation split and its accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from larpo import stages
from larpo.artifacts import BatchJournal, RunDir, read_json, read_jsonl
from larpo.pipeline import run
from larpo.seeds import derive_seed
from tests.helpers.runs import check_reference
from tests.helpers.tiny import naive_logp

ROUNDS = 2  # experiment=smoke

GEN_FIELDS = {"prompt_id", "prompt", "responses", "finished", "sampling"}
SCORE_FIELDS = {"prompt_id", "rewards", "reward_model"}
LIST_FIELDS = {"prompt_id", "prompt", "responses", "finished", "rewards", "ref_logps"}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def check_contract(cfg, rd: RunDir) -> None:
    """Every artifact of docs/design.md's "Run directory contract", to the field name, and its values."""
    from larpo.checkpoints import load_model
    from larpo.model import load_tokenizer

    task = instantiate(cfg.task)
    n_samples, n_top, n_bottom = cfg.sampling.n_samples, cfg.select.n_top, cfg.select.n_bottom
    manifest = read_json(rd.manifest)
    assert {"config", "git_sha", "versions", "seed"} <= set(manifest)
    assert "stage" not in manifest["config"]  # volatile keys are not part of the run's identity
    eval_ids = [ex.prompt_id for ex in task.split("eval")]
    train = task.split("train")
    acc0 = read_json(rd.eval(0))["accuracy"]
    for r in range(ROUNDS + 1):
        assert (rd.checkpoint(r) / "config.json").exists()
        assert (rd.checkpoint(r) / "tokenizer_config.json").exists()
        ev = read_json(rd.eval(r))
        assert {"accuracy", "accuracy_se", "mean_reward", "win_rate", "pass@1", "pass@4"} <= set(ev)
        # Evaluation covers the whole eval split, and its accuracy is that of the saved outputs.
        outputs = read_jsonl(rd.eval_outputs(r))
        assert [o["prompt_id"] for o in outputs] == eval_ids
        by_id = {ex.prompt_id: ex for ex in task.split("eval")}
        rewards = [task.verify(by_id[o["prompt_id"]].prompt, o["response"], o["finished"]) for o in outputs]
        assert [o["reward"] for o in outputs] == rewards
        # Correct = the gold answer, finished (the verifier's 1.0), taken from the task.
        assert [o["correct"] for o in outputs] == [x == 1.0 for x in rewards]
        assert ev["accuracy"] == pytest.approx(sum(x == 1.0 for x in rewards) / len(rewards))
        assert ev["n_eval"] == len(eval_ids)
        # Same prompts every round: the mean paired difference is the difference of accuracies.
        assert ev["accuracy_gain"] == pytest.approx(ev["accuracy"] - acc0)
        assert ev["pass@1"] <= ev["pass@2"] <= ev["pass@4"]
        stages_r = ("sft", "evaluate") if r == 0 else ("generate", "score", "select", "train", "evaluate")
        assert all(rd.is_done(r, s) for s in stages_r)
        if r == 0:
            continue
        gens = read_jsonl(rd.generations(r))
        n = cfg.sampling.prompts_per_round
        # Round r takes the r-th slice of the train prompts.
        assert [g["prompt_id"] for g in gens] == [ex.prompt_id for ex in train[(r - 1) * n : r * n]]
        assert all(set(g) == GEN_FIELDS and len(g["responses"]) == len(g["finished"]) == n_samples for g in gens)
        bs = cfg.sampling.batch_size
        assert [g["sampling"]["seed"] for g in gens] == [derive_seed(cfg.seed, r, "generate", i // bs)
                                                         for i in range(len(gens))]
        scores = read_jsonl(rd.scores(r))
        assert [s["prompt_id"] for s in scores] == [g["prompt_id"] for g in gens]
        assert all(set(s) == SCORE_FIELDS for s in scores)
        for g, s in zip(gens, scores):
            assert s["rewards"] == [task.verify(g["prompt"], y, f) for y, f in zip(g["responses"], g["finished"])]
        check_lists(rd, r, gens, scores, n_top, n_bottom)
        check_reference(cfg, rd, r, load_model, load_tokenizer)
        # At the first step under reference=behavior the policy *is* the reference: γ = 0 exactly.
        first = read_json(rd.train_log(r))["first_step"]
        assert abs(first["chosen_reward"]) < 1e-4 and abs(first["margin"]) < 1e-4
    summary = read_json(rd.summary)
    assert [x["round"] for x in summary["rounds"]] == list(range(ROUNDS + 1))
    assert (rd.root / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(rd.root.rglob("*.tmp")) and not list(rd.root.rglob("*.partial"))


def check_lists(rd: RunDir, r: int, gens: list, scores: list, n_top: int, n_bottom: int) -> None:
    lists = {row["prompt_id"]: row for row in read_jsonl(rd.lists(r))}
    assert lists and all(set(row) == LIST_FIELDS for row in lists.values())
    for g, s in zip(gens, scores):
        rewards = s["rewards"]
        ranked = sorted(range(len(rewards)), key=lambda i: -rewards[i])  # stable: ties keep sample order
        keep = ranked[:n_top] + ranked[-n_bottom:]
        row = lists[g["prompt_id"]]  # smoke keeps tied lists (select.drop_ties=false)
        assert row["responses"] == [g["responses"][i] for i in keep]
        assert row["finished"] == [g["finished"][i] for i in keep]
        assert row["rewards"] == [rewards[i] for i in keep]


def test_smoke_end_to_end_and_rerun_does_no_work(smoke_cfg, tmp_path, monkeypatch):
    cfg = smoke_cfg()
    summary = run(cfg)
    rd = RunDir(cfg.run_dir)
    check_contract(cfg, rd)
    assert len(summary["rounds"]) == ROUNDS + 1
    # The policy changed: round 2's weights differ from round 0's.
    w0, w2 = weights(rd.checkpoint(0)), weights(rd.checkpoint(ROUNDS))
    assert any(not torch.equal(w0[k], w2[k]) for k in w0)
    # The same command again does no work: every stage is skipped.
    for name in list(stages.STAGE_FUNCS):
        monkeypatch.setitem(stages.STAGE_FUNCS, name, lambda ctx, r, name=name: pytest.fail(f"{name} re-ran"))
    mtimes = {p: p.stat().st_mtime_ns for p in rd.root.rglob("*") if p.is_file() and p.suffix != ".png"}
    mtimes.pop(rd.summary)
    mtimes.pop(rd.root / ".lock")  # names the current holder, so every run rewrites it
    assert run(cfg)["rounds"] == summary["rounds"]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_reference_initial_uses_the_round0_policy(smoke_cfg):
    """reference=initial: round 2's reference log-probs come from round 0, so γ ≠ 0 at its first step.

    γ is checked per candidate, not through the logged first-step margin: that is a mean of signed
    differences, which a run on another CPU (other samples, other lists) may bring near 0 (1.8e-3
    here, 4.5e-4 on another machine of the same kind). The behaviour policy's (round 1's) log-probs
    of round 2's candidates differ from the stored reference by up to 1.04 here; the fp32 spread of
    a log-prob across CPUs is ~1e-4 (1e-5 relative of |log p| ~ 10), and the bound is 100x that.
    """
    cfg = smoke_cfg("reference=initial", "eval.pass_at_max=0", "threads=1")
    run(cfg)
    rd = RunDir(cfg.run_dir)
    from larpo.checkpoints import load_model
    from larpo.model import load_tokenizer

    check_reference(cfg, rd, 2, load_model, load_tokenizer)
    policy, tok = load_model(rd.checkpoint(1)), load_tokenizer(rd.checkpoint(1))
    gaps = [abs(naive_logp(policy, tok, row["prompt"], y, f) - ref)
            for row in read_jsonl(rd.lists(2))[:6]
            for y, f, ref in zip(row["responses"], row["finished"], row["ref_logps"])]
    assert max(gaps) > 1e-2, max(gaps)


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way catches it."""


def test_interrupted_stage_resumes_to_identical_artifacts(smoke_cfg, tmp_path, monkeypatch):
    ref_cfg = smoke_cfg(run_dir=tmp_path / "uninterrupted")
    run(ref_cfg)

    cfg = smoke_cfg(run_dir=tmp_path / "interrupted")
    original_append = BatchJournal.append
    calls = {"n": 0}

    def append_then_die(self, batch, rows):
        original_append(self, batch, rows)
        calls["n"] += 1
        if "round_2" in str(self.path) and calls["n"] >= 3:  # round 2, after one batch is written
            raise Interrupt

    monkeypatch.setattr(BatchJournal, "append", append_then_die)
    with pytest.raises(Interrupt):
        run(cfg)
    rd = RunDir(cfg.run_dir)
    partial = BatchJournal(rd.generations(2)).path
    assert partial.exists() and not rd.generations(2).exists()
    assert len(BatchJournal(rd.generations(2)).completed()) == 1
    monkeypatch.setattr(BatchJournal, "append", original_append)
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

"""End-to-end: the smoke pipeline with the paper's hardest negatives (docs/design.md, "Sampling plan").

Every generations row carries the ladder's extra candidate, the reward scores it, selection
sees it like any other candidate, and the run finishes; an interrupted generate stage with the
ladder, a temperature split and extra candidates resumes to byte-identical artifacts.
"""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from larpo.artifacts import BatchJournal, RunDir, read_json, read_jsonl
from larpo.generation.plan import SamplingPlan
from larpo.pipeline import run


def test_smoke_with_hardest_negatives(smoke_cfg):
    cfg = smoke_cfg("rounds=1", "threads=1", "eval.pass_prompts=4", "sampling.negatives=hardest",
                    "sampling.extra_negatives=1")
    summary = run(cfg)
    assert [x["round"] for x in summary["rounds"]] == [0, 1]
    rd, task, n = RunDir(cfg.run_dir), instantiate(cfg.task), cfg.sampling.n_samples
    assert SamplingPlan.of(cfg.sampling).candidates == n + 2
    gens, scores = read_jsonl(rd.generations(1)), read_jsonl(rd.scores(1))
    assert len(gens) == cfg.sampling.prompts_per_round
    found = 0
    for g, s in zip(gens, scores):
        kinds = g["sampling"]["kinds"]
        assert len(g["responses"]) == len(g["finished"]) == len(kinds) == n + 2
        assert kinds == ["sample"] * n + ["extra", "negative:hardest"]
        assert g["sampling"]["temperatures_per_candidate"][-2:] == [0.2, 0.3]
        hardest, fin = g["responses"][-1], g["finished"][-1]
        # Found = incorrect per the task; not found = the fallback, a correct draw.
        assert task.is_correct(g["prompt"], hardest, fin) != g["sampling"]["negatives_found"][0]
        found += g["sampling"]["negatives_found"][0]
        # The reward covers every candidate, the ladder's included.
        assert s["prompt_id"] == g["prompt_id"]
        assert s["rewards"] == [task.verify(g["prompt"], y, f) for y, f in zip(g["responses"], g["finished"])]
    assert found > 0  # the round-0 policy is imperfect: the search finds incorrect answers
    lists = read_jsonl(rd.lists(1))
    by_id = {g["prompt_id"]: g for g in gens}
    assert lists and all(set(row["responses"]) <= set(by_id[row["prompt_id"]]["responses"]) for row in lists)
    # Selection sees the ladder's candidates: wrong ones rank low, so bottom-k lists take some.
    assert any(by_id[row["prompt_id"]]["responses"][-1] in row["responses"] for row in lists)
    assert read_json(rd.eval(1))["n_eval"] == cfg.task.n_eval


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way catches it."""


def test_interrupted_generate_with_negatives_resumes_byte_identical(smoke_cfg, tmp_path, monkeypatch):
    over = ("rounds=1", "threads=1", "eval.pass_prompts=4", "sampling.negatives=easiest",
            "sampling.temperatures=[0.7,1.3]", "sampling.extra_negatives=1")
    ref = RunDir(smoke_cfg(*over, run_dir=tmp_path / "plain").run_dir)
    run(smoke_cfg(*over, run_dir=ref.root))
    cfg = smoke_cfg(*over, run_dir=tmp_path / "interrupted")
    original = BatchJournal.append

    def append_then_die(self, batch, rows):
        original(self, batch, rows)
        if self.final.name == "generations.jsonl":
            raise Interrupt  # after generate's first batch is journaled

    monkeypatch.setattr(BatchJournal, "append", append_then_die)
    with pytest.raises(Interrupt):
        run(cfg)
    rd = RunDir(cfg.run_dir)
    assert len(BatchJournal(rd.generations(1)).completed()) == 1 and not rd.generations(1).exists()
    monkeypatch.setattr(BatchJournal, "append", original)
    run(cfg)
    for name in ("generations.jsonl", "scores.jsonl", "lists.jsonl"):
        assert (rd.round_dir(1) / name).read_bytes() == (ref.round_dir(1) / name).read_bytes(), name

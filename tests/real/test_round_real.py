"""One whole round of the pipeline on the real SmolLM2-135M-Instruct with a verifier task.

``python run.py model=smollm2_135m model.pretrained=<folder> task=gsm8k task.path=<file.jsonl>
reward=verifier rounds=1`` at tiny sizes: the real model samples, the GSM8K verifier scores,
lists carry reference log-probs, one train step, a checkpoint that reloads, and an evaluation.
"""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from larpo.artifacts import RunDir, read_json, read_jsonl
from larpo.checkpoints import load_model
from larpo.pipeline import run
from tests.helpers.config import compose_config
from tests.helpers.plain import ATOL, plain_logps

# GSM8K-format rows (question, worked answer ending "#### n"), easy enough that a 135M model
# sometimes ends on the right number. One file serves both splits: eval takes the first
# task.n_eval prompts in the task's seeded order, train the rest.
PROBLEMS = [("What is 2 + 3?", 5), ("What is 4 + 4?", 8), ("What is 10 - 7?", 3), ("What is 6 + 1?", 7),
            ("What is 3 times 3?", 9), ("What is 9 - 5?", 4)]
SIZES = ["sampling.prompts_per_round=2", "sampling.n_samples=4", "sampling.max_new_tokens=24",
         "sampling.batch_size=8", "select.drop_ties=false", "train.lr=1e-5", "train.epochs=1",
         "train.lists_per_step=2", "task.n_eval=2", "eval.n_prompts=2", "eval.batch_size=2", "eval.pass_at_max=0",
         "eval.alpaca_style=false"]


@pytest.fixture(scope="module")
def round_run(smollm2, tmp_path_factory):
    root = tmp_path_factory.mktemp("real_round")
    data = root / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": f"The result is <<{a}>>{a}.\n#### {a}"}) + "\n"
                            for q, a in PROBLEMS))
    cfg = compose_config(["model=smollm2_135m", f"model.pretrained={smollm2}", "task=gsm8k", f"task.path={data}",
                          "task.config=null", "reward=verifier", "rounds=1", f"run_dir={root / 'run'}", *SIZES])
    return cfg, run(cfg)


def test_one_round_through_the_pipeline(round_run, smollm2_tok, smollm2_model):
    cfg, summary = round_run
    rd = RunDir(cfg.run_dir)
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    task = instantiate(cfg.task)
    eval_prompts = {e.prompt for e in task.split("eval")}
    gens = read_jsonl(rd.generations(1))
    assert len(gens) == 2 and all(len(g["responses"]) == len(g["finished"]) == 4 for g in gens)
    assert not eval_prompts & {g["prompt"] for g in gens}  # held-out prompts are never trained on
    texts = [y for g in gens for y in g["responses"]]
    assert any(texts) and not any("<|im_end|>" in y or "<|im_start|>" in y for y in texts)
    # The verifier's rewards, recomputed here from the generations.
    scores = {s["prompt_id"]: s["rewards"] for s in read_jsonl(rd.scores(1))}
    for g in gens:
        assert scores[g["prompt_id"]] == [task.verify(g["prompt"], y, f) for y, f in zip(g["responses"], g["finished"])]
    # The stored reference log-probs are round 0's (= the fetched model's), recomputed one by one.
    lists = read_jsonl(rd.lists(1))
    assert len(lists) == 2
    for row in lists:
        expected = plain_logps(smollm2_model, smollm2_tok, row["prompt"], row["responses"], row["finished"])
        assert len(row["ref_logps"]) == 4 and row["ref_logps"] == pytest.approx(expected, abs=ATOL, rel=0)
    # The round's checkpoint reloads; it changed iff some list carried a preference.
    policy = load_model(rd.checkpoint(1))
    assert policy.config.vocab_size == 49152 and not policy.training
    w0, w1 = load_file(str(rd.checkpoint(0) / "model.safetensors")), load_file(str(rd.checkpoint(1) / "model.safetensors"))
    changed = any(not torch.equal(w0[k], w1[k]) for k in w0)
    assert changed == any(len(set(row["rewards"])) > 1 for row in lists)
    for r in (0, 1):
        ev = read_json(rd.eval(r))
        assert 0.0 <= ev["accuracy"] <= 1.0, ev

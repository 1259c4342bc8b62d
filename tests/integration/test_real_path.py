"""The real path through the same pipeline, offline: a chat policy from a folder, UltraFeedback
prompts from a save_to_disk folder, and each kind of reward model — all tiny stand-ins built here
with the code a hub download would hit (save_pretrained / save_to_disk)."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from larpo.artifacts import RunDir, read_json, read_jsonl
from larpo.pipeline import run
from tests.helpers.config import compose_config
from tests.helpers.stand_ins import SMALL_HUB_RUN


@pytest.mark.parametrize("reward", ["seqcls", "pairrm"])
def test_ultrafeedback_cpu_with_each_reward_model(reward, stand_ins, tmp_path):
    cfg = compose_config(["experiment=ultrafeedback_cpu", f"reward={reward}", f"run_dir={tmp_path / 'run'}",
                          f"model.pretrained={stand_ins['policy']}", f"reward.pretrained={stand_ins[reward]}",
                          f"task.path={stand_ins['data']}", *SMALL_HUB_RUN])
    summary = run(cfg)
    rd = RunDir(cfg.run_dir)
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    rm = instantiate(cfg.reward)
    for r in (1, 2):
        gens = read_jsonl(rd.generations(r))
        # The over-long UltraFeedback prompt was filtered with the policy's own tokenizer.
        assert all("a very long winding road" not in g["prompt"] for g in gens) and len(gens) == 8
        scores = read_jsonl(rd.scores(r))
        assert {s["reward_model"] for s in scores} == {rm.name}
        # The rewards are the reward model's: re-scored here, the same numbers.
        again = rm.score([g["prompt"] for g in gens], [g["responses"] for g in gens], [g["finished"] for g in gens])
        for s, a in zip(scores, again):
            assert s["rewards"] == pytest.approx(a, abs=1e-5)
        if reward == "pairrm":
            assert all(math.isclose(sum(s["rewards"]), 0.0, abs_tol=1e-5) for s in scores)  # list-relative
        lists = read_jsonl(rd.lists(r))
        assert lists and all(len(row["ref_logps"]) == 4 for row in lists)
        ev = read_json(rd.eval(r))
        assert "accuracy" not in ev and 0.0 <= ev["win_rate"] <= 1.0  # no verifier: no accuracy
        assert ("mean_reward" in ev) == (reward == "seqcls")  # a lone answer's PairRM score means nothing
    w0, w2 = load_file(str(rd.checkpoint(0) / "model.safetensors")), load_file(str(rd.checkpoint(2) / "model.safetensors"))
    assert any(not torch.equal(w0[k], w2[k]) for k in w0)  # the policy changed

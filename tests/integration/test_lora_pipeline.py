"""``model.lora.r``: the smoke pipeline with LoRA rounds, end to end (larpo/lora.py)."""

from __future__ import annotations

import json

import pytest

from larpo.artifacts import RunDir, read_json
from larpo.pipeline import run
from tests.helpers.runs import ROUNDS, check_reference

pytest.importorskip("peft", reason="LoRA needs peft (pip install -e '.[lora]')")


def _size(folder) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix == ".safetensors")


def test_two_lora_rounds_end_to_end(smoke_cfg):
    # With gradient checkpointing (non-reentrant: the frozen base gives inputs that need no grad)
    # and the AdamW moments carried from round 1's adapter into round 2 (not round 0's SFT state).
    cfg = smoke_cfg("model.lora.r=2", "model.lora.alpha=4", "model.gradient_checkpointing=true",
                    "train.carry_optimizer=true", "eval.pass_at_max=0", "threads=1")
    summary = run(cfg)
    rd = RunDir(cfg.run_dir)
    assert [row["round"] for row in summary["rounds"]] == list(range(ROUNDS + 1))
    full = _size(rd.checkpoint(0))
    for r in range(1, ROUNDS + 1):
        ckpt = rd.checkpoint(r)
        assert not (ckpt / "model.safetensors").exists() and (ckpt / "adapter_model.safetensors").exists()
        assert _size(ckpt) < full / 3, (r, _size(ckpt), full)  # the adapter, not a copy of the weights
        assert json.loads((ckpt / "lora_base.json").read_text())["base"] == "../../round_0/checkpoint"
        assert "accuracy" in read_json(rd.eval(r))
        assert (ckpt / "optimizer.pt").exists()
    # Reference = behaviour policy = round 1 (base + round 1's adapter), so round 2's first step
    # starts at the reference: zero margin, and the stored log-probs are round 1's.
    from larpo.checkpoints import load_model
    from larpo.model import load_tokenizer

    check_reference(cfg, rd, 2, load_model, load_tokenizer)
    assert read_json(rd.train_log(2))["first_step"]["margin"] == pytest.approx(0.0, abs=1e-5)

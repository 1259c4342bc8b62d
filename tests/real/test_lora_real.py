"""LoRA adapters (larpo/lora.py) on every attention and MLP projection of the real SmolLM2-135M:
train one step, save the adapter over the fetched folder as its base, reload, same log-probs."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from larpo import lora
from larpo.checkpoints import is_adapter_checkpoint, load_model, save_checkpoint
from larpo.config import TrainConfig
from larpo.logprobs import list_logps
from larpo.losses import LambdaRankLoss
from larpo.training.loop import train_on_lists
from tests.helpers.plain import ROWS

pytest.importorskip("peft", reason="LoRA needs peft (pip install -e '.[lora]')")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = OmegaConf.create({"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": TARGETS})
TRAIN = OmegaConf.structured(TrainConfig(lr=1e-3, epochs=1, lists_per_step=3, max_tokens=10**6, warmup_ratio=0.0,
                              weight_decay=0.0, max_grad_norm=1.0, logprob_max_tokens=10**6))
# The same weights through the same code on the same machine: only the adapter's save/load can differ.
SAME = 1e-5


def flat(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([x for row in rows for x in row], dtype=torch.float64)


def test_lora_on_attention_and_mlp_trains_saves_and_reloads(smollm2, smollm2_tok, smollm2_model, tmp_path):
    tok = smollm2_tok
    rows = [{**row, "prompt_id": f"p{i}", "rewards": [float(-k) for k in range(len(row["responses"]))]}
            for i, row in enumerate(ROWS)]
    base_lp = list_logps(smollm2_model, tok, rows, 10**6)
    for row, lp in zip(rows, base_lp):
        row["ref_logps"] = lp
    torch.manual_seed(0)
    model = lora.for_training(load_model(smollm2), LORA)  # its own copy: peft adapts the model in place
    adapted = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == set(TARGETS)
    assert sum(hasattr(m, "lora_A") for m in model.modules()) == len(TARGETS) * 30  # every layer
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    stats, _ = train_on_lists(model, tok, rows, LambdaRankLoss(beta=0.5), TRAIN, seed=0, log=lambda m: None)
    assert stats["steps"] == 1
    model.eval()
    trained = list_logps(model, tok, rows, 10**6)
    # Saved as an adapter over the fetched folder, reloaded through the pipeline's loader.
    folder = tmp_path / "round_1"
    save_checkpoint(model, tok, folder, base=smollm2)
    assert is_adapter_checkpoint(folder) and not (folder / "model.safetensors").exists()
    assert sorted(json.loads((folder / "adapter_config.json").read_text())["target_modules"]) == sorted(TARGETS)
    reloaded = load_model(folder)
    got = list_logps(reloaded, tok, rows, 10**6)
    assert (flat(got) - flat(trained)).abs().max().item() < SAME
    assert (flat(got) - flat(base_lp)).abs().max().item() > 0.05  # the adapter is really applied
    # The base weights under the adapter are the fetched ones, bitwise.
    base_sd, under = smollm2_model.state_dict(), reloaded.get_base_model().state_dict()
    for k, v in base_sd.items():
        name = k if k in under else k.replace(".weight", ".base_layer.weight")
        assert torch.equal(under[name], v), k

"""LoRA rounds (larpo/lora.py): only adapters train, and a saved round reloads as base + adapter."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from larpo import lora
from larpo.checkpoints import is_checkpoint, load_model, save_checkpoint
from larpo.config import TrainConfig
from larpo.errors import CheckpointError
from larpo.logprobs import list_logps
from larpo.losses import LambdaRankLoss
from larpo.training.loop import train_on_lists
from tests.helpers.tiny import ROWS, tiny_policy

pytest.importorskip("peft", reason="LoRA needs peft (pip install -e '.[lora]')")

LORA = OmegaConf.create({"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": None})
TRAIN = OmegaConf.structured(TrainConfig(lr=1e-2, epochs=2, lists_per_step=2, max_tokens=10**6, warmup_ratio=0.0,
                              weight_decay=0.1, max_grad_norm=1.0, logprob_max_tokens=10**6))


def lists_with_ref(model, tok):
    rows = copy.deepcopy(ROWS)
    for i, (row, lp) in enumerate(zip(rows, list_logps(model, tok, rows, 10**6))):
        row["ref_logps"], row["prompt_id"] = lp, f"p{i}"
    return rows


def trained_adapter(tmp_path):
    """Round 0 saved as a full checkpoint, then a LoRA policy trained on top of it."""
    base, tok = tiny_policy()
    save_checkpoint(base, tok, tmp_path / "round_0")
    rows = lists_with_ref(base, tok)
    torch.manual_seed(0)
    model = lora.for_training(load_model(tmp_path / "round_0"), LORA)
    train_on_lists(model, tok, rows, LambdaRankLoss(beta=0.5), TRAIN, seed=0, log=lambda m: None)
    return model, tok, rows


def test_lora_training_changes_only_the_adapters(tmp_path):
    base, _ = tiny_policy()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model, _, _ = trained_adapter(tmp_path)
    trained = model.get_base_model().state_dict()
    adapters = {k: v for k, v in trained.items() if "lora_" in k}
    assert adapters and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    for k, v in before.items():  # every base weight, bitwise, under its peft name
        name = k if k in trained else k.replace(".weight", ".base_layer.weight")
        assert torch.equal(trained[name], v), k
    # ... while the adapters did learn (B starts at 0).
    assert max(v.abs().max().item() for k, v in adapters.items() if "lora_B" in k) > 1e-3


def test_a_saved_lora_round_reloads_as_base_plus_adapter(tmp_path):
    model, tok, rows = trained_adapter(tmp_path)
    model.eval()
    expected = list_logps(model, tok, rows, 10**6)
    save_checkpoint(model, tok, tmp_path / "round_1", base=tmp_path / "round_0")
    folder = tmp_path / "round_1"
    assert is_checkpoint(folder) and not (folder / "model.safetensors").exists()
    assert {"adapter_model.safetensors", "adapter_config.json", lora.BASE_FILE} <= {p.name for p in folder.iterdir()}
    assert (folder / "adapter_model.safetensors").stat().st_size < (tmp_path / "round_0" / "model.safetensors").stat().st_size
    reloaded = load_model(folder)
    got = list_logps(reloaded, tok, rows, 10**6)
    base_lp = list_logps(load_model(tmp_path / "round_0"), tok, rows, 10**6)
    flat = lambda x: torch.tensor([v for row in x for v in row])  # noqa: E731
    assert (flat(got) - flat(expected)).abs().max().item() < 1e-5
    assert (flat(got) - flat(base_lp)).abs().max().item() > 1e-3  # the adapter is really applied
    # A reloaded round continues its adapter (the next round trains from it).
    again = lora.for_training(reloaded, LORA)
    assert again is reloaded and all("lora_" in n for n, p in again.named_parameters() if p.requires_grad)
    assert any(p.requires_grad for p in again.parameters())


def test_a_changed_base_is_refused(tmp_path):
    model, tok, _ = trained_adapter(tmp_path)
    save_checkpoint(model, tok, tmp_path / "round_1", base=tmp_path / "round_0")
    other, _ = tiny_policy(seed=1)
    save_checkpoint(other, tok, tmp_path / "round_0")
    with pytest.raises(CheckpointError, match="not the one the LoRA adapter"):
        load_model(tmp_path / "round_1")


def test_saving_a_lora_policy_needs_its_base(tmp_path):
    model, tok, _ = trained_adapter(tmp_path)
    with pytest.raises(ValueError, match="base="):
        save_checkpoint(model, tok, tmp_path / "round_1")


def test_target_modules_and_a_bad_name(tmp_path):
    base, _ = tiny_policy()
    some = lora.for_training(copy.deepcopy(base), OmegaConf.create({**LORA, "target_modules": ["q_proj", "v_proj"]}))
    names = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in some.named_parameters() if p.requires_grad}
    assert names == {"q_proj", "v_proj"}
    with pytest.raises(ValueError, match="model.lora"):
        lora.for_training(copy.deepcopy(base), OmegaConf.create({**LORA, "target_modules": ["no_such_proj"]}))

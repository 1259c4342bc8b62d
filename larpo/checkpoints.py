"""A run's checkpoint folders: full weights or a LoRA adapter over round 0, saved and loaded alike.

Every stage that loads a policy calls :func:`load_model`, every stage that saves one
:func:`save_checkpoint`; both dispatch on the folder (``adapter_config.json``: a LoRA round,
larpo/lora.py) or the model (a peft model saves its adapter only). This module sits above
:mod:`larpo.model` (full weights) and :mod:`larpo.lora` (adapters), so neither imports the other's
caller: the dispatch lives here once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from larpo import lora
from larpo.model import check_local, load_pretrained, looks_local, storage_error

OPTIMIZER_FILE = "optimizer.pt"
ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_checkpoint(path: str | Path) -> bool:
    """A LoRA round's checkpoint (an adapter over a base, larpo/lora.py) rather than full weights."""
    return (Path(path) / ADAPTER_CONFIG).exists()


def is_checkpoint(path: str | Path) -> bool:
    """A complete checkpoint folder: full weights (config.json) or a LoRA adapter."""
    return (Path(path) / "config.json").exists() or is_adapter_checkpoint(path)


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | None = None,
               attn_implementation: str | None = None, trust_remote_code: bool = False):
    """A checkpoint folder or hub id, in eval mode, on ``device``: a LoRA round as base + its adapter
    (unmerged), anything else with ``from_pretrained``."""
    path = str(path)
    check_local(path, "model checkpoint")
    if looks_local(path) and is_adapter_checkpoint(path):
        return lora.load_adapter_model(path, dtype, device, attn_implementation, trust_remote_code)
    return load_pretrained(path, dtype, device, attn_implementation, trust_remote_code)


def save_checkpoint(model, tokenizer, path: str | Path, optimizer_state: dict | None = None,
                    base: str | Path | None = None, state_dict: dict | None = None) -> None:
    """Save model + tokenizer (+ optimizer state) atomically: write to ``<path>.tmp``, then rename.

    A peft model saves only its adapter plus a reference to ``base`` (the round-0 checkpoint;
    larpo/lora.py). ``state_dict``: a full state dict gathered across ranks (ZeRO-3 / FSDP);
    None = the model's own.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    adapter = lora.is_peft_model(model)
    if adapter and base is None:
        raise ValueError("saving a LoRA policy needs base= (the checkpoint its adapter applies to)")
    try:
        if adapter:
            lora.save_adapter(model, tmp, path, base, state_dict)
        else:
            model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written checkpoint frees its space at once
        converted = storage_error(e, tmp)
        if converted is e:
            raise
        raise converted from e
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def load_optimizer_state(path: str | Path) -> dict | None:
    """The AdamW state saved beside a checkpoint, or None when there is none."""
    file = Path(path) / OPTIMIZER_FILE
    return torch.load(file, weights_only=True) if file.exists() else None

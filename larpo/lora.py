"""LoRA adapters (peft) for the preference rounds: small per-round checkpoints over a frozen base.

With ``model.lora.r`` set, every adapted linear layer of the round-r policy computes
``W_0 x + (alpha / r) · B_r A_r x`` (A_r: [r, d_in], B_r: [d_out, r]); W_0 are the weights of the
round-0 checkpoint (after the optional SFT warm-start, which trains all weights) and stay
frozen, bitwise, in every round. A round's checkpoint folder holds only its adapter::

    round_<r>/checkpoint/adapter_config.json       peft's config (rank, alpha, target modules)
    round_<r>/checkpoint/adapter_model.safetensors  A_r, B_r
    round_<r>/checkpoint/lora_base.json             {"base": "../../round_0/checkpoint", "fingerprint": ...}
    round_<r>/checkpoint/tokenizer files (+ optimizer.pt with train.carry_optimizer)

and :func:`larpo.checkpoints.load_model` composes base + adapter whenever it meets such a folder, so
generation, reference log-probs, training and evaluation all load LoRA rounds the same way.

**Rounds continue one adapter** (round r starts from round r−1's A, B; round 1 from peft's
initialisation, B = 0, i.e. exactly the base) rather than merging each round's adapter into
the base and starting a fresh one. Why:

- every round is "round-0 weights + one adapter", so any round loads without a chain of
  earlier adapters and without a full copy per round (which is what LoRA is meant to save);
- the reference policy is the one of docs/design.md ("Stage graph"): ``reference=behavior`` is round r−1 =
  base + A_{r−1}, B_{r−1} — exactly the weights the policy starts round r from, loaded the
  same unmerged way, so the first step's margins are 0 as with full fine-tuning;
  ``reference=initial`` is round 0 = the base alone;
- the cost: the total change from round 0 stays of rank r (a merge-and-restart scheme would
  let it grow by r per round). Raise ``model.lora.r`` if that binds.

Adapters are never merged for inference either (a merge rounds W_0 + BA to the base dtype and
would make the reference differ from the policy at step 1 in bf16).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from larpo.errors import CheckpointError
from larpo.model import load_pretrained

logger = logging.getLogger(__name__)

BASE_FILE = "lora_base.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def enabled(lora_cfg: Any) -> bool:
    """Whether ``model.lora`` asks for adapters (``r`` set)."""
    return lora_cfg is not None and lora_cfg.get("r") is not None


def is_peft_model(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def check_available() -> None:
    """Start-up check: peft is importable (``model.lora.r`` is set)."""
    _import_peft()


def _import_peft():
    try:
        import peft
    except ImportError as e:
        raise ImportError("model.lora.r is set but peft is not installed: pip install -e '.[lora]'") from e
    return peft


def for_training(model, lora_cfg: Any):
    """The policy with trainable adapters: a fresh adapter on a plain model, or the loaded one made trainable.

    Only adapter weights (names containing ``lora_``) get ``requires_grad``; the base is frozen.
    Seed torch before calling: the A matrices are drawn at random (B starts at 0).
    """
    if is_peft_model(model):  # a LoRA round: continue its adapter
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
        return model
    peft = _import_peft()
    targets = list(lora_cfg.target_modules) if lora_cfg.get("target_modules") else "all-linear"
    config = peft.LoraConfig(r=int(lora_cfg.r), lora_alpha=float(lora_cfg.alpha), lora_dropout=float(lora_cfg.dropout),
                             target_modules=targets, bias="none", task_type="CAUSAL_LM")
    try:
        model = peft.get_peft_model(model, config)
    except ValueError as e:  # e.g. a target module name the model does not have
        raise ValueError(f"model.lora: {e}") from e
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info("LoRA r=%d on %s: %.3f M trainable of %.2f M parameters", lora_cfg.r, targets, n_train / 1e6,
                n_all / 1e6)
    return model


def fingerprint(folder: str | Path) -> str:
    """A cheap identity of a checkpoint's weights: sha256 over config.json and, per weight file,
    its name, size and first and last MiB. Catches a replaced or retrained base without reading
    14 GB each round; it is not a full content hash."""
    folder = Path(folder)
    h = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") or p.name == "config.json")
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}:{size}\n".encode())
        with open(p, "rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read())
    return h.hexdigest()


def save_adapter(model, folder: Path, final: Path, base: str | Path, state_dict: dict | None = None) -> None:
    """Write the adapter (peft ``save_pretrained``) and ``lora_base.json`` into ``folder``.

    ``final``: where ``folder`` will be renamed to; the base path is stored relative to it, so
    a run directory can be moved. ``state_dict``: a gathered full state dict (ZeRO-3 / FSDP).
    """
    base = Path(base).resolve()
    model.save_pretrained(folder, state_dict=state_dict)
    rel = os.path.relpath(base, Path(final).resolve())
    (folder / BASE_FILE).write_text(json.dumps({"base": rel, "fingerprint": fingerprint(base)}, indent=2) + "\n")


def load_adapter_model(path: str | Path, dtype: torch.dtype, device: torch.device | None,
                       attn_implementation: str | None, trust_remote_code: bool):
    """Base (from ``lora_base.json``) + this folder's adapter, unmerged, in eval mode."""

    path = Path(path)
    ref_file = path / BASE_FILE
    if not ref_file.exists():
        raise CheckpointError(f"LoRA checkpoint {path} has no {BASE_FILE}: which base it adapts is unknown")
    try:
        ref = json.loads(ref_file.read_text())
        base = (path / ref["base"]).resolve()
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{ref_file} is malformed ({e})") from e
    if not (base / "config.json").exists():
        raise CheckpointError(f"the base model of the LoRA checkpoint {path} is missing at {base}")
    if fingerprint(base) != ref.get("fingerprint"):
        raise CheckpointError(f"the base model at {base} is not the one the LoRA adapter at {path} was trained on "
                              "(its weights changed since; fingerprint mismatch)")
    peft = _import_peft()
    model = load_pretrained(base, dtype, None, attn_implementation, trust_remote_code)
    try:
        model = peft.PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except Exception as e:  # safetensors, peft and torch errors have no common base
        raise CheckpointError(f"could not load the LoRA adapter at {path}: {type(e).__name__}: {e}") from e
    model.eval()
    return model.to(device) if device is not None else model

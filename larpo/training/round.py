"""The train stage's work for one round, shared by the in-process stage and the accelerate worker.

Reads ``round_<r>/lists.jsonl`` and the round r−1 checkpoint, trains (full weights, or LoRA
adapters with ``model.lora.r``), writes ``round_<r>/checkpoint`` and ``round_<r>/train.json``.
In the pipeline's process (``train.launcher=local``, larpo/stages/train.py) or in each rank of
``accelerate launch`` (larpo/training/worker.py; only rank 0 writes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from larpo import lora
from larpo.artifacts import RunDir, write_json
from larpo.checkpoints import is_adapter_checkpoint, load_model, load_optimizer_state, save_checkpoint
from larpo.model import load_tokenizer
from larpo.schemas import LISTS, read_table
from larpo.seeds import derive_seed

logger = logging.getLogger(__name__)

def _set_checkpointing(model, on: bool) -> None:
    """Gradient checkpointing for training; the saved config is for generation, so the cache comes back on."""
    # transformers 5.25 renamed gradient_checkpointing_* to activation_checkpointing_* (the old names warn).
    new = hasattr(model, "activation_checkpointing_enable")
    if on:
        # Non-reentrant: works with frozen inputs (LoRA) and with DDP's gradient hooks.
        if new:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # the cache is useless in training and conflicts with checkpointing
    else:
        (model.activation_checkpointing_disable if new else model.gradient_checkpointing_disable)()
        model.config.use_cache = True


def train_round(cfg, rd: RunDir, r: int, loss_fn, dtype: torch.dtype, device: torch.device | None,
                log: Callable[[dict], None], runner=None) -> dict:
    """Train round r from the round r−1 checkpoint; save the checkpoint and train.json (rank 0). Returns the summary."""
    from larpo.training.loop import train_on_lists
    from larpo.training.runners import LocalRunner

    runner = runner or LocalRunner()
    rows = read_table(rd.lists(r), LISTS, n_candidates=(loss_fn.min_candidates, None))
    m = cfg.model
    prev = rd.checkpoint(r - 1)
    model = load_model(prev, dtype, device, m.attn_implementation, m.trust_remote_code)
    tok = load_tokenizer(prev, m.trust_remote_code)
    seed = derive_seed(cfg.seed, r, "train")
    torch.manual_seed(seed)  # the same on every rank: LoRA's initial A and dropout masks
    use_lora = lora.enabled(m.lora)
    if use_lora:
        model = lora.for_training(model, m.lora)
    if m.gradient_checkpointing:
        _set_checkpointing(model, True)
    carry = cfg.train.carry_optimizer
    # Round 0's AdamW state (from SFT) is over all weights; a LoRA round's optimizer holds adapters only.
    carried = load_optimizer_state(prev) if carry and (not use_lora or is_adapter_checkpoint(prev)) else None
    stats, opt_state = train_on_lists(model, tok, rows.rows, loss_fn, cfg.train, seed, log, carried, runner)
    state_dict = runner.full_state_dict()  # collective under ZeRO-3 / FSDP: every rank calls it
    if m.gradient_checkpointing:
        _set_checkpointing(model, False)
    if runner.is_main:
        save_checkpoint(model, tok, rd.checkpoint(r), opt_state if carry else None,
                        base=rd.checkpoint(0) if use_lora else None, state_dict=state_dict)
        write_json(rd.train_log(r), stats)
    runner.barrier()
    return stats

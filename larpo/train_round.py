"""The train stage's work for one round, shared by the in-process stage and the accelerate worker.

Reads ``round_<r>/lists.jsonl`` and the round r−1 checkpoint, trains (full weights, or LoRA
adapters with ``model.lora.r``), writes ``round_<r>/checkpoint`` and ``round_<r>/train.json``.

As a worker (``train.launcher=accelerate``; larpo/launch.py starts it)::

    accelerate launch [...] -m larpo.train_round RUN_DIR ROUND

every rank reads the run's config from ``RUN_DIR/manifest.json`` and trains its share of each
step (larpo/runners.py); only rank 0 writes, each file atomically, plus
``round_<r>/train_steps.jsonl`` (the per-step metrics, which the parent replays into its logger).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from larpo import lora
from larpo.artifacts import RunDir, read_json, write_json, write_jsonl
from larpo.model import is_adapter_checkpoint, load_model, load_optimizer_state, load_tokenizer, save_checkpoint
from larpo.schemas import LISTS, read_table
from larpo.seeds import derive_seed

logger = logging.getLogger(__name__)

STEPS_FILE = "train_steps.jsonl"


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
    from larpo.runners import LocalRunner
    from larpo.train import train_on_lists

    runner = runner or LocalRunner()
    rows = read_table(rd.lists(r), LISTS, n_candidates=(loss_fn.min_candidates, None))
    m = cfg.model
    prev = rd.checkpoint(r - 1)
    model = load_model(prev, dtype, device, m.attn_implementation, m.trust_remote_code)
    tok = load_tokenizer(prev, m.trust_remote_code)
    seed = derive_seed(cfg.seed, r, "train")
    torch.manual_seed(seed)  # the same on every rank: LoRA's initial A and dropout masks
    use_lora = lora.enabled(m.get("lora"))
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


def _usage() -> str:
    return "usage: accelerate launch [options] -m larpo.train_round RUN_DIR ROUND"


def main(argv: list[str] | None = None) -> int:
    """Entry of one rank under ``accelerate launch``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from larpo.model import resolve_dtype
    from larpo.runners import AccelerateRunner

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        sys.stderr.write(_usage() + "\n")
        return 2
    rd, r = RunDir(Path(args[0])), int(args[1])
    cfg = OmegaConf.create(read_json(rd.manifest)["config"])
    acc = Accelerator(step_scheduler_with_optimizer=False)
    logging.basicConfig(level=logging.INFO if acc.is_main_process else logging.WARNING,
                        format=f"%(asctime)s [rank {acc.process_index}] %(name)s: %(message)s")
    if acc.distributed_type == DistributedType.DEEPSPEED:
        ds = acc.state.deepspeed_plugin.deepspeed_config
        # accelerate fills an unset clipping with 1.0 silently: make it train.max_grad_norm, always.
        if ds.get("gradient_clipping") not in (None, "auto", cfg.train.max_grad_norm):
            logger.warning("DeepSpeed gradient_clipping %s replaced by train.max_grad_norm=%s",
                           ds["gradient_clipping"], cfg.train.max_grad_norm)
        ds["gradient_clipping"] = float(cfg.train.max_grad_norm)
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = 1  # one micro-batch of lists per backward (no dataloader here)
    logger.info("round %d train: %d process(es), %s, mixed precision %s", r, acc.num_processes,
                acc.distributed_type, acc.mixed_precision)
    steps: list[dict] = []
    train_round(cfg, rd, r, instantiate(cfg.loss), resolve_dtype(cfg.model.dtype), None,
                lambda m: steps.append({**m, "round": r}), AccelerateRunner(acc))
    if acc.is_main_process:
        write_jsonl(rd.round_dir(r) / STEPS_FILE, steps)
    acc.wait_for_everyone()
    acc.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())

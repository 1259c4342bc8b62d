"""Stage ``sft`` (round 0): the starting policy, optionally warm-started by SFT (larpo/training/sft.py).

Builds the embedded model from ``model.arch`` or loads ``model.pretrained``, fine-tunes it for
``sft.steps`` steps (none by default), and saves ``round_0/checkpoint`` and ``round_0/train.json``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from larpo.artifacts import RunDir, write_json
from larpo.checkpoints import load_model, save_checkpoint
from larpo.context import RunContext
from larpo.model import build_model, load_tokenizer
from larpo.seeds import derive_seed


def outputs(rd: RunDir, r: int) -> list[Path]:
    return [rd.checkpoint(0), rd.train_log(0)]


def stage_sft(ctx: RunContext, r: int) -> None:
    from larpo.training.sft import sft

    cfg = ctx.cfg
    m = cfg.model
    tok = load_tokenizer(m.tokenizer or m.pretrained, m.trust_remote_code)
    if m.pretrained:
        model = load_model(m.pretrained, ctx.dtype, ctx.device, m.attn_implementation, m.trust_remote_code)
    else:
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = build_model(dict(cfg.model.arch), tok, ctx.dtype).to(ctx.device)
    stats, opt_state = {}, None
    if cfg.sft.steps > 0:
        stats, opt_state = sft(model, tok, ctx.task.split("sft"), cfg.sft, derive_seed(cfg.seed, "sft"), ctx.log)
    save_checkpoint(model, tok, ctx.rd.checkpoint(0), opt_state if cfg.train.carry_optimizer else None)
    write_json(ctx.rd.train_log(0), stats)

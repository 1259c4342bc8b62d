"""Checks that need the components (tokenizer, model config, task prompts), and the run's plan.

Option ranges are checked earlier, by :func:`larpo.config.validate_options`; what is checked
here would otherwise fail (or, worse, only warn) deep inside a stage after the warm-start.
All of it reads configs and tokenizers only: no weights are loaded.
"""

from __future__ import annotations

import logging

import torch

from larpo.model import check_local, load_model_config, load_tokenizer, prompt_ids
from larpo.stages import PipelineError, RunContext, round_prompts

logger = logging.getLogger(__name__)

_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}


def used_prompts(ctx: RunContext) -> list[str]:
    """Every prompt the run will generate for: each round's training slice and the eval prompts."""
    cfg = ctx.cfg
    prompts = {ex.prompt for r in range(1, cfg.rounds + 1) for ex in round_prompts(ctx, r)}
    prompts.update(ex.prompt for ex in ctx.task.split("eval")[: cfg.eval.n_prompts])
    return sorted(prompts)


def check_context_length(ctx: RunContext, model_cfg, tok) -> int:
    """The longest rendered prompt plus ``sampling.max_new_tokens`` must fit the model's positions."""
    cfg = ctx.cfg
    prompts = used_prompts(ctx)
    longest = max((len(ids) for ids in prompt_ids(tok, prompts)), default=0)
    limit = getattr(model_cfg, "max_position_embeddings", None)
    if limit and longest + cfg.sampling.max_new_tokens > limit:
        where = "model.arch.max_position_embeddings" if not cfg.model.pretrained else f"{cfg.model.pretrained}"
        raise PipelineError(
            f"the longest prompt ({longest} tokens, rendered) + sampling.max_new_tokens={cfg.sampling.max_new_tokens} "
            f"= {longest + cfg.sampling.max_new_tokens} exceeds the model's max_position_embeddings={limit} "
            f"({where}); lower sampling.max_new_tokens or filter long prompts"
        )
    return longest


def check_dtype(ctx: RunContext) -> None:
    """bf16/fp16 on a CPU without native support runs, but tens of times slower: refuse it."""
    if ctx.device.type != "cpu" or ctx.dtype == torch.float32:
        return
    if ctx.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return
    name = {torch.bfloat16: "bfloat16", torch.float16: "float16"}[ctx.dtype]
    raise PipelineError(f"model.dtype={name} on this CPU, which has no native {name} matrix units "
                        f"({torch.backends.cpu.get_cpu_capability()}): use model.dtype=float32 on CPU")


def count_parameters(model_cfg) -> int:
    """Parameters of a model built from ``model_cfg`` on the meta device (no memory, no weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_cfg)
    return sum(p.numel() for p in model.parameters())


def plan(ctx: RunContext, n_params: int, longest_prompt: int) -> str:
    """What the run will do and roughly what it needs, in a few lines."""
    cfg, s = ctx.cfg, ctx.cfg.sampling
    k = ctx.selector.list_size(s.n_samples)
    w = _BYTES[ctx.dtype]
    # Weights + gradients + AdamW's two moments, all in the parameter dtype; activations come on top.
    train_gb = n_params * 4 * w / 1e9
    ckpt_gb = n_params * w / 1e9 * (3 if cfg.train.carry_optimizer else 1)
    policy = cfg.model.pretrained or f"built from model.arch ({n_params / 1e6:.2f} M parameters)"
    reward = getattr(ctx.reward, "name", type(ctx.reward).__name__)
    lines = [
        f"policy {policy} ({n_params / 1e9:.3f} B parameters, {cfg.model.dtype}) on {ctx.device}",
        f"reward {reward}; loss {ctx.loss_fn.name}, lists of {k} from {s.n_samples} samples; reference "
        f"{cfg.reference.value if hasattr(cfg.reference, 'value') else cfg.reference}",
        f"{cfg.rounds} round(s) x {s.prompts_per_round} prompts x {s.n_samples} samples "
        f"(<= {s.max_new_tokens} new tokens; longest rendered prompt {longest_prompt} tokens), "
        f"{cfg.train.epochs} epoch(s) a round",
        f"memory for training, one device, no sharding: ~{train_gb:.2f} GB (weights, gradients, AdamW) + activations",
        f"disk: ~{ckpt_gb:.2f} GB per round's checkpoint ({cfg.rounds + 1} checkpoints)",
    ]
    return "\n  ".join(["plan:", *lines])


def preflight(ctx: RunContext) -> None:
    """Every check that needs the components; logs the plan when all pass."""
    cfg = ctx.cfg
    check_dtype(ctx)
    for key in ("pretrained", "tokenizer"):  # named by their option, before a loader names them otherwise
        if cfg.model[key]:
            check_local(cfg.model[key], f"model.{key}")
    tok = load_tokenizer(cfg.model.tokenizer or cfg.model.pretrained, cfg.model.trust_remote_code)
    model_cfg = load_model_config(cfg.model, tok)
    longest = check_context_length(ctx, model_cfg, tok)
    logger.info(plan(ctx, count_parameters(model_cfg), longest))

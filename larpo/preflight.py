"""Checks that need the components (tokenizer, model config, task prompts), run before any work.

Option ranges are checked earlier, by :func:`larpo.config.validate_options`; what is checked
here would otherwise fail (or, worse, only warn) deep inside a stage after the warm-start.
"""

from __future__ import annotations

import logging

from larpo.model import load_model_config, load_tokenizer, prompt_ids
from larpo.stages import PipelineError, RunContext, round_prompts

logger = logging.getLogger(__name__)


def used_prompts(ctx: RunContext) -> list[str]:
    """Every prompt the run will generate for: each round's training slice and the eval prompts."""
    cfg = ctx.cfg
    prompts = {ex.prompt for r in range(1, cfg.rounds + 1) for ex in round_prompts(ctx, r)}
    prompts.update(ex.prompt for ex in ctx.task.split("eval")[: cfg.eval.n_prompts])
    return sorted(prompts)


def check_context_length(ctx: RunContext) -> None:
    """The longest rendered prompt plus ``sampling.max_new_tokens`` must fit the model's positions."""
    cfg = ctx.cfg
    model_cfg = load_model_config(cfg.model)
    limit = getattr(model_cfg, "max_position_embeddings", None)
    if not limit:
        return
    tok = load_tokenizer(cfg.model.tokenizer or cfg.model.pretrained)
    prompts = used_prompts(ctx)
    lengths = [len(ids) for ids in prompt_ids(tok, prompts)] if prompts else [0]
    longest = max(lengths)
    if longest + cfg.sampling.max_new_tokens > limit:
        where = "model.arch.max_position_embeddings" if not cfg.model.pretrained else f"{cfg.model.pretrained}"
        raise PipelineError(
            f"the longest prompt ({longest} tokens, rendered) + sampling.max_new_tokens={cfg.sampling.max_new_tokens} "
            f"= {longest + cfg.sampling.max_new_tokens} exceeds the model's max_position_embeddings={limit} "
            f"({where}); lower sampling.max_new_tokens or filter long prompts"
        )


def preflight(ctx: RunContext) -> None:
    check_context_length(ctx)

"""The SFT warm-start of round 0 (the sft stage's library): the starting policy, optionally fine-tuned.

The embedded default builds a tiny Llama from a config and teaches it the task's format
and some competence from reference answers; a hub model is loaded as is (``sft.steps=0``)
or fine-tuned the same way. Either way the result is saved as ``round_0/checkpoint`` and
every later stage re-loads it with ``from_pretrained``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence

import torch

from larpo.logprobs import EncodedList, sequence_logps
from larpo.model import prompt_ids, response_ids
from larpo.training.loop import make_optimizer

logger = logging.getLogger(__name__)


def encode_examples(tokenizer, examples: Sequence) -> list[EncodedList]:
    """Each example as a one-candidate list: rendered prompt + answer + EOS."""
    p_ids = prompt_ids(tokenizer, [ex.prompt for ex in examples])
    r_ids = response_ids(tokenizer, [ex.answer for ex in examples], [True] * len(examples))
    return [EncodedList(p, [r]) for p, r in zip(p_ids, r_ids)]


def sft(model, tokenizer, examples: Sequence, cfg, seed: int, log: Callable[[dict], None]) -> tuple[dict, dict]:
    """Token-level NLL on the answers, ``cfg.steps`` steps of ``cfg.batch_size`` random examples.

    Returns a summary and the optimizer's final state.
    """
    from larpo.console import progress as tqdm

    data = encode_examples(tokenizer, examples)
    opt, sched = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.steps)
    rng = random.Random(seed)
    model.train()
    t0, loss_ema = time.perf_counter(), None
    bar = tqdm(range(cfg.steps), desc="sft warm-start", leave=False)
    for step in bar:
        batch = [data[i] for i in rng.sample(range(len(data)), min(cfg.batch_size, len(data)))]
        n_tokens = sum(len(b.responses[0]) for b in batch)
        loss = -sequence_logps(model, batch, tokenizer.pad_token_id).sum() / n_tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_value = loss.item()
        loss_ema = loss_value if loss_ema is None else 0.95 * loss_ema + 0.05 * loss_value
        if step % 25 == 0 or step == cfg.steps - 1:
            bar.set_postfix(nll=f"{loss_ema:.3f}")
            log({"sft/nll": loss_value, "sft/lr": sched.get_last_lr()[0], "sft/step": step})
    model.eval()
    wall = time.perf_counter() - t0
    logger.info("sft warm-start: %d steps in %.1f s, final token NLL %.3f", cfg.steps, wall, loss_ema or 0.0)
    return {"sft_steps": cfg.steps, "sft_nll": loss_ema, "wall_s": round(wall, 2)}, opt.state_dict()

"""The training loop of the train stage: optimise the policy on the round's lists with a retrieval loss.

AdamW with linear warm-up and cosine decay; an optimizer step covers ``lists_per_step``
lists, cut into micro-batches of whole lists under a token budget (gradient accumulation);
all candidates of a list share one forward pass. Reference log-probs come from
``lists.jsonl`` (computed once per round by ``select``), so no second model is in memory.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence

import torch

from larpo.config import Forward
from larpo.errors import NonFiniteLossError
from larpo.logprobs import EncodedList, encode_lists, pack_by_tokens, sequence_logps, to_padded

logger = logging.getLogger(__name__)


def _fusable(params: Sequence[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW takes these parameters: floating point, all on CPU or all on CUDA."""
    devices = {p.device.type for p in params}
    return bool(params) and len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)


def make_optimizer(model, lr: float, weight_decay: float, warmup_steps: int, total_steps: int, state: dict | None = None,
                   fused: bool = True):
    """AdamW + linear warm-up + cosine decay to 0 (the paper's schedule).

    ``state``: an earlier AdamW state (moments) to continue from; its learning rates are
    replaced by this schedule's. ``fused``: torch's fused AdamW kernel (``train.fused_optimizer``;
    the same update as the per-parameter loop, to float rounding) where the parameters allow it.
    """
    from transformers import get_cosine_schedule_with_warmup

    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    kw = {"fused": True} if fused and _fusable(decay + no_decay) else {}
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, **kw
    )
    if state is not None:
        # load_state_dict also restores the saved hyper-parameters; keep this round's (the
        # schedule reads initial_lr) and take only the moments from the saved state.
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        opt.load_state_dict(state)
        for group, hp in zip(opt.param_groups, hyper):
            group.update(hp, initial_lr=lr)
    sched = get_cosine_schedule_with_warmup(opt, warmup_steps, max(total_steps, 1))
    return opt, sched


def _pad_field(rows: Sequence[dict], key: str, device) -> torch.Tensor:
    k_max = max(len(r[key]) for r in rows)
    return torch.tensor([r[key] + [0.0] * (k_max - len(r[key])) for r in rows], dtype=torch.float32, device=device)


def _micro_step(model, loss_fn, rows, lists: Sequence[EncodedList], pad_id: int, scale: float,
                backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                forward: str = "shared_prompt", chunk: int | None = 512) -> dict:
    """Forward + backward of one micro-batch of whole lists; returns its loss metrics.

    ``backward``: how to back-propagate ``loss * scale`` (``accelerator.backward`` under accelerate).
    ``forward`` / ``chunk``: ``train.forward`` / ``train.logprob_chunk`` (see ``sequence_logps``).
    """
    device = next(model.parameters()).device
    flat = sequence_logps(model, lists, pad_id, forward, chunk)
    sizes = [len(lst.responses) for lst in lists]
    policy, mask = to_padded(flat, sizes)
    lengths, _ = to_padded(
        torch.tensor([len(r) for lst in lists for r in lst.responses], dtype=torch.float32, device=device), sizes
    )
    ref = _pad_field(rows, "ref_logps", device) if loss_fn.requires_reference else None
    out = loss_fn(policy_logps=policy, ref_logps=ref, rewards=_pad_field(rows, "rewards", device),
                  mask=mask, lengths=lengths.clamp(min=1))
    backward(out.loss * scale)
    return {"loss": out.loss.item(), **out.metrics}


def step_plan(lists: Sequence[EncodedList], cfg, seed: int) -> list[tuple[int, list[int], list[list[int]]]]:
    """Every optimizer step of the training: (epoch, its lists, its micro-batches of list indices).

    The lists are shuffled per epoch with ``seed`` and cut into steps of ``lists_per_step``;
    each step is packed into micro-batches of whole lists under ``max_tokens``. Deterministic,
    so every process of a distributed run computes the same plan and takes its own share.
    """
    rng = random.Random(seed)
    plan = []
    for epoch in range(cfg.epochs):
        order = list(range(len(lists)))
        rng.shuffle(order)
        for s in range(0, len(order), cfg.lists_per_step):
            chunk = order[s : s + cfg.lists_per_step]
            micros = [[chunk[j] for j in m] for m in pack_by_tokens([lists[i] for i in chunk], cfg.max_tokens)]
            plan.append((epoch, chunk, micros))
    return plan


def forward_options(cfg) -> dict:
    """``train.forward`` / ``train.logprob_chunk`` as plain values (``cfg``: a ``train`` node on the schema)."""
    return {"forward": Forward(cfg.forward).value, "chunk": cfg.logprob_chunk}


def train_on_lists(
    model, tokenizer, rows: Sequence[dict], loss_fn, cfg, seed: int, log: Callable[[dict], None],
    opt_state: dict | None = None, runner=None,
) -> tuple[dict, dict]:
    """Train ``model`` in place for ``cfg.epochs`` over ``rows`` (lists.jsonl).

    ``runner`` (larpo/training/runners.py): how the steps are executed; None = this process alone.
    Under several processes each takes its share of every step's micro-batches and gradients
    are averaged so that one step equals the one-process step over the same lists
    (``lists_per_step`` is the global batch whatever the world size). Returns a summary and
    the optimizer's final state.
    """
    from larpo.console import progress as tqdm
    from larpo.training.runners import LocalRunner

    runner = runner or LocalRunner()
    lists = encode_lists(tokenizer, rows)
    plan = step_plan(lists, cfg, seed)
    total = len(plan)
    runner.configure(plan)
    opt, sched = make_optimizer(model, cfg.lr, cfg.weight_decay, int(cfg.warmup_ratio * total), total, opt_state,
                                fused=cfg.fused_optimizer)
    model, opt, sched = runner.prepare(model, opt, sched)
    model.train()
    step, tokens, losses, t0 = 0, 0, [], time.perf_counter()
    first: dict[str, float] = {}
    bar = tqdm(total=total, desc="train", leave=False, disable=not runner.is_main)
    for epoch, chunk, micros in plan:
        metrics: dict[str, float] = {}
        for idx, real in runner.share(micros):
            weight = len(idx) / len(chunk) if real else 0.0  # a padding micro-batch adds no gradient
            with runner.accumulate(model):
                m = _micro_step(model, loss_fn, [rows[i] for i in idx], [lists[i] for i in idx],
                                tokenizer.pad_token_id, scale=weight * runner.loss_factor, backward=runner.backward,
                                **forward_options(cfg))
            if not math.isfinite(m["loss"]):  # before this step's update: the weights are still finite
                raise NonFiniteLossError(
                    f"the loss is {m['loss']} at optimizer step {step + 1} of {total} (epoch {epoch + 1}); "
                    "training stopped before that step's update and nothing was saved: lower train.lr or "
                    "the loss's beta, or check the lists' rewards and ref_logps")
            if not real:
                continue
            for k, v in m.items():  # list-weighted mean over micro-batches
                metrics[k] = metrics.get(k, 0.0) + v * weight
            tokens += sum(len(lists[i].prompt) * len(lists[i].responses)
                          + sum(map(len, lists[i].responses)) for i in idx)
        grad_norm = runner.clip(model, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        metrics = runner.sum_metrics(metrics)
        step += 1
        losses.append(metrics["loss"])
        if step == 1:  # before any update: under reference=behavior, policy == reference here
            first = {**metrics, "grad_norm": float(grad_norm)}
        log({**{f"train/{k}": v for k, v in metrics.items()}, "train/grad_norm": float(grad_norm),
             "train/lr": sched.get_last_lr()[0], "train/epoch": epoch})
        bar.update()
        bar.set_postfix(loss=f"{metrics['loss']:.3f}")
    bar.close()
    model.eval()
    wall = time.perf_counter() - t0
    tokens = runner.sum_count(tokens)
    summary = {"loss": sum(losses) / max(len(losses), 1), "final_loss": losses[-1] if losses else float("nan"),
               "steps": step, "lists": len(rows), "wall_s": round(wall, 2),
               "tokens_per_s": round(tokens / max(wall, 1e-9), 1), "first_step": first}
    if runner.world > 1:
        summary["processes"] = runner.world
    return summary, opt.state_dict()

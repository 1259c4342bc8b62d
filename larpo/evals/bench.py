"""The benchmarks of the ``evaluate`` stage: AlpacaEval 2 and MixEval(-Hard) on a round's policy.

Each benchmark is an ``eval.<name>`` node (``conf/eval/<name>.yaml``) with a ``_target_``; it is
called with a greedy ``generate_fn`` of the round's policy and returns its numbers and per-example
rows. The judge is the run's ``judge`` node (``conf/judge``), built only when a benchmark needs it;
a reward-model judge (``judge=reward``) gets the run's reward.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from hydra.utils import instantiate

logger = logging.getLogger(__name__)

BENCHMARKS = ("alpacaeval2", "alpacaeval_dev", "mixeval_hard", "mixeval")
ALPACA_BENCHMARKS = ("alpacaeval2", "alpacaeval_dev")  # judged pairwise through alpaca_eval
_ROW_KEYS = ("annotations", "records")  # per-example outputs of alpaca_eval / MixEval
_FILES = ("model_outputs",)  # files for the official tools (alpaca_eval's model_outputs.json)


def greedy_generate_fn(model, tokenizer, max_new_tokens: int, batch_size: int) -> Callable[..., list[str]]:
    """``(prompts, system=None) -> answers``, greedy, batched; prompts cut from the left to fit the model's
    positions; ``system``: a system message before each prompt (MixEval's harness sends one)."""
    from larpo.console import progress as tqdm
    from larpo.generation.sampling import sample
    from larpo.model import prompt_ids

    limit = getattr(model.config, "max_position_embeddings", None) or 10**9
    max_new = min(max_new_tokens, limit // 2)

    def generate(prompts: list[str], system: str | None = None) -> list[str]:
        too_long = sum(len(ids) + max_new > limit for ids in prompt_ids(tokenizer, prompts, system))
        if too_long:
            logger.warning("%d of %d benchmark prompts exceed %d positions with %d new tokens: their start is cut",
                           too_long, len(prompts), limit, max_new)
        out: list[str] = []
        for i in tqdm(range(0, len(prompts), batch_size), desc="benchmark answers", leave=False):
            responses, _ = sample(model, tokenizer, prompts[i : i + batch_size], n=1, temperature=0.0,
                                  max_new_tokens=max_new, max_prompt_tokens=limit - max_new, system=system)
            out.extend(r[0] for r in responses)
        return out

    return generate


def build_judge(judge_cfg: Any, reward: Any) -> Any:
    """The run's judge; a reward judge (its node has a ``reward`` field) is handed the run's reward."""
    if judge_cfg is None:
        return None
    return instantiate(judge_cfg, reward=reward) if "reward" in judge_cfg else instantiate(judge_cfg)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf (pandas' missing values) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def flatten(name: str, result: dict) -> dict[str, Any]:
    """``{name/key: value}`` for the scalars (and the judge/parser names) of a benchmark's result."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        if key in _ROW_KEYS or key in _FILES:
            continue
        if isinstance(value, dict):
            out.update({f"{name}/{key}/{k}": v for k, v in value.items() if isinstance(v, (int, float, str))})
        elif isinstance(value, (int, float, str)) or value is None:
            out[f"{name}/{key}"] = value
    return _clean(out)


def _needs_judge(name: str, node: Any) -> bool:
    return name in ALPACA_BENCHMARKS or node.get("parser") == "model"


def check_benchmarks(eval_cfg: Any, judge_cfg: Any, reward: Any, tokenizer: Any = None) -> list[str]:
    """Start-up checks of the configured benchmarks, before any work: the judge answers one small
    request (or, offline, can judge at all: a task's verifier cannot judge open questions), every
    benchmark's data files are there, and the policy's chat template (``tokenizer``) takes a benchmark's
    system message (MixEval's; Gemma's template refuses one). Returns the benchmarks checked."""
    from larpo.errors import SystemMessageError
    from larpo.model import render_prompt

    chosen = [name for name in BENCHMARKS if eval_cfg.get(name)]
    judge = None
    for name in chosen:
        node = eval_cfg[name]
        if _needs_judge(name, node) and judge is None:
            judge = build_judge(judge_cfg, reward)
            if judge is None:
                raise ValueError(f"eval.{name} needs a judge and none is configured (judge=...)")
            judge.check()
        bench = instantiate(node, judge=judge if _needs_judge(name, node) else None)
        bench.check()
        system = getattr(bench, "system_message", None)
        if tokenizer is not None and system is not None:
            try:
                render_prompt(tokenizer, "?", system)
            except SystemMessageError as e:
                raise ValueError(f"eval.{name}: {e}; set eval.{name}.system_message=null (MixEval sends none to "
                                 "such models)") from None
    return chosen


def run_benchmarks(eval_cfg: Any, judge_cfg: Any, reward: Any, model, tokenizer, generator_name: str,
                   write_rows: Callable[[str, list[dict]], None],
                   write_file: Callable[[str, str, Any], None] | None = None) -> dict[str, Any]:
    """Run every benchmark configured in ``eval_cfg``; returns their flattened numbers. ``write_rows(name,
    rows)`` keeps the per-example rows; ``write_file(name, key, data)`` the files for the official tools
    (``model_outputs``: alpaca_eval's model_outputs.json)."""
    chosen = [name for name in BENCHMARKS if eval_cfg.get(name)]
    if not chosen:
        return {}
    judge = None
    generate = greedy_generate_fn(model, tokenizer, eval_cfg.benchmark_max_new_tokens, eval_cfg.benchmark_batch_size)
    metrics: dict[str, Any] = {}
    for name in chosen:
        node = eval_cfg[name]
        needs_judge = _needs_judge(name, node)
        if needs_judge and judge is None:
            judge = build_judge(judge_cfg, reward)
        logger.info("benchmark %s (judge: %s)", name, getattr(judge, "name", None) if needs_judge else "none")
        result = instantiate(node, judge=judge if needs_judge else None)(generate, generator_name)
        rows = next((result[k] for k in _ROW_KEYS if result.get(k) is not None), [])
        write_rows(name, _clean(list(rows)))
        for key in _FILES:
            if result.get(key) is not None and write_file is not None:
                write_file(name, key, _clean(result[key]))
        metrics.update(flatten(name, result))
    return metrics

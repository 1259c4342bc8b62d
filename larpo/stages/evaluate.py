"""Stage ``evaluate``: the round's policy on the task's held-out prompts and the configured benchmarks
(larpo/evals/), into ``round_<r>/eval.json``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from larpo.artifacts import RunDir, read_json, write_json, write_jsonl
from larpo.context import RunContext
from larpo.model import load_tokenizer
from larpo.rewards.scoring import loaded


def outputs(rd: RunDir, r: int) -> list[Path]:
    # eval_outputs.jsonl and the benchmarks' rows: whichever of them exist
    return [rd.eval(r), *sorted(rd.round_dir(r).glob("eval_*.jsonl"))]


def stage_evaluate(ctx: RunContext, r: int) -> None:
    """The task's held-out metrics (``eval=task``) and the configured benchmarks, into eval.json.

    Metrics already in eval.json that this evaluation does not produce are kept, so a benchmark
    run alone on a checkpoint (``stage=evaluate round=2 eval=[alpacaeval2]``) adds to it. With
    ``sampling.backend=vllm`` the answers come from a vLLM engine in a child process
    (larpo/generation/vllm_server.py; its log is ``round_<r>/eval_vllm.log``), else from HF. Nothing
    is written (and no marker cleared) until every part succeeded: a failed benchmark leaves the
    round's evaluation as it was, and never touches the task's files.
    """
    ctx.rd.verify(r, "evaluate", [p for p in outputs(ctx.rd, r) if p.exists()])  # what is kept must be intact
    with contextlib.ExitStack() as stack:
        if ctx.cfg.sampling.backend == "vllm":
            from larpo.generation.vllm_server import served_policy

            m = ctx.cfg.model
            tok = load_tokenizer(ctx.checkpoint(r), m.trust_remote_code)
            model = stack.enter_context(served_policy(ctx.checkpoint(r), ctx.cfg.sampling.vllm,
                                                      ctx.rd.round_dir(r) / "eval_vllm.log",
                                                      trust_remote_code=m.trust_remote_code, model_dtype=m.dtype))
        else:
            model, tok = ctx.load_policy(r)
        _evaluate(ctx, r, model, tok)


def _evaluate(ctx: RunContext, r: int, model, tok) -> None:
    from larpo.evals.bench import BENCHMARKS, run_benchmarks
    from larpo.evals.held_out import held_out_metrics

    metrics = dict(read_json(ctx.rd.eval(r))) if ctx.rd.eval(r).exists() else {}
    # A part that runs again replaces all of its own earlier numbers (a key it no longer gives must go).
    redone = {name for name in BENCHMARKS if ctx.cfg.eval.get(name)} | ({None} if ctx.cfg.eval.held_out else set())
    metrics = {k: v for k, v in metrics.items() if _part(k) not in redone}
    files: dict[Path, list[dict]] = {}
    if ctx.cfg.eval.held_out:
        with loaded(ctx.reward):  # one load of a reward model for all the stage's batches
            held_out, files[ctx.rd.eval_outputs(r)] = held_out_metrics(ctx, r, model, tok)
        metrics.update(held_out)

    def keep_rows(name: str, rows: list[dict]) -> None:
        files[ctx.rd.round_dir(r) / f"eval_{name}.jsonl"] = rows
        ctx.metrics.log_table(f"eval/{name}/outputs_round{r}", rows)

    official: dict[Path, Any] = {}

    def keep_file(name: str, key: str, data: Any) -> None:  # e.g. round_2/alpacaeval2/model_outputs.json
        official[ctx.rd.round_dir(r) / name / f"{key}.json"] = data

    # The generator names the run (its directory) and the round: alpaca_eval's leaderboard row.
    metrics.update(run_benchmarks(ctx.cfg.eval, ctx.cfg.judge, ctx.reward, model, tok,
                                  f"{ctx.rd.root.name}_round{r}", keep_rows, keep_file))
    ctx.clear_for_writing(r, "evaluate")
    for path, rows in files.items():
        write_jsonl(path, rows)
    for path, data in official.items():
        write_json(path, data)
    write_json(ctx.rd.eval(r), metrics)
    ctx.log({**{f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, "round": r})


def _part(key: str) -> str | None:
    """Which part of an evaluation an eval.json key belongs to: a benchmark's name, or None (the task's)."""
    from larpo.evals.bench import BENCHMARKS

    head = key.split("/", 1)[0]
    return head if "/" in key and head in BENCHMARKS else None

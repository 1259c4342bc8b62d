"""The stages of a round as functions of (context, round): read files, do work, write files.

One module per stage (``sft``, ``generate``, ``score``, ``select``, ``train``, ``evaluate``), each with its
stage function and the outputs its done marker records; their libraries are larpo/training/,
larpo/generation/, larpo/rewards/, larpo/select.py and larpo/evals/. Each stage reads only the
run-directory artifacts of docs/design.md ("Run directory contract"), writes its outputs atomically
and leaves its ``.done`` marker last; the pipeline decides which to run (docs/design.md, "Stage graph").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from larpo.artifacts import RunDir, checkpoint_stage, read_json, write_json
from larpo.context import RunContext
from larpo.stages import evaluate, generate, score, select, sft, train

ROUND_ZERO = ("sft", "evaluate")
ROUND_STAGES = ("generate", "score", "select", "train", "evaluate")
STAGE_FUNCS: dict[str, Callable[[RunContext, int], None]] = {
    "sft": sft.stage_sft, "generate": generate.stage_generate, "score": score.stage_score,
    "select": select.stage_select, "train": train.stage_train, "evaluate": evaluate.stage_evaluate,
}
_OUTPUTS: dict[str, Callable[[RunDir, int], list[Path]]] = {
    "sft": sft.outputs, "generate": generate.outputs, "score": score.outputs,
    "select": select.outputs, "train": train.outputs, "evaluate": evaluate.outputs,
}


def stage_outputs(rd: RunDir, r: int, stage: str) -> list[Path]:
    """The files (and folders) a finished stage leaves, whose sha256 its done marker records."""
    return [p for p in _OUTPUTS[stage](rd, r) if p.exists()]


def stages_of(r: int) -> tuple[str, ...]:
    """The stages of round r, in order."""
    return ROUND_ZERO if r == 0 else ROUND_STAGES


def summarize(rd: RunDir) -> dict:
    """summary.json from every finished round on disk (round 0 up to the first round not evaluated),
    whatever ``rounds`` this command asks for: a lower ``rounds=`` never drops a finished round."""
    out = []
    r = 0
    while rd.is_done(r, "evaluate"):
        rd.verify(r, "evaluate", [rd.eval(r)])
        train = {}
        if rd.train_log(r).exists():
            rd.verify(r, checkpoint_stage(r), [rd.train_log(r)])
            train = read_json(rd.train_log(r))
        out.append({"round": r, "eval": read_json(rd.eval(r)), "train": train})
        r += 1
    summary = {"rounds": out}
    write_json(rd.summary, summary)
    return summary

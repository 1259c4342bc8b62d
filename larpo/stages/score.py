"""Stage ``score``: the reranker's reward for every candidate of the round (larpo/rewards/)."""

from __future__ import annotations

from pathlib import Path

from larpo.artifacts import RunDir, write_jsonl
from larpo.context import RunContext
from larpo.rewards.scoring import score_rows


def outputs(rd: RunDir, r: int) -> list[Path]:
    return [rd.scores(r)]


def stage_score(ctx: RunContext, r: int) -> None:
    gens = ctx.generations(r)
    write_jsonl(ctx.rd.scores(r), score_rows(ctx.reward, gens.rows))

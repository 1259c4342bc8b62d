"""Stage ``select``: pool, de-duplicate, rank and select the training lists (larpo/select.py), then their
reference log-probs under the reference policy (computed once per round, stored with the lists)."""

from __future__ import annotations

from pathlib import Path

from larpo.artifacts import RunDir, write_jsonl
from larpo.context import RunContext
from larpo.errors import PipelineError
from larpo.schemas import SCORES, Table, check_candidates, check_ids


def outputs(rd: RunDir, r: int) -> list[Path]:
    return [rd.lists(r)]


def scored_round(ctx: RunContext, r: int) -> tuple[Table, Table]:
    """Round r's generations and scores, validated and matched candidate by candidate."""
    gens = ctx.generations(r)

    def matches(scores: Table) -> None:
        check_ids(scores, gens)
        check_candidates(scores, gens, "rewards", "responses")

    return gens, ctx.read(r, "score", ctx.rd.scores(r), SCORES, check=matches)


def stage_select(ctx: RunContext, r: int) -> None:
    """Pool (``select.pool``), de-duplicate, re-score list-relative rewards, select; then reference log-probs.

    The pool's earlier rounds are read through the same validating readers as round r's. A
    list-relative reward (PairRM) scores a pooled list again inside this stage, and lists.jsonl
    carries the rewards the selection used; scores.jsonl stays round r's own scores.
    """
    from larpo.logprobs import list_logps
    from larpo.select import build_lists
    from larpo.training.loop import forward_options

    gens, scores = scored_round(ctx, r)
    earlier = [(q, *scored_round(ctx, q)) for q in ctx.selector.pool_rounds(r)]
    lists, counts = build_lists(ctx.selector, gens, scores, r, earlier=earlier, reward=ctx.reward, seed=ctx.cfg.seed)
    ctx.log({**{f"select/{k}": v for k, v in counts.items()}, "round": r})
    if not lists:
        raise PipelineError(f"round {r}: no list carries a preference (all rewards tied, below select.min_gap, "
                            "or too few distinct candidates); nothing to train on")
    ref_round = r - 1 if ctx.cfg.reference == "behavior" else 0
    ref_model, tok = ctx.load_policy(ref_round)
    ref = list_logps(ref_model, tok, lists, ctx.cfg.train.logprob_max_tokens, progress=True,
                     **forward_options(ctx.cfg.train))
    for row, lp in zip(lists, ref):
        row["ref_logps"] = lp
    write_jsonl(ctx.rd.lists(r), lists)

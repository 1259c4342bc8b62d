"""Stage ``generate``: sample the round's candidates from the behaviour policy (round r−1's checkpoint).

What a row holds is the run's sampling plan (``ctx.plan``; larpo/generation/plan.py); the batches,
their seeds and the journal are larpo/generation/candidates.py. With ``sampling.backend=vllm``
child processes load the checkpoint folder into vLLM (larpo/generation/vllm_backend.py) and compute
the same rows.
"""

from __future__ import annotations

from pathlib import Path

from larpo.artifacts import BatchJournal, RunDir
from larpo.context import RunContext
from larpo.errors import PipelineError, VLLMGenerationError


def outputs(rd: RunDir, r: int) -> list[Path]:
    return [rd.generations(r)]


def stage_generate(ctx: RunContext, r: int) -> None:
    journal = BatchJournal(ctx.rd.generations(r))
    if ctx.cfg.sampling.backend == "vllm":  # child processes load the checkpoint folder into vLLM
        from larpo.generation.vllm_backend import generate_in_children

        try:
            generate_in_children(ctx.checkpoint(r - 1), ctx.round_prompts(r), ctx.plan, ctx.cfg, r, journal)
        except VLLMGenerationError as e:
            raise PipelineError(f"round {r}, stage generate: {e}") from e
    else:
        from larpo.generation.candidates import generate_candidates

        model, tok = ctx.load_policy(r - 1)
        generate_candidates(model, tok, ctx.round_prompts(r), ctx.plan, ctx.cfg.seed, journal, r, ctx.task)
    journal.commit()

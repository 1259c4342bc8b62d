"""Stage ``train``: train the policy on round r's lists and save round r's checkpoint (larpo/training/).

In this process (``train.launcher=local``: larpo/training/round.py) or in a child ``accelerate
launch`` process group (``train.launcher=accelerate``: larpo/training/launch.py starts
larpo/training/worker.py); both write the same checkpoint and train.json.
"""

from __future__ import annotations

from pathlib import Path

from larpo.artifacts import RunDir, checkpoint_stage
from larpo.context import RunContext
from larpo.errors import CheckpointError, NonFiniteLossError, PipelineError
from larpo.schemas import LISTS, check_ids


def outputs(rd: RunDir, r: int) -> list[Path]:
    return [rd.checkpoint(r), rd.train_log(r), rd.train_steps(r)]


def stage_train(ctx: RunContext, r: int) -> None:
    gens = ctx.generations(r)
    ctx.read(r, "select", ctx.rd.lists(r), LISTS, (ctx.loss_fn.min_candidates, None),
             check=lambda rows: check_ids(rows, gens, exact=False))
    ctx.checkpoint(r - 1)  # a missing or damaged checkpoint is reported here, not inside a child process
    log = lambda m: ctx.log({**m, "round": r})  # noqa: E731
    if ctx.cfg.train.launcher == "accelerate":
        from larpo.training.launch import launch_train

        launch_train(ctx.cfg.train, ctx.rd, r, ctx.device, log)
        return
    from larpo.training.round import train_round

    try:
        train_round(ctx.cfg, ctx.rd, r, ctx.loss_fn, ctx.dtype, ctx.device, log)
    except NonFiniteLossError as e:
        raise PipelineError(f"round {r}, stage train: {e}") from None
    except CheckpointError as e:
        redo = f"stage={checkpoint_stage(r - 1)} round={r - 1}"
        raise PipelineError(f"{e}; the round-{r - 1} checkpoint is damaged: re-create it with `{redo}`") from e

"""The round loop: round 0 (start policy + evaluation), then R rounds of
generate → score → select (+ reference log-probs) → train → evaluate.

Re-running the same command resumes: stages with a ``.done`` marker are skipped.
``stage=<name> round=<r>`` re-runs one stage and clears the markers downstream of it, so
the next plain run recomputes what depended on it.
"""

from __future__ import annotations

import errno
import logging
import time

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from larpo import lora
from larpo.artifacts import RunDir, RunLock
from larpo.config import Stage, validate_options
from larpo.context import RunContext
from larpo.errors import (
    ArtifactError,
    CheckpointError,
    ConfigError,
    JudgeError,
    MissingAPIKeyError,
    PipelineError,
    RunLockedError,
    TaskDataError,
)
from larpo.generation.plan import SamplingPlan, check_sampling
from larpo.manifest import check_run_dir, resolve_run_dir, write_manifest
from larpo.model import resolve_device, resolve_dtype
from larpo.runs import run_log, write_hydra_record
from larpo.stages import STAGE_FUNCS, stage_outputs, stages_of, summarize

logger = logging.getLogger(__name__)


def make(node: DictConfig, group: str, **kwargs):
    """``instantiate`` with the constructor's own message (Hydra wraps it in three lines of context)."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        raise ConfigError(str(cause) if isinstance(cause, (ValueError, TypeError)) else f"{group}: {e}") from e


def resolve_backend(cfg: DictConfig) -> None:
    """``sampling.backend=auto``: vllm where a vLLM build runs here, else hf; the run records which."""
    if cfg.sampling.backend != "auto":
        return
    from larpo.generation.vllm_backend import vllm_problem

    problem = vllm_problem()
    cfg.sampling.backend = "hf" if problem else "vllm"
    logger.info("sampling.backend=auto: %s%s", cfg.sampling.backend, f" ({problem})" if problem else "")


def build_context(cfg: DictConfig, metrics) -> RunContext:
    """Instantiate the components named by ``_target_``, build the sampling plan, and check they fit together.

    The plan is built and checked here only (docs/design.md, "Sampling plan"): every stage reads it from
    the context, the vLLM children receive it as is.
    """
    task = make(cfg.task, "task")
    selector = make(cfg.select, "select")
    loss_fn = make(cfg.loss, "loss")
    plan = SamplingPlan.of(cfg.sampling)
    check_sampling(plan, task)  # cross-option and task-dependent sampling checks (e.g. hard negatives)
    try:
        selector.validate(plan.candidates)
    except ValueError as e:  # how two options fit: a refusal of the config, like any other
        raise ConfigError(str(e)) from None
    k = selector.list_size(plan.candidates)
    if k < loss_fn.min_candidates:
        raise ConfigError(f"loss {loss_fn.name!r} needs lists of at least {loss_fn.min_candidates} candidates, "
                          f"but select/sampling give lists of {k}")
    if cfg.train.launcher == "accelerate":
        from larpo.training.launch import check_launch

        check_launch(cfg.train)
    if lora.enabled(cfg.model.lora):
        lora.check_available()
    return RunContext(cfg=cfg, rd=RunDir(cfg.run_dir), task=task, reward=make(cfg.reward, "reward", task=task),
                      selector=selector, loss_fn=loss_fn, metrics=metrics,
                      device=resolve_device(cfg.device), dtype=resolve_dtype(cfg.model.dtype), plan=plan)


# Errors of the storage itself: the stage's partial output is discarded or journaled, and the
# same command resumes once the cause is fixed (what to fix, by errno).
_STORAGE_FIXES = {errno.ENOSPC: "free the space", errno.EDQUOT: "free the space (or raise the quota)",
                  errno.EFBIG: "raise the file-size limit (`ulimit -f`)", errno.EIO: "fix the file system",
                  errno.EROFS: "make the file system writable", errno.EACCES: "make the run directory writable"}


def run_stage(ctx: RunContext, r: int, stage: str, force: bool = False) -> bool:
    """Run one stage unless its marker exists; returns whether it ran.

    The marker, written last, records the sha256 of the stage's outputs (larpo.stages.stage_outputs),
    which later stages check before they read them. An evaluation whose outputs are gone though
    its marker stays is redone (only later evaluations and the summary read them); a missing output
    of another stage is refused with its name when a stage reads it.
    """
    if ctx.rd.is_done(r, stage) and not force:
        gone = ctx.rd.missing(r, stage) if stage == "evaluate" else []
        if not gone:
            logger.debug("round %d %s: done, skipped", r, stage)
            return False
        logger.warning("round %d %s is marked done but %s %s gone: evaluating again", r, stage,
                       ", ".join(gone), "is" if len(gone) == 1 else "are")
    if stage != "evaluate":  # an evaluation clears its marker only when it writes (stage_evaluate)
        ctx.rd.clear_done(r, stage)
    t0 = time.perf_counter()
    logger.info("round %d: %s ...", r, stage)
    try:
        STAGE_FUNCS[stage](ctx, r)
    except KeyboardInterrupt:
        logger.error("interrupted in round %d, stage %s; run the same command to resume", r, stage)
        raise
    except OSError as e:
        if e.errno not in _STORAGE_FIXES:
            raise
        raise PipelineError(
            f"round {r}, stage {stage}: {e.strerror} ({e.filename or 'while writing'}); nothing of this stage "
            f"was kept but its journal; {_STORAGE_FIXES[e.errno]} and run the same command to resume"
        ) from e
    ctx.rd.mark_done(r, stage, stage_outputs(ctx.rd, r, stage))
    logger.info("round %d: %s done in %.1f s", r, stage, time.perf_counter() - t0)
    return True


def rerun_one(ctx: RunContext, stage: str, r: int | None) -> None:
    """``stage=<name> round=<r>``: clear the markers that depend on it, then re-run one stage.

    The markers go first: if the re-run fails, a later plain run must not trust outputs that
    were made from the old version of this stage's output.
    """
    if r is None or not 0 <= r <= ctx.cfg.rounds or stage not in stages_of(r):
        valid = "round=0 for sft; round=0..rounds for evaluate; round>=1 for the others"
        raise PipelineError(f"stage={stage} round={r} does not exist ({valid})")
    if stage == "evaluate":  # only later evaluations read an evaluation: round 0's outputs, the baseline
        downstream = [(q, "evaluate") for q in range(1, ctx.cfg.rounds + 1)] if r == 0 else []
    else:
        downstream = [(r, s) for s in stages_of(r)[stages_of(r).index(stage) + 1 :]]
        downstream += [(q, s) for q in range(r + 1, ctx.cfg.rounds + 1) for s in stages_of(q)]
    cleared = [f"round {q} {s}" for q, s in downstream if ctx.rd.is_done(q, s)]
    if stage == "evaluate":  # cleared only when the new evaluation writes: a failed one changes nothing
        ctx.invalidates = list(downstream)
    else:
        for q, s in downstream:
            ctx.rd.clear_done(q, s)
    if cleared:
        logger.warning("%s done markers downstream of round %d %s: %s; a plain run recomputes them",
                       "clearing" if stage == "evaluate" else "cleared", r, stage, ", ".join(cleared))
    run_stage(ctx, r, stage, force=True)


def _locked(rd: RunDir) -> RunLock:
    """The run directory's lock, taken; a directory that cannot be written is named with the fix."""
    lock = RunLock(rd.root)
    try:
        lock.acquire()
    except OSError as e:
        if e.errno not in _STORAGE_FIXES and e.errno != errno.EPERM:
            raise
        raise PipelineError(f"cannot write to the run directory {rd.root} ({e.strerror}: {e.filename}): "
                            "make it writable, or choose another run_dir=") from None
    return lock


def run(cfg: DictConfig) -> dict:
    """Run (or resume) the whole pipeline, or one stage; returns summary.json's content.

    Everything that can be checked is checked before the run directory is touched: every
    option (:func:`validate_options`), the components and how they fit (:func:`build_context`),
    the model's context length (:func:`preflight`), and whether this config may use the run
    directory (:func:`check_run_dir`). Then the directory is locked for this process.
    """
    from transformers.utils import logging as hf_logging

    from larpo.console import quiet_known_warnings
    from larpo.loggers import logging_run, sweep_identity
    from larpo.preflight import check_extras, preflight
    from larpo.report import write_report

    hf_logging.disable_progress_bar()  # per-shard bars on every checkpoint load drown the stage log
    quiet_known_warnings()
    validate_options(cfg)
    resolve_backend(cfg)  # before the run's name: hf and vllm draw different samples
    check_extras(cfg)
    cfg.run_dir = str(resolve_run_dir(cfg))  # named by the run's identity unless run_dir= is given (larpo/runs.py)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rd = RunDir(cfg.run_dir)
    metrics = make(cfg.logger, "logger")
    ctx = build_context(cfg, metrics)
    preflight(ctx)
    check_run_dir(rd, cfg)
    # Nothing is written before this point: a refused command leaves no directory and changes no file.
    with _locked(rd), run_log(rd.root):
        if check_run_dir(rd, cfg):  # again under the lock: another process may have started it meanwhile
            write_manifest(rd, cfg)
        write_hydra_record(rd.root, cfg)
        logger.info("run directory: %s", rd.root.resolve())
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        run_name, group = sweep_identity(cfg.name)
        with logging_run(metrics, resolved, rd.root, run_name=run_name, group=group):
            if cfg.stage == "all":
                for r in range(cfg.rounds + 1):
                    ran = [run_stage(ctx, r, stage) for stage in stages_of(r)]
                    if any(ran):  # a summary after each round that did work; a refusal later changes nothing
                        summarize(rd)
            else:
                rerun_one(ctx, Stage(cfg.stage).value, cfg.round)
            summary = summarize(rd)
            metrics.log_summary({"rounds": summary["rounds"]})
            if summary["rounds"]:
                logger.info("per-round results (%s):\n%s", rd.summary, write_report(rd.root))
    return summary


def refusals() -> tuple[type[BaseException], ...]:
    """The errors that refuse a command with a message saying what to do (run.py prints that one
    message, no traceback); any other exception is a bug and keeps its traceback."""
    return (ConfigError, PipelineError, ArtifactError, RunLockedError, CheckpointError, TaskDataError, JudgeError,
            MissingAPIKeyError)

"""The round loop: round 0 (start policy + evaluation), then R rounds of
generate → score → select (+ reference log-probs) → train → evaluate.

Re-running the same command resumes: stages with a ``.done`` marker are skipped.
``stage=<name> round=<r>`` re-runs one stage and clears the markers downstream of it, so
the next plain run recomputes what depended on it.
"""

from __future__ import annotations

import errno
import functools
import logging
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from larpo import lora
from larpo.artifacts import RunDir, RunLock, read_json, write_json
from larpo.config import ADDED_KEYS, RESOURCE_PREFIXES, VOLATILE_KEYS, Stage, validate_options
from larpo.errors import ConfigError, PipelineError
from larpo.generation.plan import candidates_per_prompt, check_sampling
from larpo.model import resolve_device, resolve_dtype
from larpo.runs import command_record, resolve_run_dir, run_log, write_hydra_record
from larpo.runs import portable as _portable
from larpo.stages import ROUND_STAGES, ROUND_ZERO, STAGE_FUNCS, RunContext, stage_outputs, summarize

logger = logging.getLogger(__name__)

_PACKAGES = ("larpo", "torch", "transformers", "tokenizers", "hydra-core", "omegaconf", "accelerate", "wandb")


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def run_config(cfg: DictConfig) -> dict:
    """The resolved config that defines the run (volatile keys such as stage= left out)."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return {k: v for k, v in resolved.items() if k not in VOLATILE_KEYS}


def _has_artifacts(rd: RunDir) -> bool:
    """Outputs of an earlier run (Hydra's own .hydra/ and log files do not count)."""
    return rd.summary.exists() or any(rd.root.glob("round_*"))


_NO_DEFAULT = object()


@functools.cache
def _schema() -> DictConfig:
    from larpo.config import Config

    return OmegaConf.structured(Config)


def _is_default(key: str, value: Any, config: dict) -> bool:
    """Whether ``value`` is the default of option ``key``: the schema's (larpo/config.py) or, inside a
    component node (``_target_``), its constructor's keyword default."""
    import importlib
    import inspect

    schema = _schema()
    parts = key.split(".")
    try:
        default = OmegaConf.select(schema, key, default=_NO_DEFAULT, throw_on_missing=False)
    except Exception:  # noqa: BLE001  (a key through an Any node of the schema)
        default = _NO_DEFAULT
    if default is not _NO_DEFAULT and not OmegaConf.is_config(default):
        return OmegaConf.to_container(OmegaConf.create({"v": default}), enum_to_str=True)["v"] == value
    node: Any = config
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    target = node.get("_target_") if isinstance(node, dict) else None
    if not isinstance(target, str) or "." not in target:
        return False
    module, _, name = target.rpartition(".")
    try:
        component = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    # The keyword may be declared by a base class that receives it through **options.
    inits = [c.__init__ for c in inspect.getmro(component)] if inspect.isclass(component) else [component]
    for fn in inits:
        try:
            param = inspect.signature(fn).parameters.get(parts[-1])
        except (TypeError, ValueError):
            continue
        if param is not None and param.default is not inspect.Parameter.empty:
            return getattr(param.default, "value", param.default) == value  # an Enum default by its value
    return False


def check_run_dir(rd: RunDir, cfg: DictConfig) -> bool:
    """Refuse a run directory this config must not touch; True if the manifest is to be written.

    Read-only, so a refused command changes nothing.
    """
    if rd.manifest.exists():
        if not cfg.resume:
            raise PipelineError(f"{rd.root} already holds a run and resume=false; choose another run_dir=")
        old = read_json(rd.manifest).get("config", {})
        new = run_config(cfg)
        a, b = {**ADDED_KEYS, **_flatten(old)}, _flatten(new)
        # `rounds` may grow: later rounds never change earlier ones. A forced evaluation may use
        # other evaluation settings (a benchmark run alone on a checkpoint): they change no artifact
        # another stage reads. Resource settings (RESOURCE_PREFIXES) may always change.
        free = RESOURCE_PREFIXES + (("eval.", "judge.") if cfg.stage == "evaluate" else ())
        # Options added to LarPO since the run was made are compatible at their defaults (by
        # convention a new option's default keeps the old behaviour): an upgrade must not strand a run.
        added = sorted(k for k in set(b) - set(a) if not k.startswith(free) and _is_default(k, b[k], new))
        if added:
            logger.warning("%s predates option(s) %s; resuming with their defaults", rd.manifest, ", ".join(added))
        # The shipped assets (the embedded round 0, its tokenizer) are recorded as absolute paths;
        # a moved or re-cloned checkout still holds the same run.
        a, b = {k: _portable(v) for k, v in a.items()}, {k: _portable(v) for k, v in b.items()}
        diff = sorted(k for k in set(a) | set(b)
                      if a.get(k) != b.get(k) and k != "rounds" and not k.startswith(free) and k not in added)
        if diff:
            shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:10])
            hint = ("; evaluation settings may change only in a re-evaluation: stage=evaluate round=<r> eval=[...]"
                    if all(k.startswith(("eval.", "judge.")) or k in ("eval", "judge") for k in diff) else "")
            raise PipelineError(
                f"{rd.root} was made with a different config ({len(diff)} key(s) differ: {shown}); "
                f"use another run_dir= or restore the original settings{hint}"
            )
        return False
    if _has_artifacts(rd) and not cfg.adopt:
        raise PipelineError(
            f"{rd.root} holds artifacts but no manifest.json, so nothing says which config made them; "
            "use another run_dir=, or adopt=true to resume it with this config (a new manifest is written)"
        )
    return True


def write_manifest(rd: RunDir, cfg: DictConfig) -> None:
    write_json(rd.manifest, {"config": run_config(cfg), "git_sha": _git_sha(), "versions": _versions(),
                             "seed": cfg.seed, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "command": command_record(cfg)})


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
    """Instantiate the components named by ``_target_`` and check they fit together."""
    task = make(cfg.task, "task")
    selector = make(cfg.select, "select")
    loss_fn = make(cfg.loss, "loss")
    check_sampling(cfg.sampling, task)  # cross-option and task-dependent sampling checks (e.g. hard negatives)
    n = candidates_per_prompt(cfg.sampling)  # samples + extras + ladder negatives
    try:
        selector.validate(n)
    except ValueError as e:  # how two options fit: a refusal of the config, like any other
        raise ConfigError(str(e)) from None
    k = selector.list_size(n)
    if k < loss_fn.min_candidates:
        raise ConfigError(f"loss {loss_fn.name!r} needs lists of at least {loss_fn.min_candidates} candidates, "
                          f"but select/sampling give lists of {k}")
    if cfg.train.launcher == "accelerate":
        from larpo.launch import check_launch

        check_launch(cfg.train)
    if lora.enabled(cfg.model.lora):
        lora.check_available()
    return RunContext(cfg=cfg, rd=RunDir(cfg.run_dir), task=task, reward=make(cfg.reward, "reward", task=task),
                      selector=selector, loss_fn=loss_fn, metrics=metrics,
                      device=resolve_device(cfg.device), dtype=resolve_dtype(cfg.model.dtype))


# Errors of the storage itself: the stage's partial output is discarded or journaled, and the
# same command resumes once the cause is fixed (what to fix, by errno).
_STORAGE_FIXES = {errno.ENOSPC: "free the space", errno.EDQUOT: "free the space (or raise the quota)",
                  errno.EFBIG: "raise the file-size limit (`ulimit -f`)", errno.EIO: "fix the file system",
                  errno.EROFS: "make the file system writable", errno.EACCES: "make the run directory writable"}


def run_stage(ctx: RunContext, r: int, stage: str, force: bool = False) -> bool:
    """Run one stage unless its marker exists; returns whether it ran.

    The marker, written last, records the sha256 of the stage's outputs (stages.stage_outputs),
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


def stages_of(r: int) -> tuple[str, ...]:
    return ROUND_ZERO if r == 0 else ROUND_STAGES


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
    from larpo.errors import (
        ArtifactError,
        CheckpointError,
        JudgeError,
        MissingAPIKeyError,
        RunLockedError,
        TaskDataError,
    )

    return (ConfigError, PipelineError, ArtifactError, RunLockedError, CheckpointError, TaskDataError, JudgeError,
            MissingAPIKeyError)

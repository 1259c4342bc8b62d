"""The run's record in its directory, ``manifest.json`` (the resolved config, git sha, versions, command),
and which directory a command uses: its name (:func:`resolve_run_dir`, names from larpo/runs.py) and
whether its config may use a directory that already holds a run (:func:`check_run_dir`: resume, adopt,
refuse; read-only, run by the pipeline before and again under the run's lock).
"""

from __future__ import annotations

import functools
import logging
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from larpo.artifacts import RunDir, read_json, write_json
from larpo.config import ADDED_KEYS, INERT_DEFAULTS, RESOURCE_PREFIXES, VOLATILE_KEYS
from larpo.errors import ArtifactError, PipelineError
from larpo.runs import choices, command_record, dirname, hydra_config, portable

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


def is_default(key: str, value: Any, config: dict) -> bool:
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
        for key, (where, inert), was, means in INERT_DEFAULTS:  # an old default where it changes nothing
            if a.get(where) == inert and a.get(key) == was:
                a[key] = means
        # `rounds` may grow: later rounds never change earlier ones. A forced evaluation may use
        # other evaluation settings (a benchmark run alone on a checkpoint): they change no artifact
        # another stage reads. Resource settings (RESOURCE_PREFIXES) may always change.
        free = RESOURCE_PREFIXES + (("eval.", "judge.") if cfg.stage == "evaluate" else ())
        # Options added to LarPO since the run was made are compatible at their defaults (by
        # convention a new option's default keeps the old behaviour): an upgrade must not strand a run.
        added = sorted(k for k in set(b) - set(a) if not k.startswith(free) and is_default(k, b[k], new))
        if added:
            logger.warning("%s predates option(s) %s; resuming with their defaults", rd.manifest, ", ".join(added))
        # The shipped assets (the embedded round 0, its tokenizer) are recorded as absolute paths;
        # a moved or re-cloned checkout still holds the same run.
        a, b = {k: portable(v) for k, v in a.items()}, {k: portable(v) for k, v in b.items()}
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


def _compatible(path: Path, cfg: Any) -> bool:
    """Whether ``path`` holds a run this config may resume (read-only: :func:`check_run_dir`)."""
    try:
        check_run_dir(RunDir(path), cfg)
    except (PipelineError, ArtifactError):
        return False
    return True


def resolve_run_dir(cfg: Any) -> Path:
    """The run directory of this command (nothing is created): ``run_dir=`` if given, else a
    ``hydra.run.dir=`` given on the command line, else the name of :func:`larpo.runs.dirname` under ``paths.runs/<name>``
    (a sweep job: under ``hydra.sweep.dir``), or the directory of the earlier naming that holds this run."""
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    from hydra.types import RunMode

    hc = hydra_config()
    multirun = hc is not None and hc.mode == RunMode.MULTIRUN
    if hc is not None and not multirun and any(o.startswith("hydra.run.dir=") for o in hc.overrides.hydra):
        return Path(hc.run.dir)
    root = Path(hc.sweep.dir) if multirun else Path(cfg.paths.runs) / cfg.name
    path = root / dirname(cfg, choices(hc))
    if hc is not None and not path.exists():
        legacy = root / hc.job.override_dirname
        if (legacy / "manifest.json").is_file() and _compatible(legacy, cfg):
            logger.info("resuming %s, a run directory of the earlier naming (its new name would be %s)", legacy, path)
            return legacy
    return path

"""Where a run lives: its directory's name, the record of the commands that used it, and the listing.

A run directory is named by what the run computes, not by how the command was typed::

    <paths.runs>/<name>/<model>-<loss>-s<seed>-<hash>       python run.py ...
    <hydra.sweep.dir>/<model>-<loss>-s<seed>-<hash>         python run.py -m ...   (default multirun/<name>)

``<model>`` and ``<loss>`` are the Hydra options chosen for those groups; ``<hash>`` is the first 8 hex digits of
sha256 over the run's *identity*: the resolved config without the keys that do not change what the training
rounds produce (:data:`NOT_IDENTITY`: what to do now, where and how fast, the evaluation and its judge, the
number of rounds), plus the options chosen for the groups that define a run (``loss=listwise`` and
``loss=lambdarank`` give the same objective under two names, and a table shows the name the user chose). So
the same command resumes the same directory, writing a default out (``loss=listwise``) changes nothing,
adding a benchmark (``stage=evaluate round=3 eval=[alpacaeval2]``) reaches the finished run, and a path value
never becomes a folder. ``run_dir=`` names a directory outright (then Hydra's own run folder is not used).

Directories of the earlier naming (``runs/<name>/<key=value,...>``) stay readable through ``run_dir=``, and the
same command still finds one when its manifest holds a compatible config.

Hydra writes nothing of its own (``hydra.output_subdir: null``, its run folder is ``.``): the command's record
(``.hydra/config.yaml``, ``.hydra/overrides.yaml``) and ``run.log`` are written into the run directory only
after every check has passed, so a refused command leaves no directory and changes no file.

``python -m larpo.runs [DIR ...]`` lists the runs under ``runs/`` and ``multirun/`` (or the given folders).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from larpo.artifacts import write_text
from larpo.config import RESOURCE_PREFIXES, VOLATILE_KEYS

logger = logging.getLogger(__name__)

# Top-level keys that do not name a run (besides VOLATILE_KEYS): the sweep's name is a folder above it,
# `rounds` may grow, and evaluation settings change no artifact a training round reads.
NOT_IDENTITY = ("name", "rounds", "eval", "judge")
# Config groups whose chosen option is part of a run's identity (the others: eval, judge, logger,
# experiment and local choose values that are themselves in the config, or change nothing trained).
IDENTITY_GROUPS = ("model", "task", "reward", "sampling", "select", "loss", "train", "sft")
RUN_LOG = "run.log"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's own console format

_ASSET = re.compile(r"^.*[/\\]larpo[/\\]assets[/\\]([^/\\]+)[/\\]?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")


def portable(value: Any) -> Any:
    """A path into a LarPO checkout's shipped assets, as ``<larpo asset NAME>`` (checkout-independent)."""
    if isinstance(value, str):
        match = _ASSET.match(value)
        if match:
            return f"<larpo asset {match.group(1)}>"
    return value


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def hydra_config() -> Any | None:
    """This process's Hydra config (``HydraConfig.get()``), or None outside ``@hydra.main`` (tests, notebooks)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get() if HydraConfig.initialized() else None
    except (ImportError, ValueError):
        return None


def choices(hc: Any | None = None) -> dict[str, str]:
    """The options chosen for the run-identity groups (``{"loss": "listwise", ...}``), {} outside Hydra."""
    hc = hc if hc is not None else hydra_config()
    if hc is None:
        return {}
    chosen = OmegaConf.to_container(hc.runtime.choices)
    return {g: str(chosen[g]) for g in IDENTITY_GROUPS if chosen.get(g) is not None}


def identity(cfg: Any, chosen: dict[str, str] | None = None) -> dict[str, Any]:
    """What defines a run: its resolved, flattened config without :data:`NOT_IDENTITY`, volatile and resource
    keys (shipped asset paths made checkout-independent), plus the chosen group options."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    skip = set(VOLATILE_KEYS) | set(NOT_IDENTITY)
    flat = _flatten({k: v for k, v in resolved.items() if k not in skip})
    out = {k: portable(v) for k, v in flat.items() if not k.startswith(RESOURCE_PREFIXES)}
    out.update({f"choice:{g}": o for g, o in sorted((chosen or {}).items())})
    return out


def run_hash(cfg: Any, chosen: dict[str, str] | None = None) -> str:
    text = json.dumps(identity(cfg, chosen), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _loss_name(cfg: Any) -> str:
    target = str(cfg.loss.get("_target_", "loss")) if cfg.get("loss") is not None else "loss"
    return target.rsplit(".", 1)[-1].removesuffix("Loss").lower()


def dirname(cfg: Any, chosen: dict[str, str] | None = None) -> str:
    """``<model>-<loss>-s<seed>-<hash>``: readable, stable, and safe in a path and in ``run_dir=``."""
    chosen = chosen or {}
    model = chosen.get("model") or (Path(str(cfg.model.pretrained)).name if cfg.model.pretrained else "scratch")
    loss = chosen.get("loss") or _loss_name(cfg)
    stem = "-".join(_UNSAFE.sub("_", part).strip("_")[:32] or "x" for part in (model, loss))
    return f"{stem}-s{cfg.seed}-{run_hash(cfg, chosen)}"


def command_record(cfg: Any) -> dict[str, Any]:
    """What the manifest keeps of the command that made a run: its overrides and chosen group options."""
    hc = hydra_config()
    overrides = list(hc.overrides.task) if hc is not None else []
    return {"overrides": overrides, "choices": choices(hc), "identity_hash": run_hash(cfg, choices(hc))}


def write_hydra_record(root: Path, cfg: Any) -> None:
    """``.hydra/config.yaml`` and ``.hydra/overrides.yaml`` of this command (under Hydra only), written
    atomically once the checks have passed: the files Hydra itself would have written before them."""
    hc = hydra_config()
    if hc is None:
        return
    write_text(root / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text(root / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task))))


@contextmanager
def run_log(root: Path) -> Iterator[None]:
    """Everything logged while the block runs also goes to ``<root>/run.log`` (under Hydra only, as before)."""
    if hydra_config() is None:
        yield
        return
    handler = logging.FileHandler(root / RUN_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


# --- python -m larpo.runs ------------------------------------------------------------------------------


def find_runs(*roots: str | Path) -> list[Path]:
    """Run directories (those with a manifest.json) under ``roots``, sorted."""
    found = set()
    for root in map(Path, roots):
        if (root / "manifest.json").is_file():
            found.add(root)
        elif root.is_dir():
            found.update(p.parent for p in root.rglob("manifest.json") if "checkpoint" not in p.parts)
    return sorted(found)


def describe(path: Path) -> dict[str, Any]:
    """One run as a row: directory, created, rounds evaluated / planned, the command's overrides."""
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    planned = manifest.get("config", {}).get("rounds")
    done = sum(1 for r in path.glob("round_*") if (r / ".done" / "evaluate").exists())
    command = manifest.get("command") or {}
    overrides = command.get("overrides")
    if overrides is None:  # the earlier naming: the directory's name was the overrides
        overrides = [path.name] if "=" in path.name else []
    return {"run": str(path), "created": manifest.get("created", "?"),
            "rounds": f"{max(done - 1, 0) if done else '-'}/{planned}", "overrides": " ".join(overrides) or "(defaults)"}


def main(argv: list[str]) -> None:
    """``python -m larpo.runs [DIR ...]``: a table of the runs under ``runs/`` and ``multirun/`` (or DIRs)."""
    roots = argv or ["runs", "multirun"]
    rows = [describe(p) for p in find_runs(*roots)]
    if not rows:
        sys.stdout.write(f"no runs under {', '.join(roots)}\n")
        return
    heads = ["run", "created", "rounds", "overrides"]
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in heads[:-1]}
    lines = ["  ".join(h.ljust(widths.get(h, 0)) for h in heads)]
    lines += ["  ".join(str(r[h]).ljust(widths.get(h, 0)) for h in heads) for r in rows]
    sys.stdout.write("\n".join(line.rstrip() for line in lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

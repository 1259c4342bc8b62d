"""Metrics sinks chosen by Hydra ``_target_`` (``conf/logger/*.yaml``).

``wandb`` is imported only inside :meth:`WandbLogger.start` so that ``import larpo`` and
the CPU tests stay light (house rule 6).
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

_SECRET_MARKERS = ("key", "token", "secret")
_DEFAULT_HOST = "api.wandb.ai"
# Announce the offline fallback once per process, not once per round or sweep job.
_offline_announced = False


class RunLogger:
    """Base sink and the no-op used by ``logger=none``."""

    def start(
        self, config: dict, run_dir: str | Path, run_name: str | None = None, group: str | None = None
    ) -> None:
        """Open the run; ``config`` is the resolved config (with git sha); ``group``: its sweep."""

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record scalars such as ``{"train/loss": 0.6, "round": 1}``."""

    def log_summary(self, summary: dict) -> None:
        """Record the final per-round metrics."""

    def log_table(self, name: str, rows: list[dict]) -> None:
        """Record per-example rows (e.g. a benchmark's outputs and judgments)."""

    def log_image(self, name: str, path: str | Path) -> None:
        """Record an image file (e.g. a study's plot)."""

    def finish(self) -> None:
        """Close the run; safe to call twice and after a failed start."""


class NullLogger(RunLogger):
    """Discards everything (``logger=none``)."""


def strip_secrets(obj: Any) -> Any:
    """Return a copy of ``obj`` without mapping keys that look like credentials.

    Keys whose name contains "key", "token" or "secret" (any case) are dropped at every
    depth, so an API key that slipped into a config never reaches the W&B servers.
    """
    if isinstance(obj, Mapping):
        return {
            k: strip_secrets(v)
            for k, v in obj.items()
            if not any(m in str(k).lower() for m in _SECRET_MARKERS)
        }
    # Sequence, not list: an OmegaConf ListConfig must be unwrapped too.
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return [strip_secrets(v) for v in obj]
    return obj


def _netrc_has_host(netrc_path: str | Path, hosts: set[str]) -> bool:
    """True if the netrc file has an entry for one of ``hosts``; False if unreadable."""
    try:
        entries = netrc.netrc(str(netrc_path))
    except (OSError, netrc.NetrcParseError):
        # A missing or malformed file just means "no key configured" here.
        return False
    return any(entries.authenticators(h) is not None for h in hosts)


def resolve_mode(
    mode: str | None, environ: Mapping[str, str], netrc_path: str | Path | None = None
) -> str | None:
    """Pick the W&B mode: explicit ``mode`` > ``WANDB_MODE`` > "offline" when no key.

    Returns None when wandb should decide itself (a key is configured: online).
    Only whether a key exists is used; the key is never returned, stored or logged.
    """
    if mode:
        return mode
    if environ.get("WANDB_MODE"):
        # wandb reads WANDB_MODE itself; return it so callers and logs see the same value.
        return environ["WANDB_MODE"]
    if environ.get("WANDB_API_KEY"):
        return None
    if netrc_path is None:
        netrc_path = (
            environ.get("NETRC")
            or Path(environ.get("HOME", "~")).expanduser() / ".netrc"
        )
    hosts = {_DEFAULT_HOST}
    base_url = environ.get("WANDB_BASE_URL")
    if base_url and urlparse(base_url).hostname:
        hosts.add(urlparse(base_url).hostname)
    if _netrc_has_host(netrc_path, hosts):
        return None
    return "offline"


class WandbLogger(RunLogger):
    """Weights & Biases sink; falls back to offline mode when no API key is configured."""

    def __init__(
        self,
        project: str = "larpo",
        entity: str | None = None,
        mode: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        dir: str | None = None,  # same name as wandb.init's argument
        init_timeout: float = 15.0,
    ) -> None:
        self.project = project
        self.entity = entity
        self.mode = mode
        self.group = group
        self.tags = list(tags) if tags else []
        self.dir = dir
        # Seconds wandb may spend reaching its server (its own default is 90, then it aborts the
        # run); past it we log offline instead: a logger must never cost a run.
        self.init_timeout = init_timeout
        self._run: Any = None

    def start(
        self, config: dict, run_dir: str | Path, run_name: str | None = None, group: str | None = None
    ) -> None:
        global _offline_announced
        import wandb  # heavy: imported only when a W&B run is really wanted

        mode = resolve_mode(self.mode, os.environ)
        fell_back = (
            mode == "offline" and not self.mode and not os.environ.get("WANDB_MODE")
        )
        if fell_back and not _offline_announced:
            logger.info("No W&B API key configured: logging offline (sync later).")
            _offline_announced = True
        wandb_dir = Path(self.dir) if self.dir else Path(run_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)  # wandb.init needs an existing dir
        kwargs = dict(project=self.project, entity=self.entity, group=self.group or group, tags=self.tags,
                      dir=str(wandb_dir), name=run_name, config=strip_secrets(config or {}))
        try:
            self._run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=self.init_timeout), **kwargs)
        except Exception as e:  # wandb raises CommError, UsageError, timeouts...: none may stop the run
            if mode == "offline":
                raise
            first_line = str(e).splitlines()[0][:200] if str(e) else ""
            logger.warning("W&B could not start online (%s: %s); logging offline instead (sync later with "
                           "`wandb sync`)", type(e).__name__, first_line)
            self._run = wandb.init(mode="offline", **kwargs)
        logger.info("W&B run %r in group %r (%s)", getattr(self._run, "name", run_name),
                    getattr(self._run, "group", kwargs["group"]), mode or "online")
        # Per-round metrics as a series over rounds (train/* keeps wandb's own step). A cosmetic:
        # a failure here must not turn the logger off.
        try:
            self._run.define_metric("round")
            for prefix in ("eval/*", "select/*"):
                self._run.define_metric(prefix, step_metric="round")
        except Exception as e:
            logger.debug("W&B define_metric failed: %s", e)

    def _guarded(self, what: str, fn) -> None:
        """Call ``fn`` on the run; a failure is logged once and turns the logger off."""
        if self._run is None:
            return
        try:
            fn(self._run)
        except Exception as e:
            logger.warning("W&B %s failed (%s: %s); no more metrics go to W&B in this run", what,
                           type(e).__name__, e)
            self._run = None

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._guarded("log", lambda run: run.log(dict(metrics), step=step))

    def log_summary(self, summary: dict) -> None:
        self._guarded("summary", lambda run: run.summary.update(dict(summary)))

    def log_table(self, name: str, rows: list[dict]) -> None:
        if not rows:
            return

        def log(run) -> None:
            import wandb

            columns = sorted({k for row in rows for k in row})
            data = [[row.get(c) if isinstance(row.get(c), (int, float, str, bool, type(None))) else str(row.get(c))
                     for c in columns] for row in rows]
            run.log({name: wandb.Table(columns=columns, data=data)})

        self._guarded("table", log)

    def log_image(self, name: str, path: str | Path) -> None:
        def log(run) -> None:
            import wandb

            run.log({name: wandb.Image(str(path))})

        self._guarded("image", log)

    def finish(self) -> None:
        # Clear the handle first: a second call (or one after a failed start) is a no-op.
        run, self._run = self._run, None
        if run is not None:
            run.finish()


def sweep_identity(default_name: str) -> tuple[str, str | None]:
    """(run name, group) of this Hydra job: a multirun job is named by its overrides
    (``loss=dpo,seed=1``) and grouped by its sweep directory (``study_objectives``); a single run
    keeps ``default_name`` (``name``, plus its overrides if any) and no group."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):  # not under @hydra.main (tests, notebooks)
        return default_name, None
    overrides = hc.job.override_dirname
    if hc.mode == RunMode.MULTIRUN:
        return overrides or default_name, Path(hc.sweep.dir).name
    return (f"{default_name}/{overrides}" if overrides else default_name), None


@contextmanager
def logging_run(
    run_logger: RunLogger,
    config: dict,
    run_dir: str | Path,
    run_name: str | None = None,
    group: str | None = None,
) -> Iterator[RunLogger]:
    """Start ``run_logger`` and guarantee ``finish()`` even if the body raises (rule 9)."""
    try:
        run_logger.start(config, run_dir, run_name, group)
        yield run_logger
    finally:
        run_logger.finish()

"""The real Hydra configs (conf/), composed without Hydra's runtime."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

import larpo.config  # noqa: F401  (registers the schema)

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"


def compose_config(overrides: list[str] | None = None):
    """The config `python run.py <overrides>` would see (run_dir must be given for a run)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))

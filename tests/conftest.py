"""Shared fixtures: compose the real Hydra configs (conf/) without Hydra's runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import larpo.config  # noqa: F401  (registers the schema)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def pytest_addoption(parser):
    parser.addoption("--require-vllm", action="store_true",
                     help="tests/vllm: fail, not skip, where vLLM or the real weights are missing (make test-vllm)")


def compose_config(overrides: list[str] | None = None):
    """The config `python run.py <overrides>` would see (run_dir must be given for a run)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


@pytest.fixture
def smoke_cfg(tmp_path):
    def make(*overrides: str, run_dir: Path | None = None):
        return compose_config(["experiment=smoke", f"run_dir={run_dir or tmp_path / 'run'}", *overrides])

    return make

"""Pytest hooks and fixtures shared by every test folder; what tests import lives in tests/helpers/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.config import compose_config

# Folders whose tests run the pipeline end to end, in subprocesses or on real weights: `-m "not integration"`
# (make test-unit) leaves them out.
INTEGRATION = ("integration", "faults", "real", "vllm", "cluster", "gpu")


def pytest_addoption(parser):
    parser.addoption("--require-vllm", action="store_true",
                     help="tests/vllm: fail, not skip, where vLLM or the real weights are missing (make test-vllm)")


def pytest_collection_modifyitems(config, items):
    root = Path(__file__).resolve().parent
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(root).parts
        if parts and parts[0] in INTEGRATION:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def smoke_cfg(tmp_path):
    def make(*overrides: str, run_dir: Path | None = None):
        return compose_config(["experiment=smoke", f"run_dir={run_dir or tmp_path / 'run'}", *overrides])

    return make

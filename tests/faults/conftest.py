"""The fault suite's fixture: the artifacts of an uninterrupted run of the faulted config."""

from __future__ import annotations

import pytest

from tests.helpers.faults import digest, fault_cfg


@pytest.fixture(scope="session")
def reference_digest(tmp_path_factory) -> dict[str, str]:
    """The artifacts of an uninterrupted faulted-config run."""
    from larpo.pipeline import run

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run(fault_cfg(run_dir))
    return digest(run_dir)

"""A forced re-run that fails leaves nothing downstream that a later plain run would trust."""

from __future__ import annotations

import shutil

import pytest

from larpo.artifacts import RunDir
from larpo.errors import ArtifactError
from larpo.pipeline import run
from tests.helpers.faults import digest, fault_cfg


def test_failed_forced_rerun_then_plain_run(tmp_path, reference_digest):
    """Finding 3: `stage=select round=1` fails on a bad scores.jsonl; after the fix, a plain run
    recomputes select *and* everything after it, ending where an uninterrupted run ends."""
    run_dir = tmp_path / "run"
    run(fault_cfg(run_dir))
    rd = RunDir(run_dir)
    good = rd.scores(1).read_text()
    lines = good.splitlines()
    lines[0] = lines[0].replace('"rewards": [', '"rewards": ["oops", ')
    rd.scores(1).write_text("\n".join(lines) + "\n")
    with pytest.raises(ArtifactError, match="scores.jsonl:1: field 'rewards': element 0 is 'oops'"):
        run(fault_cfg(run_dir, "stage=select", "round=1"))
    assert not rd.is_done(1, "select") and not rd.is_done(1, "train") and not rd.is_done(1, "evaluate")
    rd.scores(1).write_text(good)
    shutil.rmtree(rd.checkpoint(1))  # so the digest proves train really ran again
    run(fault_cfg(run_dir))
    assert digest(run_dir) == reference_digest

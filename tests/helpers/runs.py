"""Runs for tests: ``run.py`` as a user types it, and checks of what a run left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from larpo.artifacts import RunDir, read_jsonl
from tests.helpers.config import REPO
from tests.helpers.tiny import naive_logp

ROUNDS = 2  # experiment=smoke's


def run_py(cwd: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "run.py"), *overrides], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def check_reference(cfg, rd: RunDir, r: int, load_model, load_tokenizer) -> None:
    """Stored reference log-probs = the behaviour policy's (round r-1), recomputed one by one."""
    ref_round = r - 1 if cfg.reference == "behavior" else 0
    model, tok = load_model(rd.checkpoint(ref_round)), load_tokenizer(rd.checkpoint(ref_round))
    rows = read_jsonl(rd.lists(r))
    for row in rows[:6]:
        expect = [naive_logp(model, tok, row["prompt"], y, f) for y, f in zip(row["responses"], row["finished"])]
        assert row["ref_logps"] == pytest.approx(expect, abs=1e-4), row["prompt_id"]

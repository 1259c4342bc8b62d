"""A quiet console: known harmless third-party warnings filtered (larpo.console.KNOWN_WARNINGS), no progress
bar in a redirected log, none of the warnings the embedded run used to print."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from larpo.console import KNOWN_WARNINGS, progress, quiet_known_warnings

REPO = Path(__file__).resolve().parents[2]


def test_known_warnings_are_filtered_and_others_are_not():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_known_warnings()
        for category, message, _, _ in KNOWN_WARNINGS:
            warnings.warn(f"{message} (and the rest of the text)", category, stacklevel=1)
        warnings.warn("something new", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something new"]


def test_no_progress_bar_off_a_terminal():
    out = io.StringIO()  # not a TTY, like a redirected log
    for _ in progress(range(3), desc="x", file=out):
        pass
    assert out.getvalue() == ""
    assert progress(range(1), disable=True).disable  # an explicit off stays off


def test_alpaca_eval_and_its_lc_glm_print_no_warning():
    """Importing alpaca_eval (pkg_resources) and fitting its LC GLM (scikit-learn) printed four warnings."""
    pytest.importorskip("alpaca_eval")
    code = ("from larpo.console import quiet_known_warnings; quiet_known_warnings()\n"
            "from larpo.evals.alpacaeval import win_rates_vs_baseline, stored_reward_preference\n"
            "rows = [{'prompt_id': i, 'response': 'x' * (i % 7), 'reward': i % 3} for i in range(40)]\n"
            "base = [{'prompt_id': i, 'response': 'yy', 'reward': 1} for i in range(40)]\n"
            "out = win_rates_vs_baseline(rows, base, stored_reward_preference())\n"
            "assert out['lc_win_rate'] is not None, out\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]


def test_checkpointing_is_set_and_read_without_a_deprecation_warning():
    from larpo.logprobs import _checkpointing
    from larpo.training.round import _set_checkpointing
    from tests.helpers.tiny import tiny_policy

    model, _ = tiny_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _set_checkpointing(model, True)
        assert _checkpointing(model) is True
        _set_checkpointing(model, False)
        assert _checkpointing(model) is False

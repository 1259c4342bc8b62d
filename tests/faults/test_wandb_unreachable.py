"""Finding 8: W&B with a key but no network must not cost the run: offline after a short timeout."""

from __future__ import annotations

import logging
import socket
import time

from larpo.pipeline import run
from tests.helpers.config import compose_config


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_wandb_falls_back_offline(tmp_path, monkeypatch, caplog):
    key = "k" * 40
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")  # nothing listens: no network
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path / 'run'}", "logger=wandb",
                          "logger.init_timeout=2", "rounds=0", "sft.steps=0", "eval.pass_at_max=0", "threads=1"])
    started = time.time()
    with caplog.at_level(logging.WARNING, logger="larpo"):
        summary = run(cfg)
    assert len(summary["rounds"]) == 1  # the run finished
    assert time.time() - started < 60  # not wandb's own 90 s and abort
    assert any("W&B could not start online" in r.getMessage() for r in caplog.records)
    assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*"))) == 1
    assert key not in caplog.text

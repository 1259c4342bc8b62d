"""Logger back-ends: no-op sink, W&B mode resolution, secret stripping, lazy import."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from larpo import loggers
from larpo.loggers import (
    NullLogger,
    RunLogger,
    WandbLogger,
    logging_run,
    resolve_mode,
    strip_secrets,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_null_logger_is_a_noop(tmp_path: Path) -> None:
    log = NullLogger()
    assert isinstance(log, RunLogger)
    log.start({"a": 1}, tmp_path, "name")
    log.log({"train/loss": 0.5, "round": 1}, step=3)
    log.log_summary({"rounds": []})
    log.finish()
    log.finish()
    assert list(tmp_path.iterdir()) == []


def test_import_does_not_import_wandb() -> None:
    code = "import larpo.loggers, sys; assert 'wandb' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_explicit_mode_wins() -> None:
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "x"}
    assert resolve_mode("disabled", env, "/nonexistent") == "disabled"


def test_wandb_mode_env_respected_without_key(tmp_path: Path) -> None:
    # No key anywhere, but the env var must win over the offline fallback.
    assert resolve_mode(None, {"WANDB_MODE": "online"}, tmp_path / ".netrc") == "online"


def test_offline_when_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    import os

    assert resolve_mode(None, os.environ) == "offline"


def test_key_in_env_or_netrc_means_online(tmp_path: Path) -> None:
    assert resolve_mode(None, {"WANDB_API_KEY": "abc"}, tmp_path / ".netrc") is None
    rc = tmp_path / ".netrc"
    rc.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert resolve_mode(None, {}, rc) is None
    rc.write_text("machine example.com login u password p\n")
    assert resolve_mode(None, {}, rc) == "offline"


def test_malformed_netrc_tolerated(tmp_path: Path) -> None:
    rc = tmp_path / ".netrc"
    rc.write_text("machine\n")
    assert resolve_mode(None, {}, rc) == "offline"


def test_strip_secrets_recursive() -> None:
    cfg = {
        "lr": 1e-5,
        "API_KEY": "sk-1",
        "wandb": {
            "Token": "t",
            "project": "larpo",
            "nested": [{"client_secret": "s", "ok": 1}],
        },
        "monkey_business": 3,  # contains "key": dropped too, by design (better safe)
    }
    out = strip_secrets(cfg)
    assert out == {"lr": 1e-5, "wandb": {"project": "larpo", "nested": [{"ok": 1}]}}
    assert cfg["API_KEY"] == "sk-1"  # the caller's config is not mutated


def test_wandb_disabled_roundtrip(tmp_path: Path) -> None:
    log = WandbLogger(mode="disabled", tags=["unit"])
    with logging_run(
        log, {"seed": 0, "secret_token": "x"}, tmp_path / "run", "t"
    ) as run:
        run.log({"train/loss": 0.5, "round": 1}, step=1)
        run.log_summary({"round_1/accuracy": 0.4})
    log.finish()  # second finish is a no-op


def test_wandb_config_has_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Capture what reaches wandb.init without network or files.
    import wandb

    seen: dict = {}

    class FakeRun:
        def finish(self) -> None:
            seen["finished"] = seen.get("finished", 0) + 1

    def fake_init(**kwargs: object) -> FakeRun:
        seen.update(kwargs)
        return FakeRun()

    monkeypatch.setattr(wandb, "init", fake_init)
    log = WandbLogger(mode="offline")
    log.start(
        {"model": {"hf_token": "hf_x", "name": "tiny"}, "WANDB_API_KEY": "k"}, tmp_path
    )
    log.finish()
    log.finish()
    assert seen["config"] == {"model": {"name": "tiny"}}
    assert seen["dir"] == str(tmp_path) and seen["mode"] == "offline"
    assert seen["finished"] == 1


def test_finish_after_failed_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    def boom(**kwargs: object) -> None:
        raise RuntimeError("init failed")

    monkeypatch.setattr(wandb, "init", boom)
    log = WandbLogger(mode="offline")
    with pytest.raises(RuntimeError), logging_run(log, {}, tmp_path):
        pass
    log.finish()


def test_offline_fallback_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import wandb

    class FakeRun:
        def finish(self) -> None:
            pass

    monkeypatch.setattr(wandb, "init", lambda **kw: FakeRun())
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(loggers, "_offline_announced", False)
    with caplog.at_level(logging.INFO, logger="larpo.loggers"):
        for _ in range(2):
            with logging_run(WandbLogger(), {}, tmp_path):
                pass
    assert sum("No W&B API key configured" in r.getMessage() for r in caplog.records) == 1


def test_log_table_writes_a_wandb_table_offline(tmp_path: Path) -> None:
    """Benchmark outputs reach W&B as a table (offline here), values kept, odd types as text."""
    import json

    log = WandbLogger(mode="offline")
    log.start({}, tmp_path, "t")
    log.log_table("eval/alpacaeval2/outputs_round1", [{"instruction": "hi", "preference": 2.0, "extra": [1, 2]},
                                                     {"instruction": "yo", "preference": 1.0}])
    log.finish()
    tables = list((tmp_path / "wandb").rglob("*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["extra", "instruction", "preference"]
    assert table["data"] == [["[1, 2]", "hi", 2.0], [None, "yo", 1.0]]

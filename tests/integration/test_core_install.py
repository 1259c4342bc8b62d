"""A core install (`pip install -e .`, no eval extra) runs the default: the AlpacaEval-style columns are left
out with a note, and what needs alpaca_eval is refused at start-up naming the extra, before any work.
alpaca_eval is made unimportable here as it is in a core install."""

from __future__ import annotations

import pytest

from larpo.artifacts import RunDir, read_json
from larpo.errors import PipelineError
from larpo.pipeline import run
from tests.helpers.config import compose_config


@pytest.fixture
def no_alpaca_eval(monkeypatch):
    import importlib.util

    from larpo.evals import alpacaeval

    def missing():
        raise ModuleNotFoundError("No module named 'alpaca_eval'")

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(alpacaeval, "import_alpaca_eval", missing)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "alpaca_eval" else find_spec(name, *a))


def test_the_default_evaluation_runs_without_the_eval_extra(no_alpaca_eval, tmp_path, caplog):
    # the default eval (conf/eval/task.yaml) on the shrunk run: round 0 and one LarPO round
    cfg = compose_config(["experiment=smoke", "rounds=1", "sft.steps=40", "eval.pass_at_max=0", "threads=1",
                          f"run_dir={tmp_path / 'run'}"])
    with caplog.at_level("INFO", logger="larpo.preflight"):
        run(cfg)
    assert caplog.text.count("alpaca_eval is not installed (the eval extra)") == 1  # said once, at start-up
    assert "WARNING" not in caplog.text
    ev = read_json(RunDir(tmp_path / "run").eval(1))
    assert "win_rate" in ev and not any(k.startswith("ae_") for k in ev)


@pytest.mark.parametrize("override", [["eval.alpaca_style=true"], ["eval=[task,alpacaeval2]", "judge=reward"],
                                      ["eval=[alpacaeval_dev]", "judge=reward"]])
def test_what_needs_the_eval_extra_is_refused_at_start_up(no_alpaca_eval, tmp_path, override):
    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path / 'run'}", *override])
    with pytest.raises(PipelineError, match=r"install the eval extra: pip install -e '\.\[eval\]'"):
        run(cfg)
    assert not (tmp_path / "run").exists()

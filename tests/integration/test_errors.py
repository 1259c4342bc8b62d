"""Bad input fails early with a message that names the file, field or option."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from larpo.artifacts import RunDir
from larpo.errors import ArtifactError, PipelineError
from larpo.pipeline import run

FAST = ("rounds=1", "sft.steps=0", "eval.pass_at_max=0", "threads=1")


@pytest.fixture
def finished_run(smoke_cfg):
    cfg = smoke_cfg(*FAST)
    run(cfg)
    return cfg


def test_more_selected_than_sampled(smoke_cfg):
    cfg = smoke_cfg("sampling.n_samples=3", "select.n_top=2", "select.n_bottom=2")
    with pytest.raises(ValueError, match=r"n_top \+ select.n_bottom .* exceeds the 3 candidates per prompt"):
        run(cfg)
    assert not RunDir(cfg.run_dir).manifest.exists()  # refused before anything was written


def test_list_loss_needs_two_candidates(smoke_cfg):
    with pytest.raises(ValueError, match="needs lists of at least 2 candidates.*lists of 1"):
        run(smoke_cfg("select=all", "sampling.n_samples=1"))


def test_unknown_task_family(smoke_cfg):
    with pytest.raises(Exception, match="unknown task family 'nope'"):
        run(smoke_cfg("task.families=[add2,nope]"))


def test_missing_checkpoint_for_a_single_stage(smoke_cfg):
    with pytest.raises(PipelineError, match="round-0 checkpoint is missing"):
        run(smoke_cfg("stage=generate", "round=1", *FAST))


def test_missing_checkpoint_when_resuming(finished_run):
    rd = RunDir(finished_run.run_dir)
    shutil.rmtree(rd.checkpoint(0))
    rd.clear_done(1, "generate")
    with pytest.raises(PipelineError, match=r"round-0 checkpoint is missing at .*round_0/checkpoint"):
        run(finished_run)


def test_malformed_jsonl_line_names_file_and_line(finished_run, smoke_cfg):
    rd = RunDir(finished_run.run_dir)
    lines = rd.generations(1).read_text().splitlines()
    lines[2] = lines[2][:-5]  # truncate the third line
    rd.generations(1).write_text("\n".join(lines) + "\n")
    with pytest.raises(ArtifactError, match=r"generations.jsonl:3: malformed JSON line"):
        run(smoke_cfg("stage=score", "round=1", *FAST))


def test_missing_field_names_file_line_and_field(finished_run, smoke_cfg):
    rd = RunDir(finished_run.run_dir)
    rd.scores(1).write_text('{"prompt_id": "train-00000"}\n')
    with pytest.raises(ArtifactError, match=r"scores.jsonl:1: missing field\(s\) \['rewards', 'reward_model'\]"):
        run(smoke_cfg("stage=select", "round=1", *FAST))


def test_resume_with_a_different_config_is_refused(finished_run, smoke_cfg):
    with pytest.raises(PipelineError, match=r"different config .*loss.beta: 0.1 -> 0.5"):
        run(smoke_cfg("loss.beta=0.5", *FAST))
    # Volatile keys (what to do now) and a larger `rounds` are not differences.
    run(smoke_cfg("rounds=1", "logger=none", "threads=1", "sft.steps=0", "eval.pass_at_max=0", "resume=true"))


def test_rerun_one_stage_clears_downstream_markers(finished_run, smoke_cfg):
    rd = RunDir(finished_run.run_dir)
    before = rd.scores(1).read_text()
    run(smoke_cfg("stage=score", "round=1", *FAST))
    assert rd.scores(1).read_text() == before  # deterministic re-run
    assert rd.is_done(1, "score") and rd.is_done(1, "generate")
    assert not rd.is_done(1, "select") and not rd.is_done(1, "train") and not rd.is_done(1, "evaluate")
    run(finished_run)  # a plain run brings the rest up to date
    assert rd.is_done(1, "evaluate")


def test_stage_for_a_round_that_does_not_exist(smoke_cfg):
    with pytest.raises(PipelineError, match="stage=generate round=0 does not exist"):
        run(smoke_cfg("stage=generate", "round=0", *FAST))


def test_wandb_logger_offline_run_writes_its_files(smoke_cfg, tmp_path, monkeypatch):
    """logger=wandb with no API key configured runs offline; the key never reaches the config."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    cfg = smoke_cfg("logger=wandb", "rounds=0", "sft.steps=0", "eval.pass_at_max=0", "threads=1")
    run(cfg)
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1


def test_carry_optimizer_saves_and_reuses_adamw_state(smoke_cfg):
    """train.carry_optimizer=true: each checkpoint holds the AdamW moments the next round starts from."""
    import torch

    cfg = smoke_cfg("train.carry_optimizer=true", "rounds=1", "eval.pass_at_max=0", "threads=1")
    run(cfg)
    rd = RunDir(cfg.run_dir)
    s0 = torch.load(rd.checkpoint(0) / "optimizer.pt", weights_only=True)
    s1 = torch.load(rd.checkpoint(1) / "optimizer.pt", weights_only=True)
    sft_steps = cfg.sft.steps
    step0 = float(next(iter(s0["state"].values()))["step"])
    step1 = float(next(iter(s1["state"].values()))["step"])
    assert step0 == sft_steps and step1 > step0  # round 1 continued the warm-start's moments
    assert s1["param_groups"][0]["initial_lr"] == cfg.train.lr  # with this round's learning rate


def test_a_loss_that_turns_nan_stops_the_train_stage_before_its_checkpoint(smoke_cfg):
    """Issue 19, 12: the first non-finite loss stops training, naming the step; no checkpoint, no marker."""
    # with the warm-start (smoke's sft.steps), so that lists carry preferences and the loss is not 0
    cfg = smoke_cfg("rounds=1", "eval.pass_at_max=0", "threads=1", "train.max_tokens=100000",  # a micro-batch a step
                    "loss._target_=tests.unit.test_train.NaNFromCall",
                    "+loss.n=2")
    with pytest.raises(PipelineError, match=r"^round 1, stage train: the loss is nan at optimizer step 2 of \d+ "
                                            r"\(epoch 1\); training stopped before that step's update"):
        run(cfg)
    rd = RunDir(cfg.run_dir)
    assert not rd.is_done(1, "train") and not rd.checkpoint(1).exists()
    assert not (rd.round_dir(1) / "checkpoint.tmp").exists()


def run_py(tmp_path, *overrides: str):
    """``python run.py ...`` as a user types it, in a fresh process that imports this checkout."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    return subprocess.run([sys.executable, str(repo / "run.py"), *overrides, f"hydra.run.dir={tmp_path / 'hydra'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("override", "message"), [
    ("rounds=-1", "invalid option: rounds=-1 is out of range: allowed >= 0"),
    ("model.pretrained=/nonexistent", "model.pretrained: no such file or folder: /nonexistent"),
])
def test_a_refusal_is_one_message_without_a_traceback(tmp_path, override, message):
    """Issue 19, 14: a refused command prints what is wrong once, and no traceback (Hydra printed one)."""
    proc = run_py(tmp_path, "experiment=smoke", override, f"run_dir={tmp_path / 'run'}")
    output = proc.stdout + proc.stderr  # Hydra's job logging writes to stdout
    assert proc.returncode == 1, output[-3000:]
    assert output.count(message) == 1, output[-3000:]
    assert "Traceback" not in output and "Error executing job" not in output and "HYDRA_FULL_ERROR" not in output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("lossx=listmle", "unknown option `lossx`: the config has no key `lossx`; did you mean `loss`?"),
    ("train.lrr=1e-3", "unknown option `train.lrr`: `train` has no key `lrr`; did you mean `train.lr`?"),
    ("sampling.vllm.dtpye=float32",
     "unknown option `sampling.vllm.dtpye`: `sampling.vllm` has no key `dtpye`; did you mean `sampling.vllm.dtype`?"),
])
def test_a_misspelt_key_gets_the_nearest_option(tmp_path, override, message):
    """Issue 19, 14: "did you mean `loss`?", not only Hydra's `+key` hint; refused before Hydra makes a folder."""
    proc = run_py(tmp_path, override)
    assert proc.returncode == 2 and proc.stderr.strip() == message, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "hydra").exists()


def test_only_unknown_keys_are_refused_early():
    """Group choices, keys inside a component's open node (left to Hydra), additions and Hydra's own
    flags and keys pass the early check."""
    from larpo.config import check_override_keys

    fine = ["model=tiny", "loss.beta=0.2", "+loss.n=2", "~loss.weights", "eval.alpacaeval2.max_instances=3",
            "model.arch.hidden_size=8", "hydra.run.dir=x", "hydra/launcher=basic", "local=slurm", "--multirun",
            "train.lr=1e-3,1e-4", "eval=[task,alpacaeval2]", "--cfg", "job", "stage=score", "round=1"]
    assert check_override_keys(fine) is None
    assert check_override_keys(["-cn", "other", "lossx=1"]) is None  # another config: another schema
    assert "did you mean `seed`?" in check_override_keys(["--multirun", "seeds=0,1"])

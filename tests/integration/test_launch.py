"""``train.launcher=accelerate``: the train stage as a child ``accelerate launch`` (larpo/training/launch.py).

Real DDP over gloo on CPU (``ACCELERATE_USE_CPU=1 ... --multi_gpu --num_processes 2``):
two processes, each taking its share of every step's micro-batches, must end with the weights
of one process over the same global batches.
"""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from larpo.artifacts import RunDir, read_json, read_jsonl, write_jsonl
from larpo.checkpoints import save_checkpoint
from larpo.errors import PipelineError
from larpo.logprobs import list_logps
from larpo.manifest import write_manifest
from larpo.training.launch import LOG_FILE, accelerate_config_path, check_launch, launch_command, launch_train
from larpo.training.round import train_round
from tests.helpers.config import compose_config
from tests.helpers.tiny import tiny_policy

CPU = torch.device("cpu")
# Steps of 5, 5 and 2 lists (12 rows); a small token budget packs each step into a varying
# number of micro-batches, so ranks get unequal shares and padding micro-batches are exercised.
TRAIN = ["train.lists_per_step=5", "train.max_tokens=60", "train.epochs=2", "train.lr=1e-2", "train.warmup_ratio=0"]


def make_rows(model, tok, n: int = 12) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        a, b = rng.randrange(10, 99), rng.randrange(10, 99)
        k = rng.choice([2, 3, 4])
        responses = [str(a + b)] + [str(rng.randrange(0, 10 ** rng.randrange(1, 5))) for _ in range(k - 1)]
        rows.append({"prompt_id": f"p{i}", "prompt": f"{a}+{b}=", "responses": responses,
                     "finished": [True] * (k - 1) + [bool(i % 2)], "rewards": [1.0] + [0.5 - j / 10 for j in range(k - 1)]})
    for row, lp in zip(rows, list_logps(model, tok, rows, 10**6)):
        row["ref_logps"] = lp
    return rows


def make_run(root, *overrides: str):
    """A run directory holding what the train stage of round 1 reads: manifest, round-0 checkpoint, lists."""
    cfg = compose_config(["experiment=smoke", f"run_dir={root}", *TRAIN, *overrides])
    rd = RunDir(root)
    write_manifest(rd, cfg)
    model, tok = tiny_policy()
    save_checkpoint(model, tok, rd.checkpoint(0))
    write_jsonl(rd.lists(1), make_rows(model, tok))
    return cfg, rd


def test_two_processes_end_with_the_weights_of_one(tmp_path):
    cfg, one = make_run(tmp_path / "one")
    local_log: list[dict] = []
    train_round(cfg, one, 1, instantiate(cfg.loss), torch.float32, CPU, local_log.append)
    cfg2, two = make_run(tmp_path / "two", "train.launcher=accelerate", "train.num_processes=2")
    dist_log: list[dict] = []
    launch_train(cfg2.train, two, 1, CPU, dist_log.append)

    a, b = (load_file(str(rd.checkpoint(1) / "model.safetensors")) for rd in (one, two))
    w0 = load_file(str(one.checkpoint(0) / "model.safetensors"))
    moved = max((a[k] - w0[k]).abs().max().item() for k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 1e-3  # training did change the weights
    assert diff < 1e-5, f"max |w_2proc - w_1proc| = {diff:.3g}"
    s1, s2 = read_json(one.train_log(1)), read_json(two.train_log(1))
    assert s2["processes"] == 2 and s1["steps"] == s2["steps"] == 6
    assert s2["loss"] == pytest.approx(s1["loss"], rel=1e-5)
    # The per-step metrics of both ranks are summed back into the one-process values, and the
    # parent replays them into its logger.
    assert len(dist_log) == len(local_log) == 6
    for x, y in zip(local_log, dist_log):
        assert y["train/loss"] == pytest.approx(x["train/loss"], rel=1e-5, abs=1e-6)
        assert y["train/grad_norm"] == pytest.approx(x["train/grad_norm"], rel=1e-4)
    assert len(read_jsonl(two.train_steps(1))) == 6
    assert "2 process(es)" in (two.round_dir(1) / LOG_FILE).read_text()


def test_a_failing_child_names_its_exit_code_and_log(tmp_path):
    cfg, rd = make_run(tmp_path / "run", "train.launcher=accelerate", "train.num_processes=1")
    (rd.checkpoint(0) / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PipelineError, match=r"exit code [1-9]") as err:
        launch_train(cfg.train, rd, 1, CPU, lambda m: None)
    log = rd.round_dir(1) / LOG_FILE
    assert str(log) in str(err.value) and "could not load the model" in str(err.value)  # the log's tail
    assert not rd.train_log(1).exists()


def test_launch_command_on_cpu_is_real_ddp(tmp_path):
    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path}", "train.launcher=accelerate",
                          "train.num_processes=2"])
    cmd, env = launch_command(cfg.train, RunDir(tmp_path), 1, CPU)
    assert env["ACCELERATE_USE_CPU"] == "1" and "--multi_gpu" in cmd and "--cpu" not in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[-4:] == ["-m", "larpo.training.worker", str(tmp_path.resolve()), "1"]


def test_accelerate_config_names_and_checks(tmp_path):
    assert accelerate_config_path("zero2").name == "zero2.yaml"
    from larpo.errors import ConfigError

    with pytest.raises(ConfigError, match="train.accelerate_config='zero9'"):
        accelerate_config_path("zero9")
    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path}", "train.launcher=accelerate",
                          "train.accelerate_config=zero3", "train.carry_optimizer=true"])
    with pytest.raises(ConfigError, match="carry_optimizer"):
        check_launch(cfg.train)
    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path}", "train.launcher=accelerate",
                          "train.accelerate_config=zero2"])
    if importlib.util.find_spec("deepspeed") is None:  # refused at start-up, not inside 8 child processes
        with pytest.raises(ConfigError, match="DeepSpeed, which is not installed"):
            check_launch(cfg.train)


# ---------------------------------------------------------------- issue 19, 9: signals and the run lock

ACCELERATE = ["train.launcher=accelerate", "train.num_processes=1", "train.epochs=2000"]  # trains for minutes


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``, from /proc."""
    import os
    from pathlib import Path

    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after "(comm)": state, ppid, pgrp, session
            out.append(int(stat.parent.name))
    return [p for p in out if p != os.getpid()]


@pytest.fixture(scope="module")
def before_train(tmp_path_factory):
    """A faulted-config run with the accelerate launcher, finished up to round 1's select."""
    from larpo import stages
    from larpo.pipeline import run
    from tests.helpers.faults import fault_cfg

    class Stop(Exception):
        pass

    def stop(ctx, r):
        raise Stop

    run_dir = tmp_path_factory.mktemp("before_train") / "run"
    original = stages.STAGE_FUNCS["train"]
    stages.STAGE_FUNCS["train"] = stop
    try:
        with pytest.raises(Stop):
            run(fault_cfg(run_dir, *ACCELERATE))
    finally:
        stages.STAGE_FUNCS["train"] = original
    return run_dir


def start_training(before_train, tmp_path):
    """`python run.py ...` resuming into round 1's train stage (an accelerate child); returns (parent, child pid)."""
    import os
    import re
    import shutil
    import subprocess
    import sys
    import time

    from tests.helpers.faults import REPO

    run_dir = tmp_path / "run"
    shutil.copytree(before_train, run_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = open(tmp_path / "output.txt", "w")  # noqa: SIM115  (a file, not a pipe nobody reads)
    parent = subprocess.Popen([sys.executable, "-m", "tests.helpers.fault_driver", str(run_dir), "none", "0", "--run.py",
                               *ACCELERATE], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600  # a bound for a broken run, not the expected wait
    while True:  # the event: the lock file names the child (it holds the lock's descriptor too)
        text = (run_dir / ".lock").read_text() if (run_dir / ".lock").exists() else ""
        match = re.search(rf"pid {parent.pid}, .*; child pid (\d+) \(accelerate\.commands\.launch", text)
        if match:
            return parent, int(match.group(1)), run_dir
        assert parent.poll() is None, (tmp_path / "output.txt").read_text()[-3000:]
        assert time.monotonic() < deadline, "the train child never started"
        time.sleep(0.05)


def test_sigterm_to_the_pipeline_stops_the_accelerate_group_and_says_how_to_resume(before_train, tmp_path):
    """SIGTERM (what SLURM preemption sends) during `train.launcher=accelerate`: the parent exited -15 with no
    message and `accelerate launch` kept training as an orphan. Now: the message, exit 143, no process of the
    child's session left, and the run directory free for the resume."""
    import signal

    from larpo.artifacts import RunLock

    parent, child, run_dir = start_training(before_train, tmp_path)
    try:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=300) == 143
    finally:
        if parent.poll() is None:
            parent.kill()
    output = (tmp_path / "output.txt").read_text()
    assert "interrupted in round 1, stage train; run the same command to resume" in output
    assert "stopped by SIGTERM; run the same command to resume" in output and "Traceback" not in output
    assert session_members(child) == []  # nothing of the child's group outlived the parent
    lock = RunLock(run_dir)
    lock.acquire()  # the resume may start at once
    lock.release()

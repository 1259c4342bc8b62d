"""``train.launcher=accelerate``: the train stage as a child ``accelerate launch`` process group.

The parent (the pipeline) starts::

    python -m accelerate.commands.launch [--config_file conf/accelerate/<name>.yaml]
        [--num_processes N] [--main_process_port P] -m larpo.training.worker RUN_DIR ROUND

waits for it, and checks what it left: ``round_<r>/checkpoint``, ``train.json`` and
``train_steps.jsonl`` (replayed into the parent's logger, so W&B curves look the same as
in-process). The child's stdout and stderr go to ``round_<r>/train_launch.log``; a failure
raises :class:`PipelineError` with the exit code, that path and the log's last lines.

Without a config file the child runs plain DDP (or one process) without mixed precision.
On a CPU (``device=cpu``, or no CUDA) the child gets ``ACCELERATE_USE_CPU=1`` and, for several
processes, ``--multi_gpu``: with ``--cpu`` accelerate silently starts a single process.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from larpo.artifacts import RunDir, iter_jsonl
from larpo.checkpoints import is_checkpoint
from larpo.config import CONF_DIR
from larpo.errors import ConfigError, PipelineError
from larpo.processes import log_tail, supervised

logger = logging.getLogger(__name__)

ACCELERATE_CONFIGS = CONF_DIR / "accelerate"
LOG_FILE = "train_launch.log"
_SHARDED = ("DEEPSPEED", "FSDP")


def accelerate_config_path(name: str | None) -> Path | None:
    """``train.accelerate_config``: a name in conf/accelerate (ddp, zero2, zero3, fsdp) or a path."""
    if name is None:
        return None
    shipped = ACCELERATE_CONFIGS / f"{name}.yaml"
    path = shipped if "/" not in name and not name.endswith((".yaml", ".yml", ".json")) else Path(name).expanduser()
    if not path.is_file():
        known = sorted(p.stem for p in ACCELERATE_CONFIGS.glob("*.yaml"))
        raise ConfigError(f"train.accelerate_config={name!r}: no such file {path} (shipped: {known}, or give a path)")
    return path


def _read_yaml(path: Path) -> dict:
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"train.accelerate_config: {path} is not an accelerate config (a YAML mapping)")
    return data


def check_launch(train_cfg) -> None:
    """Start-up checks of the accelerate options (no process is started)."""
    path = accelerate_config_path(train_cfg.accelerate_config)
    file = _read_yaml(path) if path else {}
    if train_cfg.carry_optimizer and file.get("distributed_type") in _SHARDED:
        raise ConfigError(f"train.carry_optimizer=true needs the whole AdamW state in one process; with "
                          f"{file['distributed_type']} ({path}) it is sharded across ranks: use launcher=local, "
                          "a DDP config, or carry_optimizer=false")
    if file.get("distributed_type") == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"train.accelerate_config={path} uses DeepSpeed, which is not installed here "
                          "(pip install deepspeed on the GPU machines)")


def _num_processes(train_cfg, file: dict) -> int:
    """``train.num_processes``, else the accelerate config file's ``num_processes``, else 1."""
    return int(train_cfg.num_processes or file.get("num_processes") or 1)


# FSDP's sharding strategies as the ZeRO stage that shards the same states (for the memory plan)
_FSDP_STAGE = {"NO_SHARD": 0, "SHARD_GRAD_OP": 2, "FULL_SHARD": 3, "HYBRID_SHARD": 3, "_HYBRID_SHARD_ZERO2": 2,
               "1": 3, "2": 2, "3": 0, "4": 3, "5": 2}


def accelerate_plan(train_cfg) -> tuple[int, int]:
    """(processes, ZeRO stage) the train stage runs with: 1 process and stage 0 for ``launcher=local``; under
    accelerate, the processes :func:`launch_command` starts (:func:`_num_processes`), and the stage of its DeepSpeed
    config (``deepspeed_config.zero_stage``, or ``zero_optimization.stage`` of a ``deepspeed_config_file``) or of
    its FSDP sharding strategy."""
    if train_cfg.launcher != "accelerate":
        return 1, 0
    path = accelerate_config_path(train_cfg.accelerate_config)
    file = _read_yaml(path) if path else {}
    n = _num_processes(train_cfg, file)
    kind = file.get("distributed_type")
    if kind == "DEEPSPEED":
        ds = file.get("deepspeed_config") or {}
        stage = ds.get("zero_stage")
        if stage is None and ds.get("deepspeed_config_file"):
            ds_path = Path(ds["deepspeed_config_file"]).expanduser()  # relative: to the cwd, as accelerate opens it
            try:
                stage = json.loads(ds_path.read_text()).get("zero_optimization", {}).get("stage")
            except (OSError, ValueError) as e:
                raise ConfigError(f"train.accelerate_config={path}: deepspeed_config_file {ds_path} "
                                  f"cannot be read as JSON ({e})") from None
        stage = int(stage or 0)
    elif kind == "FSDP":
        strategy = str((file.get("fsdp_config") or {}).get("fsdp_sharding_strategy", "FULL_SHARD"))
        stage = _FSDP_STAGE.get(strategy.upper(), 3)
    else:
        stage = 0
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"train.accelerate_config={path}: ZeRO stage {stage} is not one of 0, 1, 2, 3")
    return n, stage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(train_cfg, rd: RunDir, r: int, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The child's command line and environment."""
    path = accelerate_config_path(train_cfg.accelerate_config)
    file = _read_yaml(path) if path else {}
    n = _num_processes(train_cfg, file)
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    env = dict(os.environ)
    if path:
        cmd += ["--config_file", str(path)]
    else:  # accelerate's defaults, spelt out (and no ~/.cache default config is picked up silently)
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if n > 1:
            cmd.append("--multi_gpu")
    if train_cfg.num_processes:
        cmd += ["--num_processes", str(n)]
    elif not path:
        cmd += ["--num_processes", "1"]
    if device.type == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"  # real DDP over gloo; `--cpu` would run one process only
        if path and n > 1 and file.get("distributed_type") not in ("MULTI_GPU", "MULTI_CPU"):
            raise ConfigError(f"train.accelerate_config={path}: {file.get('distributed_type')} does not run on CPU")
    if int(file.get("num_machines") or 1) == 1 and "main_process_port" not in file:
        cmd += ["--main_process_port", str(_free_port())]  # two runs on one host must not collide on 29500
    cmd += ["-m", "larpo.training.worker", str(Path(rd.root).resolve()), str(r)]
    return cmd, env


_LAUNCHER_ERRORS = ("ChildFailedError", "CalledProcessError")
_ERROR = re.compile(r"^(\[rank\d+\]: )?([\w.]+(Error|Exception)|KeyboardInterrupt)\b")


def _failure(path: Path, lines: int = 15) -> str:
    """The error a rank raised (the last one, i.e. the outermost of a chain; the launcher's own
    ChildFailedError / CalledProcessError only say that a rank failed) and the log's tail."""
    tail = log_tail(path, 10**9).splitlines()
    errors = [t for t in tail if _ERROR.match(t) and not any(x in t for x in _LAUNCHER_ERRORS)]
    return (f"error: {errors[-1]}\n" if errors else "") + "last lines:\n" + "\n".join(tail[-lines:])


def launch_train(train_cfg, rd: RunDir, r: int, device: torch.device, log: Callable[[dict], None]) -> None:
    """Run round r's training in a child process group; raise PipelineError if it fails."""
    check_launch(train_cfg)
    cmd, env = launch_command(train_cfg, rd, r, device)
    log_path = rd.round_dir(r) / LOG_FILE
    for stale in (rd.train_steps(r), rd.train_log(r)):
        stale.unlink(missing_ok=True)  # so a failed child cannot pass for a finished one
    logger.info("round %d train: launching %s; log: %s", r, " ".join(cmd[1:]), log_path)
    with supervised(cmd, env, log_path) as proc:  # the whole group is stopped on any way out
        rc = proc.wait()
    if rc != 0:
        raise PipelineError(f"round {r}, stage train: the accelerate child process failed with exit code {rc}; "
                            f"its full log is {log_path}; {_failure(log_path)}")
    steps = rd.train_steps(r)
    missing = [p for p in (rd.train_log(r), steps) if not p.exists()]
    if missing or not is_checkpoint(rd.checkpoint(r)):
        raise PipelineError(f"round {r}, stage train: the accelerate child exited 0 but did not write "
                            f"{[str(p) for p in missing] or rd.checkpoint(r)}; see {log_path}")
    for row in iter_jsonl(steps):
        log(row)

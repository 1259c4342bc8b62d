"""Every yaml composes against the schema, and every `_target_` instantiates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers.config import CONF_DIR, compose_config

REPO = CONF_DIR.parent
# local, local.example: per-user settings (gitignored) and the example to copy there; not options of a run.
# conf/accelerate holds accelerate's own config files (train.accelerate_config), not a Hydra group:
# Hydra reads a folder only when a group of that name is asked for, and none is.
NOT_GROUPS = {"local", "local.example", "hydra", "accelerate"}
GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in NOT_GROUPS)
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]
SMALL_TASK = ["task.n_sft=10", "task.n_train=10", "task.n_eval=10"]


def test_default_config_is_the_embedded_run():
    cfg = compose_config(["run_dir=/tmp/unused"])
    # Every run starts from the shipped round-0 policy; the task's prompts do not move with the run seed.
    assert cfg.model.pretrained.endswith("larpo/assets/round0") and cfg.sft.steps == 0
    assert compose_config(["run_dir=/tmp/unused", "seed=3"]).task.seed == cfg.task.seed
    assert cfg.loss._target_ == "larpo.losses.lambdarank.LambdaRankLoss"  # listwise = LambdaRank
    assert cfg.rounds == 3 and cfg.reference == "behavior"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_instantiates(group, option):
    cfg = compose_config([f"{group}={option}", "run_dir=/tmp/unused", *SMALL_TASK])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    task = instantiate(cfg.task)
    for node in (cfg.loss, cfg.select, cfg.logger):
        assert callable(instantiate(node)) or hasattr(instantiate(node), "log")
    if not hasattr(task, "verify") and cfg.reward._target_.endswith("VerifierReward"):
        with pytest.raises(Exception, match="needs a task with a verifier"):  # e.g. UltraFeedback: pair it with an RM
            instantiate(cfg.reward, task=task)
        return
    assert instantiate(cfg.reward, task=task).name


REFERENCE_FREE = {"simpo", "cpo", "slic", "rrhf", "sft"}


def test_every_loss_yaml_is_a_loss():
    for path in sorted((CONF_DIR / "loss").glob("*.yaml")):
        cfg = compose_config([f"loss={path.stem}", "run_dir=/tmp/unused"])
        loss = instantiate(cfg.loss)
        assert loss.requires_reference == (path.stem not in REFERENCE_FREE), path.stem
        assert loss.min_candidates == (1 if path.stem == "sft" else 2), path.stem


def test_typo_in_a_key_fails_with_hydras_message():
    with pytest.raises(ConfigCompositionException, match="temperatur"):
        compose_config(["sampling.temperatur=1.0"])


def test_wrong_type_fails():
    with pytest.raises(ConfigCompositionException, match="rounds"):
        compose_config(["rounds=three"])


def test_bad_enum_value_fails():
    with pytest.raises(ConfigCompositionException, match="reference"):
        compose_config(["reference=latest"])


@pytest.mark.parametrize("group", ["task", "reward", "loss", "select"])
def test_unknown_component_names_the_group(group):
    with pytest.raises(MissingConfigException, match=group):
        compose_config([f"{group}=does_not_exist"])


@pytest.mark.integration  # four real runs through run.py -m: not in the fast lane (make test-unit)
def test_multirun_sweeps_four_losses_into_four_directories(tmp_path):
    """`python run.py -m loss=...` runs one job per loss, each in its own directory."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "run.py", "-m", "loss=pairwise,contrastive,lambdarank,listmle", "experiment=smoke",
           "rounds=0", "sft.steps=0", "eval.pass_at_max=0", "threads=1", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent for p in Path(sweep).rglob("manifest.json"))
    assert len(runs) == 4 and all(p.parent == sweep for p in runs)
    for loss, run_dir in zip(("contrastive", "lambdarank", "listmle", "pairwise"), runs):
        # named <model>-<loss>-s<seed>-<hash> (larpo/runs.py); the manifest keeps the job's overrides
        assert run_dir.name.startswith(f"tiny-{loss}-s0-"), run_dir.name
        assert f"loss={loss}" in json.loads((run_dir / "manifest.json").read_text())["command"]["overrides"]
    assert all((p / "round_0" / "eval.json").exists() for p in runs)


def test_eval_judge_is_the_judge_group_by_name():
    """`eval.judge=reward` (the spelling beside the benchmarks) gives the same judge node as `judge=reward`."""
    from omegaconf import OmegaConf

    from larpo.config import validate_options
    from larpo.errors import ConfigError

    short = compose_config(["run_dir=/tmp/unused", "eval=[task,alpacaeval2]", "eval.judge=reward"])
    group = compose_config(["run_dir=/tmp/unused", "eval=[task,alpacaeval2]", "judge=reward"])
    assert short.judge._target_ != group.judge._target_  # before: the default judge (gpt4_turbo)
    validate_options(short)
    assert OmegaConf.to_container(short.judge) == OmegaConf.to_container(group.judge)
    with pytest.raises(ConfigError, match=r"eval.judge='gpt5': no conf/judge/gpt5.yaml; judges: gpt35_turbo, "):
        validate_options(compose_config(["run_dir=/tmp/unused", "eval.judge=gpt5"]))


ACCELERATE = sorted((CONF_DIR / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE, ids=[p.stem for p in ACCELERATE])
def test_accelerate_configs_load_and_clip_explicitly(path):
    """Each shipped accelerate file loads with accelerate's own reader; bf16 on 8 GPUs; DeepSpeed
    files set gradient_clipping explicitly (accelerate adds 1.0 silently otherwise) to the
    default train.max_grad_norm (the worker then sets it to the run's value)."""
    from accelerate.commands.config.config_args import load_config_from_file

    from larpo.config import TrainConfig

    c = load_config_from_file(str(path))
    assert c.mixed_precision == "bf16" and c.num_processes == 8 and c.num_machines == 1
    kind = {"ddp": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP"}[path.stem]
    assert c.distributed_type.value == kind
    if kind == "DEEPSPEED":
        assert c.deepspeed_config["zero_stage"] == int(path.stem[-1])
        assert c.deepspeed_config["gradient_clipping"] == TrainConfig().max_grad_norm
    assert compose_config(["run_dir=/tmp/unused", "train.launcher=accelerate",
                           f"train.accelerate_config={path.stem}"]).train.accelerate_config == path.stem


def test_accelerate_is_not_a_hydra_group():
    with pytest.raises(ConfigCompositionException):
        compose_config(["run_dir=/tmp/unused", "+accelerate=zero2"])


@pytest.mark.parametrize("override", ["model.lora.r=0", "model.lora.dropout=1.0", "model.lora.alpha=0",
                                      "train.num_processes=0"])
def test_lora_and_launcher_bounds(override):
    from larpo.config import validate_options
    from larpo.errors import ConfigError

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        validate_options(compose_config(["run_dir=/tmp/unused", override]))


def test_accelerate_options_need_the_accelerate_launcher():
    from larpo.config import validate_options
    from larpo.errors import ConfigError

    with pytest.raises(ConfigError, match="only with train.launcher=accelerate"):
        validate_options(compose_config(["run_dir=/tmp/unused", "train.num_processes=2"]))
    validate_options(compose_config(["run_dir=/tmp/unused", "train.launcher=accelerate", "train.num_processes=2"]))


def test_launcher_is_an_enum():
    assert compose_config(["run_dir=/tmp/unused"]).train.launcher == "local"
    with pytest.raises(ConfigCompositionException, match="launcher"):
        compose_config(["run_dir=/tmp/unused", "train.launcher=slurm"])

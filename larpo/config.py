"""Structured config schemas, registered in Hydra's ConfigStore.

``conf/config.yaml`` starts its defaults list with ``larpo_schema``, so every yaml and every
command-line override is checked against these dataclasses: a misspelt key or a value of
the wrong type fails at start-up with Hydra's own message, before any work is done.
Groups whose members are chosen by ``_target_`` (loss, task, reward, select, logger) are
open ``Any`` nodes: their keys are the constructor arguments of the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Reference(str, Enum):
    behavior = "behavior"  # π_ref = the policy that generated this round's candidates (paper)
    initial = "initial"  # π_ref = the round-0 policy, fixed for all rounds


class Stage(str, Enum):
    all = "all"
    sft = "sft"
    generate = "generate"
    score = "score"
    select = "select"
    train = "train"
    evaluate = "evaluate"


@dataclass
class ModelConfig:
    # Hub id or local path of the starting policy; None builds a fresh model from `arch`.
    pretrained: str | None = None
    # Tokenizer id/path; None: `pretrained`'s own, or the embedded tokenizer shipped in larpo/assets.
    tokenizer: str | None = None
    # LlamaConfig keyword arguments for a model built from scratch (the embedded default).
    arch: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"


@dataclass
class SFTConfig:
    """Warm-start by supervised fine-tuning on the task's reference answers (round 0)."""

    steps: int = 0  # 0 = no warm-start: round 0 is the pretrained model as loaded
    batch_size: int = 128
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0


@dataclass
class SamplingConfig:
    n_samples: int = 8  # candidates generated per prompt and round
    prompts_per_round: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    batch_size: int = 64  # prompts per generate call (each expanded to n_samples sequences)


@dataclass
class TrainConfig:
    lr: float = 1e-4
    epochs: int = 2
    lists_per_step: int = 32  # lists (prompts) per optimizer step; the rest is accumulation
    max_tokens: int = 8192  # token budget of one micro-batch (padded, whole lists only)
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logprob_max_tokens: int = 16384  # token budget of a no-grad reference log-prob batch
    # Continue each round from the previous round's AdamW moments (saved as optimizer.pt in
    # the checkpoint) instead of a fresh optimizer; costs 2x the model's size on disk.
    carry_optimizer: bool = False


@dataclass
class EvalConfig:
    n_prompts: int | None = None  # held-out prompts for greedy metrics; None = all
    batch_size: int = 256
    pass_at_max: int = 8  # Pass@N reported for N = 1, 2, 4, ... up to this
    pass_prompts: int = 200
    pass_temperature: float = 1.0
    win_rate: bool = True  # round r vs round 0, the reward as judge (ties = 1/2)


@dataclass
class Config:
    seed: int = 0
    rounds: int = 3
    name: str = "default"
    run_dir: str = MISSING
    stage: Stage = Stage.all
    round: int | None = None  # with stage=<name>: the round to (re-)run
    resume: bool = True
    reference: Reference = Reference.behavior
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads; None = torch's default
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    loss: Any = MISSING
    task: Any = MISSING
    reward: Any = MISSING
    select: Any = MISSING
    logger: Any = MISSING


# Keys that choose *what to do now* rather than *what the run is*: they may differ when a
# run directory is resumed, and they do not name the run directory.
VOLATILE_KEYS = ("stage", "round", "resume", "run_dir", "logger", "device", "threads")


def register_configs() -> None:
    ConfigStore.instance().store(name="larpo_schema", node=Config)


register_configs()

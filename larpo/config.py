"""Structured config schemas, registered in Hydra's ConfigStore: the one place an option's default is written.

``conf/config.yaml`` starts its defaults list with ``larpo_schema``, so every yaml and every
command-line override is checked against these dataclasses: a misspelt key or a value of
the wrong type fails at start-up with Hydra's own message, before any work is done.
A group file on a schema (``conf/model``, ``sft``, ``sampling``, ``train``, ``eval/task.yaml``) holds
only what its choice changes; tests/config/test_defaults.py keeps it so (docs/design.md, "Configuration").
Groups whose members are chosen by ``_target_`` (loss, task, reward, select, logger) are
open ``Any`` nodes: their keys are the constructor arguments of the target.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from larpo.errors import ConfigError

# The Hydra config tree shipped beside the package (conf/).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class Bound:
    """The allowed range of a numeric option; checked at start-up by :func:`validate_options`."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def ok(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{'<' if self.hi_open else '<='} {self.hi:g}"


def bounded(default: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
            hi_open: bool = False) -> Any:
    """A dataclass field with an allowed range (None always passes: it means "not set")."""
    return field(default=default, metadata={"bound": Bound(lo, hi, lo_open, hi_open)})


POSITIVE = {"lo": 0, "lo_open": True}


class Reference(str, Enum):
    behavior = "behavior"  # π_ref = the policy that generated this round's candidates (paper)
    initial = "initial"  # π_ref = the round-0 policy, fixed for all rounds


class Launcher(str, Enum):
    local = "local"  # the train stage runs in the pipeline's own process
    accelerate = "accelerate"  # a child process group under `accelerate launch`


class Forward(str, Enum):
    """How a micro-batch's candidates go through the model (larpo.logprobs.sequence_logps); same values."""

    padded = "padded"  # one right-padded [prompt, response] row per candidate
    shared_prompt = "shared_prompt"  # each prompt once, its K responses on the prompt's KV cache
    packed = "packed"  # one row per list [prompt, r_1..r_K] with a tree-shaped 4-D mask


class Stage(str, Enum):
    all = "all"
    sft = "sft"
    generate = "generate"
    score = "score"
    select = "select"
    train = "train"
    evaluate = "evaluate"


@dataclass
class LoraConfig:
    """LoRA adapters (peft) for the preference rounds; ``r: null`` = full fine-tuning (larpo/lora.py)."""

    r: int | None = bounded(None, 1)  # adapter rank; None = no LoRA
    alpha: float = bounded(32.0, **POSITIVE)  # scaling alpha / r
    dropout: float = bounded(0.0, 0, 1, hi_open=True)
    # Module names (or suffixes) to adapt; None = every linear layer but the output head ("all-linear").
    target_modules: list[str] | None = None


@dataclass
class ModelConfig:
    # Hub id or local path of the starting policy; None builds a fresh model from `arch`.
    pretrained: str | None = None
    # Tokenizer id/path; None: `pretrained`'s own, or the embedded tokenizer shipped in larpo/assets.
    tokenizer: str | None = None
    # LlamaConfig keyword arguments for a model built from scratch (the embedded default).
    arch: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    attn_implementation: str | None = None  # None: transformers' choice (sdpa); eager | sdpa | flash_attention_2
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (long responses, 7B)
    # Models whose code lives in their hub repo (auto_map in config.json) run that code only when set.
    trust_remote_code: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class SFTConfig:
    """Warm-start by supervised fine-tuning on the task's reference answers (round 0)."""

    steps: int = bounded(0, 0)  # 0 = no warm-start: round 0 is the pretrained model as loaded
    batch_size: int = bounded(128, 1)
    lr: float = bounded(3e-3, **POSITIVE)
    warmup_steps: int = bounded(50, 0)
    weight_decay: float = bounded(0.0, 0)


@dataclass(frozen=True)
class EachBound(Bound):
    """A :class:`Bound` on every element of a list option (a list needs its own check)."""

    def ok(self, v: Any) -> bool:
        return len(v) > 0 and all(isinstance(x, (int, float)) and super(EachBound, self).ok(x) for x in v)

    def __str__(self) -> str:
        return f"a non-empty list, each {super().__str__()}"


class Negatives(str, Enum):
    """The paper's negative difficulty ladder (Fig. 3a; docs/design.md, "Sampling plan")."""

    none = "none"
    easiest = "easiest"  # a response to a random other prompt of the round
    easy = "easy"  # a response to a related prompt (same family, else the most similar text)
    hard = "hard"  # an incorrect response sampled at high temperature (needs task.is_correct)
    hardest = "hardest"  # an incorrect response sampled at low temperature (needs task.is_correct)


class Backend(str, Enum):
    """Who runs the generate stage's sampling (``sampling.backend``)."""

    hf = "hf"  # Hugging Face ``generate`` in the pipeline's process (CPU or GPU)
    auto = "auto"  # vllm where a vLLM build runs here (GPU, or its CPU build: make vllm-env), else hf
    vllm = "vllm"  # vLLM in a child process per round (GPU: ``pip install -e '.[gpu]'``; CPU: ``make vllm-env``)


@dataclass
class VLLMConfig:
    """``sampling.vllm.*``: the vLLM engine of ``sampling.backend=vllm`` (larpo/generation/vllm_backend.py)."""

    tensor_parallel_size: int = bounded(1, 1)  # GPUs one engine shards the model over
    # Engines (child processes) side by side, each on its own tensor_parallel_size GPUs; the
    # round's batches still to do are dealt to them round-robin.
    data_parallel_size: int = bounded(1, 1)
    gpu_memory_utilization: float = bounded(0.9, 0, 1, lo_open=True)  # share of each GPU vLLM may take
    # vLLM's CPU build (make vllm-env): the KV cache's size in GiB of host RAM (vLLM's kv_cache_memory_bytes),
    # used there instead of gpu_memory_utilization (a share of host RAM, refused on a shared machine).
    cpu_kv_cache_gb: float = bounded(2.0, **POSITIVE)
    max_model_len: int | None = bounded(None, 1)  # None: the model's max_position_embeddings
    dtype: str = "auto"  # auto (model.dtype, as HF sampling) | bfloat16 | float16 | float32
    enforce_eager: bool = False  # no CUDA graphs: slower decoding, faster start and less memory
    max_num_seqs: int | None = bounded(None, 1)  # None: vLLM's default concurrent sequences


@dataclass
class SamplingConfig:
    """What the generate stage samples; larpo/generation/plan.py documents each knob's effect."""

    n_samples: int = bounded(8, 1)  # candidates generated per prompt and round
    prompts_per_round: int = bounded(256, 1)
    # > 0: temperature 0 (greedy) would give n identical candidates and nothing to rank.
    temperature: float = bounded(1.0, **POSITIVE)
    top_p: float = bounded(1.0, 0, 1, lo_open=True)
    max_new_tokens: int = bounded(16, 1)
    batch_size: int = bounded(64, 1)  # prompts per generate call (each expanded to n_samples sequences)
    # Round r samples at element r-1 (the last repeats); None: `temperature` every round.
    temperature_schedule: list[float] | None = field(default=None, metadata={"bound": EachBound(0, lo_open=True)})
    # Split n_samples across these temperatures (earlier ones take the remainder); None: one temperature.
    temperatures: list[float] | None = field(default=None, metadata={"bound": EachBound(0, lo_open=True)})
    extra_negatives: int = bounded(0, 0)  # extra low-temperature candidates appended to each list
    extra_temperature: float = bounded(0.2, **POSITIVE)
    negatives: Negatives | None = None  # None = none: no ladder candidates
    negatives_n: int = bounded(1, 1)  # ladder candidates appended per prompt
    negatives_temperature: float | None = bounded(None, **POSITIVE)  # None: hard 1.2, hardest 0.3, else the round's
    # Incorrect-response search (hard, hardest): up to `tries` draws of `per_try` responses per prompt.
    negatives_tries: int = bounded(4, 1)
    negatives_per_try: int = bounded(4, 1)
    backend: Backend = Backend.hf  # hf | vllm
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    # Batches of prompts of similar token length (larpo/generation/candidates.py): faster, same rows in the
    # same order, but other samples than the default's (a prompt shares its random stream with others).
    length_batching: bool = False


@dataclass
class TrainConfig:
    lr: float = bounded(5e-5, **POSITIVE)
    epochs: int = bounded(2, 1)
    lists_per_step: int = bounded(32, 1)  # lists (prompts) per optimizer step; the rest is accumulation
    max_tokens: int = bounded(8192, 1)  # token budget of one micro-batch (padded, whole lists only)
    warmup_ratio: float = bounded(0.1, 0, 1, hi_open=True)
    weight_decay: float = bounded(0.0, 0)
    max_grad_norm: float = bounded(1.0, **POSITIVE)
    logprob_max_tokens: int = bounded(16384, 1)  # token budget of a no-grad reference log-prob batch
    # Continue each round from the previous round's AdamW moments (saved as optimizer.pt in
    # the checkpoint) instead of a fresh optimizer; costs 2x the model's size on disk.
    carry_optimizer: bool = False
    # Where the train stage runs: local = in this process; accelerate = a child `accelerate launch`
    # over `num_processes` processes (DDP, DeepSpeed ZeRO or FSDP by `accelerate_config`; larpo/training/launch.py).
    launcher: Launcher = Launcher.local
    # An accelerate config file: a name in conf/accelerate (ddp, zero2, zero3, fsdp) or a path;
    # None = plain DDP (or one process) with no mixed precision.
    accelerate_config: str | None = None
    num_processes: int | None = bounded(None, 1)  # None: the accelerate config's own (1 without one)


    # Speed switches (same log-probs, see larpo/logprobs.py); the defaults were the fastest measured.
    # shared_prompt/packed need attn_implementation sdpa or eager (a custom 4-D mask).
    forward: Forward = Forward.shared_prompt
    # Tokens per chunk of the lm_head + log-softmax over response positions, recomputed in the
    # backward, so no [N, T, V] logits are kept (peak ~4 x chunk x vocab floats; 512 kept a 128k
    # vocabulary's step at 1/4 of the full logits'); null = the model's own logits at every position.
    # A vocabulary no larger than the hidden size always takes the model's own logits (nothing to save).
    logprob_chunk: int | None = bounded(512, 1)
    # AdamW as one fused kernel over all parameters (torch's fused=True, CPU and CUDA; TRL's
    # default too): the same update, 3.5x faster a step; false = torch's per-parameter loop.
    fused_optimizer: bool = True


@dataclass
class EvalConfig:
    """``eval=task`` (default) sets ``held_out``; benchmarks compose beside it: ``eval=[task,alpacaeval2]``."""

    held_out: bool = False  # the task's held-out metrics (eval_outputs.jsonl, accuracy, Pass@N, win rate)
    n_prompts: int | None = bounded(None, 1)  # held-out prompts for greedy metrics; None = all
    batch_size: int = bounded(256, 1)
    pass_at_max: int = bounded(8, 0)  # Pass@N reported for N = 1, 2, 4, ... up to this; 0 = off
    pass_prompts: int = bounded(200, 0)
    pass_temperature: float = bounded(1.0, **POSITIVE)
    win_rate: bool = True  # round r vs round 0, the reward as judge (ties = 1/2)
    # The same comparison through alpaca_eval's own metric code: raw and length-controlled. It needs the
    # `eval` extra: true refuses to start without it; null = when alpaca_eval is installed (said at start-up).
    alpaca_style: bool | None = None
    # Benchmarks (AlpacaEval 2, MixEval): greedy answers, at most this long (and within the model's positions).
    benchmark_max_new_tokens: int = bounded(2048, 1)
    benchmark_batch_size: int = bounded(16, 1)
    # Shortcut for the `judge=` group: `eval.judge=reward` is `judge=reward` (conf/judge/<name>.yaml).
    judge: str | None = None
    alpacaeval2: Any = None  # conf/eval/alpacaeval2.yaml: a node with _target_ (larpo.evals.alpacaeval.AlpacaEval2)
    alpacaeval_dev: Any = None  # conf/eval/alpacaeval_dev.yaml: the same path on LarPO's development set, offline
    mixeval_hard: Any = None
    mixeval: Any = None


@dataclass
class PathsConfig:
    """Where runs go (larpo/runs.py). Relative paths are taken from the directory ``python run.py`` runs in;
    an absolute one (e.g. in conf/local/default.yaml) anchors every run wherever it is started."""

    runs: str = "runs"  # python run.py ...: <runs>/<name>/<model>-<loss>-s<seed>-<hash>
    multirun: str = "multirun"  # python run.py -m ...: <multirun>/<name>/<model>-<loss>-s<seed>-<hash>


@dataclass
class Config:
    seed: int = bounded(0, 0)
    rounds: int = bounded(3, 0)
    name: str = "default"
    # The run directory; None: named by the run's identity under paths.runs (larpo/runs.py).
    run_dir: str | None = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    stage: Stage = Stage.all
    round: int | None = None  # with stage=<name>: the round to (re-)run
    resume: bool = True
    # Adopt a run directory that holds artifacts but no manifest.json (e.g. a copied round_0):
    # without it such a directory is refused, since nothing says which config made it.
    adopt: bool = False
    reference: Reference = Reference.behavior
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = bounded(None, 1)  # torch CPU threads; None = torch's default
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
    judge: Any = None  # conf/judge: the benchmarks' judge (instantiated only when a benchmark runs)


# Keys that choose *what to do now* rather than *what the run is*: they may differ when a
# run directory is resumed, and they do not name the run directory.
VOLATILE_KEYS = ("stage", "round", "resume", "adopt", "run_dir", "paths", "logger", "device", "threads")
# Nested keys that say how to run, not what the run computes: a resume may change them (e.g. a
# smaller vLLM memory share after an out-of-memory error).
RESOURCE_PREFIXES = ("sampling.vllm.",)
# Keys added after run directories were made, with the value those runs used: a manifest
# without the key resumes as if it had this value.
ADDED_KEYS = {"sampling.backend": "hf"}
# Defaults whose written value changed where the option has no effect: (key, the condition under which it has
# none, the value earlier manifests hold there, the value it means). eval.alpaca_style acts only with
# eval.held_out; eval=task, the group that sets held_out, always wrote null, the schema said false.
INERT_DEFAULTS = (("eval.alpaca_style", ("eval.held_out", False), False, None),)


def rebuild(data: Any, schema: type = Config) -> Any:
    """A config node from plain values a parent process wrote, on its schema: ``Config`` (the accelerate
    worker, from the run's manifest) or a sub-config (a vLLM child's ``sampling.vllm``, ``VLLMConfig``).

    Every child process rebuilds its config this way: values typed as in the parent (enums), a key the
    data lack takes the schema's default (a manifest written before the key existed), an unknown key is
    refused.
    """
    from omegaconf import OmegaConf

    return OmegaConf.merge(OmegaConf.structured(schema), data)


def _walk(schema: Any, node: Any, prefix: str) -> list[str]:
    problems = []
    for f in fields(schema):
        value = node.get(f.name) if hasattr(node, "get") else getattr(node, f.name, None)
        key = f"{prefix}{f.name}"
        if f.default_factory is not dataclasses.MISSING and is_dataclass(f.default_factory):  # a sub-config
            problems += _walk(f.default_factory, value, key + ".")
            continue
        bound = f.metadata.get("bound")
        if bound is not None and value is not None and not bound.ok(value):
            problems.append(f"{key}={value!r} is out of range: allowed {bound}")
    return problems


def apply_judge_shortcut(cfg: Any) -> None:
    """``eval.judge=<name>`` stands for ``judge=<name>``: put conf/judge/<name>.yaml in ``cfg.judge``.

    Hydra picks a group's option only from a ``group=option`` override; this lets the judge be
    named where the benchmarks are configured, as ``eval.judge=reward``.
    """
    from omegaconf import OmegaConf, open_dict

    name = cfg.eval.get("judge")
    if not name:
        return
    folder = CONF_DIR / "judge"
    path = folder / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise ConfigError(f"eval.judge={name!r}: no conf/judge/{name}.yaml; judges: {known}")
    node = OmegaConf.load(path)
    with open_dict(cfg):
        cfg.judge = node


def _non_finite(node: Any, prefix: str = "") -> list[str]:
    """Every float of the config that is NaN or infinite (components' options included: ``loss.beta=inf``)."""
    if isinstance(node, float):
        return [] if math.isfinite(node) else [f"{prefix}={node!r} is not a finite number"]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _non_finite(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _non_finite(v, f"{prefix}[{i}]")]
    return []


def _plain(cfg: Any) -> Any:
    """The config as plain containers, interpolations resolved where they can be (``${hydra:...}``
    resolves only inside a Hydra run)."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception:  # noqa: BLE001  (an unresolvable interpolation: the unresolved values are strings)
        return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)


def validate_options(cfg: Any) -> None:
    """Check every bounded option of ``cfg`` (a composed DictConfig) before any work is done."""
    apply_judge_shortcut(cfg)
    problems = _walk(Config, cfg, "")
    # A bounded option already says so; every other float (a component's) must be finite too.
    flagged = {p.split("=", 1)[0] for p in problems}
    problems += [p for p in _non_finite(_plain(cfg)) if p.split("=", 1)[0] not in flagged]
    if cfg.stage != "all" and cfg.round is None:
        problems.append(f"stage={Stage(cfg.stage).value} needs round=<r>: the round whose stage to re-run")
    train = cfg.train
    if train.launcher == "local" and (train.num_processes is not None or train.accelerate_config is not None):
        problems.append("train.num_processes and train.accelerate_config take effect only with train.launcher=accelerate")
    if not (cfg.device in ("auto", "cpu", "mps") or str(cfg.device).startswith("cuda")):
        problems.append(f"device={cfg.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if problems:
        raise ConfigError("invalid option" + ("s" if len(problems) > 1 else "") + ": " + "; ".join(problems))


def _schema_of(field_type: Any) -> Any:
    """The dataclass of a sub-config field (``train: TrainConfig``), else None (an open node)."""
    return field_type if isinstance(field_type, type) and is_dataclass(field_type) else None


def _field_types(schema: Any) -> dict[str, Any]:
    import typing

    hints = typing.get_type_hints(schema)
    return {f.name: _schema_of(hints.get(f.name)) for f in fields(schema)}


def _unknown_key(key: str) -> str | None:
    """Why ``key`` (a command-line override's key) is no option, with the nearest one; None if it may be one.

    Checked against the schema (larpo/config.py) and the config groups (conf/); a key inside an open
    node (a component's, ``loss.*``) is left to Hydra, which knows the chosen component.
    """
    import difflib

    schema, known_path = Config, ""
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()} | {"hydra", "local"}
    for depth, part in enumerate(key.split(".")):
        types = _field_types(schema)
        known = set(types) | (groups if depth == 0 else set())
        if part not in known:
            near = difflib.get_close_matches(part, sorted(known), n=1, cutoff=0.6)
            where = f"`{known_path[:-1]}` has" if known_path else "the config has"
            hint = f"did you mean `{known_path}{near[0]}`?" if near else "the options are in larpo/config.py and conf/"
            return f"unknown option `{key}`: {where} no key `{part}`; {hint}"
        schema = types.get(part)
        if schema is None:  # an open node, a group or a plain value: nothing more to check here
            return None
        known_path += part + "."
    return None


# Hydra's command-line flags that take a value, and those that choose another config (another schema).
_FLAGS_WITH_VALUE = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir", "--experimental-rerun",
                     "-c", "--cfg", "-p", "--package"}
_OTHER_CONFIG = {"-cn", "--config-name", "-cp", "--config-path", "--experimental-rerun"}


def check_override_keys(args: list[str]) -> str | None:
    """A misspelt option on the command line, as one message with the nearest option (``did you mean
    `loss`?``), before Hydra composes anything; None when every key may be an option.

    Hydra refuses the same override (the schema is closed), but with a ``+key`` hint only.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    names = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    if names & _OTHER_CONFIG:
        return None
    parser, skip = OverridesParser.create(), False
    for arg in args:
        if skip or arg.startswith("-"):
            skip = not skip and arg in _FLAGS_WITH_VALUE
            continue
        try:
            (o,) = parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001  (a syntax error: Hydra's own message says where)
            continue
        key = o.key_or_group
        if o.is_add() or o.is_force_add() or o.is_delete() or o.package is not None or "/" in key:
            continue
        problem = None if key.split(".")[0] == "hydra" else _unknown_key(key)
        if problem:
            return problem
    return None


def _not_writable(path: Path) -> str | None:
    """Why ``path`` (a folder to be, or that is) cannot be written, or None; checks its nearest existing folder."""
    import os

    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if os.access(folder, os.W_OK):
        return None
    read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    return f"{folder} is on a read-only file system" if read_only else f"{folder} is not writable (permissions)"


def check_run_dirs(args: list[str]) -> str | None:
    """A ``run_dir=`` or ``hydra.run.dir=`` on the command line that cannot be written, refused before
    Hydra composes (Hydra's own log file there would fail first, with a logging traceback)."""
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in ("run_dir", "hydra.run.dir") and value and "$" not in value:
            problem = _not_writable(Path(value).expanduser().absolute())
            if problem:
                return f"{key.lstrip('+')}={value}: {problem}; make it writable or choose another folder"
    return None


def _first(*values: Any) -> Any:
    """``${larpo.first:a,b,...}``: the first value that is set (not None), else None."""
    return next((v for v in values if v is not None), None)


def _asset(name: str) -> str:
    """``${larpo.asset:round0}``: the absolute path of a folder shipped in larpo/assets."""
    from pathlib import Path

    return str(Path(__file__).resolve().parent / "assets" / name)


# Folders of conf/ that are not option groups of a run: per-user settings and their example, Hydra's own
# settings, and accelerate's config files (train.accelerate_config).
NOT_GROUPS = frozenset({"local", "local.example", "hydra", "accelerate"})


def config_groups() -> str:
    """``${larpo.config_groups:}`` (run.py --help): each option group of conf/ and its options, one a line."""
    groups = sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in NOT_GROUPS)
    width = max(len(g.name) for g in groups)
    return "\n".join(f"  {g.name.ljust(width)}  {', '.join(sorted(f.stem for f in g.glob('*.yaml')))}" for g in groups)


def _fetched(name: str) -> str:
    """``${larpo.fetched:smollm2}``: the folder ``python -m larpo.fetch NAME`` (make real-model) installs into."""
    from larpo.fetch import REGISTRY, default_dest

    if name not in REGISTRY:
        raise ValueError(f"larpo.fetched: no model {name!r} (known: {', '.join(sorted(REGISTRY))})")
    return str(default_dest(REGISTRY[name]))


def register_configs() -> None:
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="larpo_schema", node=Config)
    if not OmegaConf.has_resolver("larpo.first"):
        # e.g. the policy's tokenizer: ${larpo.first:${model.tokenizer},${model.pretrained}}
        OmegaConf.register_new_resolver("larpo.first", _first)
    if not OmegaConf.has_resolver("larpo.asset"):
        OmegaConf.register_new_resolver("larpo.asset", _asset)
    if not OmegaConf.has_resolver("larpo.config_groups"):
        OmegaConf.register_new_resolver("larpo.config_groups", config_groups)
    if not OmegaConf.has_resolver("larpo.fetched"):
        OmegaConf.register_new_resolver("larpo.fetched", _fetched)


register_configs()

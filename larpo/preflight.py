"""Checks that need the components (tokenizer, model config, task prompts), and the run's plan.

Option ranges are checked earlier, by :func:`larpo.config.validate_options`; what is checked
here would otherwise fail (or, worse, only warn) deep inside a stage after the warm-start.
All of it reads configs and tokenizers only: no weights are loaded.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from larpo.context import RunContext
from larpo.errors import PipelineError
from larpo.model import check_local, load_model_config, load_tokenizer, prompt_ids

logger = logging.getLogger(__name__)

_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}


def used_prompts(ctx: RunContext) -> list[str]:
    """Every prompt the run will generate for: each round's training slice and the eval prompts."""
    cfg = ctx.cfg
    prompts = {ex.prompt for r in range(1, cfg.rounds + 1) for ex in ctx.round_prompts(r)}
    prompts.update(ex.prompt for ex in ctx.task.split("eval")[: cfg.eval.n_prompts])
    return sorted(prompts)


def check_context_length(ctx: RunContext, model_cfg, tok) -> int:
    """The longest rendered prompt plus ``sampling.max_new_tokens`` must fit the model's positions."""
    cfg = ctx.cfg
    prompts = used_prompts(ctx)
    longest = max((len(ids) for ids in prompt_ids(tok, prompts)), default=0)
    limit = getattr(model_cfg, "max_position_embeddings", None)
    if limit and longest + cfg.sampling.max_new_tokens > limit:
        where = "model.arch.max_position_embeddings" if not cfg.model.pretrained else f"{cfg.model.pretrained}"
        raise PipelineError(
            f"the longest prompt ({longest} tokens, rendered) + sampling.max_new_tokens={cfg.sampling.max_new_tokens} "
            f"= {longest + cfg.sampling.max_new_tokens} exceeds the model's max_position_embeddings={limit} "
            f"({where}); lower sampling.max_new_tokens or filter long prompts"
        )
    return longest


def check_dtype(ctx: RunContext) -> None:
    """bf16/fp16 on a CPU without native support runs, but tens of times slower: refuse it."""
    if ctx.device.type != "cpu" or ctx.dtype == torch.float32:
        return
    if ctx.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return
    name = {torch.bfloat16: "bfloat16", torch.float16: "float16"}[ctx.dtype]
    raise PipelineError(f"model.dtype={name} on this CPU, which has no native {name} matrix units "
                        f"({torch.backends.cpu.get_cpu_capability()}): use model.dtype=float32 on CPU")


def count_parameters(model_cfg) -> int:
    """Parameters of a model built from ``model_cfg`` on the meta device (no memory, no weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_cfg)
    return sum(p.numel() for p in model.parameters())


GB = 1e9


def train_memory_per_gpu(n_params: int, world_size: int = 1, zero_stage: int = 0, param_bytes: int = 4,
                         mixed_precision: bool = False) -> dict[str, float]:
    """Bytes per GPU for the policy's weights, gradients and AdamW states (activations excluded).

    With Ψ parameters and N = ``world_size`` data-parallel ranks (ZeRO paper, Rajbhandari et al. 2020):

    - ``mixed_precision`` (DeepSpeed bf16/fp16): weights 2Ψ, gradients 2Ψ, optimizer states 12Ψ
      (fp32 master weights 4Ψ + Adam m 4Ψ + v 4Ψ);
    - otherwise (plain PyTorch AdamW, everything in the parameter dtype of b bytes): bΨ, bΨ, 2bΨ.

    ZeRO shards: stage 0 (DDP) nothing, W + G + O; stage 1 the states, W + G + O/N; stage 2 states
    and gradients, W + (G + O)/N; stage 3 everything, (W + G + O)/N. E.g. 7e9 parameters in bf16
    with fp32 master weights: 112 GB at stage 0, 14 + 98/8 = 26.25 GB at stage 2 on 8 GPUs.
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage {zero_stage} is not one of 0, 1, 2, 3")
    if world_size < 1:
        raise ValueError(f"world size {world_size} < 1")
    w, g, o = (2.0, 2.0, 12.0) if mixed_precision else (param_bytes, param_bytes, 2.0 * param_bytes)
    n = float(world_size)
    w, g, o = w * n_params, g * n_params, o * n_params
    if zero_stage >= 1:
        o /= n
    if zero_stage >= 2:
        g /= n
    if zero_stage >= 3:
        w /= n
    return {"weights": w, "gradients": g, "optimizer": o, "total": w + g + o}


def vllm_share(n_params: int, param_bytes: int, utilization: float, gpu_bytes: float | None,
               tensor_parallel_size: int = 1) -> dict[str, float | None]:
    """What one vLLM engine takes of each of its GPUs: ``utilization`` x the GPU's memory.

    Of that, the weights are Ψ·b / tensor_parallel_size (b: bytes per parameter of vLLM's dtype)
    and the KV cache gets the rest (None when the GPU size is unknown, e.g. planning on a CPU).
    """
    weights = n_params * param_bytes / tensor_parallel_size
    share = utilization * gpu_bytes if gpu_bytes else None
    return {"share": share, "weights": weights, "kv_cache": None if share is None else share - weights}


def memory_lines(ctx: RunContext, n_params: int, platform: str | None = None) -> list[str]:
    """The plan's memory lines: training per GPU under the ZeRO stage, and vLLM's share while generating
    (``platform``: the vLLM build's, from :func:`check_backend`)."""
    from larpo.training.launch import accelerate_plan

    cfg = ctx.cfg
    world, zero = accelerate_plan(cfg.train)  # what the accelerate config file says, not a guess
    mixed = zero > 0 and ctx.dtype != torch.float32  # DeepSpeed keeps fp32 master weights
    m = train_memory_per_gpu(n_params, world, zero, _BYTES[ctx.dtype], mixed)
    how = "bf16/fp16 weights + fp32 master weights and AdamW (16 B/param)" if mixed else \
        f"weights, gradients and AdamW in {cfg.model.dtype} ({4 * _BYTES[ctx.dtype]} B/param)"
    lines = [f"training: world size {world}, ZeRO stage {zero}: ~{m['total'] / GB:.2f} GB per GPU for {how}, "
             f"sharded as W {m['weights'] / GB:.2f} + G {m['gradients'] / GB:.2f} + O {m['optimizer'] / GB:.2f} GB; "
             "activations come on top"]
    if cfg.sampling.backend == "vllm" and platform == "cpu":
        v = cfg.sampling.vllm
        kv = v.cpu_kv_cache_gb * (1 << 30)
        weights = n_params * _BYTES[resolve_vllm_dtype(v.dtype, ctx.dtype)]
        lines.append(f"generate: vLLM's CPU engine in a child process, weights {weights / GB:.2f} GB + KV cache "
                     f"{kv / GB:.1f} GB of host RAM (sampling.vllm.cpu_kv_cache_gb); freed before training")
    elif cfg.sampling.backend == "vllm":
        v = cfg.sampling.vllm
        vb = _BYTES.get(resolve_vllm_dtype(v.dtype, ctx.dtype), 2)
        gpu = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
        share = vllm_share(n_params, vb, v.gpu_memory_utilization, gpu, v.tensor_parallel_size)
        if share["kv_cache"] is not None and share["kv_cache"] <= 0:
            raise PipelineError(
                f"vLLM's share of each GPU (sampling.vllm.gpu_memory_utilization={v.gpu_memory_utilization} x "
                f"{gpu / GB:.1f} GB) does not hold the weights ({share['weights'] / GB:.2f} GB per GPU at "
                f"tensor_parallel_size={v.tensor_parallel_size}): raise one of them")
        of = f"{share['share'] / GB:.1f} GB" if share["share"] else "of each GPU"
        kv = f", KV cache ~{share['kv_cache'] / GB:.1f} GB" if share["kv_cache"] is not None else ""
        lines.append(f"generate: vLLM in a child process, {v.data_parallel_size} engine(s) x "
                     f"{v.tensor_parallel_size} GPU(s), {v.gpu_memory_utilization:.0%} {of} per GPU (weights "
                     f"{share['weights'] / GB:.2f} GB{kv}); freed before training")
    return lines


def resolve_vllm_dtype(name: str, model_dtype: torch.dtype) -> torch.dtype:
    """``sampling.vllm.dtype`` as a torch dtype; ``auto`` is taken as the policy's dtype (for the plan)."""
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "half": torch.float16,
            "float32": torch.float32, "float": torch.float32}.get(str(name), model_dtype)


def check_backend(cfg) -> str | None:
    """``sampling.backend=vllm`` needs a vLLM that runs here: say so at start-up, not at the first generate
    stage. Returns the vLLM build's platform (``cpu``, ``cuda``, ...), or None for ``sampling.backend=hf``."""
    if cfg.sampling.backend != "vllm":
        return None
    from larpo.lora import enabled

    if enabled(cfg.model.get("lora")):
        # LoRA rounds save adapters (no config.json, no full weights); the vLLM child loads a full
        # checkpoint folder and does not yet compose base + adapter (vLLM's LoRARequest would).
        raise PipelineError("sampling.backend=vllm with model.lora.r set is not supported yet: LoRA rounds save "
                            "only adapters and the vLLM engine loads full checkpoints; use sampling.backend=hf "
                            "or train without LoRA")
    from larpo.generation.vllm_backend import vllm_platform, vllm_problem

    problem = vllm_problem()
    if problem:
        raise PipelineError(f"sampling.backend=vllm cannot run here: {problem}")
    return vllm_platform()


def available_ram() -> int | None:
    """Bytes of host RAM available to new work (``MemAvailable``), None where /proc/meminfo is absent."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_vllm_cpu(cfg, model_cfg, n_params: int, model_dtype: torch.dtype) -> None:
    """vLLM's CPU engine: a head size its attention takes, one engine, and a KV cache the host can hold."""
    from larpo.generation.vllm_backend import GiB, cpu_head_sizes, head_dim

    v = cfg.sampling.vllm
    d, allowed = head_dim(model_cfg), cpu_head_sizes()
    where = cfg.model.pretrained or "model.arch"
    if d not in allowed:
        raise PipelineError(f"sampling.backend=vllm: vLLM's CPU attention does not take head_dim={d} ({where}); it "
                            f"takes {', '.join(map(str, allowed))}; use sampling.backend=hf for this model")
    if v.data_parallel_size > 1:
        raise PipelineError(f"sampling.vllm.data_parallel_size={v.data_parallel_size}: vLLM's CPU engine already "
                            "uses the machine's cores; run one engine (data_parallel_size=1) on a CPU")
    need = v.cpu_kv_cache_gb * GiB + n_params * _BYTES[resolve_vllm_dtype(v.dtype, model_dtype)]
    free = available_ram()
    if free is not None and need > free:
        raise PipelineError(f"sampling.vllm.cpu_kv_cache_gb={v.cpu_kv_cache_gb:g} plus the weights need "
                            f"{need / GiB:.1f} GiB of host RAM, but {free / GiB:.1f} GiB are available: lower "
                            "sampling.vllm.cpu_kv_cache_gb (or free memory)")


def plan(ctx: RunContext, n_params: int, longest_prompt: int, platform: str | None = None) -> str:
    """What the run will do and roughly what it needs, in a few lines."""
    cfg, s = ctx.cfg, ctx.plan
    k = ctx.selector.list_size(s.candidates)
    w = _BYTES[ctx.dtype]
    ckpt_gb = n_params * w / 1e9 * (3 if cfg.train.carry_optimizer else 1)
    policy = cfg.model.pretrained or f"built from model.arch ({n_params / 1e6:.2f} M parameters)"
    reward = getattr(ctx.reward, "name", type(ctx.reward).__name__)
    lines = [
        f"policy {policy} ({n_params / 1e9:.3f} B parameters, {cfg.model.dtype}) on {ctx.device}",
        f"reward {reward}; loss {ctx.loss_fn.name}, lists of {k} from {s.candidates} candidates; reference "
        f"{cfg.reference.value if hasattr(cfg.reference, 'value') else cfg.reference}",
        f"{cfg.rounds} round(s) x {s.prompts_per_round} prompts x {s.n_samples} samples "
        f"(<= {s.max_new_tokens} new tokens; longest rendered prompt {longest_prompt} tokens), "
        f"{cfg.train.epochs} epoch(s) a round",
        *memory_lines(ctx, n_params, platform),
        f"disk: ~{ckpt_gb:.2f} GB per round's checkpoint ({cfg.rounds + 1} checkpoints)",
    ]
    return "\n  ".join(["plan:", *lines])


def check_extras(cfg) -> None:
    """A feature whose optional extra is missing is refused at start-up, naming the extra to install. (A
    benchmark judge's model folder is checked with the benchmarks: :func:`check_evaluation`.)"""
    from larpo.evals.alpacaeval import alpaca_eval_problem

    e = cfg.eval
    wants = [what for what, on in (("eval.alpaca_style=true", e.held_out and e.alpaca_style is True),
                                   ("eval=[...,alpacaeval2]", bool(e.get("alpacaeval2"))),
                                   ("eval=[...,alpacaeval_dev]", bool(e.get("alpacaeval_dev")))) if on]
    if wants:
        problem = alpaca_eval_problem()  # the import itself (a few seconds): what is asked for must work
        if problem is not None:
            raise PipelineError(f"{' and '.join(wants)} need(s) alpaca_eval, which cannot be imported here "
                                f"({problem}); install the eval extra: pip install -e '.[eval]'")
    elif e.held_out and e.alpaca_style is None and importlib.util.find_spec("alpaca_eval") is None:
        logger.info("alpaca_eval is not installed (the eval extra): the AlpacaEval-style win rates vs round 0 are "
                    "left out; pip install -e '.[eval]' adds them")


def evaluation_pending(ctx: RunContext) -> bool:
    """Whether this command will run an evaluation (forced, or a round not yet evaluated)."""
    cfg = ctx.cfg
    if cfg.stage != "all":
        return cfg.stage == "evaluate"
    return any(not ctx.rd.is_done(r, "evaluate") or ctx.rd.missing(r, "evaluate") for r in range(cfg.rounds + 1))


def check_evaluation(ctx: RunContext, tokenizer=None) -> None:
    """The benchmarks' judge and data, checked at start-up when an evaluation is to run: an unreachable
    or failing judge, a missing data file, a judge that cannot judge open questions were found only
    after minutes of generation."""
    from hydra.errors import InstantiationException

    from larpo.errors import JudgeError, MissingAPIKeyError
    from larpo.evals.bench import check_benchmarks

    if not evaluation_pending(ctx):
        return
    try:
        checked = check_benchmarks(ctx.cfg.eval, ctx.cfg.judge, ctx.reward, tokenizer)
    except (JudgeError, MissingAPIKeyError):
        raise
    except InstantiationException as e:
        raise PipelineError(f"benchmarks: {e.__cause__ or e}") from None
    except (OSError, ValueError, TypeError) as e:
        raise PipelineError(f"benchmarks: {e}") from None
    if checked:
        logger.info("benchmarks %s: judge and data checked", ", ".join(checked))


def preflight(ctx: RunContext) -> None:
    """Every check that needs the components; logs the plan when all pass."""
    cfg = ctx.cfg
    platform = check_backend(cfg)
    check_dtype(ctx)
    for key in ("pretrained", "tokenizer"):  # named by their option, before a loader names them otherwise
        if cfg.model[key]:
            check_local(cfg.model[key], f"model.{key}")
    tok = load_tokenizer(cfg.model.tokenizer or cfg.model.pretrained, cfg.model.trust_remote_code)
    model_cfg = load_model_config(cfg.model, tok)
    longest = check_context_length(ctx, model_cfg, tok)
    n_params = count_parameters(model_cfg)
    if platform == "cpu":
        check_vllm_cpu(cfg, model_cfg, n_params, ctx.dtype)
    check_evaluation(ctx, tok)
    logger.info(plan(ctx, n_params, longest, platform))

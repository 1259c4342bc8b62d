"""`make gpu-check`: the GPU tests, then vLLM vs HF generate throughput and the train stage's bf16 MFU.

Runs offline on one GPU machine (needs `pip install -e '.[gpu,dev]'` beforehand, no network): it
builds a ~0.5 B-parameter Llama with the embedded tokenizer in --out, runs ``pytest tests/gpu``,
then measures, each in a fresh process so every measurement starts from an empty GPU:

- generation: P prompts x n samples x T new tokens (a random model never emits EOS, so every
  sequence runs to T), tokens/s = P·n·T / wall time of the generate calls (vLLM's engine start-up
  is reported apart: the stage pays it once a round);
- training: ``larpo.training.loop.train_on_lists`` (lambdarank, lists of 4) in bf16, MFU = 6·N·tokens/s /
  peak bf16 FLOP/s (N parameters; attention FLOPs left out: sequences are short).

It prints a markdown table and writes it to <out>/gpu_check.md. ``--cpu-smoke`` runs the same
code at toy size on the CPU without the tests and without vLLM (a quick test calls it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ~0.49 B parameters (24 x (4·1280² + 3·1280·3456) + a tiny embedding); head dim 128.
ARCH_05B = dict(hidden_size=1280, intermediate_size=3456, num_hidden_layers=24, num_attention_heads=10,
                num_key_value_heads=10, max_position_embeddings=2048, tie_word_embeddings=True)
ARCH_TOY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)
# Dense bf16 peak (no sparsity) by device name; --peak-tflops overrides.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/gpu_check", help="folder for the model and the report")
    p.add_argument("--cpu-smoke", action="store_true", help="toy size on CPU: no tests, no vLLM")
    p.add_argument("--skip-tests", action="store_true", help="measure only")
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--train-lists", type=int, default=64)
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one measurement
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.prompts, args.n, args.new_tokens, args.train_lists = min(args.prompts, 4), min(args.n, 2), \
            min(args.new_tokens, 8), min(args.train_lists, 4)
    return args


def build(out: Path, arch: dict) -> tuple[Path, int]:
    """A Llama of ``arch`` with the embedded tokenizer, saved as a checkpoint folder; its parameter count."""
    import torch

    from larpo.checkpoints import save_checkpoint
    from larpo.model import build_model, load_tokenizer

    path = out / "model"
    tok = load_tokenizer(None)
    torch.manual_seed(0)
    model = build_model(dict(arch), tok, torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    save_checkpoint(model, tok, path)
    return path, sum(p.numel() for p in model.parameters())


def prompts(k: int) -> list[str]:
    return [f"{i * 37 % 997}+{i * 91 % 613}=" for i in range(k)]


def measure_hf(path: Path, args) -> dict:
    import torch

    from larpo.checkpoints import load_model
    from larpo.generation.sampling import sample
    from larpo.model import load_tokenizer

    cuda = torch.cuda.is_available()
    tok = load_tokenizer(path)
    model = load_model(path, torch.bfloat16 if cuda else torch.float32, torch.device("cuda" if cuda else "cpu"))
    ps = prompts(args.prompts)
    sample(model, tok, ps[:2], n=1, temperature=1.0, max_new_tokens=4)  # warm-up
    batch = max(1, min(len(ps), 64 if cuda else 4))
    t0 = time.perf_counter()
    tokens = 0
    for i in range(0, len(ps), batch):
        texts, _ = sample(model, tok, ps[i : i + batch], n=args.n, temperature=1.0, max_new_tokens=args.new_tokens,
                          seed=i)
        tokens += sum(len(tok(t, add_special_tokens=False)["input_ids"]) for row in texts for t in row)
    wall = time.perf_counter() - t0
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


def measure_vllm(path: Path, args) -> dict:
    from larpo.generation.vllm_backend import VLLMPolicy
    from larpo.model import load_tokenizer

    tok = load_tokenizer(path)
    t0 = time.perf_counter()
    policy = VLLMPolicy(path, tok, {"dtype": "bfloat16", "gpu_memory_utilization": 0.8}, trust_remote_code=False,
                        model_dtype="float32")
    startup = time.perf_counter() - t0
    ps = prompts(args.prompts)
    policy.sample_texts(ps[:2], n=1, temperature=1.0, max_new_tokens=4)  # warm-up
    t0 = time.perf_counter()
    texts, _ = policy.sample_texts(ps, n=args.n, temperature=1.0, max_new_tokens=args.new_tokens, seed=0)
    wall = time.perf_counter() - t0
    tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for row in texts for t in row)
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall, "startup_s": startup}


def measure_train(path: Path, args) -> dict:
    import random

    import torch
    from omegaconf import OmegaConf

    from larpo.checkpoints import load_model
    from larpo.config import TrainConfig
    from larpo.losses.lambdarank import LambdaRankLoss
    from larpo.model import load_tokenizer
    from larpo.training.loop import train_on_lists

    cuda = torch.cuda.is_available()
    tok = load_tokenizer(path)
    model = load_model(path, torch.bfloat16 if cuda else torch.float32, torch.device("cuda" if cuda else "cpu"))
    rng = random.Random(0)
    resp_len = args.new_tokens

    def resp() -> str:
        return "".join(rng.choice("0123456789+-= ") for _ in range(resp_len))

    rows = [{"prompt_id": f"p{i}", "prompt": p, "responses": [resp() for _ in range(4)], "finished": [True] * 4,
             "rewards": [3.0, 2.0, 1.0, 0.0], "ref_logps": [-50.0] * 4} for i, p in enumerate(prompts(args.train_lists))]
    cfg = OmegaConf.structured(TrainConfig(lr=1e-6, epochs=1, lists_per_step=16 if cuda else 2, max_tokens=16384,
                                warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0))
    stats, _ = train_on_lists(model, tok, rows, LambdaRankLoss(beta=0.1), cfg, 0, lambda m: None)
    if cuda:
        stats["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return stats


def in_child(what: str, path: Path, args) -> dict:
    """One measurement in a fresh process (its GPU memory is gone when it exits)."""
    out = Path(args.out) / f"{what}.json"
    cmd = [sys.executable, __file__, "--child", what, "--out", args.out, "--prompts", str(args.prompts), "--n",
           str(args.n), "--new-tokens", str(args.new_tokens), "--train-lists", str(args.train_lists)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(out.read_text())


def run_tests() -> str:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "tests/gpu"], cwd=REPO, capture_output=True,
                          text=True, timeout=420)
    last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    print(proc.stdout[-4000:], file=sys.stderr)
    return f"{'passed' if proc.returncode == 0 else 'FAILED'}: {last}"


def peak_tflops(args) -> float | None:
    import torch

    if args.peak_tflops:
        return args.peak_tflops
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def table(device: str, n_params: int, tests: str, hf: dict, vllm: dict, train: dict, peak: float | None,
          args) -> str:
    def rate(m: dict) -> str:
        return f"{m['tokens_per_s']:,.0f}" if "tokens_per_s" in m else m.get("error", m.get("skipped", "-"))

    speedup = (f"{vllm['tokens_per_s'] / hf['tokens_per_s']:.1f}x" if "tokens_per_s" in vllm and "tokens_per_s" in hf
               else "-")
    mfu = (f"{6 * n_params * train['tokens_per_s'] / (peak * 1e12):.1%}" if peak and "tokens_per_s" in train else "-")
    lines = [f"GPU check on {device}: Llama {n_params / 1e9:.3f} B parameters, embedded tokenizer", "",
             "| check | result |", "|---|---|", f"| tests/gpu | {tests} |",
             f"| HF generate, {args.prompts} prompts x {args.n} x {args.new_tokens} tokens, tokens/s | {rate(hf)} |",
             f"| vLLM, same requests, tokens/s | {rate(vllm)} |", f"| vLLM / HF | {speedup} |",
             f"| vLLM engine start-up, s | {vllm.get('startup_s', 0):.1f} |" if "startup_s" in vllm else
             "| vLLM engine start-up, s | - |",
             f"| train stage (lambdarank, 4 x {args.new_tokens}-token candidates), tokens/s | {rate(train)} |",
             f"| train MFU (6·N·tokens/s / {peak or '?'} TFLOP/s bf16) | {mfu} |"]
    if "peak_mem_gb" in train:
        lines.append(f"| train peak memory, GB | {train['peak_mem_gb']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        fn = {"hf": measure_hf, "vllm": measure_vllm, "train": measure_train}[args.child]
        (out / f"{args.child}.json").write_text(json.dumps(fn(out / "model", args)))
        return ""
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_smoke:
        raise SystemExit("gpu_check needs a CUDA GPU (use --cpu-smoke to exercise it on a CPU)")
    path, n_params = build(out, ARCH_TOY if args.cpu_smoke else ARCH_05B)
    tests = "skipped (--cpu-smoke)" if args.cpu_smoke else "skipped" if args.skip_tests else run_tests()
    if args.cpu_smoke:  # in this process: no fresh interpreter needed on the CPU
        hf, train = measure_hf(path, args), measure_train(path, args)
        vllm = {"skipped": "skipped (no CUDA)"}
    else:
        hf, vllm, train = in_child("hf", path, args), in_child("vllm", path, args), in_child("train", path, args)
    device = torch.cuda.get_device_name(0) if cuda else "CPU"
    report = table(device, n_params, tests, hf, vllm, train, peak_tflops(args), args)
    (out / "gpu_check.md").write_text(report + "\n")
    print(report)
    return report


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(REPO))
    main()

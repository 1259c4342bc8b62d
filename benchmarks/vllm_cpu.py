"""When does ``sampling.backend=vllm`` pay on a CPU? Engine start-up against tokens per second.

    .venv-vllm/bin/python benchmarks/vllm_cpu.py [--quick] [--prompts 256] [--samples 8] [--tokens 16,64]
        [--vllm-dtypes float32,bfloat16]

(run it in the venv ``make vllm-env`` builds; ``make bench-vllm`` does.) For each policy (the embedded
round-0 checkpoint; the real SmolLM2-135M-Instruct when ``make real-model`` has fetched it) and each
response length, one generate-stage-shaped call — ``--prompts`` prompts x ``--samples`` samples at
temperature 1, seeded — is timed with HF ``generate`` in float32 (the ``hf`` backend, batches of
``sampling.batch_size`` = 64 prompts) and with vLLM's CPU engine in each of ``--vllm-dtypes`` (one
``generate`` call over all requests, as a stage's batches follow each other; bfloat16 is what
``experiment=smollm2_cpu`` generates in, training stays float32). The engine's start-up (process start, model
load, KV cache) is timed apart. Each side runs in its own subprocess, so neither sees the other's
threads or memory.

Break-even = start-up / (1/HF rate - 1/vLLM rate): the new tokens a generate stage must produce
before vLLM's start-up is paid back; a round's generate stage starts one engine.

Writes benchmarks/results/vllm_cpu.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, emit, machine_line, markdown_table, run_worker, write_result  # noqa: E402

MODELS = {"embedded round 0": REPO / "larpo" / "assets" / "round0",
          "SmolLM2-135M-Instruct": REPO / "models" / "smollm2-135m-instruct"}
CHAT = ("Tom has {a} apples and buys {b} more. How many apples does Tom have?", "Write one sentence about {a} cats.",
        "What is {a} times {b}? Explain briefly.", "Name {a} colors and {b} animals.")


def prompts_for(path: Path, n: int) -> list[str]:
    if path.name == "round0":
        from _common import compose
        from hydra.utils import instantiate

        task = instantiate(compose(["run_dir=x"]).task)
        return [ex.prompt for ex in task.split("train")[:n]]
    return [CHAT[i % len(CHAT)].format(a=2 + i % 9, b=3 + (7 * i) % 13) for i in range(n)]


def worker(backend: str, path: Path, n_prompts: int, samples: int, tokens: int, dtype: str = "float32") -> None:
    import torch

    from larpo.checkpoints import load_model
    from larpo.generation.sampling import sample
    from larpo.model import load_tokenizer, response_ids

    tok = load_tokenizer(path)
    prompts = prompts_for(path, n_prompts)
    t0 = time.perf_counter()
    if backend == "hf":
        model = load_model(path, torch.float32, torch.device("cpu"))
        start = time.perf_counter() - t0
        t1 = time.perf_counter()
        texts, fins = [], []
        for i in range(0, len(prompts), 64):
            t, f = sample(model, tok, prompts[i : i + 64], n=samples, temperature=1.0, max_new_tokens=tokens, seed=i)
            texts += t
            fins += f
    else:
        from larpo.generation.vllm_backend import VLLMPolicy

        policy = VLLMPolicy(path, tok, {"enforce_eager": True, "cpu_kv_cache_gb": 2.0, "dtype": dtype},
                            trust_remote_code=False, model_dtype="float32")
        start = time.perf_counter() - t0
        t1 = time.perf_counter()
        texts, fins = sample(policy, tok, prompts, n=samples, temperature=1.0, max_new_tokens=tokens, seed=0)
    gen_s = time.perf_counter() - t1
    n_tokens = sum(len(ids) for t, f in zip(texts, fins) for ids in response_ids(tok, t, f))
    emit({"start_s": start, "gen_s": gen_s, "tokens": n_tokens, "threads": torch.get_num_threads()})
    if backend == "vllm":
        policy.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="16 prompts x 2 samples x 8 tokens (a smoke test)")
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--tokens", default="16,64", help="max new tokens, comma-separated")
    p.add_argument("--vllm-dtypes", default="float32,bfloat16", help="vLLM's dtypes, comma-separated")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--worker", nargs=6, metavar=("BACKEND", "PATH", "PROMPTS", "SAMPLES", "TOKENS", "DTYPE"),
                   help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        backend, path, n, k, t, dtype = a.worker
        worker(backend, Path(path), int(n), int(k), int(t), dtype)
        return
    n, k, lengths = (16, 2, [8]) if a.quick else (a.prompts, a.samples, [int(x) for x in a.tokens.split(",")])
    dtypes = a.vllm_dtypes.split(",")
    rows = []
    for name, path in MODELS.items():
        if not (path / "config.json").exists():
            print(f"{name}: {path} is missing (make real-model); skipped", file=sys.stderr)
            continue
        for t in lengths:
            hf = run_worker(Path(__file__), ["--worker", "hf", str(path), str(n), str(k), str(t), "float32"])
            r_hf = hf["tokens"] / hf["gen_s"]
            for dtype in dtypes:
                vl = run_worker(Path(__file__), ["--worker", "vllm", str(path), str(n), str(k), str(t), dtype])
                r_vl = vl["tokens"] / vl["gen_s"]
                gain = 1 / r_hf - 1 / r_vl
                even = f"{vl['start_s'] / gain:,.0f}" if gain > 0 else "never"
                rows.append([name, f"{n} x {k} x {t}", f"{hf['tokens']:,}", f"{r_hf:,.0f}", dtype, f"{vl['tokens']:,}",
                             f"{r_vl:,.0f}", f"{r_vl / r_hf:.1f}x", f"{vl['start_s']:.0f}",
                             f"{hf['gen_s']:.1f} / {vl['start_s'] + vl['gen_s']:.1f}", even])
    header = ["policy", "prompts x samples x max tokens", "HF tokens", "HF tok/s (fp32)", "vLLM dtype", "vLLM tokens",
              "vLLM tok/s", "vLLM/HF", "vLLM start s", "stage s HF / vLLM (start incl.)", "break-even tokens"]
    text = "\n".join(["# HF generate (float32) vs vLLM's CPU engine (temperature 1)", "", machine_line(), "",
                      markdown_table(header, rows), "",
                      "Break-even: new tokens a generate stage must produce before vLLM's start-up is paid back."])
    print(text)
    write_result("vllm_cpu_quick" if a.quick else "vllm_cpu", text, a.out)


if __name__ == "__main__":
    main()

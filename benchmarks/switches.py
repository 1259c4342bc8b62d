"""The train stage's speed switches against the naive forward, the way the issue's targets read.

    python benchmarks/switches.py [--quick] [--repeats 5]

1. **Shared prompt, K = 8.** One micro-batch's forward + backward of the summed response
   log-probs (``larpo.logprobs.sequence_logps``, as the train stage runs it; no optimizer) for
   ``train.forward`` = ``padded`` (one [prompt, response] row per candidate: the naive forward),
   ``shared_prompt`` (the default) and ``packed``, in the same process, the layouts alternating
   over ``--repeats`` repeats; median [min–max] seconds and the speed-up over ``padded``:
   (a) the 3.4 M-parameter Llama of train_vs_trl.py (d=256, 4 layers), 8 lists of K = 8 with
   64-token prompts and 64-token responses (prompts as long as responses);
   (b) the shipped embedded policy on the embedded task's lengths: 64 train prompts of the
   arithmetic task, each with K = 8 responses taken from other prompts' gold answers (EOS
   included), cut into micro-batches under the default ``train.max_tokens``.
2. **Memory at a 128 k vocabulary.** Peak memory of one training step (forward, backward,
   AdamW step) of a 2-layer Llama (d=256) with Llama 3's vocabulary (128,256), one list of
   K = 8 × 256-token responses to a 32-token prompt, with the model's full logits
   (``train.logprob_chunk=null``, the naive path) and with the chunked head (``512``), each in a
   fresh process: the step's peak = max RSS − RSS before the step on CPU
   (``torch.cuda.max_memory_allocated`` − the allocation before it on GPU).

Writes benchmarks/results/switches.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO,
    compose,
    emit,
    machine_line,
    markdown_table,
    med_range,
    peak_memory_mb,
    run_worker,
    write_result,
)
from train_vs_trl import FULL, QUICK, make_rows  # noqa: E402

SCRIPT = Path(__file__).resolve()
LAYOUTS = ("padded", "shared_prompt", "packed")
VOCAB_ARCH = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=True)
SIZES = {
    "full": dict(repeats=5, p_long=64, r_long=64, lists_long=8, arch=FULL["arch"], prompts=64,
                 vocab=128_256, vocab_arch=VOCAB_ARCH, k_vocab=8, p_vocab=32, r_vocab=256, chunk=512),
    "quick": dict(repeats=2, p_long=8, r_long=8, lists_long=2, arch=QUICK["arch"], prompts=4,
                  vocab=32_000, vocab_arch=dict(VOCAB_ARCH, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                num_attention_heads=2, num_key_value_heads=2),
                  k_vocab=8, p_vocab=16, r_vocab=128, chunk=64),
}


# ----------------------------------------------------------------------------- 1. shared prompt

def embedded_rows(n_prompts: int, k: int, seed: int = 0) -> list[dict]:
    """Train prompts of the embedded task, each with K gold answers of other prompts (realistic lengths)."""
    from hydra.utils import instantiate

    train = instantiate(compose().task).split("train")  # the default run's task (conf/task/arithmetic.yaml)
    rng = random.Random(seed)
    answers = [ex.answer for ex in train]
    return [{"prompt": ex.prompt, "responses": rng.sample(answers, k), "finished": [True] * k}
            for ex in train[:n_prompts]]


def time_layouts(model, tok, rows: list[dict], max_tokens: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of forward + backward over all micro-batches, per layout, alternating the layouts."""

    from larpo.logprobs import encode_lists, pack_by_tokens, sequence_logps

    lists = encode_lists(tok, rows)
    batches = [[lists[i] for i in b] for b in pack_by_tokens(lists, max_tokens)]
    model.train()

    def once(layout: str) -> float:
        t0 = time.perf_counter()
        for b in batches:
            sequence_logps(model, b, tok.pad_token_id, layout).sum().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for layout in LAYOUTS:  # warm-up: first-call allocations
        once(layout)
    times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for rep in range(repeats):
        for layout in (LAYOUTS if rep % 2 == 0 else LAYOUTS[::-1]):
            times[layout].append(once(layout))
    return times


def shared_prompt_table(sizes: dict) -> tuple[str, dict]:
    import torch

    from larpo.checkpoints import load_model
    from larpo.config import TrainConfig
    from larpo.model import build_model, load_tokenizer

    tok = load_tokenizer(None)
    torch.manual_seed(0)
    cases = [
        (f"3.4 M Llama, {sizes['lists_long']} lists, {sizes['p_long']}-token prompts = {sizes['r_long']}-token responses",
         build_model(dict(sizes["arch"]), tok),
         make_rows(sizes["lists_long"], 8, sizes["p_long"], sizes["r_long"], 0)),
        (f"embedded policy, {sizes['prompts']} task prompts, the task's answer lengths",
         load_model(REPO / "larpo" / "assets" / "round0"), embedded_rows(sizes["prompts"], 8)),
    ]
    rows, ratios = [], {}
    for name, model, data in cases:
        times = time_layouts(model, tok, data, TrainConfig.max_tokens, sizes["repeats"])
        base = statistics.median(times["padded"])
        for layout in LAYOUTS:
            speed = base / statistics.median(times[layout])
            ratios[(name, layout)] = speed
            rows.append([name, layout, med_range(times[layout], "{:.3f}"), f"{speed:.2f}x"])
    return markdown_table(["case (K = 8)", "train.forward", "forward + backward (s)", "speed-up vs padded"], rows), ratios


# ----------------------------------------------------------------------------- 2. memory at a big vocabulary

def _status_mb(key: str) -> float:
    """A memory line of /proc/self/status (VmRSS: now, VmHWM: the peak) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {key} in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker_memory(spec: dict) -> dict:
    """One training step at a big vocabulary; the step's peak memory above what was there before it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from larpo.logprobs import EncodedList, sequence_logps

    device = spec["device"]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=spec["vocab"], pad_token_id=0, eos_token_id=1, bos_token_id=None,
                                         **spec["arch"])).to(device)
    rng = random.Random(0)
    lst = EncodedList([rng.randrange(2, spec["vocab"]) for _ in range(spec["p"])],
                      [[rng.randrange(2, spec["vocab"]) for _ in range(spec["r"])] for _ in range(spec["k"])])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        if not _reset_peak_rss():  # without it, the peak could be the model's construction
            raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs); run on Linux")
        before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    loss = -sequence_logps(model, [lst], 0, spec["forward"], spec["chunk"]).sum()
    loss.backward()
    opt.step()
    wall = time.perf_counter() - t0
    peak = peak_memory_mb(device) if device.startswith("cuda") else _status_mb("VmHWM")
    return {"before_mb": before, "peak_mb": peak, "step_mb": peak - before, "wall_s": wall, "loss": float(loss)}


def memory_table(sizes: dict, device: str) -> tuple[str, dict]:
    base = {"vocab": sizes["vocab"], "arch": sizes["vocab_arch"], "k": sizes["k_vocab"], "p": sizes["p_vocab"],
            "r": sizes["r_vocab"], "device": device}
    variants = [("model's full logits (logprob_chunk=null)", "shared_prompt", None),
                (f"chunked head (logprob_chunk={sizes['chunk']})", "shared_prompt", sizes["chunk"]),
                ("full logits, padded forward (the naive path)", "padded", None)]
    rows, out = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, forward, chunk in variants:
            path = Path(tmp) / f"{forward}-{chunk}.json"
            path.write_text(json.dumps({**base, "forward": forward, "chunk": chunk}))
            r = run_worker(SCRIPT, ["--worker", str(path)])["result"]
            out[name] = r
            rows.append([name, forward, f"{r['step_mb']:,.0f}", f"{r['peak_mb']:,.0f}", f"{r['wall_s']:.2f}",
                         f"{r['loss']:.3f}"])
    full = out[variants[0][0]]["step_mb"]
    for row, (name, _, _) in zip(rows, variants):
        row.insert(3, f"{out[name]['step_mb'] / full:.2f}x")
    table = markdown_table(["log-prob path", "train.forward", "step peak above the model (MB)", "vs full logits",
                            "process peak during the step (MB)", "step (s)", "loss"], rows)
    return table, out


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (for the test); numbers mean nothing")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    if args.worker:
        emit({"result": worker_memory(json.loads(Path(args.worker).read_text()))})
        return 0
    sizes = dict(SIZES["quick" if args.quick else "full"])
    if args.repeats:
        sizes["repeats"] = args.repeats
    shared, ratios = shared_prompt_table(sizes)
    memory, mem = memory_table(sizes, args.device)
    s = sizes
    text = (f"# Speed switches vs the naive forward\n\n{machine_line('cpu')}\n\n"
            f"## Shared prompt, K = 8: one pass's forward + backward ({s['repeats']} alternating repeats, median [min–max])\n\n"
            + shared
            + f"\n\n## Peak memory of a training step at a {s['vocab']:,}-token vocabulary\n\n"
            f"2-layer Llama, d={s['vocab_arch']['hidden_size']}; one list of K = {s['k_vocab']} × {s['r_vocab']}-token "
            f"responses to a {s['p_vocab']}-token prompt; forward, backward and an AdamW step; each row in a fresh process "
            f"({'max RSS' if args.device == 'cpu' else 'max_memory_allocated'} minus the memory before the step).\n\n"
            + memory + "\n")
    path = write_result("switches", text, args.out)
    print(text)
    print(f"(written to {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

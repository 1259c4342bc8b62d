"""How close the train stage comes to the machine's fp32 matmul peak.

    python benchmarks/limits.py [--quick] [--set train.KEY=VALUE ...]

1. **Peak**: the best fp32 ``torch.mm`` rate over square matrices of several sizes, at the
   current thread count (``torch.get_num_threads()``); GFLOP/s = 2 n³ / seconds per product.
2. **Train stage**: ``larpo.training.loop.train_on_lists`` (``loss=listwise``, lists of K = 4) on
   synthetic lists, for the shipped embedded round-0 policy (``larpo/assets/round0``) and for
   a ~100 M-parameter Llama built from scratch (random weights, a few optimizer steps).
   Model FLOPs per train token = 6 N + 12 L d S (PaLM, appendix B: 6 N for the weight matmuls
   forward and backward, 12 L d S for the attention scores and values over a sequence of
   S tokens, counted in full, causal mask ignored), N = parameters (a tied LM head counted
   once, an untied input embedding left out: a lookup, not a matmul), L layers, d the hidden
   size; train tokens = prompt + response tokens of every candidate, no padding. The fraction
   = achieved model FLOP/s ÷ the matmul peak (model FLOPs utilisation, MFU). The train stage
   runs ``train.forward=padded`` here unless ``--set forward=...`` says otherwise: the other
   layouts compute each list's prompt once, and 6 N per candidate token would count FLOPs
   they never do.
3. **What the shapes allow**: the same fp32 ``torch.mm`` timed at the model's own weight-matmul
   shapes — for every linear layer ([M, d_in] × [d_in, d_out] forward, and the two products of
   its backward) with M = the tokens of one micro-batch — FLOP-weighted over the layers. A
   training step cannot run its matmuls faster than this, so "of shape rate" is the fraction of
   what these shapes allow on this machine; the gap between it and the square peak is the shapes'.

Writes benchmarks/results/limits.md. The reference pass is not part of it (the select stage's).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import compose, machine_line, markdown_table, override_value, set_overrides, write_result  # noqa: E402
from train_vs_trl import make_rows  # noqa: E402

BIG_ARCH = dict(hidden_size=768, intermediate_size=2560, num_hidden_layers=12, num_attention_heads=12,
                num_key_value_heads=12, max_position_embeddings=512, tie_word_embeddings=True)  # ~99 M
QUICK_BIG = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=128, tie_word_embeddings=True)


def mm_seconds(m: int, k: int, n: int, min_s: float) -> float:
    """Best time of fp32 ``torch.mm`` of [m, k] x [k, n] over repeats for >= ``min_s`` (after a warm-up)."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)  # warm-up (allocations, thread pool)
    best, spent = float("inf"), 0.0
    while spent < min_s:
        t0 = time.perf_counter()
        torch.mm(a, b)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return best


def matmul_peak(sizes: list[int], min_s: float) -> list[tuple[int, float]]:
    """[(n, GFLOP/s)] of fp32 ``torch.mm`` of two n×n matrices, best of repeats for ≥ ``min_s``."""
    return [(n, 2 * n**3 / mm_seconds(n, n, n, min_s) / 1e9) for n in sizes]


def shape_rate(model, m_tokens: int, min_s: float) -> float:
    """GFLOP/s of fp32 ``torch.mm`` at the model's weight-matmul shapes with M = ``m_tokens``.

    Every ``nn.Linear`` (and the tied/untied LM head, applied to M rows) contributes its forward
    [M, i] x [i, o] and backward [M, o] x [o, i] (input grad) and [o, M] x [M, i] (weight grad);
    each distinct shape is timed once (best of repeats for >= ``min_s``) and weighted by how many
    layers have it. Total FLOPs / total time.
    """
    import collections

    import torch

    shapes: collections.Counter = collections.Counter()
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            o, i = mod.weight.shape
            shapes.update([(m_tokens, i, o), (m_tokens, o, i), (o, m_tokens, i)])
    flops = seconds = 0.0
    for (m, k, n), count in shapes.items():
        flops += count * 2 * m * k * n
        seconds += count * mm_seconds(m, k, n, min_s)
    return flops / seconds / 1e9


def flops_per_token(model, seq_len: int) -> tuple[float, int]:
    """6 N + 12 L d S and N (see the module docstring)."""
    c = model.config
    n = sum(p.numel() for p in model.parameters())
    if not c.tie_word_embeddings:
        n -= model.get_input_embeddings().weight.numel()
    return 6 * n + 12 * c.num_hidden_layers * c.hidden_size * seq_len, n


def train_rate(model, tok, rows: list[dict], overrides: list[str], lists_per_step: int) -> dict:
    """Reference log-probs (untimed), then ``train_on_lists`` timed: tokens/s and model GFLOP/s."""
    from hydra.utils import instantiate

    from larpo.logprobs import encode_lists, list_logps
    from larpo.training.loop import train_on_lists

    cfg = compose(["loss=listwise", "train.epochs=1", f"train.lists_per_step={lists_per_step}",
                   "train.warmup_ratio=0", *overrides])
    for row, lp in zip(rows, list_logps(model, tok, rows, cfg.train.logprob_max_tokens)):
        row["ref_logps"] = lp
    enc = encode_lists(tok, rows)
    tokens = sum(len(e.prompt) * len(e.responses) + sum(map(len, e.responses)) for e in enc)
    seq = max(e.max_len for e in enc)
    # tokens of one micro-batch as the padded forward runs it: a step's sequences x (width - 1)
    per_step = min(lists_per_step, len(enc))
    m_tokens = per_step * len(enc[0].responses) * (seq - 1)
    t0 = time.perf_counter()
    summary, _ = train_on_lists(model, tok, rows, instantiate(cfg.loss), cfg.train, 0, lambda m: None)
    wall = time.perf_counter() - t0
    per_token, n = flops_per_token(model, seq)
    return {"params": n, "tokens": tokens, "seq": seq, "m_tokens": m_tokens, "steps": summary["steps"], "wall_s": wall,
            "tokens_per_s": tokens / wall, "gflops": per_token * tokens / wall / 1e9, "flops_per_token": per_token}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (for the test); numbers mean nothing")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import logging

    import torch

    from larpo.checkpoints import load_model
    from larpo.model import build_model, load_tokenizer

    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    overrides = set_overrides(args.set)
    # Every FLOP counted must be computed: the padded forward, unless asked otherwise (shared_prompt
    # and packed compute a list's prompt once, so 6 N per candidate token would count FLOPs not done).
    if override_value(overrides, "train.forward") is None:
        overrides = ["train.forward=padded", *overrides]
    peaks = matmul_peak([64, 128] if args.quick else [256, 512, 1024, 2048], 0.02 if args.quick else 1.0)
    peak = max(g for _, g in peaks)
    tok = load_tokenizer(None)
    round0 = Path(__file__).resolve().parents[1] / "larpo" / "assets" / "round0"
    # (name, model, rows, lists per step): K = 4 candidates of 32 + 32 tokens for the embedded
    # policy (its max_position_embeddings is 128); fewer, longer lists for the big one.
    q = args.quick
    cases = [("embedded round-0 policy (larpo/assets/round0)", lambda: load_model(round0),
              make_rows(8 if q else 128, 4, 16 if q else 32, 16 if q else 32, 0), 4 if q else 16),
             ("Llama ~100 M, random weights" if not q else "Llama (quick stand-in), random weights",
              lambda: build_model(QUICK_BIG if q else BIG_ARCH, tok),
              make_rows(4 if q else 12, 4, 16 if q else 64, 16 if q else 128, 1), 2 if q else 4)]
    rows = []
    for name, make_model, data, lps in cases:
        model = make_model()
        r = train_rate(model, tok, data, overrides, lps)
        allowed = shape_rate(model, r["m_tokens"], 0.02 if q else 0.3)
        rows.append([name, f"{r['params'] / 1e6:.2f}", r["steps"], r["seq"], f"{r['tokens_per_s']:,.0f}",
                     f"{r['flops_per_token'] / 1e6:.1f}", f"{r['gflops']:.1f}", f"{100 * r['gflops'] / peak:.1f} %",
                     f"{r['m_tokens']:,}", f"{allowed:.1f}", f"{100 * r['gflops'] / allowed:.1f} %"])
        del model
    text = (f"# Limits: train stage vs the fp32 matmul peak\n\n{machine_line('cpu')}\n\n"
            "## fp32 matmul (torch.mm, n×n)\n\n"
            + markdown_table(["n", "GFLOP/s"], [[n, f"{g:.1f}"] for n, g in peaks])
            + f"\n\nPeak: **{peak:.1f} GFLOP/s** at {torch.get_num_threads()} thread(s).\n\n"
            "## Train stage (loss=listwise, K = 4), model FLOPs per train token = 6 N + 12 L d S\n\n"
            + markdown_table(["model", "N (M)", "steps", "S (tokens)", "train tokens/s", "MFLOP/token",
                              "model GFLOP/s", "of peak", "M (tokens/micro-batch)", "matmul GFLOP/s at its shapes",
                              "of shape rate"], rows)
            + f"\n\nOverrides: {' '.join(overrides)}. \"matmul GFLOP/s at its shapes\": fp32 torch.mm at the "
            "model's own weight-matmul shapes (forward and both backward products of every linear layer, M rows), "
            "FLOP-weighted; the training step's matmuls cannot run faster than that on this machine.\n")
    path = write_result("limits", text, args.out)
    print(text)
    print(f"(written to {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

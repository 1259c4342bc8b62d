"""Our train stage vs TRL's DPOTrainer on the same model, data, order and hyper-parameters.

    python benchmarks/train_vs_trl.py [--runs 3] [--quick] [--set train.KEY=VALUE ...] [--ks 2,4,8,16]

One markdown table (printed, and written to benchmarks/results/train_vs_trl.md):

1. **Side by side, pairs (K = 2).** A Llama built from scratch (d=256, 4 layers, 3.4 M
   parameters, the embedded character tokenizer), 320 pairs of 32-token prompts (chat template
   included) and 64-token responses (EOS included), beta 0.1, 16 pairs per optimizer step, one
   epoch = 20 steps, AdamW, cosine schedule without warm-up, clipping 1.0, fp32, reference
   log-probs computed first on both sides. TRL 1.16 ``DPOTrainer`` with ``bf16=False,
   gradient_checkpointing=False`` (its CPU defaults turn both on, about 30x slower) and
   ``train_sampling_strategy="sequential"`` over the pairs put in the order our train stage
   visits them (``random.Random(seed).shuffle``), so both see the same batches. Ours:
   ``larpo.training.loop.train_on_lists`` with ``loss=pairwise`` and the reference pass of the select
   stage (``larpo.logprobs.list_logps``). 320 pairs rather than the issue's 256 so that the
   loss after 20 steps falls inside one epoch.
2. **Ours alone, lists of K = 2, 4, 8, 16** with ``pairwise`` and ``listwise`` losses, the
   same number of sequences per step and per run (640/K prompts, 32/K lists per step), so
   tokens/s are comparable across K.

Columns: loss at step 0 (the first batch, before any update: policy == reference, so
log 2 ≈ 0.6931 for DPO; a check that both reference passes agree with the training forward);
loss at step 20 (the 20th batch's loss, after 19 updates); tokens/s end to end = train tokens /
(reference pass + training wall time), train tokens = Σ over sequences of prompt + response
tokens (no padding), counted the same way on both sides; peak memory = the worker process's
max RSS on CPU (imports included; each run in a fresh subprocess), ``torch.cuda.max_memory_allocated``
on GPU. ``--set`` overrides go into the composed config of our side (e.g. ``--set
train.max_tokens=4096``); a bare key is read as ``train.<key>``. Exit status 2 when the
losses of the two sides disagree beyond the tolerances below (the comparison is then void).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO,
    compose,
    emit,
    markdown_table,
    med_range,
    override_value,
    peak_memory_mb,
    run_worker,
    set_overrides,
    write_result,
)

SCRIPT = Path(__file__).resolve()
LOSS_TOL = 1e-5  # step-0 loss: ours vs TRL
LOSS_TOL_20 = 2e-3  # step-20 loss: fp32 sums in another order through 19 Adam updates

FULL = dict(arch=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=True),
            pairs=320, prompt_tokens=32, response_tokens=64, batch=16, lr=1e-4, check_step=20)
QUICK = dict(arch=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True),
             pairs=24, prompt_tokens=8, response_tokens=8, batch=4, lr=1e-3, check_step=6)


# ----------------------------------------------------------------------------- data

def _chars() -> list[str]:
    """The embedded tokenizer's one-character tokens (one character = one token)."""
    vocab = json.loads((REPO / "larpo/assets/tokenizer/tokenizer.json").read_text())["model"]["vocab"]
    return sorted(c for c in vocab if len(c) == 1)


def make_rows(n_prompts: int, k: int, prompt_tokens: int, response_tokens: int, seed: int) -> list[dict]:
    """lists.jsonl-like rows: random prompt text (rendered: ``<|user|>`` + text + ``<|assistant|>``,
    so ``prompt_tokens`` − 2 characters), K responses of ``response_tokens`` − 1 characters
    plus EOS (finished), distinct rewards."""
    rng = random.Random(seed)
    chars = _chars()
    rows = []
    for i in range(n_prompts):
        rewards = list(range(k))
        rng.shuffle(rewards)
        rows.append({"prompt_id": f"p{i}", "prompt": "".join(rng.choices(chars, k=prompt_tokens - 2)),
                     "responses": ["".join(rng.choices(chars, k=response_tokens - 1)) for _ in range(k)],
                     "finished": [True] * k, "rewards": [float(r) for r in rewards]})
    return rows


def train_order(n: int, seed: int) -> list[int]:
    """The order ``larpo.training.loop.train_on_lists`` visits rows in its first epoch."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


# ----------------------------------------------------------------------------- workers

def _model(spec: dict):
    import torch

    from larpo.model import build_model, load_tokenizer

    tok = load_tokenizer(None)
    torch.manual_seed(spec["seed"])  # the same weights in every worker
    model = build_model(dict(spec["arch"]), tok).to(spec["device"])
    return model, tok


def _n_tokens(tok, rows) -> int:
    from larpo.logprobs import encode_lists

    return sum(len(e.prompt) * len(e.responses) + sum(map(len, e.responses)) for e in encode_lists(tok, rows))


def worker_ours(spec: dict) -> dict:
    """Reference pass (as the select stage does it) + ``train_on_lists``, timed together."""
    from hydra.utils import instantiate

    from larpo.logprobs import list_logps
    from larpo.training.loop import forward_options, train_on_lists

    cfg = compose([f"loss={spec['loss']}", f"loss.beta={spec['beta']}", "train.epochs=1", f"train.lr={spec['lr']}",
                   f"train.lists_per_step={spec['lists_per_step']}", "train.warmup_ratio=0", "train.weight_decay=0",
                   "train.max_grad_norm=1.0", *spec["overrides"]])
    loss_fn = instantiate(cfg.loss)
    model, tok = _model(spec)
    rows = spec["rows"]
    losses: list[float] = []
    t0 = time.perf_counter()
    model.eval()  # as select does: the reference pass with the train stage's forward switches
    ref = list_logps(model, tok, rows, cfg.train.logprob_max_tokens, **forward_options(cfg.train))
    for row, lp in zip(rows, ref):
        row["ref_logps"] = lp
    t_ref = time.perf_counter()
    summary, _ = train_on_lists(model, tok, rows, loss_fn, cfg.train, spec["seed"],
                                lambda m: losses.append(m["train/loss"]))
    t1 = time.perf_counter()
    tokens = _n_tokens(tok, rows)
    return {"side": "ours", "losses": losses, "ref_s": t_ref - t0, "train_s": t1 - t_ref, "tokens": tokens,
            "tokens_per_s": tokens / (t1 - t0), "train_tokens_per_s": tokens / (t1 - t_ref),
            "peak_mb": peak_memory_mb(spec["device"]), "steps": summary["steps"],
            "params": sum(p.numel() for p in model.parameters())}


def worker_trl(spec: dict) -> dict:
    """TRL's DPOTrainer on the same pairs, in our training order, with a sequential sampler."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from larpo.logprobs import encode_lists
    from larpo.model import render_prompt

    model, tok = _model(spec)
    rows = [spec["rows"][i] for i in train_order(len(spec["rows"]), spec["seed"])]
    best = [max(range(len(r["rewards"])), key=lambda j: r["rewards"][j]) for r in rows]
    worst = [min(range(len(r["rewards"])), key=lambda j: r["rewards"][j]) for r in rows]
    pairs = [{"prompt": render_prompt(tok, r["prompt"]), "chosen": r["responses"][b], "rejected": r["responses"][w]}
             for r, b, w in zip(rows, best, worst)]
    losses: list[float] = []

    class Recording(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            losses.append(float((out[0] if isinstance(out, tuple) else out).detach()))
            return out

    cpu = spec["device"] == "cpu"
    args = DPOConfig(
        output_dir=spec["tmp"], per_device_train_batch_size=spec["lists_per_step"], num_train_epochs=1,
        learning_rate=spec["lr"], lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        beta=spec["beta"], precompute_ref_log_probs=True, use_cpu=cpu, bf16=False, fp16=False,
        gradient_checkpointing=False, train_sampling_strategy="sequential", report_to=[], logging_steps=1,
        save_strategy="no", disable_tqdm=True, seed=spec["seed"], dataloader_num_workers=0, max_length=None,
    )
    t0 = time.perf_counter()
    trainer = Recording(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tok)
    t_ref = time.perf_counter()  # __init__: tokenization + the reference pass (precompute_ref_log_probs)
    trainer.train()
    t1 = time.perf_counter()
    # The same token ids as ours, or the comparison is void.
    enc = encode_lists(tok, [{**r, "responses": [r["responses"][b], r["responses"][w]], "finished": [True, True]}
                             for r, b, w in zip(rows, best, worst)])
    ds = trainer.train_dataset
    same = all(ds[i]["prompt_ids"] == e.prompt and [ds[i]["chosen_ids"], ds[i]["rejected_ids"]] == e.responses
               for i, e in enumerate(enc))
    if not same:
        raise RuntimeError("TRL tokenized the pairs differently from larpo.logprobs.encode_lists")
    tokens = _n_tokens(tok, [{**r, "responses": [r["responses"][b], r["responses"][w]], "finished": [True, True]}
                             for r, b, w in zip(rows, best, worst)])
    return {"side": "trl", "losses": losses, "ref_s": t_ref - t0, "train_s": t1 - t_ref, "tokens": tokens,
            "tokens_per_s": tokens / (t1 - t0), "train_tokens_per_s": tokens / (t1 - t_ref),
            "peak_mb": peak_memory_mb(spec["device"]), "steps": trainer.state.global_step}


def _worker_main(side: str, spec_path: str) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import logging

    logging.disable(logging.WARNING)  # transformers/TRL notices would bury the RESULT line's neighbours
    import torch
    from _common import machine_line

    spec = json.loads(Path(spec_path).read_text())
    device = spec["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    results = []
    for s in spec["specs"]:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        results.append((worker_ours if side == "ours" else worker_trl)({**s, "device": device}))
    emit({"results": results, "machine": machine_line(device)})


# ----------------------------------------------------------------------------- parent

def _spec(base: dict, sizes: dict, loss: str, k: int, tmp: str) -> dict:
    n_seq = 2 * sizes["pairs"]
    return {**base, "loss": loss, "k": k, "rows": make_rows(n_seq // k, k, sizes["prompt_tokens"],
                                                             sizes["response_tokens"], base["seed"]),
            "lists_per_step": max(1, 2 * sizes["batch"] // k), "tmp": tmp}


MACHINE: list[str] = []  # the first worker's description of the machine


def _call(side: str, specs: list[dict], tmp: str, device: str) -> list[dict]:
    path = Path(tempfile.mkstemp(suffix=".json", dir=tmp)[1])
    path.write_text(json.dumps({"specs": specs, "device": device}))
    out = run_worker(SCRIPT, ["--worker", side, str(path)])
    MACHINE.append(out["machine"])
    return out["results"]


def measure(sizes: dict, runs: int, overrides: list[str], ks: list[int], device: str, seed: int,
            quick: bool) -> tuple[list[dict], list[dict], dict[tuple[int, str], list[dict]]]:
    """Run every worker; in --quick mode one worker per side does all its runs, both sides at the same
    time (faster; timings and peaks mean nothing there)."""
    base = {"arch": sizes["arch"], "seed": seed, "beta": 0.1, "lr": sizes["lr"], "overrides": overrides}
    with tempfile.TemporaryDirectory() as tmp:
        pair = _spec(base, sizes, "pairwise", 2, tmp)
        sweep = [(k, loss) for k in ks for loss in ("pairwise", "listwise")]
        if quick:  # both workers at once: start-up (imports) dominates at these sizes
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:
                f_ours = pool.submit(_call, "ours", [pair] * runs + [_spec(base, sizes, lo, k, tmp) for k, lo in sweep],
                                     tmp, device)
                f_trl = pool.submit(_call, "trl", [pair] * runs, tmp, device)
                ours_all, trl = f_ours.result(), f_trl.result()
            ours, rest = ours_all[:runs], ours_all[runs:]
            per_k = {key: [r] for key, r in zip(sweep, rest)}
        else:
            ours, trl = [], []
            for _ in range(runs):  # alternate the sides so a change of machine load hits both
                ours += _call("ours", [pair], tmp, device)
                trl += _call("trl", [pair], tmp, device)
            per_k = {(k, lo): [r for _ in range(runs) for r in _call("ours", [_spec(base, sizes, lo, k, tmp)], tmp, device)]
                     for k, lo in sweep}
    return ours, trl, per_k


def computed_tokens(forward: str, p: int, r: int, k: int) -> int:
    """Tokens one list of K responses puts through the model (each goes forward and backward once).

    padded: K rows of P + R tokens, the last column not fed (its outputs predict nothing);
    shared_prompt: the prompt once, then K responses without their last token; packed: one row of
    P + K R. TRL's concatenated forward: K rows of P + R.
    """
    return {"padded": k * (p + r - 1), "shared_prompt": p + k * (r - 1), "packed": p + k * r, "trl": k * (p + r)}[forward]


def _our_forward(overrides: list[str]) -> str:
    from larpo.config import TrainConfig

    return override_value(overrides, "train.forward") or TrainConfig.forward.value


def _loss_at(rs: list[dict], step: int) -> float:
    return rs[0]["losses"][step - 1]


def report(sizes: dict, ours: list[dict], trl: list[dict], per_k: dict, args, machine: str) -> tuple[str, bool]:
    """The markdown table and whether the losses agreed."""
    step = min(sizes["check_step"], ours[0]["steps"])
    l0 = (_loss_at(ours, 1), _loss_at(trl, 1))
    ls = (_loss_at(ours, step), _loss_at(trl, step))
    ok = abs(l0[0] - l0[1]) < LOSS_TOL and abs(ls[0] - ls[1]) < LOSS_TOL_20
    ratio = [o["tokens_per_s"] / t["tokens_per_s"] for o, t in zip(ours, trl)]
    rows = []
    for name, rs, l0v, lsv in (("larpo train stage (loss=pairwise)", ours, l0[0], ls[0]),
                               ("TRL 1.16 DPOTrainer", trl, l0[1], ls[1])):
        rows.append([name, f"{l0v:.6f}", f"{lsv:.6f}", med_range([r["tokens_per_s"] for r in rs]),
                     med_range([r["train_tokens_per_s"] for r in rs]),
                     med_range([r["ref_s"] for r in rs], "{:.2f}"), med_range([r["peak_mb"] for r in rs])])
    a = sizes["arch"]
    params = ours[0]["params"]
    head = (f"# Train stage vs TRL\n\n{machine}\n\n"
            f"Llama d={a['hidden_size']}, {a['num_hidden_layers']} layers ({params / 1e6:.2f} M parameters), "
            f"{sizes['pairs']} pairs of {sizes['prompt_tokens']}-token prompts and {sizes['response_tokens']}-token "
            f"responses, beta 0.1, batch {sizes['batch']}, lr {sizes['lr']}, one epoch, fp32, reference log-probs "
            f"first on both sides; {len(ours)} run(s) each: median [min–max]. Overrides: "
            f"{' '.join(args.set) or 'none'}.\n\n")
    table = markdown_table(
        ["system", "loss step 0", f"loss step {step}", "tokens/s end to end", "tokens/s train only",
         "reference pass + prep (s)", "peak memory (MB)"], rows)
    verdict = (f"\n\nOurs / TRL tokens/s end to end: {med_range(ratio, '{:.2f}')}x. Step-0 losses "
               f"{'agree' if abs(l0[0] - l0[1]) < LOSS_TOL else 'DISAGREE'} (|Δ| = {abs(l0[0] - l0[1]):.1e}, "
               f"tolerance {LOSS_TOL:g}); step-{step} losses "
               f"{'agree' if abs(ls[0] - ls[1]) < LOSS_TOL_20 else 'DISAGREE'} (|Δ| = {abs(ls[0] - ls[1]):.1e}, "
               f"tolerance {LOSS_TOL_20:g}: the same batches in the same order; fp32 sums in another order "
               f"through {step - 1} Adam updates).")
    fwd = _our_forward(set_overrides(args.set))
    p_len, r_len = sizes["prompt_tokens"], sizes["response_tokens"]
    ceiling = computed_tokens("trl", p_len, r_len, 2) / computed_tokens(fwd, p_len, r_len, 2)
    verdict += (f" Tokens through the model per pair: TRL {computed_tokens('trl', p_len, r_len, 2)}, ours "
                f"{computed_tokens(fwd, p_len, r_len, 2)} (train.forward={fwd}): at equal speed per token "
                f"(the same HF model and matmuls on both sides) ours can be at most {ceiling:.2f}x TRL here.")
    krows = []
    for (k, lo), rs in per_k.items():
        r0 = rs[0]
        krows.append([k, lo, 2 * sizes["pairs"] // k, max(1, 2 * sizes["batch"] // k),
                      f"{r0['losses'][0]:.4f}", med_range([r["tokens_per_s"] for r in rs]),
                      med_range([r["train_tokens_per_s"] for r in rs]), med_range([r["peak_mb"] for r in rs])])
    ktable = ("\n\n## Ours alone: lists of K candidates\n\nThe same "
              f"{2 * sizes['pairs']} sequences per run and {2 * sizes['batch']} per optimizer step for every K.\n\n"
              + markdown_table(["K", "loss", "prompts", "lists/step", "loss step 0", "tokens/s end to end",
                                "tokens/s train only", "peak memory (MB)"], krows))
    return head + table + verdict + ktable + "\n", ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny sizes (for the test); numbers mean nothing")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override of our side's config, e.g. train.max_tokens=4096 (repeatable)")
    p.add_argument("--ks", default="2,4,8,16", help="list sizes of the ours-alone table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="folder for train_vs_trl.md (default benchmarks/results)")
    p.add_argument("--worker", nargs=2, metavar=("SIDE", "SPEC"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker_main(*args.worker)
        return 0
    sizes = QUICK if args.quick else FULL
    ks = [int(k) for k in args.ks.split(",") if k]
    overrides = set_overrides(args.set)  # a bad key fails in the first worker, which composes the config
    ours, trl, per_k = measure(sizes, args.runs, overrides, ks, args.device, args.seed, args.quick)
    text, ok = report(sizes, ours, trl, per_k, args, MACHINE[0])
    path = write_result("train_vs_trl", text, args.out)
    print(text)
    print(f"(written to {path})")
    if not all(math.isfinite(x) for r in ours + trl for x in r["losses"]):
        return 1
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())

"""Wall time of each stage of one embedded round, and how it grows with prompts and with K.

    python benchmarks/round_profile.py [--quick] [--prompts 64,128,256] [--ks 4,8,16] [ARGS ...]

Drives the ordinary pipeline (``larpo.pipeline.run`` on a config composed as ``python run.py``
would compose it) in a temporary run directory per point, ``rounds=1``, and reads each stage's
wall time from the pipeline's own log record ``round r: <stage> done in X s``. Points: the
``sampling.prompts_per_round`` sweep at the default K = ``sampling.n_samples`` = 8, and the K
sweep at the default 256 prompts. The evaluation is made cheap for every point
(``eval.n_prompts=64 eval.pass_prompts=32``; the default evaluates 1,000 + 200 held-out prompts),
so the ``evaluate`` column is that cheap evaluation, which depends on neither sweep. Extra
``ARGS`` are Hydra overrides for every point (e.g. ``train.epochs=1``).

Writes benchmarks/results/round_profile.md and round_profile.png.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, compose, machine_line, markdown_table, write_result  # noqa: E402

STAGES = ("generate", "score", "select", "train", "evaluate")
CHEAP_EVAL = ["eval.n_prompts=64", "eval.pass_prompts=32"]
QUICK = ["eval.n_prompts=8", "eval.pass_prompts=4", "eval.pass_at_max=2", "sampling.max_new_tokens=8",
         "train.epochs=1", "task.n_train=64", "task.n_eval=16"]


class StageTimes(logging.Handler):
    """Collects the pipeline's ``round %d: %s done in %.1f s`` records as {(round, stage): s}."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: dict[tuple[int, str], float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "round %d: %s done in %.1f s":
            r, stage, seconds = record.args
            self.times[(r, stage)] = float(seconds)


def profile_point(overrides: list[str]) -> dict[str, float]:
    """One run of ``rounds=1`` in a fresh directory; round 1's stage times and the total."""
    from larpo.pipeline import run

    handler = StageTimes()
    log = logging.getLogger("larpo.pipeline")
    log.addHandler(handler)
    old = log.level
    log.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            run(compose([f"run_dir={tmp}/run", "rounds=1", *overrides]))
            total = time.perf_counter() - t0
    finally:
        log.removeHandler(handler)
        log.setLevel(old)
    out = {s: handler.times[(1, s)] for s in STAGES}
    out["round 0 (sft + evaluate)"] = sum(v for (r, _), v in handler.times.items() if r == 0)
    out["wall"] = total
    return out


def plot(points: list[tuple[str, int, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, sweep, label in ((axes[0], "prompts", "sampling.prompts_per_round (K = 8)"),
                             (axes[1], "K", "K = sampling.n_samples")):
        pts = sorted((x, t) for s, x, t in points if s == sweep)
        if not pts:
            ax.set_visible(False)
            continue
        xs = [x for x, _ in pts]
        for stage in STAGES:
            ax.plot(xs, [t[stage] for _, t in pts], marker="o", label=stage)
        ax.plot(xs, [sum(t[s] for s in STAGES) for _, t in pts], marker="s", color="k", ls="--", label="round total")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("wall time (s)")
    axes[0].legend(fontsize=8)
    fig.suptitle("One embedded round: wall time per stage")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (for the test); numbers mean nothing")
    p.add_argument("--prompts", default=None, help="prompts_per_round sweep (default 64,128,256; quick 8,16)")
    p.add_argument("--ks", default=None, help="n_samples sweep (default 4,8,16; quick 4,8)")
    p.add_argument("--out", default=None)
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every point")
    args = p.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(level=logging.WARNING)
    prompts = [int(x) for x in (args.prompts if args.prompts is not None
                                else "8,16" if args.quick else "64,128,256").split(",") if x]
    ks = [int(x) for x in (args.ks if args.ks is not None else "4,8" if args.quick else "4,8,16").split(",") if x]
    base_n, base_k = (16, 8) if args.quick else (256, 8)
    common = (QUICK if args.quick else CHEAP_EVAL) + list(args.overrides)
    plan = [("prompts", n, [f"sampling.prompts_per_round={n}", f"sampling.n_samples={base_k}"]) for n in prompts]
    plan += [("K", k, [f"sampling.prompts_per_round={base_n}", f"sampling.n_samples={k}"]) for k in ks]
    machine = machine_line("cpu")
    # A throw-away point first: the first run in a process pays one-time costs (lazy imports,
    # allocator and thread-pool warm-up) that would land on whichever point came first.
    profile_point([*QUICK, *args.overrides, "sampling.prompts_per_round=4", "sampling.n_samples=4"])
    done: dict[tuple[int, int], dict] = {}  # a point in both sweeps (256 prompts, K = 8) runs once
    points = []
    for sweep, x, ov in plan:
        key = (int(ov[0].split("=")[1]), int(ov[1].split("=")[1]))
        if key not in done:
            done[key] = profile_point([*common, *ov])
        points.append((sweep, x, done[key]))
    rows = [[f"{n} prompts, K={k}", *(f"{t[s]:.1f}" for s in STAGES), f"{sum(t[s] for s in STAGES):.1f}",
             f"{t['round 0 (sft + evaluate)']:.1f}"] for (n, k), t in sorted(done.items())]
    png = Path(args.out) / "round_profile.png" if args.out else RESULTS / "round_profile.png"
    plot(points, png)
    text = (f"# One embedded round, wall time per stage (s)\n\n{machine}\n\n"
            f"Overrides for every point: {' '.join(common)}; rounds=1. The `evaluate` column is this cheap "
            "evaluation; round 0 (not in the total) is the shipped policy's checkpoint copy and its evaluation.\n\n"
            + markdown_table(["point", *STAGES, "round total", "round 0"], rows)
            + f"\n\n![stage times]({png.name})\n")
    path = write_result("round_profile", text, args.out)
    print(text)
    print(f"(written to {path} and {png})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

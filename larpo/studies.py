"""Studies in miniature: a Hydra multirun of the ordinary pipeline, aggregated over seeds.

A study is a yaml, ``experiments/<study>/study.yaml``::

    sweep: [loss=pairwise,listwise, seed=0,1,2]   # the `python run.py -m` overrides
    factor: loss                                  # the manifest key the study varies
    metric: accuracy                              # an eval.json key of the last round
    claim: {better: lambdarank, than: pairwise}   # optional: the verdict's comparison (factor values), or a list
    extra_sweeps:                                 # optional: more multiruns into the same study,
      - [loss=dpo, sampling.n_samples=2, seed=0,1,2]  # for rows a cartesian product cannot express
    series: rounds                                # optional: the plot's second panel, the metric over
                                                  # rounds (default) or `pass@N` (Pass@N against N)

Jobs run in parallel through Hydra's joblib launcher, one torch thread each: ``--jobs N`` (or
``LARPO_JOBS``; default: the machine's cores, at most 4). A config-group factor (``loss``,
``select``) is labelled by the override's choice name (``dpo``), else by its class name.

``python -m larpo.studies run <study>`` launches the sweep (``run.py -m``, so every job is an
ordinary run directory that resumes) and then ``aggregate``: a markdown table of the metric's
mean ± SE over seeds per factor value (``results.md``), a plot (``results.png``) and a one-line
verdict computed from the numbers — the claim's paired difference over seeds with its SE, "holds"
when it is above two SEs, "does not hold" otherwise. ``python -m larpo.studies aggregate <study>``
redraws from the runs already there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

logger = logging.getLogger("larpo.studies")
REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


def load_study(name: str) -> dict:
    import yaml

    path = EXPERIMENTS / name / "study.yaml"
    if not path.exists():
        known = sorted(p.parent.name for p in EXPERIMENTS.glob("*/study.yaml"))
        raise SystemExit(f"no study {name!r} ({path} missing); studies: {', '.join(known)}")
    return yaml.safe_load(path.read_text()) | {"name": name}


def sweep_dir(name: str) -> Path:
    return REPO / "multirun" / f"study_{name}"


def study_jobs(study: dict, jobs: int | None) -> int:
    """The jobs at once: ``--jobs N``, else the study's own ``jobs:`` (a real-model study that needs the
    whole machine per run says 1), else :func:`default_jobs`."""
    return jobs or int(study.get("jobs") or 0) or default_jobs()


def default_jobs() -> int:
    """Parallel jobs of a study: ``LARPO_JOBS``, else the machine's cores (at most 4)."""
    value = os.environ.get("LARPO_JOBS")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise SystemExit(f"LARPO_JOBS must be a positive integer, got {value!r}")
        return int(value)
    return max(1, min(4, os.cpu_count() or 1))


def sweep_commands(study: dict, extra: list[str], jobs: int) -> list[list[str]]:
    """The study's multiruns through run.py itself (each job resumes like any run).

    With ``jobs > 1`` Hydra's joblib launcher runs that many jobs at once, each with one torch
    thread (``threads`` is not part of a run directory's name, so the runs are the same ones).
    """
    parallel = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", "threads=1"] if jobs > 1 else []
    return [[sys.executable, str(REPO / "run.py"), "-m", *sweep, *extra, *parallel,
             f"hydra.sweep.dir={sweep_dir(study['name'])}"]
            for sweep in [study["sweep"], *study.get("extra_sweeps", [])]]


def run_sweep(study: dict, extra: list[str], jobs: int | None = None) -> None:
    for cmd in sweep_commands(study, extra, study_jobs(study, jobs)):
        subprocess.run(cmd, cwd=REPO, check=True)


def _get(config: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config.get(part, {}) if isinstance(config, dict) else {}
    return config if config != {} else None


def label(value: Any, choice: str | None = None) -> str:
    """A factor value as text; a loss/selector node by its choice name, else its class name."""
    if isinstance(value, dict) and "_target_" in value:
        return choice or value["_target_"].rsplit(".", 1)[-1].removesuffix("Loss").lower()
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def override_choice(run_dir: Path, root: Path, factor: str, manifest: dict | None = None) -> str | None:
    """The option chosen for group ``factor`` (``dpo``): from the run's manifest (``command.choices``), or, for a
    directory of the earlier naming, from its name (``loss=dpo,seed=0``)."""
    chosen = ((manifest or {}).get("command") or {}).get("choices") or {}
    if factor in chosen:
        return chosen[factor]
    for part in run_dir.relative_to(root).parts:
        for item in part.split(","):
            key, sep, value = item.partition("=")
            if sep and key.lstrip("+~") == factor:
                return value
    return None


def _series(rounds: list[dict], kind: str, metric: str) -> list[tuple[float, float]]:
    """The curve a study draws per run: ``metric`` over rounds, or Pass@N over N (last round)."""
    if kind == "pass@N":
        ev = rounds[-1]["eval"]
        points = [(int(k.split("@", 1)[1]), float(v)) for k, v in ev.items()
                  if k.startswith("pass@") and k.split("@", 1)[1].isdigit()]
        return sorted(points)
    return [(r["round"], float(r["eval"][metric])) for r in rounds if metric in r.get("eval", {})]


def collect_series(root: Path, factor: str, metric: str, kind: str = "rounds"
                   ) -> dict[str, dict[int, list[tuple[float, float]]]]:
    """{factor value: {seed: [(x, y), ...]}}: each finished run's curve (see :func:`_series`). A run whose
    last evaluated round is before its config's ``rounds`` is left out (with a warning): its last value is
    not the final one the study compares."""
    out: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(dict)
    for manifest in sorted(root.rglob("manifest.json")):
        record = json.loads(manifest.read_text())
        config = record["config"]
        summary_path = manifest.parent / "summary.json"
        if not summary_path.exists():
            continue
        rounds = sorted(json.loads(summary_path.read_text())["rounds"], key=lambda r: r["round"])
        if not rounds or metric not in rounds[-1]["eval"]:
            continue
        planned = config.get("rounds")
        if planned is not None and rounds[-1]["round"] < planned:  # still running, or stopped: not its final value
            logger.warning("%s: left out, evaluated up to round %d of %d (running, or stopped early)",
                           manifest.parent, rounds[-1]["round"], planned)
            continue
        value = label(_get(config, factor), override_choice(manifest.parent, root, factor, record))
        out[value][int(config["seed"])] = [(float(x), y) for x, y in _series(rounds, kind, metric)]
    # one order whatever the run directories are called (results.json re-aggregates byte-identically)
    return {value: dict(sorted(out[value].items())) for value in sorted(out, key=_sort_key)}


def _finals(rounds: dict[str, dict[int, list[tuple[float, float]]]]) -> dict[str, dict[int, float]]:
    """The last round's value of each curve over rounds."""
    return {value: {seed: points[-1][1] for seed, points in seeds.items()} for value, seeds in rounds.items()}


def collect(root: Path, factor: str, metric: str) -> dict[str, dict[int, float]]:
    """{factor value: {seed: the last round's metric}} over the run directories under ``root``."""
    return _finals(collect_series(root, factor, metric))


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")
    return mean, se


def verdict(data: dict[str, dict[int, float]], claim: dict | None, metric: str) -> str:
    """"A > B: holds, +d ± se over n seeds" from the paired per-seed differences, or why not."""
    if not claim:
        return "no claim to test"
    a, b = str(claim["better"]), str(claim["than"])
    seeds = sorted(set(data.get(a, {})) & set(data.get(b, {})))
    if not seeds:
        return f"{a} > {b}: not tested (no seed has both)"
    diffs = [data[a][s] - data[b][s] for s in seeds]
    d, se = mean_se(diffs)
    holds = d > 0 and (len(seeds) > 1 and se > 0 and d > 2 * se)
    se_text = f" ± {se:.3f}" if not math.isnan(se) else ""
    return (f"{a} > {b} on {metric}: {'holds' if holds else 'does not hold'}, {d:+.3f}{se_text} "
            f"(paired over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}; holds = above 2 SE)")


def table(data: dict[str, dict[int, float]], factor: str, metric: str) -> str:
    rows = [f"| {factor} | {metric} (mean ± SE over seeds) | seeds | per seed |", "|---|---|---|---|"]
    for value in sorted(data, key=_sort_key):
        seeds = sorted(data[value])
        m, se = mean_se([data[value][s] for s in seeds])
        per = ", ".join(f"{s}: {data[value][s]:.3f}" for s in seeds)
        rows.append(f"| {value} | {m:.3f}" + (f" ± {se:.3f}" if not math.isnan(se) else "") + f" | {len(seeds)} | {per} |")
    return "\n".join(rows)


def _sort_key(value: str) -> tuple:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def plot(data: dict[str, dict[int, float]], factor: str, metric: str, path: Path | None = None,
         series: dict[str, dict[int, list]] | None = None, series_kind: str = "rounds"):
    """The study's figure: the metric per factor value (mean ± 2 SE over seeds) and, with ``series``,
    each value's mean curve over rounds (or Pass@N over N). Saved to ``path`` if given; returns it."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = sorted(data, key=_sort_key)
    stats = [mean_se([data[v][s] for s in sorted(data[v])]) for v in values]
    fig, axes = plt.subplots(1, 2 if series else 1, figsize=(11 if series else 6, 3.6), squeeze=False)
    ax = axes[0][0]
    ax.errorbar(range(len(values)), [m for m, _ in stats],
                yerr=[0 if math.isnan(se) else 2 * se for _, se in stats], fmt="o-", capsize=4)
    ax.set_xticks(range(len(values)), values, rotation=30 if len(values) > 5 else 0)
    ax.set_xlabel(factor)
    ax.set_ylabel(f"{metric} (±2 SE)")
    if series:
        ax = axes[0][1]
        for value in values:
            curves = [dict(points) for points in series.get(value, {}).values()]
            xs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            ax.plot(xs, [sum(c[x] for c in curves) / len(curves) for x in xs], "o-", label=str(value), ms=3)
        if series_kind == "pass@N":
            ax.set_xscale("log", base=2)
            ax.set_xlabel("N")
            ax.set_ylabel("Pass@N (mean over seeds)")
        else:
            ax.set_xlabel("round")
            ax.set_ylabel(f"{metric} (mean over seeds)")
        ax.legend(title=factor, fontsize=7, ncol=2)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def load_results(name: str, experiments: Path = EXPERIMENTS) -> dict:
    """A study's ``results.json`` (what :func:`aggregate` wrote): data, curves and verdict."""
    path = experiments / name / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"no results for study {name!r} at {path}; run `python -m larpo.studies run {name}`")
    results = json.loads(path.read_text())
    results["final"] = {v: {int(s): x for s, x in seeds.items()} for v, seeds in results["final"].items()}
    results["series"] = {v: {int(s): [tuple(p) for p in pts] for s, pts in seeds.items()}
                         for v, seeds in results["series"].items()}
    return results


def plot_results(results: dict, path: Path | None = None):
    """Draw a study from its ``results.json`` (notebooks/studies.ipynb)."""
    return plot(results["final"], results["factor"], results["metric"], path, results["series"],
                results.get("series_kind", "rounds"))


def study_logger(root: Path):
    """The W&B logger the sweep's jobs used (their ``.hydra/config.yaml``), or None when none did."""
    import yaml

    from larpo.loggers import WandbLogger

    for saved in sorted(root.rglob(".hydra/config.yaml")):
        node = dict((yaml.safe_load(saved.read_text()) or {}).get("logger") or {})
        if str(node.pop("_target_", "")).endswith("WandbLogger"):
            return WandbLogger(**{**node, "group": node.get("group") or root.name})
    return None


def log_study(study: dict, data: dict[str, dict[int, float]], root: Path, out_dir: Path, verdict_line: str) -> None:
    """The study's table and plot into the W&B group of its runs (the sweep directory's name)."""
    from larpo.loggers import logging_run

    run_logger = study_logger(root)
    if run_logger is None:
        return
    rows = [{"factor": value, "seed": seed, study["metric"]: data[value][seed]}
            for value in sorted(data, key=_sort_key) for seed in sorted(data[value])]
    with logging_run(run_logger, {"study": study["name"], "factor": study["factor"], "metric": study["metric"],
                                  "verdict": verdict_line}, root, run_name=f"{study['name']} (study)", group=root.name):
        run_logger.log_table(f"study/{study['name']}", rows)
        run_logger.log_image(f"study/{study['name']}_plot", out_dir / "results.png")
        run_logger.log_summary({"verdict": verdict_line})


def aggregate(study: dict, root: Path | None = None, out_dir: Path | None = None, note: str | None = None) -> str:
    """Write results.md, results.png and results.json (the numbers behind both) for the study;
    returns the markdown."""
    root = root or sweep_dir(study["name"])
    out_dir = out_dir or EXPERIMENTS / study["name"]
    previous = out_dir / "results.json"
    if note is None and previous.exists():  # a redraw keeps the wall time of the sweep that made the runs
        note = json.loads(previous.read_text()).get("note")
    kind = study.get("series", "rounds")
    rounds = collect_series(root, study["factor"], study["metric"])
    data = _finals(rounds)
    series = rounds if kind == "rounds" else collect_series(root, study["factor"], study["metric"], kind)
    if not data:
        raise SystemExit(f"no finished runs with {study['metric']!r} under {root}")
    claims = study.get("claim")
    lines = [verdict(data, c, study["metric"]) for c in (claims if isinstance(claims, list) else [claims])]
    line = "; ".join(lines) if len(lines) > 1 else lines[0]
    sweeps = " + ".join(f"`{' '.join(sweep)}`" for sweep in [study["sweep"], *study.get("extra_sweeps", [])])
    text = (f"# Study: {study['name']}\n\n`python -m larpo.studies run {study['name']}` "
            f"(sweep: {sweeps})\n\n{table(data, study['factor'], study['metric'])}\n\n"
            f"**Verdict:** {line}\n" + (f"\n{note}\n" if note else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(text)
    plot(data, study["factor"], study["metric"], out_dir / "results.png", series, kind)
    results = {"study": study["name"], "factor": study["factor"], "metric": study["metric"], "series_kind": kind,
               "final": data, "series": series, "verdict": line, "note": note}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    log_study(study, data, root, out_dir, line)
    return text


def _jobs_option(extra: list[str]) -> tuple[list[str], int | None]:
    """``--jobs N`` taken out of the extra overrides."""
    jobs = None
    if "--jobs" in extra:
        at = extra.index("--jobs")
        if at + 1 >= len(extra) or not extra[at + 1].isdigit() or int(extra[at + 1]) < 1:
            raise SystemExit("--jobs takes a positive integer")
        jobs = int(extra.pop(at + 1))
        extra.pop(at)
    return extra, jobs


def main(argv: list[str]) -> None:
    """``run|aggregate|real STUDY [overrides]``; ``real`` runs the real-scale commands; ``run-dry`` and
    ``real-dry`` (``make ... DRY=1``) print what ``run`` / ``real`` would launch and launch nothing."""
    if len(argv) < 2 or argv[0] not in ("run", "run-dry", "aggregate", "real", "real-dry"):
        raise SystemExit("usage: python -m larpo.studies run|run-dry|aggregate|real|real-dry STUDY [extra overrides ...]")
    study = load_study(argv[1])
    if argv[0] == "run-dry":
        extra, jobs = _jobs_option(list(argv[2:]))
        for cmd in sweep_commands(study, extra, study_jobs(study, jobs)):
            sys.stdout.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        return
    if argv[0].startswith("real"):
        for command in study.get("real", []):
            sys.stdout.write(command + "\n")
            if argv[0] == "real":
                subprocess.run(command.split(), cwd=REPO, check=True)
        return
    extra, jobs = _jobs_option(list(argv[2:]))
    note = None
    if argv[0] == "run":
        jobs = study_jobs(study, jobs)
        before = len(list(sweep_dir(study["name"]).rglob("summary.json")))
        t0 = time.perf_counter()
        run_sweep(study, extra, jobs)
        note = (f"Wall time of the sweep: {(time.perf_counter() - t0) / 60:.1f} min "
                f"({jobs} parallel job{'s' if jobs > 1 else ''}, {os.cpu_count()} cores"
                + (f"; {before} run(s) with results were already there and resumed" if before else "") + ").")
        if before and (EXPERIMENTS / study["name"] / "results.json").exists():
            note = None  # a resumed sweep's wall time is not the study's: keep the recorded one
    sys.stdout.write(aggregate(study, note=note))


if __name__ == "__main__":
    main(sys.argv[1:])

"""``make table-real RUNS="dir1 dir2 ..."``: run directories in the paper's Table 2/3 layout.

One row per run and round: the model, the method (the objective as the run named it — ``listwise``
or ``lambdarank`` —, list shape and reward, from the run's manifest), the seed, then AlpacaEval 2 LC
and WR (percent), MixEval and MixEval-Hard, each with its judge/parser so a number is never read
without knowing who produced it. Written as markdown (stdout and ``<out>.md``) and CSV (``<out>.csv``).

A RUNS entry is a run directory or a folder holding runs (a sweep's ``multirun/<name>``); a shell glob
over a sweep (``multirun/default/*``) works too: its ``multirun.yaml`` is named and skipped.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path

from larpo.artifacts import RunDir, read_json

logger = logging.getLogger(__name__)

COLUMNS = (  # (header, eval key, format)
    ("LC %", "alpacaeval2/lc_win_rate", ".1f"),
    ("WR %", "alpacaeval2/win_rate", ".1f"),
    ("MixEval", "mixeval/score", ".3f"),
    ("MixEval-Hard", "mixeval_hard/score", ".3f"),
)


def loss_name(manifest: dict, run_dir: Path) -> str:
    """The objective as the run's command named it (``listwise``, ``lambdarank``, ``dpo``); for a manifest that
    predates the record, the name in an earlier-naming directory (``loss=dpo,seed=0``), else the class."""
    from larpo.studies import override_choice

    choice = override_choice(run_dir, run_dir.parent, "loss", manifest)
    if choice:
        return choice
    return manifest["config"].get("loss", {}).get("_target_", "?").rsplit(".", 1)[-1].removesuffix("Loss").lower()


def _method(config: dict, loss: str) -> str:
    reward = config.get("reward", {})
    rm = reward.get("pretrained") or reward.get("_target_", "?").rsplit(".", 1)[-1]
    sel = config.get("select", {})
    shape = f"top{sel['n_top']}+bottom{sel['n_bottom']}" if "n_top" in sel else "all"
    n = config.get("sampling", {}).get("n_samples", "?")
    return f"{loss} ({shape} of {n}; {Path(str(rm)).name})"


def rows_of(run_dir: str | Path) -> list[dict]:
    """One dict per evaluated round of a run directory."""
    rd = RunDir(run_dir)
    manifest = read_json(rd.manifest)
    config = manifest["config"]
    model = config.get("model", {}).get("pretrained") or "embedded"
    method = _method(config, loss_name(manifest, rd.root))
    out = []
    for r in range(int(config.get("rounds", 0)) + 1):
        if not rd.eval(r).exists():
            break
        ev = read_json(rd.eval(r))
        row = {"model": Path(str(model)).name, "method": "start (SFT)" if r == 0 else method,
               "seed": config.get("seed"), "round": r}
        for header, key, _ in COLUMNS:
            row[header] = ev.get(key)
        row["judge"] = ev.get("alpacaeval2/judge") or ""
        row["parser"] = ev.get("mixeval_hard/parser") or ev.get("mixeval/parser") or ""
        out.append(row)
    return out


def render(runs: list[str | Path]) -> tuple[str, str]:
    """(markdown, csv) of every run's rounds."""
    rows = [row for run in runs for row in rows_of(run)]
    heads = ["model", "method", "seed", "round", *(h for h, _, _ in COLUMNS), "judge", "parser"]
    fmt = {h: f for h, _, f in COLUMNS}

    def cell(row: dict, h: str) -> str:
        v = row[h]
        return "–" if v is None else format(v, fmt[h]) if h in fmt else str(v)

    md = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    md += ["| " + " | ".join(cell(row, h) for h in heads) + " |" for row in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=heads)
    writer.writeheader()
    writer.writerows(rows)
    return "\n".join(md) + "\n", buf.getvalue()


def expand(paths: list[str | Path]) -> list[Path]:
    """Run directories from RUNS entries: a run directory itself, or every run under a folder. A file (a
    sweep's ``multirun.yaml`` from a glob) is skipped with a note; a folder without any run is an error."""
    from larpo.runs import find_runs

    runs: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_file():
            logger.warning("skipped %s: a file, not a run directory", entry)
            continue
        if not entry.exists():
            raise SystemExit(f"{entry}: no such run directory")
        found = find_runs(entry)
        if not found:
            raise SystemExit(f"{entry}: no run directory here (no manifest.json in it or below it)")
        runs += [p for p in found if p not in runs]
    if not runs:
        raise SystemExit(f"no run directory among {' '.join(map(str, paths))}")
    return runs


def main(argv: list[str]) -> None:
    """``python -m larpo.tables OUT RUN_DIR...``: OUT.md and OUT.csv, and the markdown on stdout."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m larpo.tables OUT RUN_DIR|SWEEP_DIR [...]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out, runs = Path(argv[0]), expand(argv[1:])
    md, table = render(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".csv").write_text(table)
    sys.stdout.write(md)


if __name__ == "__main__":
    main(sys.argv[1:])

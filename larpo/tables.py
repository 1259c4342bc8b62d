"""``make table-real RUNS="dir1 dir2 ..."``: run directories in the paper's Table 2/3 layout.

One row per run and round: the method (objective, reward, list shape, from the run's manifest),
then AlpacaEval 2 LC and WR (percent), MixEval and MixEval-Hard, each with its judge/parser so a
number is never read without knowing who produced it. Written as markdown (stdout and
``<out>.md``) and CSV (``<out>.csv``).
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from larpo.artifacts import RunDir, read_json

COLUMNS = (  # (header, eval key, format)
    ("LC %", "alpacaeval2/lc_win_rate", ".1f"),
    ("WR %", "alpacaeval2/win_rate", ".1f"),
    ("MixEval", "mixeval/score", ".3f"),
    ("MixEval-Hard", "mixeval_hard/score", ".3f"),
)


def _method(config: dict) -> str:
    loss = config.get("loss", {}).get("_target_", "?").rsplit(".", 1)[-1].removesuffix("Loss").lower()
    reward = config.get("reward", {})
    rm = reward.get("pretrained") or reward.get("_target_", "?").rsplit(".", 1)[-1]
    sel = config.get("select", {})
    shape = f"top{sel['n_top']}+bottom{sel['n_bottom']}" if "n_top" in sel else "all"
    n = config.get("sampling", {}).get("n_samples", "?")
    return f"{loss} ({shape} of {n}; {Path(str(rm)).name})"


def rows_of(run_dir: str | Path) -> list[dict]:
    """One dict per evaluated round of a run directory."""
    rd = RunDir(run_dir)
    config = read_json(rd.manifest)["config"]
    model = config.get("model", {}).get("pretrained") or "embedded"
    out = []
    for r in range(int(config.get("rounds", 0)) + 1):
        if not rd.eval(r).exists():
            break
        ev = read_json(rd.eval(r))
        row = {"model": Path(str(model)).name, "method": "start (SFT)" if r == 0 else _method(config), "round": r}
        for header, key, _ in COLUMNS:
            row[header] = ev.get(key)
        row["judge"] = ev.get("alpacaeval2/judge") or ""
        row["parser"] = ev.get("mixeval_hard/parser") or ev.get("mixeval/parser") or ""
        out.append(row)
    return out


def render(runs: list[str | Path]) -> tuple[str, str]:
    """(markdown, csv) of every run's rounds."""
    rows = [row for run in runs for row in rows_of(run)]
    heads = ["model", "method", "round", *(h for h, _, _ in COLUMNS), "judge", "parser"]
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


def main(argv: list[str]) -> None:
    """``python -m larpo.tables OUT RUN_DIR...``: OUT.md and OUT.csv, and the markdown on stdout."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m larpo.tables OUT RUN_DIR [RUN_DIR ...]")
    out, runs = Path(argv[0]), argv[1:]
    md, table = render(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".csv").write_text(table)
    sys.stdout.write(md)


if __name__ == "__main__":
    main(sys.argv[1:])

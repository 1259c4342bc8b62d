"""End-of-run report: a per-round table and ``summary.png`` from a run's ``summary.json``.

matplotlib is imported inside :func:`plot_summary` so that ``import larpo.report`` stays light.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

MISSING = "–"
_PASS_KEY = re.compile(r"^pass@(\d+)$")


def load_summary(run_dir: str | Path) -> dict:
    """Read ``<run_dir>/summary.json``; errors name the file so the user knows what to fix."""
    path = Path(run_dir) / "summary.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no summary file at {path} (has the run finished a round?)"
        ) from None
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed JSON in {path}: {err}") from err
    if not isinstance(summary, dict) or not isinstance(summary.get("rounds"), list):
        raise TypeError(f"{path} is not an object with a 'rounds' list")
    return summary


def _rounds(summary: dict) -> list[dict]:
    return sorted(summary.get("rounds", []), key=lambda r: r.get("round", 0))


def _pass_ns(summary: dict) -> list[int]:
    """All N with a ``pass@N`` eval key in any round, ascending."""
    ns = {
        int(m.group(1))
        for r in summary.get("rounds", [])
        for k in (r.get("eval") or {})
        if (m := _PASS_KEY.match(k))
    }
    return sorted(ns)


def _num(value: Any, fmt: str) -> str:
    # bools are ints in Python; they are not metrics we can format.
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    ):
        return format(value, fmt)
    return MISSING


def _with_se(section: dict, key: str, fmt: str = ".3f") -> str:
    """``value ± se``, or just the value when no standard error was recorded."""
    value = _num(section.get(key), fmt)
    se = _num(section.get(f"{key}_se"), ".3f")
    return value if value == MISSING or se == MISSING else f"{value} ± {se}"


# Columns shown only when some round has them: (header, eval key, format).
OPTIONAL_COLUMNS = (
    ("AE-style WR vs r0 %", "ae_win_rate", ".1f"),
    ("AE-style LC vs r0 %", "ae_lc_win_rate", ".1f"),
    ("AE2 LC %", "alpacaeval2/lc_win_rate", ".1f"),
    ("AE2 WR %", "alpacaeval2/win_rate", ".1f"),
    ("AE dev WR % (not comparable)", "alpacaeval_dev/win_rate", ".1f"),
    ("MixEval-Hard", "mixeval_hard/score", ".3f"),
    ("MixEval", "mixeval/score", ".3f"),
)


def format_table(summary: dict) -> str:
    """Plain-text, column-aligned per-round table for a terminal."""
    ns = _pass_ns(summary)
    pass_cols = ["pass@1"] + ([f"pass@{ns[-1]}"] if ns and ns[-1] > 1 else [])
    rounds = _rounds(summary)
    extra = [c for c in OPTIONAL_COLUMNS if any((r.get("eval") or {}).get(c[1]) is not None for r in rounds)]
    header = [
        "round",
        "accuracy ± se",
        "gain vs r0 ± se",
        "mean reward",
        "win rate vs r0",
        *pass_cols,
        "finished",
        "length",
        *(c[0] for c in extra),
        "train loss",
        "train wall s",
    ]
    rows = [header]
    for r in rounds:
        ev, tr = r.get("eval") or {}, r.get("train") or {}
        rows.append(
            [
                str(r.get("round", MISSING)),
                _with_se(ev, "accuracy"),
                _with_se(ev, "accuracy_gain", "+.3f"),
                _num(ev.get("mean_reward"), ".3f"),
                _with_se(ev, "win_rate"),
                *(_num(ev.get(c), ".3f") for c in pass_cols),
                _num(ev.get("finished"), ".3f"),
                _num(ev.get("length"), ".1f"),
                *(_num(ev.get(key), fmt) for _, key, fmt in extra),
                _num(tr.get("loss"), ".4f"),
                _num(tr.get("wall_s"), ".1f"),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _series(rounds: list[dict], key: str) -> list[float]:
    """Eval values per round, NaN where missing, so matplotlib leaves a gap."""
    out = []
    for r in rounds:
        v = (r.get("eval") or {}).get(key)
        out.append(
            float(v)
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            else math.nan
        )
    return out


def _draw_accuracy(ax: Any, rounds: list[dict]) -> None:
    xs = [r.get("round", i) for i, r in enumerate(rounds)]
    se = [0.0 if math.isnan(s) else 2 * s for s in _series(rounds, "accuracy_se")]
    ax.errorbar(
        xs,
        _series(rounds, "accuracy"),
        yerr=se,
        marker="o",
        capsize=3,
        label="accuracy (±2 SE)",
    )
    # Rewards (e.g. RM logits) need not share accuracy's 0-1 scale: own y axis.
    ax_r = ax.twinx()
    ax_r.plot(
        xs,
        _series(rounds, "mean_reward"),
        marker="s",
        linestyle="--",
        color="tab:orange",
        label="mean reward",
    )
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax_r.set_ylabel("mean reward")
    ax.set_xticks(xs)
    ax.set_title("(a) accuracy and mean reward per round")
    handles = ax.get_legend_handles_labels()[0] + ax_r.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="best")


def _draw_pass_at_n(ax: Any, rounds: list[dict], ns: list[int]) -> None:
    for r in rounds:
        ev = r.get("eval") or {}
        pts = [
            (n, ev[f"pass@{n}"])
            for n in ns
            if isinstance(ev.get(f"pass@{n}"), (int, float))
        ]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"round {r.get('round', '?')}")
    if ns:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.legend(loc="best")
    else:
        ax.text(
            0.5, 0.5, "no Pass@N data", ha="center", va="center", transform=ax.transAxes
        )
    ax.set_xlabel("N (samples)")
    ax.set_ylabel("Pass@N")
    ax.set_title("(b) Pass@N vs N")


def plot_summary(summary: dict, path: str | Path) -> Path:
    """Draw the two-panel figure to ``path`` (PNG), atomically."""
    # Figure + FigureCanvasAgg directly: no pyplot, so no global backend switch for others.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    rounds = _rounds(summary)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_acc, ax_pass = fig.subplots(1, 2)
    _draw_accuracy(ax_acc, rounds)
    _draw_pass_at_n(ax_pass, rounds, _pass_ns(summary))
    tmp = path.with_name(path.stem + ".tmp.png")
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)  # readers never see a half-written PNG
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_report(run_dir: str | Path) -> str:
    """Load ``summary.json``, write ``summary.png`` beside it, return the table text."""
    summary = load_summary(run_dir)
    plot_summary(summary, Path(run_dir) / "summary.png")
    return format_table(summary)

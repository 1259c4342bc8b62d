"""End-of-run report: table text, missing values, PNG written atomically, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from larpo.report import MISSING, format_table, load_summary, plot_summary, write_report

EVAL_0 = {
    "accuracy": 0.41,
    "accuracy_se": 0.015,
    "mean_reward": 0.62,
    "win_rate": 0.5,
    "win_rate_se": 0.0,
    "pass@1": 0.4,
    "pass@2": 0.5,
    "pass@4": 0.6,
    "pass@8": 0.7,
    "finished": 0.875,
    "length": 23.25,
    "n_eval": 1000,
}
SUMMARY = {
    "rounds": [
        {"round": 0, "eval": EVAL_0, "train": {}},
        {
            "round": 1,
            "eval": {
                **EVAL_0,
                "accuracy": 0.47,
                "win_rate": 0.58,
                "accuracy_gain": 0.06,
                "accuracy_gain_se": 0.011,
                "extra_metric": 3,
            },
            "train": {
                "loss": 0.61,
                "steps": 40,
                "wall_s": 12.3,
                "tokens_per_s": 8000.0,
            },
        },
        {"round": 2, "eval": {"accuracy": 0.5}, "train": {"loss": 0.55}},
    ]
}


def test_table_contents() -> None:
    text = format_table(SUMMARY)
    lines = text.splitlines()
    assert "pass@8" in lines[0] and "accuracy ± se" in lines[0]
    body = lines[2:]
    assert [ln.split()[0] for ln in body] == ["0", "1", "2"]
    assert "0.410 ± 0.015" in body[0] and "0.620" in body[0] and "0.700" in body[0]
    assert "0.470 ± 0.015" in body[1] and "0.580 ± 0.000" in body[1] and "+0.060 ± 0.011" in body[1]
    assert "0.6100" in body[1] and "12.3" in body[1]
    assert "finished" in lines[0] and "length" in lines[0] and "0.875" in body[0] and "23.2" in body[0]
    # Aligned: every line has the same width.
    assert len({len(ln) for ln in lines}) == 1


def test_missing_keys_render_dash() -> None:
    text = format_table(SUMMARY)
    row0, row2 = text.splitlines()[2], text.splitlines()[4]
    assert row0.split()[-2:] == [MISSING, MISSING]  # no train metrics in round 0
    # Round 2 lacks the gain, mean reward, win rate, both pass@ columns, finished, length and wall time.
    assert "0.500" in row2 and row2.count(MISSING) == 8


def test_plot_writes_png_atomically(tmp_path: Path) -> None:
    out = plot_summary(SUMMARY, tmp_path / "summary.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.png"]


def test_plot_without_pass_data(tmp_path: Path) -> None:
    out = plot_summary(
        {"rounds": [{"round": 0, "eval": {}, "train": {}}]}, tmp_path / "s.png"
    )
    assert out.stat().st_size > 0


def test_write_report(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps(SUMMARY))
    text = write_report(tmp_path)
    assert text == format_table(SUMMARY)
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob("*.tmp*"))


def test_missing_summary_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="summary.json"):
        load_summary(tmp_path)


def test_malformed_summary_error(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text("{not json")
    with pytest.raises(ValueError) as err:
        load_summary(tmp_path)
    assert str(path) in str(err.value)

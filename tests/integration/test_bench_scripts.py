"""The benchmark scripts (benchmarks/) run end to end with --quick and print well-formed tables.

Each runs as `make bench` runs it: a subprocess of its own. The numbers at --quick sizes mean
nothing; the structure and the loss checks do.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.markdown import table

REPO = Path(__file__).resolve().parents[2]


def run_script(name: str, out: Path, *args: str, timeout: int = 300) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), "--quick", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    text = (out / name.replace(".py", ".md")).read_text()
    assert text.strip() in proc.stdout  # printed as written
    return text


def test_train_vs_trl_quick(tmp_path):
    text = run_script("train_vs_trl.py", tmp_path, "--runs", "1", "--ks", "2,4")
    head, ours, trl = table(text, "# Train stage vs TRL")
    assert head[:3] == ["system", "loss step 0", "loss step 6"] and "peak memory (MB)" in head
    assert ours[0].startswith("larpo") and trl[0].startswith("TRL")
    # Step 0: policy == reference on both sides, so both losses are log 2 and agree to 1e-5.
    assert abs(float(ours[1]) - float(trl[1])) < 1e-5 and abs(float(ours[1]) - 0.693147) < 1e-5
    assert abs(float(ours[2]) - float(trl[2])) < 2e-3  # the same batches in the same order
    assert float(ours[3].replace(",", "")) > 0 and float(trl[3].replace(",", "")) > 0
    assert re.search(r"Step-0 losses agree .* step-6 losses agree", text)
    # quick sizes: 8-token prompts and responses; TRL 2 x (8 + 8), ours 8 + 2 x 7 (no last token)
    assert re.search(r"per pair: TRL 32, ours 22 \(train.forward=shared_prompt\).* at most 1.45x", text)
    head, *rows = table(text, "## Ours alone")
    assert head[:2] == ["K", "loss"]
    assert [(r[0], r[1]) for r in rows] == [("2", "pairwise"), ("2", "listwise"), ("4", "pairwise"), ("4", "listwise")]
    # lambdarank's sum over pairs: with policy == reference, log 2 per ordered pair (K(K-1)/2 of them).
    assert abs(float(rows[3][4]) - 6 * 0.693147) < 1e-3


@pytest.mark.slow
def test_limits_quick(tmp_path):
    text = run_script("limits.py", tmp_path)
    head, *peaks = table(text, "## fp32 matmul")
    assert head == ["n", "GFLOP/s"] and len(peaks) == 2 and all(float(g) > 0 for _, g in peaks)
    head, *models = table(text, "## Train stage")
    assert head[0] == "model" and head[7] == "of peak" and head[-1] == "of shape rate" and len(models) == 2
    assert models[0][0].startswith("embedded") and float(models[0][1]) == pytest.approx(1.06, abs=0.01)
    assert all(0 < float(m[7].rstrip(" %")) <= 100 for m in models)
    assert "Overrides: train.forward=padded." in text  # every FLOP counted is computed
    for m in models:  # the shape-matched rate: M = one micro-batch's tokens, the fraction = model GFLOP/s over it
        assert int(m[8].replace(",", "")) > 0 and float(m[9]) > 0
        assert float(m[10].rstrip(" %")) == pytest.approx(100 * float(m[6]) / float(m[9]), abs=0.2)


@pytest.mark.slow
def test_round_profile_quick(tmp_path):
    text = run_script("round_profile.py", tmp_path, "--prompts", "8", "--ks", "4")
    head, *rows = table(text, "# One embedded round")
    assert head == ["point", "generate", "score", "select", "train", "evaluate", "round total", "round 0"]
    assert [r[0] for r in rows] == ["8 prompts, K=8", "16 prompts, K=4"]
    for r in rows:
        times = [float(x) for x in r[1:6]]
        assert all(t >= 0 for t in times) and float(r[6]) == pytest.approx(sum(times), abs=0.3)
    assert (tmp_path / "round_profile.png").stat().st_size > 1000


@pytest.mark.slow
def test_switches_quick(tmp_path):
    text = run_script("switches.py", tmp_path)
    head, *rows = table(text, "## Shared prompt, K = 8")
    assert head == ["case (K = 8)", "train.forward", "forward + backward (s)", "speed-up vs padded"]
    assert [r[1] for r in rows] == ["padded", "shared_prompt", "packed"] * 2
    assert rows[0][0].startswith("3.4 M Llama") and rows[3][0].startswith("embedded policy")
    assert rows[0][3] == rows[3][3] == "1.00x" and all(float(r[3].rstrip("x")) > 0 for r in rows)
    head, *mem = table(text, "## Peak memory of a training step")
    assert head[0] == "log-prob path" and head[3] == "vs full logits" and len(mem) == 3
    full, chunked, naive = (float(r[2].replace(",", "")) for r in mem)
    # the same step on the same data: the same loss whichever path computes it
    assert float(mem[0][-1]) == pytest.approx(float(mem[1][-1]), rel=1e-4) == pytest.approx(float(mem[2][-1]), rel=1e-4)
    # a 32k vocabulary with 1,000+ scored tokens: the chunked head keeps far less than the full logits
    assert chunked < full / 2 and chunked < naive / 2 and mem[0][3] == "1.00x"

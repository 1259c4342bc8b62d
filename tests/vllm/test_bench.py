"""benchmarks/vllm_cpu.py (`make bench-vllm`) runs end to end at --quick sizes on vLLM's CPU engine and prints
a well-formed table: one row per policy and vLLM dtype. The numbers at these sizes mean nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.markdown import table

REPO = Path(__file__).resolve().parents[2]


def test_the_vllm_cpu_benchmark_runs_quick(smollm2, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "vllm_cpu.py"), "--quick", "--vllm-dtypes",
                           "float32,bfloat16", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "vllm_cpu_quick.md").read_text()
    header, *rows = table(text, "# HF generate")
    assert header[:5] == ["policy", "prompts x samples x max tokens", "HF tokens", "HF tok/s (fp32)", "vLLM dtype"]
    assert [(r[0], r[4]) for r in rows] == [("embedded round 0", "float32"), ("embedded round 0", "bfloat16"),
                                            ("SmolLM2-135M-Instruct", "float32"), ("SmolLM2-135M-Instruct", "bfloat16")]
    assert all(int(r[2].replace(",", "")) > 0 and int(r[5].replace(",", "")) > 0 for r in rows)

"""Step 5 of the new user's walk (tests/integration/test_walk.py): the offline AlpacaEval path from a fresh
clone — LarPO's own development instruction set judged by judge=smollm2_dev, the hf_local judge on the real
SmolLM2-135M-Instruct (make real-model). Its numbers are labelled as not comparable with published ones."""

from __future__ import annotations

import json

from larpo.artifacts import read_json
from tests.helpers.runs import run_py

RUN = ["experiment=smoke", "rounds=0", "sft.steps=40", "eval.pass_at_max=0", "threads=1"]


def test_the_offline_alpacaeval_path(tmp_path, smollm2):
    first = run_py(tmp_path, *RUN)
    assert first.returncode == 0, first.stderr[-3000:]
    dev = run_py(tmp_path, *RUN, "stage=evaluate", "round=0", "eval=[alpacaeval_dev]", "judge=smollm2_dev",
                 f"judge.pretrained={smollm2}", "eval.benchmark_max_new_tokens=32", timeout=900)
    assert dev.returncode == 0, dev.stderr[-3000:]
    (run_dir,) = [p.parent for p in (tmp_path / "runs").rglob("manifest.json")]
    ev = read_json(run_dir / "round_0" / "eval.json")
    assert ev["alpacaeval_dev/n"] == 16 and 0.0 <= ev["alpacaeval_dev/win_rate"] <= 100.0
    assert ev["alpacaeval_dev/judge"].endswith("(development judge)")
    assert "not comparable" in ev["alpacaeval_dev/note"] and ev["alpacaeval_dev/lc_win_rate"] is None
    outputs = json.loads((run_dir / "round_0" / "alpacaeval_dev" / "model_outputs.json").read_text())
    assert len(outputs) == 16 and {o["dataset"] for o in outputs} == {"larpo_dev"}
    assert "AE dev WR % (not comparable)" in dev.stdout

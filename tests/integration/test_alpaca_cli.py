"""The official alpaca_eval CLI reads the project's round_<r>/alpacaeval2/model_outputs.json and, judged by the
same loopback OpenAI-compatible server, gives the project's numbers (raw and LC win rates, their SEs).

The project's side is a real evaluate stage (`eval=[alpacaeval2] judge=openai_compatible`); the CLI's side
is `alpaca_eval evaluate --model_outputs ... --annotators_config weighted_alpaca_eval_vllm_llama3_70b` in a
child process, its OpenAI client pointed at the server (OPENAI_API_BASE) and its LC files served from a
local hub cache (HF_HUB_OFFLINE). The server's verdict depends only on the two outputs, not on their order.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from larpo.artifacts import RunDir, read_json
from larpo.pipeline import run
from tests.helpers.config import compose_config
from tests.helpers.judges import ChatServer, chat_response

pytest.importorskip("alpaca_eval")
FIX = Path(__file__).resolve().parents[1] / "fixtures" / "evals"
BLOCK = re.compile(r'"model_identifier": "(m|M)",\s*"output": """(.*?)"""\n', re.DOTALL)


def respond(body: dict, n: int):
    """P(m is better): the longer output wins, more surely the more the instruction's letters say so."""
    user = body["messages"][-1]["content"]
    if '"instruction": """' not in user:  # the start-up check of the judge (one small request)
        return 200, {}, chat_response("ok") | {"created": 0, "model": body["model"]}
    out = dict(BLOCK.findall(user))
    instruction = user.split('"instruction": """', 1)[1].split('"""', 1)[0]
    sure = 0.55 + (sum(map(ord, instruction)) % 40) / 100
    p_m = 0.5 if len(out["m"]) == len(out["M"]) else sure if len(out["m"]) > len(out["M"]) else 1 - sure
    reply = chat_response("m", [{"token": "m", "logprob": math.log(p_m)}, {"token": "M", "logprob": math.log(1 - p_m)}])
    return 200, {}, reply | {"created": 0, "model": body["model"]}


def hub_cache(root: Path) -> Path:
    """A huggingface_hub cache holding tatsu-lab/alpaca_eval's two LC files (the test fixtures)."""
    repo, sha = root / "datasets--tatsu-lab--alpaca_eval", "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    (repo / "snapshots" / sha).mkdir(parents=True)
    for name in ("df_gamed.csv", "instruction_difficulty.csv"):
        (repo / "snapshots" / sha / name).write_bytes((FIX / name).read_bytes())
    return root


def test_the_official_cli_reads_model_outputs_json_and_agrees(tmp_path, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with ChatServer(respond, max_requests=21) as server:
        cfg = compose_config([
            "experiment=smoke", "rounds=0", "sft.steps=20", "threads=1", f"run_dir={tmp_path / 'run'}",
            "eval=[alpacaeval2]", "judge=openai_compatible", f"judge.base_url={server.url}", "judge.concurrency=1",
            f"eval.alpacaeval2.reference_path={FIX / 'alpaca_reference.json'}",
            f"eval.alpacaeval2.df_gamed_path={FIX / 'df_gamed.csv'}",
            f"eval.alpacaeval2.instruction_difficulty_path={FIX / 'instruction_difficulty.csv'}",
            "eval.benchmark_max_new_tokens=12"])
        run(cfg)
        rd = RunDir(cfg.run_dir)
        ours = read_json(rd.eval(0))
        outputs = rd.round_dir(0) / "alpacaeval2" / "model_outputs.json"
        rows = json.loads(outputs.read_text())
        assert [r["instruction"] for r in rows] == [r["instruction"] for r in json.loads(
            (FIX / "alpaca_reference.json").read_text())]
        assert {tuple(sorted(r)) for r in rows} == {("dataset", "generator", "instruction", "output")}
        assert {r["generator"] for r in rows} == {"run_round0"} and {r["dataset"] for r in rows} == {"fixture"}
        assert ours["alpacaeval2/annotator"] == "weighted_alpaca_eval_vllm_llama3_70b"  # the judge's own config
        assert ours["alpacaeval2/lc_win_rate"] is not None

        env = {**os.environ, "OPENAI_API_BASE": server.url, "OPENAI_API_KEY": "loopback",
               "OPENAI_CLIENT_CONFIG_PATH": str(tmp_path / "no-client-config.yaml"), "HF_HUB_OFFLINE": "1",
               "HF_HUB_CACHE": str(hub_cache(tmp_path / "hub"))}
        cmd = [sys.executable, "-m", "alpaca_eval.main", "evaluate", "--model_outputs", str(outputs),
               "--reference_outputs", str(FIX / "alpaca_reference.json"),
               "--annotators_config", "weighted_alpaca_eval_vllm_llama3_70b", "--output_path", str(tmp_path / "cli"),
               "--caching_path", "None", "--precomputed_leaderboard", "None", "--is_cache_leaderboard", "False",
               "--metric_kwargs", "{'save_weights_dir': None}"]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(server.requests) == 21  # the judge's start-up check, then 10 judgments each side
    (row,) = csv.DictReader((tmp_path / "cli" / "weighted_alpaca_eval_vllm_llama3_70b" / "leaderboard.csv").open())
    assert row[""] == "run_round0"
    for cli_key, key in [("win_rate", "win_rate"), ("standard_error", "win_rate_se"),
                         ("length_controlled_winrate", "lc_win_rate"), ("lc_standard_error", "lc_win_rate_se")]:
        assert float(row[cli_key]) == pytest.approx(ours[f"alpacaeval2/{key}"], abs=1e-6), cli_key
    assert (int(float(row["n_wins"])), int(float(row["n_draws"])), int(float(row["avg_length"]))) == (
        ours["alpacaeval2/n_wins"], ours["alpacaeval2/n_draws"], ours["alpacaeval2/avg_length"])

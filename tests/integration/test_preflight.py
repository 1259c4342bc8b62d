"""Start-up refusals of the real-model path (issue: real models), on stand-ins built here.

Each refusal comes before the run directory is created; none needs a network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from larpo.pipeline import run
from tests.helpers.config import compose_config
from tests.helpers.tiny import tiny_policy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["experiment=smoke", "sft.steps=0", "rounds=1", "eval.pass_at_max=0", "threads=1"]


@pytest.fixture
def saved_policy(tmp_path):
    """A tiny causal LM and its chat tokenizer saved as a hub-style folder."""
    model, tok = tiny_policy()
    path = tmp_path / "policy"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_a_local_pretrained_policy_runs_the_whole_loop(saved_policy, tmp_path):
    summary = run(compose_config([*FAST, f"model.pretrained={saved_policy}", f"run_dir={tmp_path / 'run'}"]))
    assert [r["round"] for r in summary["rounds"]] == [0, 1]


def test_a_model_without_chat_template_is_refused(saved_policy, tmp_path):
    for name in ("chat_template.jinja",):
        (saved_policy / name).unlink(missing_ok=True)
    cfg_path = saved_policy / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f"tokenizer at '{saved_policy}' has no chat_template; prompts are rendered"):
        run(compose_config([*FAST, f"model.pretrained={saved_policy}", f"run_dir={tmp_path / 'run'}"]))
    assert not (tmp_path / "run").exists()


def test_custom_code_needs_trust_remote_code(saved_policy, tmp_path):
    config = json.loads((saved_policy / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig",
                          "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (saved_policy / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match=rf"{saved_policy} needs its own code from the hub repo \(auto_map\); set "
                                        r"model.trust_remote_code=true if you trust it"):
        run(compose_config([*FAST, f"model.pretrained={saved_policy}", f"run_dir={tmp_path / 'run'}"]))
    assert not (tmp_path / "run").exists()


def test_hub_id_without_network_or_cache(tmp_path):
    code = ("from omegaconf import OmegaConf; from larpo.model import load_model_config; "
            "load_model_config(OmegaConf.create({'pretrained': 'larpo-test/no-such-model', 'arch': {}, "
            "'trust_remote_code': False}), None)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert ("could not load the model config of 'larpo-test/no-such-model' from the Hugging Face hub (no network, "
            "and not in the local cache?): download it where there is a network (`hf download "
            "larpo-test/no-such-model --local-dir DIR`) and set model.pretrained=DIR") in proc.stderr


@pytest.mark.skipif(torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has native bf16")
def test_bf16_on_a_cpu_without_it_is_refused(tmp_path):
    with pytest.raises(Exception, match="model.dtype=bfloat16 on this CPU, which has no native bfloat16 matrix "
                                        "units .*: use model.dtype=float32 on CPU"):
        run(compose_config([*FAST, "model.dtype=bfloat16", "device=cpu", f"run_dir={tmp_path / 'run'}"]))
    assert not (tmp_path / "run").exists()


def test_the_plan_is_logged_before_work(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="larpo"):
        run(compose_config([*FAST, "rounds=0", f"run_dir={tmp_path / 'run'}"]))
    plan = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("plan:"))
    assert "0 round(s) x 16 prompts x 6 samples" in plan and "lists of 4 from 6 candidates" in plan
    assert "GB per round's checkpoint" in plan

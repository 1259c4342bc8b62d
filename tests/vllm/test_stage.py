"""The pipeline's generate stage on vLLM's CPU engine: kills, resumes, orphans, start-up refusals,
and a whole round of the real SmolLM2 on a GSM8K-format task.

Runs go through ``run.py`` in a child process (as a user runs them), so the test can kill the
pipeline or its engine and look at what is left: files, and processes by session id in /proc.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from larpo.artifacts import RunDir, read_json, read_jsonl
from tests.helpers.tiny import no_system_tokenizer
from tests.vllm.conftest import ROOT, children_running, kill_all, session_processes

# 128 prompts in 32 batches of 4: the engine needs several seconds for them, so a kill after the first
# journaled batch lands mid-stage. float32 and a 1 GiB KV cache, as tests/vllm/conftest.ENGINE.
VLLM = ["rounds=1", "sampling.backend=vllm", "sampling.vllm.enforce_eager=true", "sampling.vllm.cpu_kv_cache_gb=1",
        "sampling.prompts_per_round=128", "sampling.batch_size=4", "eval.n_prompts=32", "eval.pass_at_max=0",
        "eval.alpaca_style=false", "threads=1"]
N_BATCHES = 32
EVAL_FIXTURES = ROOT / "tests" / "fixtures" / "evals"
WAIT = 300  # s: the most a step may take on a busy 2-core machine (engine start-up ~30 s when quiet)


def start(run_dir: Path, *extra: str, hydra_dir: Path | None = None) -> subprocess.Popen:
    """``run.py`` with the run in ``run_dir`` (and Hydra's own folder there too, unless ``hydra_dir``)."""
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *VLLM, f"run_dir={run_dir}",
                             f"hydra.run.dir={hydra_dir or run_dir}", *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=15 * 60)
    return proc.returncode, out


def shard(run_dir: Path) -> Path:
    return run_dir / "round_1" / "generations.rank0.jsonl.partial"


def batches_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``condition`` (a file the engine writes, a process that goes away) until it holds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def engine_child(run_dir: Path) -> int:
    """The pid of the run's vLLM child (its command line names the job file in the run directory)."""
    found: list[int] = []
    wait_for(lambda: found.extend(p for p in children_running(f"{run_dir}/round_1/generations.rank0.job.json")
                                  if b"larpo.generation.vllm_backend" in Path(f"/proc/{p}/cmdline").read_bytes())
             or found, "the vLLM child to start")
    return found[0]


def test_kills_of_the_pipeline_and_of_its_engine_resume_to_identical_generations(tmp_path):
    """Reference run; a run whose pipeline is SIGKILLed mid-generate; its resume whose engine is
    SIGKILLed mid-generate; a last resume. Each kill leaves no process of the engine's session
    behind, the second a clear error; the last resume's generations equal the reference's byte for byte."""
    ref = tmp_path / "ref"
    rc, out = finish(start(ref))
    assert rc == 0, out[-3000:]
    assert (ref / "round_1" / "generations.rank0.log").exists()
    assert not list((ref / "round_1").glob("*.job.json")), "a finished engine's job file is left behind"

    run = tmp_path / "run"
    proc = start(run)  # 1. the pipeline dies (SIGKILL: no clean-up of its own can run)
    child = engine_child(run)
    wait_for(lambda: batches_in(shard(run)) >= 1, "the first journaled batch", proc)
    proc.kill()
    proc.communicate()
    wait_for(lambda: not session_processes(child), "the engine's processes to go after the pipeline died")
    assert 1 <= batches_in(shard(run)) < N_BATCHES, "the kill did not land inside the generate stage"
    assert not RunDir(run).is_done(1, "generate")

    proc = start(run)  # 2. the resume's engine dies
    child = engine_child(run)
    before = batches_in(shard(run))
    wait_for(lambda: batches_in(shard(run)) > before, "a batch journaled by the resumed engine", proc)
    kill_all([child])
    rc, out = finish(proc)
    assert rc != 0
    assert "vLLM generation failed: engine 0 exited with -9" in out, out[-3000:]
    assert "the same command resumes" in out
    wait_for(lambda: not session_processes(child), "the engine's processes to go after the engine died")
    assert not RunDir(run).is_done(1, "generate")

    rc, out = finish(start(run))  # 3. the last resume completes the run
    assert rc == 0, out[-3000:]
    assert (run / "round_1" / "generations.jsonl").read_bytes() == (ref / "round_1" / "generations.jsonl").read_bytes()
    assert len(read_jsonl(run / "round_1" / "generations.jsonl")) == 128
    assert read_json(run / "round_1" / "eval.json") == read_json(ref / "round_1" / "eval.json")


def test_the_evaluate_stage_on_vllm_gives_hf_s_greedy_answers(tmp_path):
    """Round 0 evaluated by a vLLM child (float32) and by HF: the same greedy answers, hence the same accuracy;
    MixEval-Hard's answers too (they come after its system message, which the child once refused)."""
    mixeval = ["eval=[task,mixeval_hard]", "judge=reward", f"eval.mixeval_hard.source={EVAL_FIXTURES / 'mixeval-hard'}",
               "eval.benchmark_max_new_tokens=8"]
    runs = {}
    for backend in ("vllm", "hf"):
        run_dir = tmp_path / backend
        rc, out = finish(start(run_dir, "rounds=0", f"sampling.backend={backend}", "eval.n_prompts=128",
                               "eval.pass_at_max=2", "eval.pass_prompts=16", *mixeval))
        assert rc == 0, out[-3000:]
        runs[backend] = run_dir
    assert (runs["vllm"] / "round_0" / "eval_vllm.log").exists()  # the answers really came from vLLM
    assert not (runs["hf"] / "round_0" / "eval_vllm.log").exists()
    vl, hf = (read_jsonl(runs[b] / "round_0" / "eval_outputs.jsonl") for b in ("vllm", "hf"))
    assert len(vl) == 128 and vl == hf
    ev, eh = (read_json(runs[b] / "round_0" / "eval.json") for b in ("vllm", "hf"))
    assert ev["accuracy"] == eh["accuracy"] and ev["length"] == eh["length"] and ev["finished"] == eh["finished"]
    assert {"pass@1", "pass@2"} <= set(ev)
    vm, hm = (read_jsonl(runs[b] / "round_0" / "eval_mixeval_hard.jsonl") for b in ("vllm", "hf"))
    assert len(vm) == 20 and [r["answer"] for r in vm] == [r["answer"] for r in hm]
    assert ev["mixeval_hard/score"] == eh["mixeval_hard/score"]


def test_a_system_message_the_template_refuses_is_refused_at_start_up(tmp_path):
    """MixEval's system message and a policy whose template refuses one: refused before any work, naming the
    option to set, on either backend (it was a traceback after round 0's held-out evaluation)."""
    mixeval = ["eval=[task,mixeval_hard]", "judge=reward", f"eval.mixeval_hard.source={EVAL_FIXTURES / 'mixeval-hard'}",
               f"model.tokenizer={no_system_tokenizer(tmp_path / 'no-system')}"]
    for backend in ("vllm", "hf"):
        rc, out = finish(start(tmp_path / backend, "rounds=0", f"sampling.backend={backend}", *mixeval,
                               hydra_dir=tmp_path / f"hydra-{backend}"))
        assert rc != 0 and "Traceback" not in out, out[-3000:]
        assert ("eval.mixeval_hard: the model's chat template refuses a system message (System role not supported); "
                "set eval.mixeval_hard.system_message=null") in out, out[-3000:]
        assert not (tmp_path / backend).exists()


def test_the_evaluation_child_refuses_such_a_request_and_goes_on(tmp_path):
    """Past start-up (a checkpoint whose template differs from the policy's), the vLLM evaluation child answers
    the refused request with the reason, raised in the parent as SystemMessageError (MixEval names the option
    then), and answers the next request."""
    import shutil

    from larpo.errors import SystemMessageError
    from larpo.generation.sampling import sample
    from larpo.generation.vllm_server import served_policy
    from tests.helpers.config import compose_config
    from tests.vllm.conftest import ENGINE, ROUND0

    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(ROUND0, checkpoint)
    no_system_tokenizer(checkpoint)
    options = compose_config(["run_dir=x", *(f"sampling.vllm.{k}={v}" for k, v in ENGINE.items())]).sampling.vllm
    with served_policy(checkpoint, options, tmp_path / "eval_vllm.log", trust_remote_code=False,
                       model_dtype="float32") as served:
        with pytest.raises(SystemMessageError, match=r"refuses a system message \(System role not supported\)"):
            sample(served, None, ["12+7="], n=1, temperature=0.0, max_new_tokens=4, system="Be brief.")
        texts, finished = sample(served, None, ["12+7="], n=1, temperature=0.0, max_new_tokens=4)
    assert len(texts) == 1 and len(texts[0]) == 1 and len(finished[0]) == 1


@pytest.mark.parametrize(("overrides", "message"), [
    (["experiment=smoke"], r"vLLM's CPU attention does not take head_dim=16 \(model.arch\); it takes 32, 64, 80"),
    (["sampling.vllm.cpu_kv_cache_gb=100000"], r"sampling.vllm.cpu_kv_cache_gb=100000 plus the weights need "
                                                r"[0-9.]+ GiB of host RAM, but [0-9.]+ GiB are available"),
    (["sampling.vllm.data_parallel_size=2"], "vLLM's CPU engine already uses the machine's cores"),
])
def test_what_the_cpu_engine_cannot_run_is_refused_at_start_up(tmp_path, overrides, message):
    import re

    run_dir = tmp_path / "run"
    rc, out = finish(start(run_dir, *overrides, hydra_dir=tmp_path / "hydra"))
    assert rc != 0
    assert re.search(message, out), out[-3000:]
    assert not run_dir.exists(), "a refused run wrote something"


def _gsm8k_file(path: Path, start_: int, n: int) -> Path:
    rows = []
    for i in range(start_, start_ + n):
        a, b = 2 + i % 7, 3 + (5 * i) % 11
        rows.append({"question": f"Sam has {a} apples and buys {b} more. How many apples does Sam have now?",
                     "answer": f"Sam has {a} + {b} = {a + b} apples.\n#### {a + b}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_round_of_the_real_smollm2_through_vllm(tmp_path, smollm2):
    """The issue's command, at test size: the real model, a local GSM8K-format file, the verifier, vLLM."""
    train, held_out = _gsm8k_file(tmp_path / "train.jsonl", 0, 16), _gsm8k_file(tmp_path / "test.jsonl", 100, 8)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "run.py"), "model=smollm2_135m", f"model.pretrained={smollm2}", "task=gsm8k",
           f"task.path={train}", f"task.eval_path={held_out}", "task.config=null", "reward=verifier", "rounds=1",
           "sampling.backend=vllm", "sampling.vllm.enforce_eager=true", "sampling.vllm.cpu_kv_cache_gb=1",
           "sampling.prompts_per_round=8", "sampling.n_samples=4", "sampling.max_new_tokens=48",
           "sampling.batch_size=8", "train.epochs=1", "train.lists_per_step=8", "train.lr=1e-6", "eval.n_prompts=8",
           "eval.pass_at_max=0", "eval.alpaca_style=false", "eval.batch_size=8", "select.drop_ties=false", "threads=2",
           f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=15 * 60)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rd = RunDir(run_dir)
    gens = read_jsonl(rd.generations(1))
    assert len(gens) == 8 and all(len(g["responses"]) == 4 for g in gens)
    assert all("<|im_start|>" not in r for g in gens for r in g["responses"])  # answers, not chat markup
    assert sum(len(r) > 0 for g in gens for r in g["responses"]) == 32
    assert [s["prompt_id"] for s in read_jsonl(rd.scores(1))] == [g["prompt_id"] for g in gens]
    assert (rd.checkpoint(1) / "model.safetensors").exists()
    assert {"accuracy"} <= set(read_json(rd.eval(1)))
    assert not children_running(str(run_dir)), "a process of the run is still there"

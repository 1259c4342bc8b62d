"""Issue 19, 11: the benchmarks' judge and data are checked at start-up, before any stage runs (an HTTP 500,
a stalled endpoint, a missing data file or a verifier asked to judge open questions surfaced only after
minutes of generation). A refused command writes nothing: not even the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from larpo.errors import JudgeError, PipelineError
from larpo.pipeline import run
from tests.helpers.config import compose_config
from tests.helpers.judges import STALL, ChatServer, chat_response
from tests.helpers.tiny import no_system_tokenizer

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "evals"
FAST = ["experiment=smoke", "rounds=0", "sft.steps=0", "eval.pass_at_max=0", "threads=1"]
MIXEVAL_MODEL = ["eval=[task,mixeval_hard]", f"eval.mixeval_hard.source={FIX / 'mixeval-hard'}",
                 "eval.mixeval_hard.parser=model", "judge=openai_compatible", "judge.backoff=0.001",
                 "judge.max_retries=0", "judge.timeout=0.5"]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def refused_before_any_work(tmp_path: Path, *overrides: str) -> Exception:
    run_dir = tmp_path / "run"
    with pytest.raises(Exception) as err:
        run(compose_config([*FAST, f"run_dir={run_dir}", *overrides]))
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())  # no manifest, no round_0
    return err.value


def test_a_system_message_the_policy_s_template_refuses_is_refused_at_start_up(tmp_path):
    """MixEval sends a system message; a policy whose chat template refuses one (Gemma's) failed with a traceback
    after round 0's held-out evaluation. (On vLLM too: tests/vllm/test_stage.py.)"""
    err = refused_before_any_work(tmp_path, "eval=[task,mixeval_hard]", f"eval.mixeval_hard.source={FIX / 'mixeval-hard'}",
                                  f"model.tokenizer={no_system_tokenizer(tmp_path / 'no-system')}")
    assert isinstance(err, PipelineError)
    assert str(err) == ("benchmarks: eval.mixeval_hard: the model's chat template refuses a system message (System role "
                        "not supported); set eval.mixeval_hard.system_message=null (MixEval sends none to such models)")
    run_dir = tmp_path / "run"  # with the option it names set, the run goes through
    run(compose_config([*FAST, f"run_dir={run_dir}", "eval=[task,mixeval_hard]", "eval.benchmark_max_new_tokens=4",
                        f"eval.mixeval_hard.source={FIX / 'mixeval-hard'}", f"model.tokenizer={tmp_path / 'no-system'}",
                        "eval.mixeval_hard.system_message=null"]))
    assert "mixeval_hard/score" in json.loads((run_dir / "round_0" / "eval.json").read_text())


@pytest.mark.parametrize("reply", ["HTTP 500", "stalled", "empty verdict"])
def test_a_failing_judge_is_refused_at_start_up(tmp_path, reply):
    respond = {"HTTP 500": lambda body, n: (500, {}, {"error": "down"}),
               "stalled": lambda body, n: (200, {}, STALL),
               "empty verdict": lambda body, n: (200, {}, chat_response(""))}[reply]
    with ChatServer(respond, max_requests=2) as server:
        error = refused_before_any_work(tmp_path, *MIXEVAL_MODEL, f"judge.base_url={server.url}")
    assert isinstance(error, JudgeError) and str(error).startswith(
        f"judge 'openai-compatible:meta-llama/Meta-Llama-3-70B-Instruct@127.0.0.1' at {server.url}/chat/completions: ")
    assert str(error).endswith("(attempt 2 of 2)")  # one small request, tried twice
    if reply == "stalled":  # the one-thread server is still waiting on the first: the second never reached it
        assert "timed out" in str(error)
    else:
        assert len(server.requests) == 2


def test_a_missing_benchmark_data_file_is_refused_at_start_up(tmp_path):
    with ChatServer(lambda body, n: (200, {}, chat_response("ok")), max_requests=2) as server:
        error = refused_before_any_work(tmp_path, "eval=[task,alpacaeval2]", "judge=openai_compatible",
                                        f"judge.base_url={server.url}",
                                        f"eval.alpacaeval2.reference_path={tmp_path / 'absent.json'}")
    assert isinstance(error, PipelineError)
    assert str(error) == (f"benchmarks: reference_path={tmp_path / 'absent.json'}: no such file "
                          "(alpaca_eval_gpt4_baseline.json of tatsu-lab/alpaca_eval)")


def test_the_task_verifier_as_judge_is_refused_at_start_up(tmp_path):
    """judge=reward with the embedded task's verifier: "prompt ... matches no arithmetic task format" came
    after all of round 0's generation."""
    error = refused_before_any_work(tmp_path, "eval=[task,alpacaeval2]", "judge=reward",
                                    f"eval.alpacaeval2.reference_path={FIX / 'alpaca_reference.json'}")
    assert isinstance(error, JudgeError) and "is a task's verifier" in str(error)


def test_missing_mixeval_items_are_refused_at_start_up(tmp_path):
    error = refused_before_any_work(tmp_path, "eval=[task,mixeval_hard]", f"eval.mixeval_hard.source={FIX}/absent")
    assert isinstance(error, PipelineError) and str(error).startswith(f"benchmarks: {FIX}/absent: neither MixEval's")


def test_a_mixeval_model_parser_needs_a_judge_that_writes():
    from larpo.evals.judges import RewardJudge
    from larpo.evals.mixeval import MixEval
    from tests.helpers.judges import Bang

    with pytest.raises(ValueError, match="MixEval parser=model needs a judge that writes its verdict; judge "
                                         "'reward:bang' only ranks pairs"):
        MixEval(source=str(FIX / "mixeval-hard"), parser="model", judge=RewardJudge(Bang())).check()

"""Judges: the chat-completions client against a local server, key hygiene, the HF local judge
on a tiny model, the reward judge, and the judge/eval yaml nodes."""

from __future__ import annotations

import inspect
import json
import logging
import urllib.request
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from larpo.errors import JudgeError, JudgeHTTPError, MissingAPIKeyError
from larpo.evals.judges import REWARD_PROMPT, HFLocalJudge, OpenAICompatibleJudge, RewardJudge, chatml_to_messages
from tests.helpers.judges import SECRET, Bang, ChatServer, chat_response

CONF = Path(__file__).resolve().parents[2] / "conf"
@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_retries_429_then_succeeds_and_sends_the_key_as_bearer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LARPO_TEST_KEY", SECRET)
    replies = {1: (429, {"Retry-After": "0"}, {"error": "slow down"}), 2: (200, {}, chat_response("[[0.7]]"))}
    with ChatServer(lambda body, n: replies[n], max_requests=2) as server:
        judge = OpenAICompatibleJudge("judge-model", base_url=server.url, api_key_env="LARPO_TEST_KEY",
                                      max_retries=2, backoff=0.01, concurrency=1)
        assert judge.complete([[{"role": "user", "content": "grade this"}]]) == ["[[0.7]]"]
    assert len(server.requests) == 2
    headers, body = server.requests[1]
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    assert body["messages"] == [{"role": "user", "content": "grade this"}]


def test_the_key_never_appears_in_name_repr_logs_or_errors(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("LARPO_TEST_KEY", SECRET)
    # The server echoes the key in its error body, as a real API sometimes does.
    with ChatServer(lambda body, n: (503, {}, {"error": f"bad key {SECRET}"}), max_requests=3) as server:
        judge = OpenAICompatibleJudge("m", base_url=server.url, api_key_env="LARPO_TEST_KEY", max_retries=2,
                                      backoff=0.01)
        with caplog.at_level(logging.DEBUG), pytest.raises(JudgeHTTPError) as err:
            judge.complete([[{"role": "user", "content": "hi"}]])
    assert len(server.requests) == 3  # 1 try + 2 bounded retries
    assert "HTTP 503" in str(err.value) and "***" in str(err.value)
    texts = [str(err.value), repr(err.value), repr(judge), str(judge), judge.name, caplog.text,
             json.dumps(vars(judge), default=str)]
    assert all(SECRET not in t for t in texts)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_client_error_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LARPO_TEST_KEY", raising=False)  # a keyless local server: no Authorization header
    with ChatServer(lambda body, n: (400, {}, {"error": "bad request"}), max_requests=3) as server:
        judge = OpenAICompatibleJudge("m", base_url=server.url, api_key_env="LARPO_TEST_KEY", backoff=0.01)
        with pytest.raises(JudgeHTTPError, match="HTTP 400"):
            judge.complete([[{"role": "user", "content": "hi"}]])
    assert len(server.requests) == 1 and "Authorization" not in server.requests[0][0]


def _no_network(*args, **kwargs):
    raise AssertionError("a network call was attempted")


def test_standard_judge_without_key_fails_clearly_before_any_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra.utils import instantiate

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        OpenAICompatibleJudge("gpt-4-1106-preview")
    with pytest.raises(Exception, match="OPENAI_API_KEY"):
        instantiate(OmegaConf.load(CONF / "judge" / "gpt4_turbo.yaml"))


def test_chatml_prompt_becomes_messages() -> None:
    prompt = "<|im_start|>system\nBe fair.\n<|im_end|>\n<|im_start|>user\nWhich is better?\n<|im_end|>"
    assert chatml_to_messages(prompt) == [{"role": "system", "content": "Be fair."},
                                          {"role": "user", "content": "Which is better?"}]
    assert chatml_to_messages("plain text") == [{"role": "user", "content": "plain text"}]


def test_hf_local_judge_loads_lazily_answers_and_releases(tmp_path: Path) -> None:
    import torch

    from larpo.model import build_model, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(None)  # the embedded tokenizer, which has a chat template
    model = build_model({"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "num_key_value_heads": 2}, tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    judge = HFLocalJudge(str(tmp_path), max_new_tokens=3, dtype="float32", device="cpu", batch_size=2)
    assert judge._model is None  # nothing loaded at construction
    chats = [[{"role": "user", "content": f"{i}+{i}="}] for i in range(3)]
    out = judge.complete(chats)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert judge._model is None and judge._tokenizer is None  # released after use
    assert judge.name == f"hf:{tmp_path}"
    assert HFLocalJudge(str(tmp_path / "absent")).name.startswith("hf:")  # building never loads


def test_reward_judge_reads_its_prompt_back_and_answers_preferences() -> None:
    judge = RewardJudge(Bang())
    template = ("<|larpo:instruction|>\n{instruction}\n<|larpo:output_1|>\n{output_1}\n"
                "<|larpo:output_2|>\n{output_2}\n<|larpo:end|>\n")
    assert template == (judge_template := (Path(__file__).resolve().parents[2] / "larpo/evals/assets/alpaca_eval/"
                                           "larpo_reward/prompt.txt").read_text())
    fill = [("Say hi\nplease", "hi!", "hello!!\n\nbye"), ("q", "a!", "b"), ("q2", "same", "same")]
    prompts = [judge_template.replace("{instruction}", i).replace("{output_1}", a).replace("{output_2}", b)
               for i, a, b in fill]
    assert REWARD_PROMPT.match(prompts[0]).groups() == fill[0]  # multi-line fields read back exactly
    out = judge.alpaca_eval_completions(prompts)
    assert out["completions"] == ["2", "1", "1.5"] and len(out["time_per_example"]) == 3
    assert judge.name == "reward:bang"
    with pytest.raises(ValueError, match="larpo_reward"):
        judge.alpaca_eval_completions(["not a rendered prompt"])
    with pytest.raises(TypeError, match="rule"):
        judge.complete([[{"role": "user", "content": "x"}]])


@pytest.mark.parametrize("path", sorted((CONF / "judge").glob("*.yaml")) + sorted((CONF / "eval").glob("[am]*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_yaml_nodes_bind_to_their_targets(path: Path) -> None:
    from hydra.utils import get_class

    node = OmegaConf.to_container(OmegaConf.load(path))
    for base in node.pop("defaults", None) or []:  # an option built on another of its group (smollm2_dev: hf_local)
        if base != "_self_":
            node = {**OmegaConf.to_container(OmegaConf.load(path.parent / f"{base}.yaml")), **node}
    target = get_class(node.pop("_target_"))
    if path.parent.name == "eval" and "judge" not in node:
        node["judge"] = None  # composed from conf/judge through the defaults list
    inspect.signature(target).bind(**node)  # every key is a constructor argument


# ---------------------------------------------------------------- issue 19: judge replies that cannot be read

UNREADABLE = {
    "bad JSON": (200, {}, b'{"choices": [{"message": '),
    "HTML with status 200": (200, {"Content-Type": "text/html"}, b"<html><body>Gateway login</body></html>"),
    "no choices": (200, {}, {"choices": []}),
    "empty content": (200, {}, chat_response("")),
    "null content": (200, {}, {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]}),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_reply_is_a_judge_error_retried_then_refused(case) -> None:
    """Issue 19, 10 and 3: malformed replies crashed with a bare JSONDecodeError/IndexError; an empty or null
    verdict was scored as an unparsable judgment (a random draw). Each is a judge error naming the judge and
    the URL, retried with backoff, then refused."""
    status, headers, payload = UNREADABLE[case]
    with ChatServer(lambda body, n: (status, headers, payload), max_requests=3) as server:
        judge = OpenAICompatibleJudge("m", base_url=server.url, max_retries=2, backoff=0.001, concurrency=1)
        with pytest.raises(JudgeError) as err:
            judge.complete([[{"role": "user", "content": "grade"}]])
    assert len(server.requests) == 3  # 1 try + 2 bounded retries
    assert str(err.value).startswith(f"judge 'openai-compatible:m@127.0.0.1' at {server.url}/chat/completions: ")
    assert str(err.value).endswith("(attempt 3 of 3)") and err.value.__cause__ is None


def test_a_readable_reply_after_an_unreadable_one_is_taken() -> None:
    replies = {1: (200, {}, {"choices": []}), 2: (200, {}, chat_response("[[B]]"))}
    with ChatServer(lambda body, n: replies[n], max_requests=2) as server:
        judge = OpenAICompatibleJudge("m", base_url=server.url, max_retries=2, backoff=0.001)
        assert judge.complete([[{"role": "user", "content": "grade"}]]) == ["[[B]]"]


def test_a_stalled_judge_times_out_and_is_refused() -> None:
    from tests.helpers.judges import STALL

    with ChatServer(lambda body, n: (200, {}, STALL), max_requests=2) as server:
        judge = OpenAICompatibleJudge("m", base_url=server.url, timeout=0.2, max_retries=1, backoff=0.001)
        with pytest.raises(JudgeHTTPError, match=r"(TimeoutError|URLError).*\(attempt 2 of 2\)$"):
            judge.complete([[{"role": "user", "content": "grade"}]])


def test_the_start_up_check_is_one_small_request_at_most_twice() -> None:
    """Issue 19, 11: `judge.check()` (at start-up) costs one request, two on a failure, whatever max_retries."""
    with ChatServer(lambda body, n: (500, {}, {"error": "down"}), max_requests=10) as server:
        judge = OpenAICompatibleJudge("m", base_url=server.url, max_retries=6, backoff=0.001)
        with pytest.raises(JudgeHTTPError, match=r"HTTP 500.*\(attempt 2 of 2\)$"):
            judge.check()
    assert len(server.requests) == 2 and server.requests[0][1]["max_tokens"] == 8
    with ChatServer(lambda body, n: (200, {}, chat_response("ok")), max_requests=1) as server:
        OpenAICompatibleJudge("m", base_url=server.url).check()


def test_a_task_verifier_cannot_judge_open_questions() -> None:
    """Issue 19, 11: judge=reward with the embedded task's verifier failed after generation with
    "prompt ... matches no arithmetic task format"; its check refuses it at start-up."""
    from larpo.rewards.verifier import VerifierReward
    from larpo.tasks.arithmetic import ArithmeticTask

    judge = RewardJudge(VerifierReward(ArithmeticTask(n_sft=1, n_train=1, n_eval=1)))
    with pytest.raises(JudgeError, match=r"is a task's verifier, which scores only that task's own prompts"):
        judge.check()
    RewardJudge(Bang()).check()  # a reward model judges any question

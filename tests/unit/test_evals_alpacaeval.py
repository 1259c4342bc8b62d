"""AlpacaEval 2 through alpaca_eval's real code (alpaca_eval.evaluate, its annotators, parsers and
metrics) on invented fixture rows; no network: the hub is patched to fail if it is ever asked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from larpo.evals import alpacaeval as ae
from larpo.evals.judges import OpenAICompatibleJudge, RewardJudge
from tests.helpers.judges import Bang, ChatServer, chat_response

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "evals"
CONF = Path(__file__).resolve().parents[2] / "conf"
DF_GAMED = FIX / "df_gamed.csv"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise OSError("offline test: the hub must not be contacted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    ae.import_alpaca_eval()
    from alpaca_eval.metrics import glm_winrate

    monkeypatch.setattr(glm_winrate, "hf_hub_download", refuse)  # only local_lc_weights may serve files
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def data() -> tuple[list[dict], list[str], list[str]]:
    reference = ae.load_reference(FIX / "alpaca_reference.json")
    model = json.loads((FIX / "alpaca_model_outputs.json").read_text())
    return reference, [m["instruction"] for m in model], [m["output"] for m in model]


def _weights_listing() -> list[str]:
    from alpaca_eval.metrics import glm_winrate

    weights = Path(glm_winrate.__file__).parent / "weights"
    return sorted(str(p) for p in weights.rglob("*")) if weights.exists() else []


def test_full_set_raw_and_lc_win_rate_with_the_reward_judge(data) -> None:
    reference, instructions, outputs = data
    before = _weights_listing()
    out = ae.evaluate_outputs(instructions, outputs, reference, RewardJudge(Bang()), "fixture_policy",
                              df_gamed_path=DF_GAMED)
    # "!" counts, policy vs reference: 5 wins, 2 ties, 3 losses -> (5 + 2 / 2) / 10 = 60 %.
    assert out["win_rate"] == pytest.approx(60.0) and (out["n"], out["n_wins"], out["n_draws"]) == (10, 5, 2)
    prefs = [1.0 if p < 0 else 2.0 if p > 0 else 1.5 for p in (
        a.count("!") - r["output"].count("!") for a, r in zip(outputs, reference))]
    mean = sum(p - 1 for p in prefs) / 10
    se = math.sqrt(sum((p - 1 - mean) ** 2 for p in prefs) / 9 / 10)
    assert out["win_rate_se"] == pytest.approx(100 * se)
    # LC on the "full set" of the invented weight files: computed, and equal to alpaca_eval's own
    # function run on the returned annotations with the same local files.
    assert out["lc_absent_reason"] is None and 0.0 <= out["lc_win_rate"] <= 100.0
    with ae.local_lc_weights(DF_GAMED):
        from alpaca_eval.metrics import get_length_controlled_winrate

        direct = get_length_controlled_winrate(out["annotations"], save_weights_dir=None)
    assert out["lc_win_rate"] == pytest.approx(direct["length_controlled_winrate"])
    assert out["lc_win_rate_se"] == pytest.approx(direct["lc_standard_error"])
    rows = out["annotations"]
    assert [r["preference"] for r in rows] == prefs and all("glm_preference" in r for r in rows)
    assert rows[0]["output_2"] == outputs[0] and rows[0]["generator_2"] == "fixture_policy"
    assert out["judge"] == "reward:bang" and out["annotator"] == "larpo_reward"
    assert out["avg_length"] == int(sum(len(o) for o in outputs) / 10)
    assert _weights_listing() == before  # save_weights_dir=None: nothing written into site-packages


def test_subset_or_reordered_set_reports_lc_absent_with_its_reason(data) -> None:
    reference, instructions, outputs = data
    sub = ae.evaluate_outputs(instructions[:6], outputs[:6], reference, RewardJudge(Bang()), "p",
                              df_gamed_path=DF_GAMED)
    assert sub["win_rate"] == pytest.approx(100 * (3 + 2 / 2) / 6)  # 3 wins, 2 ties, 1 loss
    assert sub["lc_win_rate"] is None and "full set of 10" in sub["lc_absent_reason"]
    rev = ae.evaluate_outputs(instructions[::-1], outputs[::-1], reference, RewardJudge(Bang()), "p",
                              df_gamed_path=DF_GAMED)
    assert rev["win_rate"] == pytest.approx(60.0) and "canonical order" in rev["lc_absent_reason"]
    none = ae.evaluate_outputs(instructions, outputs, reference, RewardJudge(Bang()), "p")
    assert none["lc_win_rate"] is None and "df_gamed_path" in none["lc_absent_reason"]


def test_weighted_gpt4_turbo_annotator_through_an_openai_compatible_server(data, monkeypatch) -> None:
    """The standard path (alpaca_eval's weighted_alpaca_eval_gpt4_turbo prompt, log-prob parser and
    output-order randomisation) with our HTTP judge, against a local server that prefers the policy
    with probability 0.8 whichever side alpaca_eval shows it on."""
    reference, instructions, outputs = data
    monkeypatch.setenv("LARPO_TEST_KEY", "k")
    sides = []

    def respond(body, n):
        user = body["messages"][-1]["content"]
        m_block = user.split('"model_identifier": "M"')[0]
        sides.append(any(o in m_block for o in outputs))
        p_m = 0.8 if sides[-1] else 0.2  # P("m" is better)
        return 200, {}, chat_response("m", [{"token": "m", "logprob": math.log(p_m)},
                                            {"token": "M", "logprob": math.log(1 - p_m)}])

    with ChatServer(respond, max_requests=10) as server:
        judge = OpenAICompatibleJudge("gpt-4-1106-preview", base_url=server.url, api_key_env="LARPO_TEST_KEY",
                                      backoff=0.01)
        out = ae.evaluate_outputs(instructions, outputs, reference, judge, "policy", df_gamed_path=DF_GAMED)
    assert 0 < sum(sides) < 10  # alpaca_eval showed the policy on both sides, and undid the swap
    assert out["win_rate"] == pytest.approx(80.0) and out["n"] == 10
    assert out["annotator"] == "weighted_alpaca_eval_gpt4_turbo" and out["judge"].startswith("openai-compatible:")
    body = server.requests[0][1]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 5
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


def test_alpacaeval2_node_checks_before_generating_and_generates_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra.utils import instantiate

    from larpo.evals.bench import build_judge
    from tests.helpers.config import compose_config

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = compose_config(["run_dir=/tmp/unused", "eval=[alpacaeval2]",
                          f"eval.alpacaeval2.reference_path={FIX / 'alpaca_reference.json'}"])
    with pytest.raises(Exception, match="OPENAI_API_KEY"):  # the standard judge: no key, no work
        build_judge(cfg.judge, reward=None)
    calls = []

    def generate(prompts: list[str]) -> list[str]:
        calls.append(prompts)
        return [p + "!" for p in prompts]

    node = instantiate(cfg.eval.alpacaeval2, judge=RewardJudge(Bang()), max_instances=4)
    out = node(generate, "gen")
    assert len(calls) == 1 and len(calls[0]) == 4 and out["win_rate"] is not None
    assert out["lc_absent_reason"] is not None  # a prefix of the set
    with pytest.raises(FileNotFoundError, match="reference_path"):
        ae.AlpacaEval2(judge=RewardJudge(Bang()))(generate, "gen")  # no file, hub refused
    assert len(calls) == 1


def test_resolve_annotator_derives_builtins_and_refuses_fn_completions(tmp_path: Path) -> None:
    import yaml

    path = ae.resolve_annotator("weighted_alpaca_eval_gpt4_turbo", tmp_path)
    cfg = yaml.safe_load(path.read_text())["weighted_alpaca_eval_gpt4_turbo"]
    assert "fn_completions" not in cfg and "model_name" not in cfg["completions_kwargs"]
    assert Path(cfg["prompt_template"]).is_absolute() and Path(cfg["prompt_template"]).is_file()
    assert cfg["fn_completion_parser"] == "logprob_parser" and cfg["completions_kwargs"]["top_logprobs"] == 5
    bad = tmp_path / "bad" / "configs.yaml"
    bad.parent.mkdir()
    bad.write_text(yaml.safe_dump({"bad": {"prompt_template": "x.txt", "fn_completions": "openai_completions"}}))
    with pytest.raises(ValueError, match="fn_completions"):
        ae.resolve_annotator(bad, tmp_path)
    with pytest.raises(ValueError, match="neither"):
        ae.resolve_annotator("no_such_annotator", tmp_path)


def test_local_lc_weights_serves_only_configured_files_and_restores() -> None:
    from alpaca_eval.metrics import glm_winrate

    original = glm_winrate.hf_hub_download
    with ae.local_lc_weights(DF_GAMED):
        assert glm_winrate.hf_hub_download(repo_id=ae.HUB_REPO, filename="df_gamed.csv") == str(DF_GAMED)
        with pytest.raises(FileNotFoundError):
            glm_winrate.hf_hub_download(repo_id=ae.HUB_REPO, filename="instruction_difficulty.csv")
    assert glm_winrate.hf_hub_download is original
    assert ae.lc_difficulty_count(DF_GAMED) == 10


def test_a_repeated_instruction_stays_one_row_per_answer(data) -> None:
    # alpaca_eval merges on the instruction; is_ordered=True pairs rows by position instead of a cross join.
    reference, instructions, outputs = data
    # (A cross join would also collapse the two identical answers into one row.)
    answers = [outputs[0], outputs[0], "plain"]
    out = ae.evaluate_outputs([instructions[0]] * 3, answers, reference, RewardJudge(Bang()), "p")
    assert out["n"] == 3 and out["win_rate"] == pytest.approx(100 * 2.5 / 3)  # win ("!!" vs none), win, tie
    assert [r["output_2"] for r in out["annotations"]] == answers


def test_a_bad_annotator_fails_before_generating() -> None:
    calls = []
    node = ae.AlpacaEval2(judge=RewardJudge(Bang()), annotator="no_such_annotator",
                          reference_path=str(FIX / "alpaca_reference.json"))
    with pytest.raises(ValueError, match="no_such_annotator"):
        node(lambda prompts: calls.append(prompts) or prompts, "gen")
    assert calls == []


def test_template_markers_in_a_text_are_refused(data) -> None:
    reference, instructions, outputs = data
    with pytest.raises(ValueError, match="template marker"):
        ae.evaluate_outputs(instructions[:1], ["see {output_1}"], reference, RewardJudge(Bang()), "p")


def test_embedded_win_rates_vs_round_0() -> None:
    from larpo.evals.held_out import win_rate

    rewards = [1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 1.0, 0.5, 1.0]
    base_rewards = [0.0, 0.5, 1.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.5, 1.0, 0.0, 0.0]
    rows = [{"prompt_id": f"p{i}", "response": "x" * (3 + i % 4), "reward": r} for i, r in enumerate(rewards)]
    base = [{"prompt_id": f"p{i}", "response": "y" * 4, "reward": r} for i, r in enumerate(base_rewards)]
    out = ae.win_rates_vs_baseline(rows, base + [{"prompt_id": "extra", "response": "", "reward": 1.0}],
                                   ae.stored_reward_preference())
    # wins at 0,3,5,7,10,11 (6), ties at 1,4,9 (3), losses 3 -> (6 + 1.5) / 12.
    assert out["win_rate"] == pytest.approx(100 * 7.5 / 12) and out["n"] == 12
    same, _ = win_rate({r["prompt_id"]: r["reward"] for r in rows}, {b["prompt_id"]: b["reward"] for b in base})
    assert out["win_rate"] == pytest.approx(100 * same)  # agrees with the pipeline's own win rate
    assert out["lc_absent_reason"] is None and 0.0 <= out["lc_win_rate"] <= 100.0
    small = ae.win_rates_vs_baseline(rows[:5], base, ae.stored_reward_preference())
    assert small["lc_win_rate"] is None and "5-fold" in small["lc_absent_reason"]
    rescored = ae.win_rates_vs_baseline([dict(r, prompt="q", response="a!") for r in rows[:3]],
                                        [dict(b, prompt="q", response="b") for b in base[:3]],
                                        ae.reward_preference(Bang()))
    assert rescored["win_rate"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="round-0"):
        ae.win_rates_vs_baseline(rows, [], ae.stored_reward_preference())


def test_embedded_lc_removes_a_win_rate_explained_by_length() -> None:
    # This round wins exactly where it answers longer than round 0 (15 of 20) and loses where shorter:
    # raw 75 %, but at equal lengths the GLM predicts about a coin flip.
    rows, base = [], []
    for i in range(20):
        longer = i % 4 != 0
        rows.append({"prompt_id": i, "response": "x" * (40 if longer else 10) + "y" * (i % 3),
                     "reward": 1.0 if longer else 0.0})
        base.append({"prompt_id": i, "response": "z" * 25, "reward": 0.5})
    out = ae.win_rates_vs_baseline(rows, base, ae.stored_reward_preference())
    assert out["win_rate"] == pytest.approx(75.0)
    assert abs(out["lc_win_rate"] - 50.0) < 10.0 and out["lc_win_rate"] < out["win_rate"] - 15.0

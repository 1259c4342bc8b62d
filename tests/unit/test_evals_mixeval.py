"""MixEval: loading both layouts, MixEval's exact prompt strings, rule and model parsers, scoring
(expected values worked out by hand on invented items)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from larpo.evals import mixeval as mx

FOLDER = Path(__file__).resolve().parents[1] / "fixtures" / "evals" / "mixeval-hard"


@pytest.fixture(scope="module")
def items() -> list[mx.MixEvalItem]:
    return mx.load_mixeval(FOLDER)


def test_loads_the_repo_json_layout(items) -> None:
    assert len(items) == 20 and [it.split for it in items] == [mx.FREE_FORM] * 10 + [mx.MULTIPLE_CHOICE] * 10
    first, mc = items[0], items[10]
    assert (first.id, first.context, first.target, first.options) == ("0", None, ("teal", "Teal and white"), None)
    assert mc.target == (1,) and mc.options[1] == "Corvane" and mc.benchmark_name == "MMLU"


def test_loads_a_save_to_disk_copy_of_the_hub_layout(items, tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    splits = {}
    for split, name in mx.FILES.items():
        rows = json.loads((FOLDER / name).read_text())
        splits[split] = Dataset.from_list([{"id": k, **v} for k, v in rows.items()])
    DatasetDict(splits).save_to_disk(str(tmp_path / "hub"))
    assert mx.load_mixeval(tmp_path / "hub") == items
    with pytest.raises(FileNotFoundError, match="neither"):
        mx.load_mixeval(tmp_path)


def test_prompts_are_mixevals_strings(items) -> None:
    by = {(it.split, it.id): it for it in items}
    ff = mx.FREE_FORM
    assert mx.build_prompt(by[ff, "0"]) == (
        "Question: What colour is the flag of the invented island of Morvane?\nAnswer the question shortly.")
    assert mx.build_prompt(by[ff, "2"]) == (  # context "none" counts as no context
        "Question: In which invented city does the Glassbridge Festival take place?\nAnswer the question shortly.")
    assert mx.build_prompt(by[ff, "4"]) == (
        "Question: The Harbour Lions scored 21 points in the first half and 14 in the second. The Gulls scored 17 "
        "points in total.\nHow many points did the Harbour Lions score in total?\nAnswer the question shortly.")
    assert mx.build_prompt(by[ff, "6"]) == (
        "Question: A crate holds 12 jars. How many jars are in 7 crates?\nAnswer the question. \n"
        "Let's think step by step.")
    assert mx.build_prompt(by[ff, "8"]) == (  # BBH; a blank context is no context
        "Question: Sort the words alphabetically: pear fig kiwi\nAnswer the question. \nLet's think step by step.")
    assert mx.build_prompt(by[mx.MULTIPLE_CHOICE, "0"]) == (
        "Which invented planet has three moons?\nA. Veltra\nB. Corvane\nC. Ishmir\nD. Pollux Minor\n"
        "Answer with the option letter from the given choices directly.")
    assert mx.build_prompt(by[mx.MULTIPLE_CHOICE, "4"]) == (
        "The Lowmere ferry leaves at dawn and returns at dusk.\nDoes the Lowmere ferry return in the morning?\n"
        "A. No\nB. Yes\nAnswer with the option letter from the given choices directly.")
    assert mx.build_prompt(by[mx.MULTIPLE_CHOICE, "9"]).startswith("Where would you keep")  # context "null"
    with pytest.raises(NotImplementedError):
        mx.build_prompt(mx.MixEvalItem("q", mx.FREE_FORM, "p", None, ("a",), "QuAc"))


def test_multiple_choice_rule_parser() -> None:
    opts = ["red", "blue whale", "green", "gold"]
    rng = random.Random(0)
    assert mx.parse_multiple_choice_rule("B", opts, rng) == ("B", False)
    assert mx.parse_multiple_choice_rule("The answer is (C).", opts, rng) == ("C", False)
    assert mx.parse_multiple_choice_rule("A or B hard to say", opts, rng) == ("A", False)  # the earliest wins
    assert mx.parse_multiple_choice_rule("**D. gold** is right", opts, rng) == ("D", False)
    assert mx.parse_multiple_choice_rule("**D** is right", opts, rng)[1]  # none of MixEval's patterns: random
    # No letter pattern; more than 5 words: the option text is matched.
    assert mx.parse_multiple_choice_rule("I am fairly sure it is the blue whale here", opts, rng) == ("B", False)
    letter, is_random = mx.parse_multiple_choice_rule("no idea", opts, random.Random(7))
    assert is_random and letter == random.Random(7).choice(["A", "B", "C", "D"])


def test_free_form_rule_parser() -> None:
    assert mx.parse_free_form_rule("6 x 14 = 84, so the answer is 84.") == [84.0]
    assert mx.free_form_rule_correct(["1250"], mx.parse_free_form_rule("There were 1,250 people."))
    assert mx.free_form_rule_correct(["Lowmere"], mx.parse_free_form_rule("So the city is Lowmere."))
    assert not mx.free_form_rule_correct(["Lowmere"], mx.parse_free_form_rule("It is Brindle."))
    assert not mx.free_form_rule_correct(["a"], mx.parse_free_form_rule("banana"))  # a lone letter needs spaces


@pytest.mark.parametrize("text, option, score", [
    ("The option chosen by the model: [[B]].", "B", None),
    ("Chosen: [C]", "C", None),
    ("[[b]]", None, None),
    ("it picks A", None, None),
    ("[[A]] then [[D]]", "A", None),
    ("The correctness score: [[0.7]].", None, 0.7),
    ("[[1.0]]", None, 1.0),
    ("[[1.5]]", None, None),  # outside [0, 1]: unparsable
    ("score [0.3]", None, 0.3),
    ("no score", None, None),
])
def test_model_parser_extraction(text: str, option: str | None, score: float | None) -> None:
    assert mx.extract_option(text) == option
    assert mx.extract_score(text) == score


ANSWERS_FF = ["Teal.", "Ada Quillby founded it", "Brindle", "the copper wren", "They scored 35 points.",
              "It grew by 700.", "7 x 12 = 84, so 84 jars.", "36", "kiwi fig pear", "zorquium"]
ANSWERS_MC = ["B", "A", "C", "(C)", "A", "Yes", "A", "B", "The answer is A.", "B"]


def test_rule_scores_overall_per_split_and_per_benchmark(items) -> None:
    out = mx.evaluate_mixeval(items, ANSWERS_FF + ANSWERS_MC, parser="rule")
    # Free form right: 0 teal, 1, 3, 4 (35), 6 (84), 7 (36), 9 -> 7 of 10; wrong: 2 Brindle, 5 (700), 8 order.
    # Multiple choice right: 0 B, 1 A, 4 A, 5 Yes -> "Yes" is no letter... see below.
    ff = [r["score"] for r in out["records"][:10]]
    assert ff == [1, 1, 0, 1, 1, 0, 1, 1, 0, 1]
    mc = [r["score"] for r in out["records"][10:]]
    # 0 B ok; 1 A ok; 2 C (gold D) no; 3 (C) ok; 4 A ok; 5 "Yes" has no letter and is short -> random draw;
    # 6 A ok; 7 B ok; 8 "The answer is A." ok; 9 B ok.
    fallback = out["records"][15]
    assert fallback["parser"] == "rule:random" and out["n_random"] == 1
    assert mc == [1, 1, 0, 1, 1, float(fallback["parsed"] == "B"), 1, 1, 1, 1]
    assert out["per_split"] == {mx.FREE_FORM: 0.7, mx.MULTIPLE_CHOICE: pytest.approx(sum(mc) / 10)}
    assert out["score"] == pytest.approx((7 + sum(mc)) / 20) and out["n"] == 20
    assert out["per_benchmark"]["TriviaQA"] == 0.75 and out["per_benchmark"]["DROP"] == 0.5
    assert out["per_benchmark"]["MMLU"] == 0.75 and out["n_per_benchmark"]["BoolQ"] == 2
    assert out["parser"] == "rule" and out["judge"] is None
    again = mx.evaluate_mixeval(items, ANSWERS_FF + ANSWERS_MC, parser="rule")
    assert again["records"][15]["parsed"] == fallback["parsed"]  # the fallback is seeded


class ScriptedJudge:
    """Answers judge prompts from a script (one list per round) and records what it was asked."""

    name = "scripted"

    def __init__(self, rounds: list[list[str]]) -> None:
        self.rounds, self.asked = rounds, []

    def complete(self, prompts):
        self.asked.append(prompts)
        return self.rounds[len(self.asked) - 1]


def test_model_parser_scores_with_retries_and_fallback(items) -> None:
    sub = [items[0], items[1], items[10], items[11]]  # ff golds (teal, Teal and white), (Ada Quillby); mc B, A
    judge = ScriptedJudge([["Close. [[0.7]]", "no score given", "It picks [[B]].", "unclear"],
                           ["Now: [[0.4]]", "still nothing"], ["nothing again"]])
    out = mx.evaluate_mixeval(sub, ["teal-ish", "Ada", "B", "hmm"], parser="model", judge=judge, judge_retries=3)
    scores = [r["score"] for r in out["records"]]
    assert scores[:3] == [0.7, 0.4, 1.0]
    assert [r["parser"] for r in out["records"]] == ["model", "model", "model", "model:random"]
    assert [len(a) for a in judge.asked] == [4, 2, 1]  # only unparsable items are asked again
    assert out["judge"] == "scripted" and out["n_random"] == 1 and out["judge_prompts"] == "larpo"
    system, user = judge.asked[0][0]
    assert system["role"] == "system" and system["content"] == "In this task, you act as a judge."
    assert user["content"].endswith("Question: What colour is the flag of the invented island of Morvane?\n"
                                    "Golden Answer(s): <answer 1> teal; <answer 2> Teal and white\n"
                                    "Model's Answer: teal-ish\nYour Judgment: \n")
    mc_user = judge.asked[0][2][1]["content"]
    assert "Options: \nA. Veltra\nB. Corvane\nC. Ishmir\nD. Pollux Minor\nModel's Answer: B\n" in mc_user
    assert out["score"] == pytest.approx((0.7 + 0.4 + 1.0 + scores[3]) / 4)
    with pytest.raises(ValueError, match="judge"):
        mx.evaluate_mixeval(sub, ["a"] * 4, parser="model")


def test_placeholder_text_in_an_answer_is_not_substituted(items) -> None:
    messages = mx.judge_messages(items[0], "my answer is {gold}", mx.load_judge_prompts())
    assert "Model's Answer: my answer is {gold}\n" in messages[1]["content"]


def test_mixeval_node_generates_once_and_records_prompts() -> None:
    node = mx.MixEval(source=str(FOLDER), max_items=12)
    seen, systems = [], []
    out = node(lambda prompts, system: seen.append(prompts) or systems.append(system) or ["A"] * len(prompts), "gen")
    assert len(seen) == 1 and len(seen[0]) == 12 and out["n"] == 12 and out["subset"]
    assert out["records"][0]["prompt"] == seen[0][0] and out["benchmark"] == "mixeval_hard"
    with pytest.raises(ValueError, match="judge"):
        mx.MixEval(parser="model")
    # The official harness's system message for chat models (mix_eval/models/base.py: ChatModel), or none.
    assert systems == ["You are a helpful assistant."] and out["system_message"] == systems[0]
    mx.MixEval(source=str(FOLDER), max_items=2, system_message=None)(
        lambda prompts, system: systems.append(system) or ["A"] * len(prompts))
    assert systems[-1] is None


def test_a_template_that_refuses_a_system_message_names_the_option() -> None:
    from larpo.errors import SystemMessageError
    from larpo.model import render_prompt

    class NoSystem:  # Gemma's template raises on a system role
        def apply_chat_template(self, messages, **kwargs):
            if messages[0]["role"] == "system":
                raise RuntimeError("System role not supported")
            return "<user>" + messages[0]["content"]

    assert render_prompt(NoSystem(), "q") == "<user>q"
    with pytest.raises(SystemMessageError, match="refuses a system message"):
        render_prompt(NoSystem(), "q", "You are a helpful assistant.")

    def generate(prompts, system):
        return [render_prompt(NoSystem(), p, system) for p in prompts]

    with pytest.raises(ValueError, match=r"eval.mixeval_hard.system_message=null"):
        mx.MixEval(source=str(FOLDER), max_items=2)(generate)


def test_overall_score_is_mixevals_own_aggregation(items) -> None:
    """compute_metrics.py (Psycoy/MixEval 7c52b41): each split's mean rounded to 3 decimals, weighted by the
    split sizes. 3 free-form items with 1 right and 7 multiple-choice items with 2 right:
    0.333 * 3/10 + 0.286 * 7/10 = 0.0999 + 0.2002 = 0.3001, where the item mean is 3/10 = 0.3."""
    sub = items[:3] + items[10:17]
    golds = [it.options and mx.option_letters(len(it.options))[it.target[0]] for it in sub[3:]]
    wrong = [next(x for x in "ABCD" if x != g) for g in golds]
    answers = ["Teal.", "nobody", "nothing", golds[0], golds[1], *wrong[2:]]
    out = mx.evaluate_mixeval(sub, answers, parser="rule")
    assert [r["score"] for r in out["records"]] == [1, 0, 0, 1, 1, 0, 0, 0, 0, 0] and out["n_random"] == 0
    assert out["per_split"] == {mx.FREE_FORM: 0.333, mx.MULTIPLE_CHOICE: 0.286}
    assert out["score"] == pytest.approx(0.3001, abs=1e-12) and out["score_unrounded"] == pytest.approx(0.3)
    # Per source benchmark the same way: a benchmark's items in each split, rounded, weighted by its counts.
    by = {}
    for it, r in zip(sub, out["records"]):
        by.setdefault(it.benchmark_name, {}).setdefault(it.split, []).append(r["score"])
    for name, splits in by.items():
        n = sum(len(v) for v in splits.values())
        want = sum(round(sum(v) / len(v), 3) * (len(v) / n) for v in splits.values())
        assert out["per_benchmark"][name] == pytest.approx(want, abs=1e-12), name


class VerdictJudge:
    """Answers every judge prompt with a readable verdict, but ``unreadable`` prompts (by question text) with none."""

    name = "verdicts"

    def __init__(self, unreadable: set[str] = frozenset()) -> None:
        self.unreadable = unreadable

    def complete(self, prompts):
        out = []
        for messages in prompts:
            user = messages[-1]["content"]
            bad = any(q in user for q in self.unreadable)
            out.append("I would rather not say." if bad else ("[[A]]" if "Options:" in user else "[[1.0]]"))
        return out


def test_the_score_is_withheld_past_the_stated_share_of_random_draws(items) -> None:
    """Issue 19, 3: every item fell back to a random draw and the score came out as 0.29 (n_random: 20).
    Past max_random_share the score is withheld with a message; below it, it is reported with n_random."""
    answer = lambda prompts, system=None: ["A"] * len(prompts)  # noqa: E731
    all_bad = mx.MixEval(source=str(FOLDER), parser="model", judge=VerdictJudge({"Question:", "?", "."}),
                         judge_retries=2)(answer, "gen")
    assert all_bad["n_random"] == 20 and all_bad["score"] is None and all_bad["per_split"] == {}
    assert all_bad["score_withheld"].startswith("20 of 20 items fell back to a random draw (the judge's verdict "
                                                "could not be read after 2 asks), more than max_random_share=0.1")
    one_bad = mx.MixEval(source=str(FOLDER), parser="model", judge=VerdictJudge({items[0].prompt}),
                         judge_retries=2)(answer, "gen")
    assert one_bad["n_random"] == 1 and one_bad["score"] is not None and "score_withheld" not in one_bad
    from larpo.evals.bench import flatten

    flat = flatten("mixeval_hard", all_bad)
    assert flat["mixeval_hard/score"] is None and flat["mixeval_hard/score_withheld"] == all_bad["score_withheld"]


def test_an_empty_judge_verdict_stops_the_benchmark(items) -> None:
    """Issue 19, 3: a judge answering empty (or null) content is a judge error, never a random draw."""
    from larpo.errors import JudgeError
    from larpo.evals.judges import OpenAICompatibleJudge
    from tests.helpers.judges import ChatServer, chat_response

    with ChatServer(lambda body, n: (200, {}, chat_response("")), max_requests=20) as server:
        judge = OpenAICompatibleJudge("m", base_url=server.url, max_retries=1, backoff=0.001, concurrency=1)
        with pytest.raises(JudgeError, match="message content is '': no verdict to read"):
            mx.evaluate_mixeval(items[:3], ["a"] * 3, parser="model", judge=judge, judge_retries=3)

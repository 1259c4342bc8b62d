"""Evaluation statistics, with expected values worked out by hand."""

from __future__ import annotations

import math

import pytest

from larpo.evals.held_out import against_baseline, greedy_metrics, mean_se, paired_gain, pass_at_k, win_rate


def test_pass_at_k_hand_values() -> None:
    # 8 samples, 2 pass: Pass@1 = 2/8; Pass@2 = 1 - C(6,2)/C(8,2) = 1 - 15/28.
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 2, 2) == pytest.approx(13 / 28)
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 1, 8) == 1.0  # fewer failures than k: some sample must pass


def test_mean_se_hand_values() -> None:
    # [1, 0, 0, 1]: mean 0.5, sample variance 1/3, SE sqrt(1/3 / 4).
    mean, se = mean_se([1.0, 0.0, 0.0, 1.0])
    assert mean == 0.5 and se == pytest.approx(math.sqrt(1 / 12))
    assert mean_se([0.7]) == (0.7, 0.0)
    assert all(math.isnan(x) for x in mean_se([]))


def test_win_rate_ties_count_half() -> None:
    ours, base = {"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.2}, {"a": 0.5, "b": 0.5, "c": 1.0, "x": 0.0}
    # Common a, b, c: win, tie, loss -> [1, 0.5, 0] -> 0.5 ± sqrt(0.25 / 3).
    rate, se = win_rate(ours, base)
    assert rate == 0.5 and se == pytest.approx(math.sqrt(0.25 / 3))
    with pytest.raises(ValueError, match="round-0 outputs"):
        win_rate({"a": 1.0}, {"b": 1.0})


def test_paired_gain_hand_values() -> None:
    # Per-prompt differences [1, 0, 0]: mean 1/3; sample sd sqrt((4/9 + 1/9 + 1/9) / 2) = sqrt(1/3);
    # SE sqrt(1/3) / sqrt(3) = 1/3.
    gain, se = paired_gain({"a": 1.0, "b": 1.0, "c": 0.0}, {"a": 0.0, "b": 1.0, "c": 0.0, "z": 1.0})
    assert gain == pytest.approx(1 / 3) and se == pytest.approx(1 / 3)
    # Pairing removes the prompt effect: a constant shift has zero SE.
    assert paired_gain({"a": 0.6, "b": 0.9}, {"a": 0.5, "b": 0.8}) == (pytest.approx(0.1), pytest.approx(0.0))
    with pytest.raises(ValueError, match="round-0 outputs"):
        paired_gain({"a": 1.0}, {"b": 1.0})


def out(pid: str, reward: float, correct: bool | None = None) -> dict:
    row = {"prompt_id": pid, "reward": reward}
    return row if correct is None else {**row, "correct": correct}


def test_against_baseline_takes_correctness_from_the_task_not_the_reward() -> None:
    # a: 1.0 vs 0.25 (win, newly correct); b: 0.5 vs 0.25 (win, wrong both times); c: tie at 1.0.
    rows = [out("a", 1.0, True), out("b", 0.5, False), out("c", 1.0, True)]
    base = [out("a", 0.25, False), out("b", 0.25, False), out("c", 1.0, True)]
    result = against_baseline(rows, base)
    assert result["win_rate"] == pytest.approx(5 / 6)
    assert result["accuracy_gain"] == pytest.approx(1 / 3) and result["accuracy_gain_se"] == pytest.approx(1 / 3)
    # A reward of 1.0 is not "correct" unless the task says so: b's 0.5 -> 9.0 changes no accuracy.
    rows[1] = out("b", 9.0, False)
    assert against_baseline(rows, base)["accuracy_gain"] == pytest.approx(1 / 3)


def test_without_a_notion_of_correct_there_is_no_accuracy() -> None:
    rows = [{"prompt_id": "a", "family": "uf", "response": "x", "finished": True, "reward": 3.2},
            {"prompt_id": "b", "family": "uf", "response": "y", "finished": False, "reward": -1.0}]
    metrics = greedy_metrics(rows)
    assert "accuracy" not in metrics and metrics["mean_reward"] == pytest.approx(1.1)
    base = [{"prompt_id": "a", "reward": 0.0}, {"prompt_id": "b", "reward": 0.0}]
    assert set(against_baseline(rows, base)) == {"win_rate", "win_rate_se"}


class LengthVsList:
    """A list-relative reward: a candidate's length minus its list's mean length (like PairRM's
    scores, they mean something only against the other candidates of the same list)."""

    name = "length-vs-list"
    list_relative = True

    def score(self, prompts, responses, finished):
        return [[len(r) - sum(map(len, rs)) / len(rs) for r in rs] for rs in responses]


def test_list_relative_reward_judges_both_answers_in_one_list() -> None:
    from larpo.evals.held_out import head_to_head

    reward = LengthVsList()
    rows = [{"prompt_id": "a", "response": "long answer", "finished": True, "reward": 0.0},
            {"prompt_id": "b", "response": "x", "finished": True, "reward": 0.0},
            {"prompt_id": "c", "response": "same", "finished": True, "reward": 0.0}]
    base = [{"prompt_id": "a", "response": "short", "finished": True, "reward": 0.0},
            {"prompt_id": "b", "response": "much longer", "finished": True, "reward": 0.0},
            {"prompt_id": "c", "response": "same", "finished": False, "reward": 0.0}]
    pairs = head_to_head(reward, {"a": "pa", "b": "pb", "c": "pc"}, rows, base)
    assert pairs == ({"a": 3.0, "b": -5.0, "c": 0.0}, {"a": -3.0, "b": 5.0, "c": 0.0})
    # Alone, every answer scored 0.0 (all ties: 0.5); together: a wins, b loses, c ties.
    assert against_baseline(rows, base)["win_rate"] == 0.5
    assert against_baseline(rows, base, pairs)["win_rate"] == pytest.approx(0.5)  # (1 + 0 + 0.5) / 3
    rows[1]["response"] = "a much longer one"
    assert against_baseline(rows, base, head_to_head(reward, {"a": "", "b": "", "c": ""}, rows, base))[
        "win_rate"] == pytest.approx(2.5 / 3)
    assert "mean_reward" not in greedy_metrics([{**r, "family": "f"} for r in rows], list_relative=True)


def test_finished_share_and_answer_length_in_tokens() -> None:
    rows = [{"prompt_id": "a", "family": "f", "response": "12", "finished": True, "reward": 1.0, "tokens": 3},
            {"prompt_id": "b", "family": "f", "response": "1 2 3 4", "finished": False, "reward": 0.0, "tokens": 8},
            {"prompt_id": "c", "family": "f", "response": "7", "finished": True, "reward": 1.0, "tokens": 2}]
    metrics = greedy_metrics(rows)
    assert metrics["finished"] == 2 / 3
    assert metrics["length"] == 13 / 3
    assert "length" not in greedy_metrics([{k: v for k, v in r.items() if k != "tokens"} for r in rows])

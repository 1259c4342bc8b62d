"""List construction on hand-built lists: top/bottom, ties, too few candidates, dropped ties, min gap,
de-duplication, random selection, memorization pools and list-relative re-scoring."""

from __future__ import annotations

import random

import pytest

from larpo.errors import ArtifactError
from larpo.schemas import Table
from larpo.select import AllCandidates, RandomK, TopBottom, build_lists, rank_by_reward


def test_rank_is_stable_on_ties():
    assert rank_by_reward([0.5, 1.0, 0.5, 0.0, 1.0]) == [1, 4, 0, 2, 3]


def test_top_bottom_takes_the_worst_not_the_next():
    # 8 candidates, rewards 0.0..0.7 shuffled; top-2 = 0.7, 0.6; bottom-2 = 0.1, 0.0.
    rewards = [0.3, 0.7, 0.0, 0.5, 0.6, 0.1, 0.4, 0.2]
    assert TopBottom(2, 2)(rewards) == [1, 4, 5, 2]
    assert TopBottom(1, 3)(rewards) == [1, 7, 5, 2]


def test_top_bottom_refuses_fewer_candidates_than_it_takes():
    with pytest.raises(ValueError, match="3 candidates cannot give the top 2 and the bottom 2"):
        TopBottom(2, 2)([1.0, 0.5, 0.0])


def test_all_keeps_everything_best_first():
    assert AllCandidates()([0.2, 0.9, 0.5]) == [1, 2, 0]


def table(rows):
    return Table("gen.jsonl", rows, list(range(1, len(rows) + 1)))


def test_build_lists_joins_by_id_drops_tied_lists_and_names_the_line():
    gens = table([
        {"prompt_id": "a", "prompt": "p", "responses": ["w", "x", "y", "z", "v"], "finished": [1, 0, 1, 0, 1]},
        {"prompt_id": "b", "prompt": "q", "responses": ["s", "t", "u", "r", "o"], "finished": [1] * 5},
    ])
    scores = table([{"prompt_id": "b", "rewards": [0.5] * 5}, {"prompt_id": "a", "rewards": [0, 1, 0.2, 0.8, 0.1]}])
    lists, _ = build_lists(TopBottom(1, 2), gens, scores)
    assert lists == [{"prompt_id": "a", "prompt": "p", "responses": ["x", "v", "w"], "finished": [0, 1, 1],
                      "rewards": [1, 0.1, 0]}]
    kept, _ = build_lists(TopBottom(1, 2, drop_ties=False), gens, scores)
    assert [row["prompt_id"] for row in kept] == ["a", "b"]
    short = table([{"prompt_id": "a", "prompt": "p", "responses": ["w", "x"], "finished": [1, 1]}])
    with pytest.raises(ArtifactError, match="gen.jsonl:1: prompt_id 'a': 2 candidates cannot give"):
        build_lists(TopBottom(1, 2), short, table([{"prompt_id": "a", "rewards": [0, 1]}]))


def test_build_lists_returns_counts_and_drops_ties():
    gens = table([
        {"prompt_id": "a", "prompt": "p", "responses": ["w", "x", "y"], "finished": [True] * 3},
        {"prompt_id": "b", "prompt": "q", "responses": ["s", "t", "u"], "finished": [True] * 3},
    ])
    scores = table([{"prompt_id": "a", "rewards": [0, 1, 0.5]}, {"prompt_id": "b", "rewards": [1, 1, 1]}])
    lists, counts = build_lists(AllCandidates(), gens, scores)
    assert [row["responses"] for row in lists] == [["x", "y", "w"]]
    assert counts["tied"] == 1 and counts["lists"] == 1
    assert "source_rounds" not in lists[0]  # pool=current keeps the run directory contract's fields exactly


# -- min gap -------------------------------------------------------------------------------------

def test_min_gap_drops_lists_whose_best_minus_worst_is_below_it():
    gens = table([
        {"prompt_id": "a", "prompt": "p", "responses": ["w", "x"], "finished": [True] * 2},
        {"prompt_id": "b", "prompt": "q", "responses": ["s", "t"], "finished": [True] * 2},
        {"prompt_id": "c", "prompt": "q", "responses": ["s", "t"], "finished": [True] * 2},
    ])
    scores = table([{"prompt_id": "a", "rewards": [0, 0.3]}, {"prompt_id": "b", "rewards": [0.9, 0.1]},
                    {"prompt_id": "c", "rewards": [0.5, 0.0]}])
    lists, counts = build_lists(AllCandidates(min_gap=0.5), gens, scores)
    assert [row["prompt_id"] for row in lists] == ["b", "c"]  # gap 0.5 is not below 0.5: kept
    assert counts["below_min_gap"] == 1
    assert len(build_lists(AllCandidates(), gens, scores)[0]) == 3
    with pytest.raises(ValueError, match="min_gap"):
        AllCandidates(min_gap=-1)


# -- de-duplication ------------------------------------------------------------------------------

def test_dedup_collapses_identical_responses_keeping_the_first():
    gens = table([{"prompt_id": "a", "prompt": "p", "responses": ["x", "y", "x", "x", "z"],
                   "finished": [True, True, True, False, True]}])
    scores = table([{"prompt_id": "a", "rewards": [0.2, 0.9, 0.8, 0.5, 0.1]}])
    lists, counts = build_lists(AllCandidates(dedup=True), gens, scores)
    # "x" finished twice -> the first (reward 0.2); "x" unfinished is another sequence and stays.
    assert lists[0]["responses"] == ["y", "x", "x", "z"]
    assert lists[0]["finished"] == [True, False, True, True]
    assert lists[0]["rewards"] == [0.9, 0.5, 0.2, 0.1]
    assert counts["duplicates_removed"] == 1
    assert build_lists(AllCandidates(), gens, scores)[0][0]["responses"] == ["y", "x", "x", "x", "z"]


def test_dedup_leaving_too_few_distinct_candidates_drops_the_list_not_the_run():
    gens = table([
        {"prompt_id": "a", "prompt": "p", "responses": ["x", "x", "x", "y"], "finished": [True] * 4},
        {"prompt_id": "b", "prompt": "q", "responses": ["s", "t", "u", "v"], "finished": [True] * 4},
    ])
    scores = table([{"prompt_id": "a", "rewards": [1, 1, 1, 0]}, {"prompt_id": "b", "rewards": [0, 1, 2, 3]}])
    lists, counts = build_lists(TopBottom(1, 2, dedup=True), gens, scores)
    assert [row["prompt_id"] for row in lists] == ["b"] and counts["too_few_distinct"] == 1
    with pytest.raises(ArtifactError, match="gen.jsonl:1: prompt_id 'a'"):  # without dedup: still a clear error
        build_lists(TopBottom(1, 4), gens, scores)


# -- random --------------------------------------------------------------------------------------

def _many(n_prompts: int, k: int = 8):
    gens = table([{"prompt_id": f"p{i}", "prompt": "q", "responses": [f"r{j}" for j in range(k)],
                   "finished": [True] * k} for i in range(n_prompts)])
    scores = table([{"prompt_id": f"p{i}", "rewards": [float(j % 5) for j in range(k)]} for i in range(n_prompts)])
    return gens, scores


def test_random_is_reproducible_per_seed_and_round_and_differs_across_prompts():
    gens, scores = _many(12)
    sel = RandomK(k=3)
    a, _ = build_lists(sel, gens, scores, 1, seed=7)
    assert a == build_lists(sel, gens, scores, 1, seed=7)[0]
    # Per prompt, not per position: reversing the file gives each prompt the same list.
    rev_g, rev_s = table(gens.rows[::-1]), table(scores.rows[::-1])
    assert {r["prompt_id"]: r for r in build_lists(sel, rev_g, rev_s, 1, seed=7)[0]} == {r["prompt_id"]: r for r in a}
    picks = [tuple(sorted(row["responses"])) for row in a]
    assert len(set(picks)) > 1  # different prompts draw different candidates
    assert a != build_lists(sel, gens, scores, 1, seed=8)[0]
    assert a != build_lists(sel, gens, scores, 2, seed=7)[0]
    for row in a:  # ranked best first, stable on ties
        assert row["rewards"] == sorted(row["rewards"], reverse=True) and len(row["responses"]) == 3
        idx = [int(y[1:]) for y in row["responses"]]
        assert all(idx[i] < idx[i + 1] for i in range(2) if row["rewards"][i] == row["rewards"][i + 1])


def test_random_refuses_unseeded_or_short_lists():
    with pytest.raises(ValueError, match="seeded rng"):
        RandomK(k=2)([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="2 candidates cannot give 3"):
        RandomK(k=3)([0.1, 0.2], random.Random(0))
    with pytest.raises(ValueError, match="exceeds the 8 candidates per prompt"):
        RandomK(k=9).validate(8)


# -- pools ---------------------------------------------------------------------------------------

def round_tables(r: int, rows: dict[str, list[tuple[str, float]]], model: str = "rm"):
    gens = Table(f"round_{r}/generations.jsonl", [
        {"prompt_id": pid, "prompt": f"prompt {pid}", "responses": [y for y, _ in c], "finished": [True] * len(c)}
        for pid, c in rows.items()], list(range(1, len(rows) + 1)))
    scores = Table(f"round_{r}/scores.jsonl", [
        {"prompt_id": pid, "rewards": [s for _, s in c], "reward_model": model} for pid, c in rows.items()],
        list(range(1, len(rows) + 1)))
    return gens, scores


def test_pool_rounds_per_option():
    assert [AllCandidates(pool=p).pool_rounds(3) for p in ("current", "current+prev", "all")] == [[], [2], [2, 1]]
    assert AllCandidates(pool="all").pool_rounds(1) == []
    with pytest.raises(ValueError, match="select.pool='everything'"):
        AllCandidates(pool="everything")


def test_pool_merges_earlier_rounds_of_the_same_prompt_only():
    r1 = round_tables(1, {"a": [("a1", 0.9), ("a1b", 0.1)], "z": [("z1", 1.0), ("z2", 0.0)]})
    r2 = round_tables(2, {"a": [("a2", 0.5), ("a2b", 0.4)], "b": [("b2", 0.3), ("b2b", 0.2)]})
    r3 = round_tables(3, {"a": [("a3", 0.5), ("a3b", 0.0)], "b": [("b3", 0.6), ("b3b", 0.1)]})
    earlier = [(2, *r2), (1, *r1)]
    lists, counts = build_lists(AllCandidates(pool="all"), *r3, 3, earlier=earlier)
    a, b = lists
    # Ties (a3 and a2, 0.5) keep pool order: this round's first, then newer rounds.
    assert a["responses"] == ["a1", "a3", "a2", "a2b", "a1b", "a3b"]
    assert a["source_rounds"] == [1, 3, 2, 2, 1, 3]
    assert a["rewards"] == [0.9, 0.5, 0.5, 0.4, 0.1, 0.0]  # not re-scored: the reward is not list-relative
    assert b["responses"] == ["b3", "b2", "b2b", "b3b"] and b["source_rounds"] == [3, 2, 2, 3]
    assert counts["pooled_candidates"] == 6 and counts["selected_from_earlier"] == 6  # "z" is not in round 3
    prev, _ = build_lists(TopBottom(1, 1, pool="current+prev"), *r3, 3, earlier=earlier[:1])
    assert prev[0]["responses"] == ["a3", "a3b"] and prev[1]["responses"] == ["b3", "b3b"]


def test_empty_pool_is_this_rounds_list():
    r2 = round_tables(2, {"a": [("a2", 0.5), ("a2b", 0.4)]})
    r1 = round_tables(1, {"other": [("o", 1.0), ("o2", 0.0)]})
    pooled, counts = build_lists(AllCandidates(pool="all"), *r2, 2, earlier=[(1, *r1)])
    assert pooled[0]["responses"] == ["a2", "a2b"] and pooled[0]["source_rounds"] == [2, 2]
    assert counts["pooled_candidates"] == 0


def test_pool_dedups_across_rounds_keeping_this_rounds_candidate():
    r1 = round_tables(1, {"a": [("same", 0.7), ("old", 0.1)]})
    r2 = round_tables(2, {"a": [("new", 0.2), ("same", 0.7)]})
    lists, counts = build_lists(AllCandidates(pool="all", dedup=True), *r2, 2, earlier=[(1, *r1)])
    assert lists[0]["responses"] == ["same", "new", "old"] and lists[0]["source_rounds"] == [2, 2, 1]
    assert counts["duplicates_removed"] == 1


def test_pool_refuses_rewards_of_another_reward_model():
    r1 = round_tables(1, {"a": [("x", 0.7), ("y", 0.1)]}, model="rm-old")
    r2 = round_tables(2, {"a": [("z", 0.2), ("w", 0.5)]})
    with pytest.raises(ArtifactError, match="round_1/generations.jsonl:1: .*'rm-old'"):
        build_lists(AllCandidates(pool="all"), *r2, 2, earlier=[(1, *r1)])


class LengthRelative:
    """A list-relative reward: len(response) minus the mean length over its own list."""

    name = "length-relative"
    list_relative = True

    def __init__(self):
        self.calls = []

    def score(self, prompts, responses, finished):
        self.calls.append([list(rs) for rs in responses])
        return [[len(y) - sum(map(len, rs)) / len(rs) for y in rs] for rs in responses]


def test_list_relative_reward_rescores_the_pooled_list_together():
    reward = LengthRelative()
    # Round 1's list: "aaaa" (4) vs "a" (1) -> +1.5 / -1.5. Round 2's: "bb" (2), "bbb" (3) -> -0.5 / +0.5.
    r1 = round_tables(1, {"p": [("aaaa", 1.5), ("a", -1.5)]})
    r2 = round_tables(2, {"p": [("bb", -0.5), ("bbb", 0.5)]})
    lists, counts = build_lists(AllCandidates(pool="all"), *r2, 2, earlier=[(1, *r1)], reward=reward)
    # Scored together (mean length 2.5): aaaa +1.5, bbb +0.5, bb -0.5, a -1.5; one call for the whole pool.
    assert reward.calls == [[["bb", "bbb", "aaaa", "a"]]]
    assert lists[0]["responses"] == ["aaaa", "bbb", "bb", "a"]
    assert lists[0]["rewards"] == [1.5, 0.5, -0.5, -1.5]
    assert counts["rescored_lists"] == 1


def test_list_relative_rescoring_changes_the_ranking_stale_scores_would_give():
    reward = LengthRelative()
    # Stored scores say "cc" (+0.5 in round 1) beats "dddd" (+0.0 in round 2, a list of equal lengths);
    # scored together "dddd" is longer than the pool's mean and wins.
    r1 = round_tables(1, {"p": [("cc", 0.5), ("c", -0.5)]})
    r2 = round_tables(2, {"p": [("dddd", 0.0), ("eeee", 0.0)]})
    lists, _ = build_lists(TopBottom(1, 1, pool="current+prev"), *r2, 2, earlier=[(1, *r1)], reward=reward)
    assert lists[0]["responses"] == ["dddd", "c"]
    assert lists[0]["rewards"] == [1.25, -1.75]


def test_list_relative_reward_is_not_called_when_nothing_was_pooled_or_removed():
    reward = LengthRelative()
    r2 = round_tables(2, {"p": [("bb", -0.5), ("bbb", 0.5)]})
    lists, counts = build_lists(AllCandidates(pool="all", dedup=True), *r2, 2, reward=reward)
    assert reward.calls == [] and lists[0]["rewards"] == [0.5, -0.5] and counts["rescored_lists"] == 0
    dup = round_tables(2, {"p": [("bb", 0.0), ("bb", 0.0), ("b", 0.0)]})
    lists, _ = build_lists(AllCandidates(dedup=True), *dup, 2, reward=reward)
    assert reward.calls == [[["bb", "b"]]] and lists[0]["rewards"] == [0.5, -0.5]

"""List construction on hand-built lists: top/bottom, ties, too few candidates, dropped ties."""

from __future__ import annotations

import pytest

from larpo.artifacts import ArtifactError
from larpo.schemas import Table
from larpo.select import AllCandidates, TopBottom, build_lists, rank_by_reward


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
    lists = build_lists(TopBottom(1, 2), gens, scores)
    assert lists == [{"prompt_id": "a", "prompt": "p", "responses": ["x", "v", "w"], "finished": [0, 1, 1],
                      "rewards": [1, 0.1, 0]}]
    kept = build_lists(TopBottom(1, 2, drop_ties=False), gens, scores)
    assert [row["prompt_id"] for row in kept] == ["a", "b"]
    short = table([{"prompt_id": "a", "prompt": "p", "responses": ["w", "x"], "finished": [1, 1]}])
    with pytest.raises(ArtifactError, match="gen.jsonl:1: prompt_id 'a': 2 candidates cannot give"):
        build_lists(TopBottom(1, 2), short, table([{"prompt_id": "a", "rewards": [0, 1]}]))

"""Memorization pools end to end (paper Table 4): the smoke pipeline with prompts that come back.

``task.n_train=16 sampling.prompts_per_round=16``: every round takes the same 16 prompts, so round
2's pools hold round 1's candidates too. The expected lists are rebuilt here from the run's own
generations.jsonl and scores.jsonl, independently of larpo.select.
"""

from __future__ import annotations

from larpo.artifacts import RunDir, read_jsonl
from larpo.checkpoints import load_model
from larpo.model import load_tokenizer
from larpo.pipeline import run
from tests.helpers.runs import check_reference

REPEAT = ("task.n_train=16", "sampling.prompts_per_round=16", "rounds=2", "eval.pass_at_max=0", "threads=1")


class LengthRelative:
    """A list-relative reward for the test: len(response) minus the mean length over its own list."""

    list_relative = True
    name = "length-relative"

    def __init__(self, task=None) -> None:
        self.task = task

    def score(self, prompts, responses, finished) -> list[list[float]]:
        return [[len(y) - sum(map(len, rs)) / len(rs) for y in rs] for rs in responses]


def pooled(rd: RunDir, rounds: list[int]) -> dict[str, list[tuple[str, bool, float, int]]]:
    """prompt_id -> [(response, finished, stored reward, round)], rounds in the given order."""
    out: dict[str, list] = {}
    for q in rounds:
        rewards = {s["prompt_id"]: s["rewards"] for s in read_jsonl(rd.scores(q))}
        for g in read_jsonl(rd.generations(q)):
            out.setdefault(g["prompt_id"], []).extend(
                zip(g["responses"], g["finished"], rewards[g["prompt_id"]], [q] * len(g["responses"])))
    return out


def top_bottom(cands: list, n_top: int, n_bottom: int) -> list:
    ranked = sorted(cands, key=lambda c: -c[2])  # stable: ties keep pool order (this round's first)
    return ranked[:n_top] + ranked[len(ranked) - n_bottom :]


def as_list(row: dict) -> list:
    return list(zip(row["responses"], row["finished"], row["rewards"], row["source_rounds"]))


def test_pool_all_draws_round2_lists_from_round1_candidates_too(smoke_cfg):
    cfg = smoke_cfg("select.pool=all", *REPEAT)
    run(cfg)
    rd = RunDir(cfg.run_dir)
    ids = [g["prompt_id"] for g in read_jsonl(rd.generations(1))]
    assert [g["prompt_id"] for g in read_jsonl(rd.generations(2))] == ids  # the prompts came back
    n_top, n_bottom = cfg.select.n_top, cfg.select.n_bottom
    for r, rounds in ((1, [1]), (2, [2, 1])):
        pools = pooled(rd, rounds)
        lists = {row["prompt_id"]: row for row in read_jsonl(rd.lists(r))}
        assert set(lists) == set(ids)  # smoke keeps tied lists
        for pid, cands in pools.items():
            assert len(cands) == cfg.sampling.n_samples * len(rounds)
            assert as_list(lists[pid]) == top_bottom(cands, n_top, n_bottom), (r, pid)
    from_round1 = sum(row["source_rounds"].count(1) for row in read_jsonl(rd.lists(2)))
    assert from_round1 > 0
    check_reference(cfg, rd, 2, load_model, load_tokenizer)  # pooled candidates get the behaviour policy's


def test_list_relative_reward_rescores_the_pool_in_select(smoke_cfg):
    cfg = smoke_cfg("select.pool=current+prev", "select.dedup=true", "select=all",
                    f"reward._target_={__name__}.LengthRelative", *REPEAT)
    run(cfg)
    rd = RunDir(cfg.run_dir)
    reward = LengthRelative()
    for g, s in zip(read_jsonl(rd.generations(2)), read_jsonl(rd.scores(2))):  # scores.jsonl: round 2's own list
        assert s["rewards"] == reward.score([g["prompt"]], [g["responses"]], [g["finished"]])[0]
    lists = {row["prompt_id"]: row for row in read_jsonl(rd.lists(2))}
    n_rescored = 0
    for pid, cands in pooled(rd, [2, 1]).items():
        seen, pool = set(), []
        for c in cands:  # dedup on (text, finished), first kept
            if c[:2] not in seen:
                seen.add(c[:2])
                pool.append(c)
        together = reward.score([""], [[c[0] for c in pool]], [[c[1] for c in pool]])[0]
        pool = [(y, f, x, q) for (y, f, _, q), x in zip(pool, together)]
        expect = sorted(pool, key=lambda c: -c[2])
        if cfg.select.drop_ties and len({c[2] for c in expect}) < 2:
            assert pid not in lists
            continue
        assert as_list(lists[pid]) == expect, pid
        n_rescored += any(c[3] == 1 for c in expect)
    assert n_rescored > 0

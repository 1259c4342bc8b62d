"""The selection library of the select stage (larpo/stages/select.py): pool, de-duplicate, rank each prompt's
candidates and pick the training list.

Selectors are chosen in ``conf/select/`` by ``_target_``. A selector maps one prompt's rewards
(and a seeded ``random.Random``) to the indices of the candidates it keeps, best first, stable
on ties. Every selector also carries the list-building options of its yaml:

- ``pool`` (paper Table 4, "memorization"): ``current`` | ``current+prev`` | ``all``. Candidates
  that earlier rounds generated *for the same prompt* join this round's before ranking (this
  round's first, then round r-1, r-2, ...: a tie keeps the freshest candidate). Each round takes
  the next slice of the train prompts, so a pool only grows when a prompt comes back
  (``task.n_train <= sampling.prompts_per_round``, or the slices wrap around); otherwise every
  pool is just this round's list, which is correct, not a bug.
- ``dedup``: identical responses (same text *and* finished flag: with EOS or without they are
  different sequences to the policy) collapse to their first occurrence before ranking.
- ``min_gap``: a list whose best - worst reward is below it is dropped (``drop_ties`` drops a gap
  of exactly 0). Both are counted and logged.

Rewards of a list-relative reward (``reward.list_relative``, PairRM) mean something only within
the list they were computed on. A pool that is not exactly that list (candidates of several
rounds, or duplicates removed) is therefore scored again as one list; ``lists.jsonl`` carries the
rewards used for the selection, while ``scores.jsonl`` keeps round r's own list's scores.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from larpo.errors import ArtifactError
from larpo.schemas import Table
from larpo.seeds import derive_seed

logger = logging.getLogger(__name__)

# select.pool -> the earlier rounds whose candidates join round r's, newest first.
POOLS: dict[str, Callable[[int], list[int]]] = {
    "current": lambda r: [],
    "current+prev": lambda r: [r - 1] if r > 1 else [],
    "all": lambda r: list(range(r - 1, 0, -1)),
}


# What a selector chooses from: every candidate of a generations row (larpo.generation.plan.SamplingPlan.candidates).
CANDIDATES = "candidates per prompt (sampling.n_samples + extra_negatives + the ladder's negatives_n)"


def rank_by_reward(rewards: Sequence[float]) -> list[int]:
    """Indices sorted by reward, best first; ties keep their original order (stable)."""
    return sorted(range(len(rewards)), key=lambda i: -rewards[i])


class Selector:
    """Base: keeps every candidate, best first.

    ``drop_ties`` skips lists with one reward value: they carry no preference, so every ranking
    loss gives them zero loss and gradient; dropping them saves their forward passes.
    ``min_gap``, ``dedup`` and ``pool``: see the module docstring.
    """

    def __init__(self, drop_ties: bool = True, min_gap: float = 0.0, dedup: bool = False,
                 pool: str = "current") -> None:
        if pool not in POOLS:
            raise ValueError(f"select.pool={pool!r} is not one of {sorted(POOLS)}")
        if not (math.isfinite(min_gap) and min_gap >= 0):
            raise ValueError(f"select.min_gap={min_gap!r} must be a finite number >= 0")
        self.drop_ties, self.min_gap, self.dedup, self.pool = drop_ties, float(min_gap), dedup, pool

    @property
    def min_candidates(self) -> int:
        """Candidates a list must have for this selector (fewer is an error, or a drop after dedup)."""
        return 1

    def pool_rounds(self, r: int) -> list[int]:
        """The earlier rounds whose candidates join round ``r``'s, newest first."""
        return POOLS[self.pool](r)

    def list_size(self, n_candidates: int) -> int:
        """The length of a selected list, from ``n_candidates`` candidates per prompt (the sampling plan's)."""
        return n_candidates

    def validate(self, n_candidates: int) -> None:
        """Fail at start-up, not mid-run, when ``n_candidates`` candidates per prompt cannot feed this selector."""

    def __call__(self, rewards: Sequence[float], rng: random.Random | None = None) -> list[int]:
        return rank_by_reward(rewards)


class AllCandidates(Selector):
    """``select=all``: the whole list (all the prompt's candidates, or the whole pool)."""


class TopBottom(Selector):
    """``select=top_bottom``: the ``n_top`` best and ``n_bottom`` worst candidates.

    The paper's lists: contrastive top-1 vs bottom-3, LambdaRank/ListMLE top-2 + bottom-2,
    pairwise top-1 vs bottom-1 (of 10 samples).
    """

    def __init__(self, n_top: int = 2, n_bottom: int = 2, **options) -> None:
        super().__init__(**options)
        if n_top < 1 or n_bottom < 1:
            raise ValueError(f"select.n_top ({n_top}) and select.n_bottom ({n_bottom}) must both be >= 1")
        self.n_top, self.n_bottom = n_top, n_bottom

    @property
    def min_candidates(self) -> int:
        return self.n_top + self.n_bottom

    def list_size(self, n_candidates: int) -> int:
        return self.n_top + self.n_bottom

    def validate(self, n_candidates: int) -> None:
        if self.n_top + self.n_bottom > n_candidates:
            raise ValueError(
                f"select.n_top + select.n_bottom = {self.n_top} + {self.n_bottom} = "
                f"{self.n_top + self.n_bottom} exceeds the {n_candidates} {CANDIDATES}: "
                "lower them or sample more candidates"
            )

    def __call__(self, rewards: Sequence[float], rng: random.Random | None = None) -> list[int]:
        if len(rewards) < self.n_top + self.n_bottom:
            # Slicing would hand the same candidate to both ends of the list.
            raise ValueError(f"{len(rewards)} candidates cannot give the top {self.n_top} and the bottom "
                             f"{self.n_bottom} (select.n_top + select.n_bottom)")
        order = rank_by_reward(rewards)
        return order[: self.n_top] + order[len(order) - self.n_bottom :]


class RandomK(Selector):
    """``select=random``: ``k`` candidates drawn uniformly without replacement, then ranked.

    The draw uses the ``rng`` that :func:`build_lists` seeds per prompt from (run seed, round,
    "select", prompt_id): reproducible on a re-run, independent of file order, different per prompt.
    """

    def __init__(self, k: int = 4, **options) -> None:
        super().__init__(**options)
        if k < 1:
            raise ValueError(f"select.k ({k}) must be >= 1")
        self.k = k

    @property
    def min_candidates(self) -> int:
        return self.k

    def list_size(self, n_candidates: int) -> int:
        return self.k

    def validate(self, n_candidates: int) -> None:
        if self.k > n_candidates:
            raise ValueError(f"select.k = {self.k} exceeds the {n_candidates} {CANDIDATES}: "
                             "lower it or sample more candidates")

    def __call__(self, rewards: Sequence[float], rng: random.Random | None = None) -> list[int]:
        if rng is None:  # an unseeded draw would make re-runs differ
            raise ValueError("select=random needs the seeded rng that build_lists passes")
        if len(rewards) < self.k:
            raise ValueError(f"{len(rewards)} candidates cannot give {self.k} (select.k)")
        chosen = sorted(rng.sample(range(len(rewards)), self.k))  # ascending: ties keep pool order
        return sorted(chosen, key=lambda i: -rewards[i])


@dataclass
class Pool:
    """One prompt's candidates before selection, with the round each came from."""

    prompt_id: str
    prompt: str
    responses: list[str]
    finished: list[bool]
    rewards: list[float]
    rounds: list[int]
    where: str  # file:line of round r's generations row, for error messages
    reward_model: str | None = None
    as_scored: bool = True  # the rewards were computed on exactly this list
    removed: int = 0  # duplicates removed

    def take(self, keep: Sequence[int]) -> None:
        for name in ("responses", "finished", "rewards", "rounds"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])


def join(generations: Table, scores: Table, round_: int) -> list[Pool]:
    """One pool per generations row (in its order): responses joined with rewards by prompt_id."""
    pos = scores.index()
    pools = []
    for i, gen in enumerate(generations):
        score = scores.rows[pos[gen["prompt_id"]]]
        n = len(gen["responses"])
        pools.append(Pool(gen["prompt_id"], gen["prompt"], list(gen["responses"]), list(gen["finished"]),
                          list(score["rewards"]), [round_] * n, generations.where(i), score.get("reward_model")))
    return pools


def merge(pools: Sequence[Pool], earlier: Sequence[Pool], round_: int) -> int:
    """Append ``earlier``'s candidates (round ``round_``) to the pools of the same prompts; returns how many."""
    by_id = {p.prompt_id: p for p in pools}
    added = 0
    for old in earlier:
        pool = by_id.get(old.prompt_id)
        if pool is None:  # a prompt of that round that this round does not have
            continue
        if old.reward_model != pool.reward_model:
            raise ArtifactError(f"{old.where}: prompt_id {old.prompt_id!r}: round {round_} was scored by "
                                f"{old.reward_model!r}, this round by {pool.reward_model!r}; rewards of two reward "
                                "models cannot be pooled")
        pool.responses += old.responses
        pool.finished += old.finished
        pool.rewards += old.rewards
        pool.rounds += old.rounds
        pool.as_scored = False
        added += len(old.responses)
    return added


def dedup(pool: Pool) -> int:
    """Keep the first of identical (response, finished) candidates; returns how many were removed."""
    seen: set[tuple[str, bool]] = set()
    keep = []
    for i, key in enumerate(zip(pool.responses, pool.finished)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    pool.removed = len(pool.responses) - len(keep)
    if pool.removed:
        pool.take(keep)
        pool.as_scored = False
    return pool.removed


def rescore(reward, pools: Sequence[Pool]) -> int:
    """Score again, each as one list, the pools whose list-relative rewards are stale; returns how many.

    One ``score_rows`` call for all of them, so a reward model is loaded once. A reward whose
    scores do not depend on the list (verifier, sequence classifiers) is never called.
    """
    stale = [p for p in pools if not p.as_scored]
    if not stale or not getattr(reward, "list_relative", False):
        return 0
    from larpo.rewards.scoring import score_rows

    rows = [{"prompt_id": p.prompt_id, "prompt": p.prompt, "responses": p.responses, "finished": p.finished}
            for p in stale]
    for pool, row in zip(stale, score_rows(reward, rows)):
        pool.rewards, pool.as_scored = row["rewards"], True
    return len(stale)


def choose(selector: Selector, pools: Sequence[Pool], seed: int, round_: int) -> tuple[list[dict], Counter]:
    """Apply the selector to every pool and drop lists without (enough of) a preference."""
    lists, counts = [], Counter()
    for p in pools:
        if p.removed and len(p.responses) < max(selector.min_candidates, 2):
            counts["too_few_distinct"] += 1  # de-duplication, not a bad file: drop, count, go on
            continue
        rng = random.Random(derive_seed(seed, round_, "select", p.prompt_id))
        try:
            keep = selector(p.rewards, rng)
        except ValueError as e:
            raise ArtifactError(f"{p.where}: prompt_id {p.prompt_id!r}: {e}") from None
        rewards = [p.rewards[i] for i in keep]
        gap = max(rewards) - min(rewards)
        if selector.drop_ties and gap == 0:
            counts["tied"] += 1
            continue
        if gap < selector.min_gap:
            counts["below_min_gap"] += 1
            continue
        row = {"prompt_id": p.prompt_id, "prompt": p.prompt, "responses": [p.responses[i] for i in keep],
               "finished": [p.finished[i] for i in keep], "rewards": rewards}
        if selector.pool != "current":  # which round each candidate came from (Table 4 analysis)
            row["source_rounds"] = [p.rounds[i] for i in keep]
        lists.append(row)
    return lists, counts


def build_lists(
    selector: Selector,
    generations: Table,
    scores: Table,
    round_: int = 0,
    *,
    earlier: Sequence[tuple[int, Table, Table]] = (),
    reward=None,
    seed: int = 0,
) -> tuple[list[dict], dict[str, int]]:
    """Round ``round_``'s training lists (no log-probs yet) and the counts of what was pooled/dropped.

    ``generations``/``scores``: round ``round_``'s validated tables; ``earlier``: (round, generations,
    scores) of the rounds ``selector.pool_rounds(round_)`` names; ``reward``: re-scores stale pools
    when it is list-relative; ``seed``: the run seed (with the round and prompt id it seeds ``random``).
    """
    pools = join(generations, scores, round_)
    counts: Counter = Counter()
    for q, gens_q, scores_q in earlier:
        counts["pooled_candidates"] += merge(pools, join(gens_q, scores_q, q), q)
    if selector.dedup:
        counts["duplicates_removed"] = sum(dedup(p) for p in pools)
    counts["rescored_lists"] = rescore(reward, pools)
    lists, dropped = choose(selector, pools, seed, round_)
    counts.update(dropped)
    counts["lists"] = len(lists)
    if selector.pool != "current":
        counts["selected_from_earlier"] = sum(q != round_ for row in lists for q in row["source_rounds"])
    logger.info("select round %d: %d lists of %d prompts; %s", round_, len(lists), len(pools),
                ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "lists") or "nothing dropped")
    return lists, dict(counts)

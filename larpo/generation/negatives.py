"""The paper's negative difficulty ladder (Fig. 3a; docs/design.md, "Sampling plan").

Each level appends ``negatives_n`` candidates per prompt (kind ``negative:<level>``):

- ``easiest``: a response to a random *other* prompt of the round. It is sampled here, from the
  same policy at the round's temperature, with that other prompt as input: the same distribution
  as that prompt's own samples, but drawn inside this batch so the batch stays self-contained
  (its journal entry never depends on another batch's samples, which resume would need).
- ``easy``: a response to a *related* prompt: a random other prompt of the round from the same
  ``Example.family``. When families say nothing (the whole round is one family) or the family
  has no other prompt in the round, the nearest prompts by character-trigram Jaccard similarity
  of the prompt texts (ties: round order) -- cheap, and needs no model.
- ``hard`` / ``hardest``: an incorrect response (``task.is_correct`` false) to the prompt itself,
  sampled at 1.2 / 0.3 (``negatives_temperature`` overrides). The search draws
  ``negatives_per_try`` responses per prompt still short of negatives, up to ``negatives_tries``
  times. A prompt the policy always answers correctly falls back to its first correct draws, so
  every row keeps the same candidate count; ``sampling.negatives_found`` marks those (False), the
  stage logs how many, and the reward ranks them like any candidate.

The other prompt of easiest/easy is recorded per candidate in ``sampling.negative_sources``.
All draws are seeded from (run seed, round, batch, level[, attempt]) by the caller's ``seed``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from larpo.generation.plan import Block, SamplingPlan
from larpo.generation.sampling import sample
from larpo.seeds import derive_seed


def trigrams(text: str) -> set[str]:
    """Character trigrams of the lower-cased text (padded so short texts have some)."""
    t = f"  {text.lower()} "
    return {t[i : i + 3] for i in range(len(t) - 2)}


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of character trigrams, in [0, 1]."""
    x, y = trigrams(a), trigrams(b)
    return len(x & y) / len(x | y) if x | y else 0.0


def _others(i: int, examples: Sequence) -> list[int]:
    """Indices of the round's other prompts, preferring other *texts* (a repeated prompt is no negative)."""
    different = [j for j, ex in enumerate(examples) if ex.prompt != examples[i].prompt]
    return different or [j for j in range(len(examples)) if j != i]


def other_prompts(i: int, examples: Sequence, n: int, rng: random.Random) -> list[int]:
    """easiest: ``n`` random other prompts of the round for prompt ``i`` (with replacement if few)."""
    pool = _others(i, examples)
    if not pool:
        raise ValueError("sampling.negatives=easiest/easy needs at least two prompts in the round")
    return rng.sample(pool, n) if len(pool) >= n else [rng.choice(pool) for _ in range(n)]


def related_prompts(i: int, examples: Sequence, n: int, rng: random.Random) -> list[int]:
    """easy: ``n`` prompts related to prompt ``i``: same family, else the most similar texts."""
    pool = _others(i, examples)
    if not pool:
        raise ValueError("sampling.negatives=easiest/easy needs at least two prompts in the round")
    families = {ex.family for ex in examples}
    same = [j for j in pool if examples[j].family == examples[i].family]
    if len(families) > 1 and same:
        return rng.sample(same, n) if len(same) >= n else [rng.choice(same) for _ in range(n)]
    nearest = sorted(pool, key=lambda j: (-similarity(examples[i].prompt, examples[j].prompt), j))
    return [nearest[k % len(nearest)] for k in range(n)]


def search_incorrect(model, tokenizer, prompts: Sequence[str], is_correct: Callable[..., bool], n: int,
                     temperature: float, plan: SamplingPlan, seed: int) -> Block:
    """``n`` incorrect responses per prompt, drawn in up to ``plan.negatives_tries`` attempts.

    Attempt a samples ``plan.negatives_per_try`` responses for the prompts still short, seeded
    ``derive_seed(seed, a)``. Missing negatives are filled with the prompt's first correct draws
    (``found`` False); ``negatives_per_try >= n`` (checked at start-up) makes those enough.
    """
    got: list[list[tuple[str, bool]]] = [[] for _ in prompts]
    spare: list[list[tuple[str, bool]]] = [[] for _ in prompts]
    for a in range(plan.negatives_tries):
        pending = [i for i in range(len(prompts)) if len(got[i]) < n]
        if not pending:
            break
        rs, fs = sample(model, tokenizer, [prompts[i] for i in pending], n=plan.negatives_per_try,
                        temperature=temperature, top_p=plan.top_p, max_new_tokens=plan.max_new_tokens,
                        seed=derive_seed(seed, a))
        for i, texts, fins in zip(pending, rs, fs):
            for text, fin in zip(texts, fins):
                wrong = not is_correct(prompts[i], text, fin)
                (got[i] if wrong and len(got[i]) < n else spare[i]).append((text, fin))
    picked = [g + s[: n - len(g)] for g, s in zip(got, spare)]
    return Block(kind="", temperature=temperature,
                 responses=[[t for t, _ in p] for p in picked], finished=[[f for _, f in p] for p in picked],
                 found=[[k < len(g) for k in range(n)] for g in got])


def ladder_block(model, tokenizer, batch: Sequence, start: int, examples: Sequence, task, plan: SamplingPlan,
                 r: int, seed: int) -> Block:
    """The ladder's candidates for ``batch`` (``examples[start : start + len(batch)]`` of the round)."""
    level, n, temperature = plan.negatives, plan.negatives_n, plan.ladder_temperature(r)
    if level in ("hard", "hardest"):
        block = search_incorrect(model, tokenizer, [ex.prompt for ex in batch], task.is_correct, n,
                                 temperature, plan, derive_seed(seed, "search"))
    else:
        rng = random.Random(derive_seed(seed, "pick"))
        pick = other_prompts if level == "easiest" else related_prompts
        sources = [pick(start + i, examples, n, rng) for i in range(len(batch))]
        flat = [examples[j].prompt for js in sources for j in js]
        rs, fs = sample(model, tokenizer, flat, n=1, temperature=temperature, top_p=plan.top_p,
                        max_new_tokens=plan.max_new_tokens, seed=derive_seed(seed, "sample"))
        block = Block(kind="", temperature=temperature,
                      responses=[[rs[i * n + k][0] for k in range(n)] for i in range(len(batch))],
                      finished=[[fs[i * n + k][0] for k in range(n)] for i in range(len(batch))],
                      sources=[[examples[j].prompt_id for j in js] for js in sources])
    block.kind = f"negative:{level}"
    return block

"""The task's held-out metrics of a round's policy (the evaluate stage's ``eval=task`` part):

- greedy accuracy with its standard error, per family, and the mean reward;
- Pass@N for N = 1, 2, 4, ... (the policy as a retriever: does any of N samples pass), with
  the unbiased estimator 1 − C(n−c, N)/C(n, N) from n = ``pass_at_max`` samples per prompt;
- win rate against the round-0 policy with the reward as judge (ties count ½);
- the share of greedy answers that finished (EOS) and their mean length in tokens: a gain that
  comes only from shorter answers shows there.

"Correct" is the task's to say (``task.is_correct(prompt, response, finished)``), not a
reward threshold: a reward model's scores have no "correct" value. A task without
``is_correct`` (e.g. UltraFeedback prompts) gets no accuracy and no Pass@N; the reward's
mean and the win rate against round 0 are always there.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from larpo.generation.sampling import sample
from larpo.model import response_ids
from larpo.seeds import derive_seed

logger = logging.getLogger(__name__)

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples of which c pass (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def judge_correct(task, prompt: str, response: str, finished: bool) -> bool | None:
    """The task's verdict, or None when the task has no notion of correct."""
    check = getattr(task, "is_correct", None)
    return None if check is None else bool(check(prompt, response, finished))


def _shared_prompts(values: dict[str, float], baseline: dict[str, float], what: str) -> list[str]:
    common = sorted(set(values) & set(baseline))
    if not common:
        raise ValueError(f"{what}: no prompt is shared with the round-0 outputs")
    return common


def win_rate(rewards: dict[str, float], baseline: dict[str, float]) -> tuple[float, float]:
    """Share of common prompts where ``rewards`` beats ``baseline`` (tie = ½), with its SE."""
    common = _shared_prompts(rewards, baseline, "win rate")
    wins = [1.0 if rewards[p] > baseline[p] else 0.5 if rewards[p] == baseline[p] else 0.0 for p in common]
    return mean_se(wins)


def paired_gain(values: dict[str, float], baseline: dict[str, float]) -> tuple[float, float]:
    """Mean of ``values[p] - baseline[p]`` over common prompts, with its *paired* SE.

    Both rounds answer the same held-out prompts, so the SE of the per-prompt difference is
    the right yardstick for "did this round beat round 0" (smaller than combining the two
    rounds' SEs as if independent, because prompts that are easy stay easy).
    """
    common = _shared_prompts(values, baseline, "paired gain")
    return mean_se([values[p] - baseline[p] for p in common])


def head_to_head(reward, prompts: dict[str, str], rows: Sequence[dict], baseline: Sequence[dict]
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """Scores of each prompt's two answers (this round's, round 0's) ranked *together* in one list.

    A list-relative reward (PairRM) scores a candidate only against the others in its list; a
    lone answer always gets the same score, so the win rate must put both answers in one list.
    """
    base = {r["prompt_id"]: r for r in baseline}
    common = [r for r in rows if r["prompt_id"] in base]
    scores = reward.score([prompts[r["prompt_id"]] for r in common],
                          [[r["response"], base[r["prompt_id"]]["response"]] for r in common],
                          [[r["finished"], base[r["prompt_id"]]["finished"]] for r in common])
    return ({r["prompt_id"]: s[0] for r, s in zip(common, scores)},
            {r["prompt_id"]: s[1] for r, s in zip(common, scores)})


def against_baseline(rows: Sequence[dict], baseline: Sequence[dict], pair_scores=None) -> dict[str, float]:
    """Win rate (the reward as judge) and paired accuracy gain of greedy outputs over round 0's.

    ``rows``/``baseline``: eval_outputs rows; the gain needs their ``correct`` field.
    ``pair_scores``: (ours, round 0's) from :func:`head_to_head`, for list-relative rewards.
    """
    ours, theirs = pair_scores or ({r["prompt_id"]: r["reward"] for r in rows},
                                   {r["prompt_id"]: r["reward"] for r in baseline})
    out = {}
    out["win_rate"], out["win_rate_se"] = win_rate(ours, theirs)
    if all("correct" in r for r in (*rows, *baseline)):
        out["accuracy_gain"], out["accuracy_gain_se"] = paired_gain(
            {r["prompt_id"]: float(r["correct"]) for r in rows}, {r["prompt_id"]: float(r["correct"]) for r in baseline}
        )
    return out


def greedy_outputs(model, tokenizer, reward, task, examples: Sequence, cfg, max_new_tokens: int) -> list[dict]:
    """Greedy responses and rewards for the held-out prompts (eval_outputs.jsonl rows)."""
    from larpo.console import progress as tqdm

    rows = []
    for i in tqdm(range(0, len(examples), cfg.batch_size), desc="eval greedy", leave=False):
        batch = examples[i : i + cfg.batch_size]
        prompts = [ex.prompt for ex in batch]
        responses, finished = sample(model, tokenizer, prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens)
        rewards = reward.score(prompts, responses, finished)
        lengths = [len(ids) for ids in response_ids(tokenizer, [r[0] for r in responses], [f[0] for f in finished])]
        for ex, rs, fs, ws, n in zip(batch, responses, finished, rewards, lengths):
            row = {"prompt_id": ex.prompt_id, "family": ex.family, "response": rs[0], "finished": fs[0],
                   "reward": ws[0], "tokens": n}
            correct = judge_correct(task, ex.prompt, rs[0], fs[0])
            if correct is not None:
                row["correct"] = correct
            rows.append(row)
    return rows


def greedy_metrics(rows: Sequence[dict], list_relative: bool = False) -> dict[str, float]:
    """Accuracy (when the task says what is correct), mean reward (unless list-relative), finished share and
    mean answer length in tokens (EOS included: what training scores)."""
    out = {"finished": sum(row["finished"] for row in rows) / len(rows), "n_eval": len(rows)}
    if all("tokens" in row for row in rows):
        out["length"] = sum(row["tokens"] for row in rows) / len(rows)
    if not list_relative:  # a list-relative score of a lone answer says nothing
        out["mean_reward"], out["mean_reward_se"] = mean_se([row["reward"] for row in rows])
    if not all("correct" in row for row in rows):
        return out  # the task has no notion of correct: no accuracy
    correct = [float(row["correct"]) for row in rows]
    out["accuracy"], out["accuracy_se"] = mean_se(correct)
    by_family: dict[str, list[float]] = defaultdict(list)
    for row, c in zip(rows, correct):
        by_family[row["family"]].append(c)
    out.update({f"accuracy/{fam}": sum(v) / len(v) for fam, v in sorted(by_family.items())})
    return out


def pass_at_n(model, tokenizer, task, examples: Sequence, cfg, max_new_tokens: int, seed: int) -> dict[str, float]:
    """Pass@N for N = 1, 2, 4, ... ≤ cfg.pass_at_max, from cfg.pass_at_max samples per prompt.

    "Pass" is the task's ``is_correct``; call it only for tasks that have one.
    """
    from larpo.console import progress as tqdm

    n = cfg.pass_at_max
    counts = []
    bs = max(1, cfg.batch_size // n)
    for i in tqdm(range(0, len(examples), bs), desc="eval pass@N", leave=False):
        prompts = [ex.prompt for ex in examples[i : i + bs]]
        responses, finished = sample(model, tokenizer, prompts, n=n, temperature=cfg.pass_temperature,
                                     max_new_tokens=max_new_tokens, seed=derive_seed(seed, "pass", i))
        for p, rs, fs in zip(prompts, responses, finished):
            counts.append(sum(bool(task.is_correct(p, r, f)) for r, f in zip(rs, fs)))
    ks = [2**j for j in range(int(math.log2(n)) + 1)]
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for c in counts) / len(counts) for k in ks}


def prompt_set(ids: Sequence[str]) -> str:
    """A fingerprint of a set of held-out prompt ids (recorded in eval.json as ``eval_prompts``)."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def baseline_rows(ctx, r: int, examples: Sequence) -> list[dict] | None:
    """Round 0's greedy outputs, the baseline of round r's comparisons, or None when there are none.

    Checked before round r generates anything: two rounds evaluated on different prompt sets are
    never compared (round 0 re-evaluated alone with another ``eval.n_prompts`` made the gain 0.0).
    """
    from larpo.errors import PipelineError
    from larpo.schemas import EVAL_OUTPUTS

    path = ctx.rd.eval_outputs(0)
    if not path.exists():
        ctx.rd.verify(0, "evaluate", [path], hashes=False)  # recorded but gone: named with its command
        return None
    base = ctx.read(0, "evaluate", path, EVAL_OUTPUTS).rows
    ours, theirs = {ex.prompt_id for ex in examples}, {row["prompt_id"] for row in base}
    if ours != theirs:
        raise PipelineError(
            f"round {r}'s held-out evaluation is on {len(ours)} prompts, round 0's ({path}) was on {len(theirs)} "
            f"({len(ours & theirs)} in common): rounds evaluated on different prompt sets are never compared; "
            "evaluate round 0 with this run's settings first (`stage=evaluate round=0`), or this round with "
            "round 0's (the same eval.n_prompts)")
    return base


def held_out_metrics(ctx, r: int, model, tok) -> tuple[dict[str, Any], list[dict]]:
    """Greedy outputs on the task's held-out prompts and their metrics; returns (metrics, the
    eval_outputs.jsonl rows), written by the stage once everything else of the evaluation succeeded."""
    from larpo.evals.alpacaeval import alpaca_style_on

    cfg, task, reward = ctx.cfg.eval, ctx.task, ctx.reward
    examples = task.split("eval")[: cfg.n_prompts]
    base = baseline_rows(ctx, r, examples) if r > 0 else None
    max_new = ctx.cfg.sampling.max_new_tokens
    rows = greedy_outputs(model, tok, reward, task, examples, cfg, max_new)
    relative = bool(getattr(reward, "list_relative", False))
    metrics: dict[str, Any] = greedy_metrics(rows, relative)
    metrics["eval_prompts"] = prompt_set([row["prompt_id"] for row in rows])
    if cfg.pass_at_max > 0 and cfg.pass_prompts > 0 and hasattr(task, "is_correct"):
        metrics.update(pass_at_n(model, tok, task, examples[: cfg.pass_prompts], cfg, max_new,
                                 derive_seed(ctx.cfg.seed, r, "eval")))
    alpaca_style = alpaca_style_on(cfg)
    if cfg.win_rate or alpaca_style:
        if r == 0:
            base = rows  # round 0 against itself: the reference point of every later round
        elif base is None:
            from larpo.errors import PipelineError

            raise PipelineError(f"round {r}: the win rate against round 0 needs round 0's held-out outputs "
                                f"({ctx.rd.eval_outputs(0)}); evaluate round 0 first (`stage=evaluate round=0`)")
        pairs = head_to_head(reward, {ex.prompt_id: ex.prompt for ex in examples}, rows, base) if relative else None
        if cfg.win_rate:
            metrics.update(against_baseline(rows, base, pairs))
        if alpaca_style:
            metrics.update(alpaca_style_win_rates(rows, base, pairs))
    return metrics, rows


def alpaca_style_win_rates(rows: Sequence[dict], baseline: Sequence[dict], pair_scores=None) -> dict[str, Any]:
    """The win rate vs round 0 through alpaca_eval's metric code: raw and length-controlled, in percent.

    The reward is the judge (as for ``win_rate``); LC removes the part of the win rate explained
    by answering longer or shorter than round 0 (see ``larpo.evals.alpacaeval.win_rates_vs_baseline``).
    """
    from larpo.evals.alpacaeval import win_rates_vs_baseline  # alpaca_eval itself: checked at start-up (check_extras)

    ours, theirs = pair_scores or ({r["prompt_id"]: r["reward"] for r in rows},
                                   {r["prompt_id"]: r["reward"] for r in baseline})

    def prefer(base_rows: list[dict], new_rows: list[dict]) -> list[float]:
        pids = [r["prompt_id"] for r in new_rows]
        return [2.0 if ours[p] > theirs[p] else 1.0 if ours[p] < theirs[p] else 1.5 for p in pids]

    result = win_rates_vs_baseline(rows, baseline, prefer)
    out = {f"ae_{k}": v for k, v in result.items() if k in ("win_rate", "win_rate_se", "lc_win_rate", "lc_win_rate_se")}
    if result.get("lc_absent_reason"):
        out["ae_lc_absent_reason"] = result["lc_absent_reason"]
    return out

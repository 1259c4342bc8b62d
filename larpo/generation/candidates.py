"""A round's candidates: every batch of its prompts sampled into the generate stage's journal.

The library of the generate stage (larpo/stages/generate.py). Hugging Face ``generate`` runs
everywhere; the vLLM backend (larpo/generation/vllm_backend.py) runs the same :func:`generate_batch`
in its child processes. Sampling is seeded per batch from (seed, round, batch index), so
a stage interrupted half-way continues from its journal and produces exactly the rows an
uninterrupted run would have. What a row holds beyond plain samples (per-round temperatures,
temperature splits, extra low-temperature candidates, the negative ladder) is described in
:mod:`larpo.generation.plan`.

``sampling.length_batching=true`` forms the batches from the prompts sorted by token length
(stable), so a batch pads its prompts to a similar width and its rows tend to end together:
on the embedded task about 1.5x faster sampling (benchmarks/round_profile.py). The rows still
come out in the round's order, each batch is still seeded by its position ``b``, and a resume
still redoes exactly what is missing, but the samples differ from the default's: a prompt
shares its ``generate`` call, and so its random stream, with other prompts than by default
(when the sort changes nothing, the output is byte-identical to the default's).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from larpo.artifacts import BatchJournal
from larpo.generation.negatives import ladder_block
from larpo.generation.plan import Block, SamplingPlan
from larpo.generation.sampling import length_batches, sample
from larpo.seeds import derive_seed

logger = logging.getLogger(__name__)


def _sample_blocks(model, tokenizer, prompts: list[str], plan: SamplingPlan, r: int, batch_seed: int,
                   seed_of) -> list[Block]:
    """The ``n_samples`` samples (one block per temperature), then the extra low-temperature ones."""
    groups = plan.sample_groups(r)
    blocks = []
    for g, (temperature, count) in enumerate(groups):
        # One temperature keeps the batch seed itself, so plain runs match earlier versions' artifacts.
        s = batch_seed if len(groups) == 1 else seed_of("temperature", g)
        rs, fs = sample(model, tokenizer, prompts, n=count, temperature=temperature, top_p=plan.top_p,
                        max_new_tokens=plan.max_new_tokens, seed=s)
        blocks.append(Block("sample", temperature, rs, fs))
    if plan.extra_negatives:
        rs, fs = sample(model, tokenizer, prompts, n=plan.extra_negatives, temperature=plan.extra_temperature,
                        top_p=plan.top_p, max_new_tokens=plan.max_new_tokens, seed=seed_of("extra"))
        blocks.append(Block("extra", plan.extra_temperature, rs, fs))
    return blocks


def _row(ex, i: int, blocks: list[Block], record: dict) -> dict:
    """Prompt i's generations row: the blocks' candidates in order, each one's kind and temperature."""
    responses, finished, kinds, temps, sources, found = [], [], [], [], [], []
    for blk in blocks:
        k = len(blk.responses[i])
        responses += blk.responses[i]
        finished += blk.finished[i]
        kinds += [blk.kind] * k
        temps += [blk.temperature] * k
        sources += blk.sources[i] if blk.sources else []
        found += blk.found[i] if blk.found else []
    sampling = {**record, "kinds": kinds, "temperatures_per_candidate": temps}
    if sources:
        sampling["negative_sources"] = sources
    if found:
        sampling["negatives_found"] = found
    return {"prompt_id": ex.prompt_id, "prompt": ex.prompt, "responses": responses, "finished": finished,
            "sampling": sampling}


def generate_batch(model, tokenizer, examples: Sequence, b: int, plan: SamplingPlan, seed: int, round_: int,
                   task=None) -> list[dict]:
    """The generations rows of batch ``b`` of the round's ``examples``; a function of its seeds only.

    Every draw is seeded ``derive_seed(seed, round_, "generate", b, <purpose>...)`` (the plain
    samples: ``derive_seed(seed, round_, "generate", b)``), never from global state left by an
    earlier batch, so a batch redone after an interruption comes out byte-identical.
    """
    start = b * plan.batch_size
    return _batch_rows(model, tokenizer, examples, range(start, min(start + plan.batch_size, len(examples))), b,
                       plan, seed, round_, task)


def _batch_rows(model, tokenizer, examples: Sequence, idx: Sequence[int], b: int, plan: SamplingPlan, seed: int,
                round_: int, task) -> list[dict]:
    """The rows of the prompts ``examples[i] for i in idx``, generated together as batch ``b``."""
    batch = [examples[i] for i in idx]
    start = idx[0]  # the ladder's easiest/easy locate the batch by it (contiguous batches only)
    batch_seed = derive_seed(seed, round_, "generate", b)

    def seed_of(*purpose) -> int:
        return derive_seed(seed, round_, "generate", b, *purpose)

    prompts = [ex.prompt for ex in batch]
    blocks = _sample_blocks(model, tokenizer, prompts, plan, round_, batch_seed, seed_of)
    if plan.negatives:
        blocks.append(ladder_block(model, tokenizer, batch, start, examples, task, plan, round_,
                                   seed_of("negatives", plan.negatives)))
    record = {"n_samples": plan.n_samples, "temperature": plan.round_temperature(round_), "top_p": plan.top_p,
              "max_new_tokens": plan.max_new_tokens, "seed": batch_seed}
    if plan.temperatures:
        record["temperatures"] = list(plan.temperatures)
    if plan.negatives:
        record["negatives"] = plan.negatives
    return [_row(ex, i, blocks, record) for i, ex in enumerate(batch)]


def log_fallbacks(rows: list[dict], round_: int, level: str | None) -> None:
    """Warn when some hard/hardest negatives found no incorrect response (``sampling.negatives_found``)."""
    found = [f for row in rows for f in row.get("sampling", {}).get("negatives_found", [])]
    if found and not all(found):
        logger.warning("round %d: %d of %d %s negatives found no incorrect response within the tries; "
                       "those candidates are correct draws (sampling.negatives_found=false)",
                       round_, found.count(False), len(found), level)


def generate_candidates(
    model, tokenizer, examples: Sequence, plan: SamplingPlan, seed: int, journal: BatchJournal, round_: int, task=None
) -> None:
    """Generate every batch of the round's ``examples`` into ``journal`` (see :func:`generate_batch`).

    Batches already in the journal (from an interrupted run) are skipped and the others come
    out exactly as an uninterrupted run would make them. ``task`` is needed by the ladder
    (``sampling.negatives=hard|hardest`` uses its ``is_correct``).
    """
    from larpo.console import progress as tqdm

    if plan.length_batching:
        _generate_by_length(model, tokenizer, examples, plan, seed, journal, round_, task)
        return
    done = journal.completed()
    bs = plan.batch_size
    n_batches = plan.batches(len(examples))
    if done:
        logger.info("round %d generate: resuming, %d of %d batches already journaled", round_, len(done), n_batches)
    rows_all = []
    for b in tqdm(range(n_batches), desc=f"round {round_} generate", leave=False):
        ids = [ex.prompt_id for ex in examples[b * bs : (b + 1) * bs]]
        if b in done:
            if [row["prompt_id"] for row in done[b]] != ids:
                raise ValueError(f"{journal.path}: batch {b} holds other prompts than this run's; delete the file")
            rows_all += done[b]
            continue
        rows = generate_batch(model, tokenizer, examples, b, plan, seed, round_, task)
        journal.append(b, rows)
        rows_all += rows
    log_fallbacks(rows_all, round_, plan.negatives)


def _generate_by_length(model, tokenizer, examples: Sequence, plan: SamplingPlan, seed: int, journal: BatchJournal,
                        round_: int, task) -> None:
    """:func:`generate_candidates` with batches of prompts of similar token length.

    The journal holds one entry per prompt, keyed by its position in ``examples``, so the
    committed file keeps the round's order; a batch is redone whole unless all its prompts
    are journaled (a batch is a function of its seeds and members only, so a redone batch
    gives the rows it would have given).
    """
    from larpo.console import progress as tqdm

    batches = length_batches(tokenizer, [ex.prompt for ex in examples], plan.batch_size)
    done = journal.completed()
    for i, rows in done.items():
        if not 0 <= i < len(examples) or [row["prompt_id"] for row in rows] != [examples[i].prompt_id]:
            raise ValueError(f"{journal.path}: entry {i} holds another prompt than this run's; delete the file")
    todo = [b for b, idx in enumerate(batches) if not all(i in done for i in idx)]
    if len(todo) < len(batches):
        logger.info("round %d generate: resuming, %d of %d batches already journaled", round_,
                    len(batches) - len(todo), len(batches))
    rows_all = [row for rows in done.values() for row in rows]
    for b in tqdm(todo, desc=f"round {round_} generate", leave=False):
        rows = _batch_rows(model, tokenizer, examples, batches[b], b, plan, seed, round_, task)
        for i, row in zip(batches[b], rows):
            journal.append(i, [row])
        rows_all += rows
    log_fallbacks(rows_all, round_, plan.negatives)

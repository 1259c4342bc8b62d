"""sampling.length_batching: batches of prompts of similar length, rows in the round's order; KV cache on."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from larpo.artifacts import BatchJournal, read_jsonl
from larpo.errors import ConfigError
from larpo.generation.candidates import generate_candidates
from larpo.generation.plan import SamplingPlan, check_sampling
from larpo.generation.sampling import length_batches, sample
from larpo.tasks import Example
from tests.helpers.tiny import tiny_policy

SAMPLING = OmegaConf.create(dict(n_samples=3, temperature=1.0, top_p=1.0, max_new_tokens=6, batch_size=2))
# Rendered lengths differ: the sorted batches are {0, 2}, {4, 1}, {3, 5} (not the default {0, 1}, {2, 3}, {4, 5}).
PROMPTS = ["1+2=", "123+456=", "3+4=", "sort:9,8,7,6,5=", "12+3=", "sort:1,2,3,4,5="]


def exs(prompts=PROMPTS) -> list[Example]:
    return [Example(f"train-{i:05d}", p, "", "add2") for i, p in enumerate(prompts)]


def gen(path, examples, by_length: bool, model_seed: int = 0, journal: BatchJournal | None = None) -> list[dict]:
    model, tok = tiny_policy(seed=model_seed)
    journal = journal or BatchJournal(path)
    generate_candidates(model, tok, examples, SamplingPlan.of(OmegaConf.merge(SAMPLING, {"length_batching": by_length})), 0,
                        journal, 1)
    journal.commit()
    return read_jsonl(path)


def test_length_batches_sort_stably_by_token_length():
    _, tok = tiny_policy()
    assert length_batches(tok, PROMPTS, 2) == [[0, 2], [4, 1], [3, 5]]
    assert length_batches(tok, ["1+1="] * 5, 2) == [[0, 1], [2, 3], [4]]  # equal lengths: the default batches


def test_rows_keep_the_rounds_order_and_equal_the_default_path_on_the_sorted_prompts(tmp_path):
    examples = exs()
    rows = gen(tmp_path / "by_length.jsonl", examples, True)
    assert [r["prompt_id"] for r in rows] == [ex.prompt_id for ex in examples]
    # The default path run on the prompts in sorted order makes the same batches with the same
    # seeds: every row must be the same, only the file's order differs.
    _, tok = tiny_policy()
    order = [i for b in length_batches(tok, PROMPTS, 2) for i in b]
    default_sorted = gen(tmp_path / "default_sorted.jsonl", [examples[i] for i in order], False)
    assert sorted(rows, key=lambda r: r["prompt_id"]) == sorted(default_sorted, key=lambda r: r["prompt_id"])
    assert rows != gen(tmp_path / "default.jsonl", examples, False)  # other batches: other samples


def test_when_the_sort_changes_nothing_the_output_is_byte_identical(tmp_path):
    examples = exs(["37+45="] * 5)
    gen(tmp_path / "a.jsonl", examples, True)
    gen(tmp_path / "b.jsonl", examples, False)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_resume_redoes_exactly_the_batches_not_wholly_journaled(tmp_path):
    examples = exs()
    full = gen(tmp_path / "full.jsonl", examples, True)
    path = tmp_path / "part.jsonl"
    journal = BatchJournal(path)
    journal.append(4, [full[4]])  # batch {4, 1}: whole before the interruption
    journal.append(1, [full[1]])
    journal.append(3, [full[3]])  # batch {3, 5}: half
    part = gen(path, examples, True, model_seed=1, journal=journal)  # a different model redoes the rest
    assert [r["prompt_id"] for r in part] == [ex.prompt_id for ex in examples]
    assert part[1] == full[1] and part[4] == full[4]
    # Row 3 was journaled but its batch was not whole: redone by the other model, like 0, 2 and 5.
    assert part[3] != full[3] and [part[i] for i in (0, 2, 5)] != [full[i] for i in (0, 2, 5)]


def test_a_journal_of_other_prompts_is_refused(tmp_path):
    journal = BatchJournal(tmp_path / "g.jsonl")
    journal.append(0, [{"prompt_id": "train-00009"}])
    with pytest.raises(ValueError, match="entry 0 holds another prompt"):
        gen(tmp_path / "g.jsonl", exs(), True, journal=journal)


def test_ladder_negatives_by_position_are_refused():
    """Refused by the start-up check of the sampling plan (larpo.pipeline.build_context runs it), before any work."""
    over = {"length_batching": True, "negatives": "easy"}
    with pytest.raises(ConfigError, match="length_batching=true does not support sampling.negatives=easy"):
        check_sampling(SamplingPlan.of(OmegaConf.merge(SAMPLING, over)), None)


def test_sampling_uses_the_kv_cache_even_if_the_checkpoint_says_otherwise():
    model, tok = tiny_policy()
    model.config.use_cache = False  # as a checkpoint saved from gradient-checkpointed training
    model.generation_config.use_cache = False
    seen = []
    forward = model.forward

    def recording(*args, **kwargs):
        seen.append((kwargs.get("use_cache"), kwargs["input_ids"].shape[1]))
        return forward(*args, **kwargs)

    model.forward = recording
    sample(model, tok, ["1+2="], n=2, temperature=1.0, max_new_tokens=4, seed=0)
    # With the cache, every step after the prompt feeds one new token; without it, the whole sequence.
    assert len(seen) >= 2 and all(use for use, _ in seen) and all(width == 1 for _, width in seen[1:])

"""Candidate generation: per-batch seeds, resume from the journal, EOS handling; round slices."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from larpo.artifacts import BatchJournal, read_jsonl
from larpo.generate import _decode, derive_seed, generate_candidates
from larpo.stages import round_prompts
from larpo.tasks import Example
from tests.unit.tiny import tiny_policy

SAMPLING = OmegaConf.create(dict(n_samples=3, temperature=1.0, top_p=1.0, max_new_tokens=6, batch_size=2))


def examples(n: int) -> list[Example]:
    return [Example(f"train-{i:05d}", "37+45=", "82", "add2") for i in range(n)]  # one prompt, n times


def generate(path, n=4, seed=0):
    model, tok = tiny_policy()
    journal = BatchJournal(path)
    generate_candidates(model, tok, examples(n), SAMPLING, seed, journal, 1)
    journal.commit()
    return read_jsonl(path)


def test_each_batch_has_its_own_seed(tmp_path):
    rows = generate(tmp_path / "g.jsonl")
    seeds = [row["sampling"]["seed"] for row in rows]
    assert seeds == [derive_seed(0, 1, "generate", b) for b in (0, 0, 1, 1)]
    # The same prompt in two batches: the samples differ (they would be equal under one seed).
    assert rows[0]["responses"] != rows[2]["responses"]


def test_resume_from_the_journal_redoes_only_missing_batches(tmp_path):
    full = generate(tmp_path / "full.jsonl")
    path = tmp_path / "part.jsonl"
    journal = BatchJournal(path)
    journal.append(0, full[:2])  # batch 0 journaled before an interruption
    model, tok = tiny_policy(seed=1)  # a *different* model: batch 0 must come from the journal
    generate_candidates(model, tok, examples(4), SAMPLING, 0, journal, 1)
    journal.commit()
    part = read_jsonl(path)
    assert part[:2] == full[:2] and part[2:] != full[2:]


def test_journal_of_other_prompts_is_refused(tmp_path):
    journal = BatchJournal(tmp_path / "g.jsonl")
    journal.append(0, [{"prompt_id": "train-00009"}, {"prompt_id": "train-00001"}])
    model, tok = tiny_policy()
    with pytest.raises(ValueError, match="batch 0 holds other prompts"):
        generate_candidates(model, tok, examples(4), SAMPLING, 0, journal, 1)


def test_decode_cuts_at_the_first_eos():
    _, tok = tiny_policy()
    ids = tok("82", add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    texts, finished = _decode(tok, torch.tensor([ids + [eos] + ids + [eos], ids + ids + ids]))
    assert texts == ["82", "828282"] and finished == [True, False]


class FakeCtx:
    def __init__(self, n_train: int, per_round: int):
        self.task = type("T", (), {"split": lambda self, name: examples(n_train)})()
        self.cfg = OmegaConf.create({"sampling": {"prompts_per_round": per_round}})


def test_each_round_takes_the_next_slice_wrapping_around():
    ctx = FakeCtx(n_train=5, per_round=2)
    ids = [[ex.prompt_id[-1] for ex in round_prompts(ctx, r)] for r in (1, 2, 3, 4)]
    assert ids == [["0", "1"], ["2", "3"], ["4", "0"], ["1", "2"]]

"""Response log-probs of candidate lists: values, order, masking, batching by token budget."""

from __future__ import annotations

import pytest
import torch

from larpo.logprobs import EncodedList, list_logps, pack_by_tokens
from tests.helpers.tiny import naive_logp, tiny_policy

ROWS = [  # different prompt and response lengths, so packing reorders and pads
    {"prompt": "37+45=", "responses": ["82", "72", ""], "finished": [True, True, False]},
    {"prompt": "sort:5,31,9,2=", "responses": ["2,5,9,31", "31,5"], "finished": [True, False]},
    {"prompt": "1+2=", "responses": ["3", "4", "33333333", "12"], "finished": [True, True, True, False]},
]


@pytest.mark.parametrize("budget", [10**6, 40])  # one batch; one list per batch (packing order ≠ row order)
def test_list_logps_equal_a_plain_forward_in_row_order(budget):
    model, tok = tiny_policy()
    got = list_logps(model, tok, ROWS, max_tokens=budget)
    for row, lps in zip(ROWS, got):
        want = [naive_logp(model, tok, row["prompt"], y, f) for y, f in zip(row["responses"], row["finished"])]
        assert lps == pytest.approx(want, abs=1e-4)


def test_empty_unfinished_response_has_log_prob_zero():
    model, tok = tiny_policy()
    [[_, _, empty]] = list_logps(model, tok, ROWS[:1], max_tokens=10**6)
    assert empty == 0.0  # no response token: the last prompt token predicts nothing that counts


def test_eos_is_scored_when_finished():
    model, tok = tiny_policy()
    row = {"prompt": "1+2=", "responses": ["3", "3"], "finished": [True, False]}
    [[with_eos, without]] = list_logps(model, tok, [row], max_tokens=10**6)
    assert with_eos < without  # one more (negative) log-prob term: the EOS


def test_pack_by_tokens_keeps_lists_whole_and_within_budget():
    lists = [EncodedList([1] * p, [[2] * r for r in rs]) for p, rs in [(5, [3, 1]), (2, [9]), (4, [1, 1, 1]), (8, [8])]]
    batches = pack_by_tokens(lists, max_tokens=20)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    for b in batches:
        n_seq = sum(len(lists[i].responses) for i in b)
        width = max(lists[i].max_len for i in b)
        assert len(b) == 1 or n_seq * width <= 20
    assert [3] in batches  # 16 tokens alone; any partner would exceed 20


def test_logps_are_differentiable_under_grad():
    from larpo.logprobs import encode_lists, sequence_logps

    model, tok = tiny_policy()
    flat = sequence_logps(model, encode_lists(tok, ROWS[:1]), tok.pad_token_id)
    flat.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert torch.is_tensor(flat) and flat.shape == (3,)


@pytest.mark.parametrize("forward", ["padded", "shared_prompt"])
def test_the_last_token_is_not_fed_to_the_model(forward):
    """Its output would predict nothing: the model sees one column fewer than the longest row."""
    model, tok = tiny_policy()
    widths = []
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    try:
        list_logps(model, tok, ROWS, 10**6, forward=forward)
    finally:
        hook.remove()
    from larpo.logprobs import encode_lists

    enc = encode_lists(tok, ROWS)
    if forward == "padded":
        assert widths == [max(e.max_len for e in enc) - 1]
    else:  # the prompts' pass, then the responses' pass without their last column
        assert widths == [max(len(e.prompt) for e in enc), max(len(r) for e in enc for r in e.responses) - 1]

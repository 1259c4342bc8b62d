"""The speed switches (train.forward, train.logprob_chunk) must not change log-probs, gradients or steps.

Reference: ``forward=padded, chunk=None`` (the model's own logits, one row per candidate), itself
checked against an unpadded float64 forward in test_logprobs.py. Tolerances (fp32): log-probs
1e-5 absolute (sums of <= 10 token log-probs of size ~4), gradients 2e-5 absolute (+1e-4
relative). A training step is compared across machines too, so its tolerances come from the
measured spread of fp32 kernels between CPUs of one kind, about 1e-5 relative: loss and gradient
norm 1e-4 relative (10x that). Parameters after one AdamW step (lr 1e-2): 1e-4 absolute. Adam's
first step is lr * g / (|g| + eps), so on an element whose gradient is within the kernels' spread
of zero the spread is magnified up to lr: measured 4.7e-6 on one machine, 1.41e-5 on another of
the same kind (issue 19); a layout that computed something else moves weights by O(lr) = 1e-2.
"""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from larpo.config import TrainConfig
from larpo.logprobs import FORWARDS, encode_lists, list_logps, sequence_logps
from larpo.losses import LambdaRankLoss
from larpo.training.loop import train_on_lists
from tests.helpers.tiny import ARCH, tiny_policy

ROWS = [  # unequal prompt and response lengths, an empty response, a one-token response
    {"prompt": "37+45=", "responses": ["82", "72", "", "8"], "finished": [True, True, False, False],
     "rewards": [1.0, 0.25, 0.0, 0.1]},
    {"prompt": "sort:5,31,9,2=", "responses": ["2,5,9,31", "31,5"], "finished": [True, False], "rewards": [1.0, 0.2]},
    {"prompt": "1+2=", "responses": ["3", "4", "33333333"], "finished": [True, True, True], "rewards": [1.0, 0.3, 0.0]},
]
SWITCHES = [(f, c) for f in FORWARDS for c in (None, 3, 4096)]


def _policy(attn: str):
    model, tok = tiny_policy()
    model.set_attn_implementation(attn)
    return model.train(), tok


def _logps_and_grads(model, tok, forward, chunk):
    model.zero_grad(set_to_none=True)
    flat = sequence_logps(model, encode_lists(tok, ROWS), tok.pad_token_id, forward, chunk)
    # distinct weights per candidate: a candidate's gradient landing on another one would show
    (flat * torch.linspace(1.0, 2.0, len(flat))).sum().backward()
    return flat.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_every_switch_gives_the_padded_full_logits_values_and_gradients(attn):
    model, tok = _policy(attn)
    want, want_grad = _logps_and_grads(model, tok, "padded", None)
    assert want[2] == 0.0 and len(want) == 9
    for forward, chunk in SWITCHES:
        got, grad = _logps_and_grads(model, tok, forward, chunk)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"{forward} chunk={chunk}")
        for name, g in grad.items():
            torch.testing.assert_close(g, want_grad[name], atol=2e-5, rtol=1e-4, msg=f"{forward} {chunk} {name}")


@pytest.mark.parametrize("forward", FORWARDS)
def test_reference_pass_is_the_same_under_every_switch(forward):
    model, tok = tiny_policy()
    want = list_logps(model, tok, ROWS, 10**6, forward="padded", chunk=None)
    got = list_logps(model, tok, ROWS, 40, forward=forward, chunk=2)  # several micro-batches, tiny chunks
    for a, b in zip(got, want):
        assert a == pytest.approx(b, abs=1e-5)


def _one_step(forward: str, chunk):
    model, tok = tiny_policy()
    rows = copy.deepcopy(ROWS)
    for row, lp in zip(rows, list_logps(model, tok, rows, 10**6, forward="padded", chunk=None)):
        row["ref_logps"] = lp
    cfg = OmegaConf.structured(TrainConfig(lr=1e-2, epochs=1, lists_per_step=3, max_tokens=60, warmup_ratio=0.0,
                                weight_decay=0.0, max_grad_norm=1e9, logprob_max_tokens=10**6,
                                forward=forward, logprob_chunk=chunk))
    logged = []
    train_on_lists(model, tok, rows, LambdaRankLoss(beta=0.5), cfg, seed=0, log=logged.append)
    return model, logged[0]


def test_a_training_step_is_the_same_under_every_switch():
    base, log = _one_step("padded", None)
    for forward, chunk in [("shared_prompt", 4096), ("packed", 5), ("padded", 7)]:
        model, got = _one_step(forward, chunk)
        assert got["train/loss"] == pytest.approx(log["train/loss"], rel=1e-4)
        assert got["train/grad_norm"] == pytest.approx(log["train/grad_norm"], rel=1e-4)
        for a, b in zip(model.parameters(), base.parameters()):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_chunked_head_keeps_no_full_logits_for_the_backward():
    """Saved-for-backward tensors: the full-logits path keeps [M, V] (M response tokens), the chunked one nothing with V."""
    model, tok = tiny_policy()
    model.train()
    vocab = model.config.vocab_size
    lists = encode_lists(tok, ROWS)

    def saved_vocab_rows(chunk):
        sizes = [0]

        def pack(t):
            if t.ndim and t.shape[-1] == vocab and t.dtype.is_floating_point and t.data_ptr() != model.lm_head.weight.data_ptr():
                sizes.append(t.numel() // vocab)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            sequence_logps(model, lists, tok.pad_token_id, "padded", chunk).sum().backward()
        return sum(sizes)

    n_tokens = sum(len(r) for lst in lists for r in lst.responses)
    assert saved_vocab_rows(None) >= n_tokens  # the response positions' logits [M, V]
    # each chunk's logits are recomputed in its backward: the forward saves none
    assert saved_vocab_rows(4) == 0


def test_a_vocabulary_no_wider_than_the_hidden_states_is_not_chunked():
    """vocab <= hidden size: the chunks would save nothing, so the model's own logits are used (same values)."""
    from larpo.logprobs import _Runner
    from larpo.model import build_model

    model, tok = tiny_policy()  # hidden 32 < vocab 53: chunked
    assert model.config.vocab_size > model.config.hidden_size and _Runner(model, 512).chunk == 512
    torch.manual_seed(0)
    wide = build_model(dict(ARCH, hidden_size=64), tok).eval()  # hidden 64 >= vocab 53
    assert wide.config.vocab_size <= wide.config.hidden_size and _Runner(wide, 512).chunk is None
    lists = encode_lists(tok, ROWS)
    torch.testing.assert_close(sequence_logps(wide, lists, tok.pad_token_id, "shared_prompt", 512),
                               sequence_logps(wide, lists, tok.pad_token_id, "shared_prompt", None), atol=0, rtol=0)


def test_gemma2_soft_capping_is_applied_by_the_chunked_head():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    _, tok = tiny_policy()
    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
                       final_logit_softcapping=2.0, sliding_window=64, pad_token_id=tok.pad_token_id,
                       attn_implementation="eager")
    model = Gemma2ForCausalLM(cfg).eval()
    lists = encode_lists(tok, ROWS)
    want = sequence_logps(model, lists, tok.pad_token_id, "padded", None)
    for forward in FORWARDS:
        got = sequence_logps(model, lists, tok.pad_token_id, forward, 3)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=forward)


def test_an_unknown_logit_transform_is_refused_clearly():
    from transformers import LlamaForCausalLM

    class ScaledLlama(LlamaForCausalLM):  # a model that post-processes its logits in a way no config states
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 3.0
            return out

    model, tok = tiny_policy()
    scaled = ScaledLlama(model.config)
    scaled.load_state_dict(model.state_dict())
    lists = encode_lists(tok, ROWS)
    with pytest.raises(ValueError, match="logprob_chunk=null"):
        sequence_logps(scaled, lists, tok.pad_token_id, "padded", 16)
    sequence_logps(scaled, lists, tok.pad_token_id, "padded", None)  # the full-logits path still works


def test_bad_switch_values_name_the_option():
    model, tok = tiny_policy()
    lists = encode_lists(tok, ROWS)
    with pytest.raises(ValueError, match="train.forward"):
        sequence_logps(model, lists, tok.pad_token_id, "tree", None)
    with pytest.raises(ValueError, match="train.logprob_chunk"):
        sequence_logps(model, lists, tok.pad_token_id, "padded", 0)


def test_shared_prompt_under_gradient_checkpointing_falls_back_to_packed(caplog):
    """Gradient checkpointing turns the KV cache off in training; shared_prompt then runs as packed
    (said once in the log) with the same log-probs and gradients as the padded forward."""
    model, tok = _policy("sdpa")
    want, want_grad = _logps_and_grads(model, tok, "padded", None)
    model.gradient_checkpointing_enable()
    with caplog.at_level("INFO", logger="larpo.logprobs"):
        got, grad = _logps_and_grads(model, tok, "shared_prompt", 3)
    assert "gradient checkpointing turns off; using train.forward=packed" in caplog.text
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for name, g in grad.items():
        torch.testing.assert_close(g, want_grad[name], atol=2e-5, rtol=1e-4, msg=name)

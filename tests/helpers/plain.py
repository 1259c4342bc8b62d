"""Response log-probs the plainest way, as the expected values of tests/real/ (and those tests' rows): one unpadded
sequence at a time through the model's own forward, the prompt rendered by the tokenizer's own
``apply_chat_template(tokenize=True)`` (not larpo's rendering), log_softmax in float64."""

from __future__ import annotations

import torch

# fp32 forwards of the same sequence in other shapes (padded, prompt shared, packed, chunked head)
# round differently, ~1e-6 relative per logit; a log_softmax over 49,152 entries and a sum over
# up to 14 response tokens accumulate that to 1.5e-5..2.5e-5 on sums of -8..-83 (measured on
# this machine), and another CPU's kernels differ by as much again: 5e-4 is a 20x margin. The
# mistakes that matter move a sum by far more: in test_policy_real's rows a finished response's
# EOS costs 0.16..20, most response tokens > 0.09 (the smallest 4e-4). (Scoring one more prompt token would
# not show: the template's "\n" after "assistant" has log-prob ~ -1e-4; the rendering test pins
# the prompt ids instead.)
ATOL = 5e-4

# Prompts and lists of the real policy's tests (tests/real/).
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.\nKeep it short — ünïcödé, 😀 and\ttabs are fine.",
    "  leading and trailing spaces  ",
    "Explain <|im_start|> tokens in one line.",  # markup typed by a user is rendered as the template renders it
    "",
]
ROWS = [
    {"prompt": "What is 12 + 30?", "responses": ["12 + 30 = 42.", "The answer is 42", "", "forty-two"],
     "finished": [True, False, True, False]},
    {"prompt": PROMPTS[1], "responses": ["Waves fold into foam,\nsalt wind hums ü", "Sea"], "finished": [True, True]},
    {"prompt": "Name a colour.", "responses": ["Blue.", "Red, I think, or maybe a deep shade of green."],
     "finished": [True, False]},
]


def chat_prompt_ids(tok, prompt: str) -> list[int]:
    out = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)  # transformers 5: a BatchEncoding


@torch.no_grad()
def plain_logps(model, tok, prompt: str, responses: list[str], finished: list[bool]) -> list[float]:
    p_ids = chat_prompt_ids(tok, prompt)
    out = []
    for response, done in zip(responses, finished):
        ids = p_ids + tok(response, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if done else [])
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        per_token = logp[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        out.append(per_token[len(p_ids) - 1 :].sum().item())  # predictions of the response tokens only
    return out

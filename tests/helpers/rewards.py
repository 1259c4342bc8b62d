"""Reward-model scores computed by hand, the plainest way: the expected values of the reward tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TOL = 1e-5


def hand_seqcls_score(rm_dir: Path, prompt: str, response: str) -> float:
    """One unpadded sequence, rendered by the RM's template, score read at its true last token."""
    tok = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    ids = tok(tok.apply_chat_template(chat, tokenize=False), add_special_tokens=False).input_ids
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id  # the template's one BOS
    model.config.pad_token_id = None  # batch of one: pool at position -1 (the template's EOS)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, 0].item()


def hand_pair_logit(model, tok, prompt: str, a: str, b: str) -> float:
    """Upstream DebertaV2PairRM.forward on one unpadded pair: hidden_states[-1] at the prefix tokens."""
    ids = tok.encode("<|source|>" + prompt) + tok.encode("<|candidate1|>" + a) + tok.encode("<|candidate2|>" + b)
    ids = torch.tensor([ids])
    with torch.no_grad():
        encs = model.pretrained_model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        at = {
            t: torch.where(ids[0] == tok.convert_tokens_to_ids(t))[0]
            for t in ("<|source|>", "<|candidate1|>", "<|candidate2|>")
        }
        src, c1, c2 = (encs[at[t]] for t in ("<|source|>", "<|candidate1|>", "<|candidate2|>"))
        left = model.head_layer(torch.cat([src, c1], -1))
        right = model.head_layer(torch.cat([src, c2], -1))
    return (left - right).mean().item()

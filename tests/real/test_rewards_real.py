"""Reward models score what the real policy says: SmolLM2-135M's sampled (and re-decoded) responses
through the tiny PairRM and sequence-classification stand-ins (tests/helpers/stand_ins.py).

The policy's tokenizer and chat markup stay on the policy's side: a reward model gets the raw
prompt and the decoded response text, and renders them with its own tokenizer and template.
Expected scores are hand-computed forwards with the reward model's own tokenizer
(tests/unit/test_rewards.py's helpers).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from larpo.generation.sampling import sample
from larpo.rewards import PairRMReward, SeqClsReward
from larpo.rewards.pairrm import pairrm_model_class
from tests.helpers import stand_ins
from tests.helpers.rewards import TOL, hand_pair_logit, hand_seqcls_score

PROMPTS = ["What is the capital of France?", "Name two colours, please.\nOne per line — ünïcödé welcome."]
FIXED = ["Paris is the capital of France.", "Blue\nRed 😀"]  # re-decoded through SmolLM2's tokenizer below
# What the policy's own rendering adds around a prompt and after a response (SmolLM2's template).
MARKUP = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "You are a helpful AI assistant named SmolLM")


@pytest.fixture(scope="module")
def policy_outputs(smollm2_tok, smollm2_model):
    """Two sampled responses per prompt from the real model, plus fixed strings re-decoded by its tokenizer."""
    responses, finished = sample(smollm2_model, smollm2_tok, PROMPTS, n=2, temperature=1.0, max_new_tokens=16, seed=0)
    for rs, fs, text in zip(responses, finished, FIXED):
        rs.append(smollm2_tok.decode(smollm2_tok(text, add_special_tokens=False)["input_ids"]))
        fs.append(True)
    assert [rs[-1] for rs in responses] == FIXED  # SmolLM2's byte-level BPE round-trips text exactly
    texts = [y for rs in responses for y in rs]
    assert all(texts) and not any(m in y for y in texts for m in MARKUP)  # EOS cut off, nothing rendered
    return responses, finished


@pytest.fixture(scope="module")
def rm_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rms")
    return {"seqcls": stand_ins.make_seqcls_rm(root / "seqcls"), "pairrm": stand_ins.make_pairrm(root / "pairrm")}


def test_seqcls_scores_real_policy_responses_with_its_own_template(policy_outputs, rm_dirs):
    responses, finished = policy_outputs
    reward = SeqClsReward(str(rm_dirs["seqcls"]), batch_size=2)
    scores = reward.score(PROMPTS, responses, finished)
    for p, rs, row in zip(PROMPTS, responses, scores):
        assert row == pytest.approx([hand_seqcls_score(rm_dirs["seqcls"], p, r) for r in rs], abs=TOL)
    # The reward model's input is its own rendering of the raw prompt and response: no policy markup.
    rm_tok = AutoTokenizer.from_pretrained(rm_dirs["seqcls"])  # byte-level: decoding shows every character
    inputs = [rm_tok.decode(ids) for ids in reward.encode(PROMPTS, responses)]
    pairs = [(p, r) for p, rs in zip(PROMPTS, responses) for r in rs]
    for text, (p, r) in zip(inputs, pairs):
        assert text == f"<s>### USER:\n{p}\n### ASSISTANT:\n{r}\n</s>"
        assert not any(m in text for m in MARKUP)


def test_pairrm_scores_real_policy_responses_as_its_pairwise_head(policy_outputs, rm_dirs):
    responses, finished = policy_outputs
    reward = PairRMReward(str(rm_dirs["pairrm"]), batch_size=4)
    scores = reward.score(PROMPTS, responses, finished)
    model = pairrm_model_class().from_pretrained(rm_dirs["pairrm"]).eval()
    tok = AutoTokenizer.from_pretrained(rm_dirs["pairrm"])
    for p, rs, row in zip(PROMPTS, responses, scores):
        n = len(rs)
        c = torch.zeros(n, n, dtype=torch.float64)
        for i in range(n):
            for j in range(n):
                if i != j:
                    c[i, j] = hand_pair_logit(model, tok, p, rs[i], rs[j])
        # The candidate's score: the row mean of C - Cᵀ (llm-blender's PairRM), from the raw prompt.
        assert row == pytest.approx(((c - c.T).sum(1) / n).tolist(), abs=TOL)
        assert max(row) - min(row) > 1e-3  # distinct, so a swapped candidate would show

"""Response-token log-probabilities of candidate lists, micro-batched by token budget.

logp(y|x) = Σ_t log π(y_t | x, y_<t) over response tokens only (DESIGN §1): the rendered
prompt and the padding are masked out, the EOS of a finished response counts. All the
candidates of a list go through the model in the same forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from larpo.model import prompt_ids, response_ids


@dataclass(frozen=True)
class EncodedList:
    """One prompt's candidates as token ids: prompt ids are shared, responses differ."""

    prompt: list[int]
    responses: list[list[int]]

    @property
    def max_len(self) -> int:
        return len(self.prompt) + max((len(r) for r in self.responses), default=0)

    @property
    def n_tokens(self) -> int:
        """Padded token count of this list in a batch of its own."""
        return len(self.responses) * self.max_len


def encode_lists(tokenizer, rows: Sequence[dict]) -> list[EncodedList]:
    """Encode rows with ``prompt``, ``responses`` and ``finished`` (DESIGN §3 rendering)."""
    p_ids = prompt_ids(tokenizer, [row["prompt"] for row in rows])
    out = []
    for row, p in zip(rows, p_ids):
        out.append(EncodedList(p, response_ids(tokenizer, row["responses"], row["finished"])))
    return out


def pack_by_tokens(lists: Sequence[EncodedList], max_tokens: int) -> list[list[int]]:
    """Group list indices into micro-batches whose padded size stays within ``max_tokens``.

    Lists are never split. Sorting by length first keeps padding low; a list larger than
    the budget on its own gets a micro-batch of its own rather than an error.
    """
    order = sorted(range(len(lists)), key=lambda i: lists[i].max_len, reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    n_seq = width = 0
    for i in order:
        k, length = len(lists[i].responses), lists[i].max_len
        if current and (n_seq + k) * max(width, length) > max_tokens:
            batches.append(current)
            current, n_seq, width = [], 0, 0
        current.append(i)
        n_seq += k
        width = max(width, length)
    if current:
        batches.append(current)
    return batches


def _collate(lists: Sequence[EncodedList], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded ids [N, T], attention mask [N, T], response-target mask [N, T-1]."""
    seqs = [(lst.prompt + r, len(lst.prompt)) for lst in lists for r in lst.responses]
    width = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    target = torch.zeros((len(seqs), width - 1), dtype=torch.bool)
    for n, (s, n_prompt) in enumerate(seqs):
        ids[n, : len(s)] = torch.tensor(s)
        attn[n, : len(s)] = 1
        # Target position t predicts token t+1: response tokens are those at >= n_prompt.
        target[n, n_prompt - 1 : len(s) - 1] = True
    return ids, attn, target


def sequence_logps(model, lists: Sequence[EncodedList], pad_id: int) -> torch.Tensor:
    """Summed response log-probs, one forward for all candidates: float [N] (N = Σ k_i).

    Differentiable when called under grad. Uses logits.gather − logsumexp rather than a full
    log_softmax so no [N, T, V] copy is made besides the logits.
    """
    device = next(model.parameters()).device
    ids, attn, target = (t.to(device) for t in _collate(lists, pad_id))
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    tok_logp = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - logits.logsumexp(-1)
    return (tok_logp * target).sum(-1)


def to_padded(flat: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a flat [N] tensor into [B, K_max] with a bool mask of real candidates."""
    k_max = max(sizes)
    out = flat.new_zeros((len(sizes), k_max))
    mask = torch.zeros((len(sizes), k_max), dtype=torch.bool, device=flat.device)
    start = 0
    for b, k in enumerate(sizes):
        out[b, :k] = flat[start : start + k]
        mask[b, :k] = True
        start += k
    return out, mask


@torch.no_grad()
def list_logps(model, tokenizer, rows: Sequence[dict], max_tokens: int, progress: bool = False) -> list[list[float]]:
    """Per-candidate response log-probs of every row (no grad), in the rows' order."""
    from tqdm.auto import tqdm

    lists = encode_lists(tokenizer, rows)
    result: list[list[float]] = [[] for _ in rows]
    batches = pack_by_tokens(lists, max_tokens)
    for batch in tqdm(batches, desc="log-probs", disable=not progress, leave=False):
        flat = sequence_logps(model, [lists[i] for i in batch], tokenizer.pad_token_id).cpu()
        start = 0
        for i in batch:
            k = len(lists[i].responses)
            result[i] = flat[start : start + k].tolist()
            start += k
    return result

"""Stage ``generate``: sample candidate responses from the behaviour policy.

Hugging Face ``generate`` runs everywhere; the vLLM backend (GPU) is imported lazily by its
own module when configured. Sampling is seeded per batch from (seed, round, batch index), so
a stage interrupted half-way continues from its journal and produces exactly the rows an
uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import torch

from larpo.artifacts import BatchJournal
from larpo.model import prompt_ids

logger = logging.getLogger(__name__)


def derive_seed(*parts: int | str) -> int:
    """A stable 31-bit seed from several parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _left_pad(ids: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x) :] = torch.tensor(x)
        attn[i, width - len(x) :] = 1
    return input_ids, attn


def _decode(tokenizer, new_tokens: torch.Tensor) -> tuple[list[str], list[bool]]:
    """Cut each row at its first EOS; the text excludes EOS, ``finished`` records it."""
    eos = tokenizer.eos_token_id
    texts, finished = [], []
    for row in new_tokens.tolist():
        done = eos in row
        row = row[: row.index(eos)] if done else row
        # Specials other than EOS are kept in the text so re-encoding gives the same ids.
        texts.append(tokenizer.decode(row, skip_special_tokens=False))
        finished.append(done)
    return texts, finished


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: Sequence[str],
    n: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 16,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
) -> tuple[list[list[str]], list[list[bool]]]:
    """``n`` responses per prompt with HF ``generate``; temperature 0 means greedy.

    ``max_prompt_tokens``: keep only the last that many prompt tokens (benchmarks on a small model).
    Returns responses [P][n] and finished [P][n].
    """
    device = next(model.parameters()).device
    ids = prompt_ids(tokenizer, list(prompts))
    if max_prompt_tokens is not None:
        ids = [x[-max_prompt_tokens:] for x in ids]
    input_ids, attn = _left_pad(ids, tokenizer.pad_token_id)
    greedy = temperature <= 0
    kwargs = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature, top_p=top_p)
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attn.to(device),
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        top_k=None,
        **kwargs,
    )
    texts, finished = _decode(tokenizer, out[:, input_ids.shape[1] :].cpu())
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))], [
        finished[i * n : (i + 1) * n] for i in range(len(prompts))
    ]


def generate_candidates(
    model, tokenizer, examples: Sequence, sampling, seed: int, journal: BatchJournal, round_: int
) -> None:
    """Sample ``sampling.n_samples`` candidates for each example into ``journal``, batch by batch.

    Batch b is seeded with ``derive_seed(seed, round_, "generate", b)`` and journaled whole, so
    batches already in the journal (from an interrupted run) are skipped and the others come
    out exactly as an uninterrupted run would make them.
    """
    from tqdm.auto import tqdm

    done = journal.completed()
    bs = sampling.batch_size
    params = dict(
        n_samples=sampling.n_samples,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
    )
    batches = [examples[i : i + bs] for i in range(0, len(examples), bs)]
    if done:
        logger.info("round %d generate: resuming, %d of %d batches already journaled", round_, len(done), len(batches))
    for b, batch in enumerate(tqdm(batches, desc=f"round {round_} generate", leave=False)):
        if b in done:
            if [row["prompt_id"] for row in done[b]] != [ex.prompt_id for ex in batch]:
                raise ValueError(f"{journal.path}: batch {b} holds other prompts than this run's; delete the file")
            continue
        batch_seed = derive_seed(seed, round_, "generate", b)
        responses, finished = sample(
            model, tokenizer, [ex.prompt for ex in batch], n=sampling.n_samples,
            temperature=sampling.temperature, top_p=sampling.top_p,
            max_new_tokens=sampling.max_new_tokens, seed=batch_seed,
        )
        journal.append(b, [
            {"prompt_id": ex.prompt_id, "prompt": ex.prompt, "responses": rs, "finished": fs,
             "sampling": {**params, "seed": batch_seed}}
            for ex, rs, fs in zip(batch, responses, finished)
        ])

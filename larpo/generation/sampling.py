"""The sampling primitives: stable seeds and ``n`` responses per prompt with HF ``generate``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from larpo.model import prompt_ids


def length_batches(tokenizer, prompts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Prompt indices in batches of ``batch_size``, by rendered token length (ties: by index).

    The last batch holds the longest prompts and the remainder. Sorting is stable, so prompts
    of equal length keep their order and equal lengths everywhere give ``range`` batches.
    """
    lengths = [len(x) for x in prompt_ids(tokenizer, list(prompts))]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def left_pad(ids: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x) :] = torch.tensor(x)
        attn[i, width - len(x) :] = 1
    return input_ids, attn


def decode_new_tokens(tokenizer, new_tokens: torch.Tensor) -> tuple[list[str], list[bool]]:
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
    *,
    n: int,
    temperature: float,
    max_new_tokens: int,
    top_p: float = 1.0,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
    system: str | None = None,
) -> tuple[list[list[str]], list[list[bool]]]:
    """``n`` responses per prompt with HF ``generate``; temperature 0 means greedy.

    ``n``, ``temperature`` and ``max_new_tokens`` have no defaults here: their defaults are the config
    schema's (``sampling.*``, ``eval.*``), and every caller says which it uses. ``top_p=1`` and ``seed=0``
    are the identity (no nucleus cut) and a fixed stream.

    ``max_prompt_tokens``: keep only the last that many prompt tokens (benchmarks on a small model).
    ``system``: a system message before each prompt (a benchmark harness's, e.g. MixEval's).
    Returns responses [P][n] and finished [P][n].
    """
    other = getattr(model, "sample_texts", None)
    if other is not None:  # another backend (larpo.generation.vllm_backend.VLLMPolicy): same contract
        return other(prompts, n=n, temperature=temperature, max_new_tokens=max_new_tokens, top_p=top_p, seed=seed,
                     max_prompt_tokens=max_prompt_tokens, system=system)
    device = next(model.parameters()).device
    ids = prompt_ids(tokenizer, list(prompts), system)
    if max_prompt_tokens is not None:
        ids = [x[-max_prompt_tokens:] for x in ids]
    input_ids, attn = left_pad(ids, tokenizer.pad_token_id)
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
        use_cache=True,  # a checkpoint saved with use_cache=false (gradient checkpointing) would decode ~10x slower
        **kwargs,
    )
    texts, finished = decode_new_tokens(tokenizer, out[:, input_ids.shape[1] :].cpu())
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))], [
        finished[i * n : (i + 1) * n] for i in range(len(prompts))
    ]

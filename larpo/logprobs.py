"""Response-token log-probabilities of candidate lists, micro-batched by token budget.

logp(y|x) = Σ_t log π(y_t | x, y_<t) over response tokens only (docs/design.md, "Loss API"): the rendered
prompt and the padding are masked out, the EOS of a finished response counts. All the
candidates of a list go through the model in the same forward pass.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

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
    """Encode rows with ``prompt``, ``responses`` and ``finished`` (rendered as larpo.model.prompt_ids / response_ids)."""
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


FORWARDS = ("padded", "shared_prompt", "packed")


class _Runner:
    """Calls the (possibly DDP/PEFT-wrapped) causal LM and returns per-position outputs.

    ``chunk=None``: the model's own logits [rows, L, V] (the naive path). Otherwise the final
    hidden states [rows, L, d], caught by a forward hook on the decoder while the model is
    asked for the last position's logits only (``logits_to_keep=1``); those logits check once
    per model that ``head`` + the config's logit transform reproduce the model's own logits.
    Going through the top-level model keeps DDP/PEFT wrappers in the loop.
    """

    def __init__(self, model, chunk: int | None):
        self.model, self.chunk = model, chunk
        base = model
        while hasattr(base, "module"):  # DDP
            base = base.module
        self.base = base
        self.attn = getattr(base.config, "_attn_implementation", None) or "eager"
        cfg = base.config
        self.text_config = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.cache_key = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        vocab, hidden = (getattr(self.text_config, k, None) for k in ("vocab_size", "hidden_size"))
        if chunk is not None and vocab is not None and hidden is not None and vocab <= hidden:
            # Logits no wider than the hidden states save nothing by being chunked (the backward
            # keeps [M, d] activations anyway) and the chunks' recompute costs ~10 % of a step at
            # the embedded sizes (measured), so a small vocabulary takes the model's own logits.
            self.chunk = chunk = None
        if chunk is not None:
            self.decoder, self.head = base.get_decoder(), base.get_output_embeddings()
            if self.decoder is None or self.head is None:
                raise ValueError(f"train.logprob_chunk={chunk}: {type(base).__name__} exposes no decoder/output "
                                 "embeddings (get_decoder/get_output_embeddings); set train.logprob_chunk=null")
            self.transform = _logit_transform(base.config)

    def __call__(self, ids, attention_mask=None, position_ids=None, cache=None, use_cache=False):
        kw = dict(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache)
        if cache is not None:
            kw[self.cache_key] = cache
        if self.chunk is None:
            out = self.model(**kw)
            return out.logits, getattr(out, self.cache_key, None) if use_cache else None
        caught = []
        hook = self.decoder.register_forward_hook(lambda _m, _a, o: caught.append(o[0] if isinstance(o, tuple) else o.last_hidden_state))
        try:
            out = self.model(**kw, logits_to_keep=1)
        except TypeError as e:
            if "logits_to_keep" not in str(e):
                raise
            raise ValueError(f"train.logprob_chunk: {type(self.base).__name__}.forward takes no logits_to_keep; "
                             "set train.logprob_chunk=null") from e
        finally:
            hook.remove()
        hidden = caught[-1]
        if self.base not in _HEAD_CHECKED:
            self._check_head(hidden[:, -1], out.logits[:, -1])
        return hidden, getattr(out, self.cache_key, None) if use_cache else None

    @torch.no_grad()
    def _check_head(self, last_hidden: torch.Tensor, last_logits: torch.Tensor) -> None:
        ours = self.transform(self.head(last_hidden)).float()
        theirs = last_logits.float()
        tol = (1e-3 if theirs.dtype == last_hidden.dtype == torch.float32 else 3e-2) * (1 + theirs.abs().max())
        if ours.shape != theirs.shape or (ours - theirs).abs().max() > tol:
            raise ValueError(
                f"train.logprob_chunk: the output embeddings of {type(self.base).__name__} applied to its final hidden "
                "states do not reproduce its logits (an unknown logit scaling/capping?); set train.logprob_chunk=null")
        _HEAD_CHECKED[self.base] = True


_HEAD_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _logit_transform(config):
    """The config's logit post-processing after the head: Gemma-2 soft-capping, Cohere/Granite scaling."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(cfg, "final_logit_softcapping", None)
    scale = getattr(cfg, "logit_scale", None)  # Cohere: logits * logit_scale
    div = getattr(cfg, "logits_scaling", None)  # Granite: logits / logits_scaling

    def transform(logits: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            logits = logits * scale
        if div is not None:
            logits = logits / div
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform


def _logp_of(states: torch.Tensor, tgt: torch.Tensor, runner: _Runner) -> torch.Tensor:
    """log softmax(logits)[tgt] per token: float [M] from states [M, V] (logits) or [M, d] (hidden).

    Hidden states go through the head ``runner.chunk`` tokens at a time; under grad each chunk
    is recomputed in the backward (activation checkpointing), so no [M, V] tensor is kept.
    """
    if runner.chunk is None:
        return _gather_logp(states.float(), tgt)
    if states.shape[0] == 0:
        return states.new_zeros(0, dtype=torch.float32)

    def chunk_logp(h, t):
        return _gather_logp(runner.transform(runner.head(h)).float(), t)

    pieces = []
    for s in range(0, states.shape[0], runner.chunk):
        h, t = states[s : s + runner.chunk], tgt[s : s + runner.chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(chunk_logp, h, t, use_reentrant=False))
        else:
            pieces.append(chunk_logp(h, t))
    return torch.cat(pieces)


def _gather_logp(logits: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    # gather − logsumexp: no log_softmax copy of the [M, V] logits
    return logits.gather(-1, tgt[:, None]).squeeze(-1) - logits.logsumexp(-1)


def _right_pad(seqs: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> torch.Tensor:
    width = max((len(s) for s in seqs), default=0) if width is None else width
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for n, s in enumerate(seqs):
        ids[n, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids


class _Scored:
    """Where the scored tokens are: output row/position, target id and candidate index, each [M]."""

    def __init__(self):
        self.row: list[torch.Tensor] = []
        self.pos: list[torch.Tensor] = []
        self.seg: list[torch.Tensor] = []

    def add(self, row: int, positions: torch.Tensor, n: int) -> None:
        self.row.append(torch.full_like(positions, row))
        self.pos.append(positions)
        self.seg.append(torch.full_like(positions, n))

    def gather(self, out: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """out [rows, L, ·] -> states [M, ·], targets ids[row, pos + 1] [M], candidate index [M]."""
        dev = out.device
        row, pos = torch.cat(self.row).to(dev), torch.cat(self.pos).to(dev)
        return out[row, pos], ids.to(dev)[row, pos + 1], torch.cat(self.seg).to(dev)


def _padded(lists: Sequence[EncodedList], pad_id: int, run: _Runner):
    """One right-padded row per candidate, [prompt, response]: N rows of max(P + R) tokens.

    No attention mask: with right padding and causal attention a real token never sees a pad,
    so the causal kernel (no [N, 1, T, T] mask) gives the same outputs at scored positions.
    """
    seqs, scored = [], _Scored()
    for lst in lists:
        for r in lst.responses:
            n = len(seqs)
            seqs.append(lst.prompt + r)
            scored.add(n, torch.arange(len(lst.prompt) - 1, len(lst.prompt) + len(r) - 1), n)
    ids = _right_pad(seqs, pad_id).to(run.device)
    # The last column's outputs predict nothing (every row's last scored position is its
    # length - 2), so it is not fed to the model.
    out, _ = run(ids[:, :-1] if ids.shape[1] > 1 else ids)
    return scored.gather(out, ids)


def _block_mask(allowed: torch.Tensor, run: _Runner, dtype: torch.dtype) -> torch.Tensor:
    """A [rows, 1, Q, K] bool "may attend" mask in the form the attention implementation takes."""
    # A custom 4-D mask replaces the model's own masks, sliding-window ones included.
    window = getattr(run.text_config, "sliding_window", None)
    if window is not None and allowed.shape[-1] > window:
        raise ValueError(f"train.forward=shared_prompt/packed: rows of {allowed.shape[-1]} tokens exceed the model's "
                         f"sliding window ({window}), which a custom mask would drop; use train.forward=padded")
    if run.attn == "sdpa":
        return allowed[:, None]
    if run.attn == "eager":
        zero = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed[:, None], zero, torch.finfo(dtype).min)
    raise ValueError(f"train.forward=shared_prompt/packed needs a custom 4-D attention mask, which "
                     f"attn_implementation={run.attn!r} does not take here; use model.attn_implementation=sdpa "
                     "or eager, or train.forward=padded")


def _shared_prompt(lists: Sequence[EncodedList], pad_id: int, run: _Runner):
    """Each list's prompt once (B rows), then its K responses (N rows) on the prompt's KV cache.

    The cache rows are index-selected per response (a differentiable copy), so gradients reach
    the prompt's keys/values. Response token t of list b sits at position P_b + t and sees the
    prompt's first P_b cache slots and its own tokens <= t (mask [N, 1, R, P_max + R]).
    """
    dev = run.device
    p_len = torch.tensor([len(lst.prompt) for lst in lists])
    p_ids = _right_pad([lst.prompt for lst in lists], pad_id).to(dev)
    p_out, cache = run(p_ids, use_cache=True)
    if cache is None:
        raise ValueError("train.forward=shared_prompt: the model returned no KV cache for the prompts (is use_cache "
                         "disabled in its config?); use train.forward=packed or padded")
    resp = [r for lst in lists for r in lst.responses]
    owner = torch.tensor([b for b, lst in enumerate(lists) for _ in lst.responses], dtype=torch.long)
    r_ids = _right_pad(resp, pad_id)
    width = r_ids.shape[1]
    firsts = torch.tensor([n for n, r in enumerate(resp) if r], dtype=torch.long)
    # The prompt's last position predicts each response's first token.
    states = [p_out[owner[firsts].to(dev), (p_len[owner[firsts]] - 1).to(dev)]]
    tgts, segs = [r_ids[firsts, 0].to(dev)], [firsts.to(dev)]
    if width > 1:
        cache.batch_select_indices(owner.to(dev))
        p_max = p_ids.shape[1]
        # A response's last token predicts nothing: the pass takes the first width - 1 columns.
        w = width - 1
        allowed = torch.cat([(torch.arange(p_max)[None, :] < p_len[owner][:, None])[:, None, :].expand(-1, w, -1),
                             torch.ones(w, w, dtype=torch.bool).tril()[None].expand(len(resp), -1, -1)], -1)
        pos = p_len[owner][:, None] + torch.arange(w)[None, :]
        r_out, _ = run(r_ids[:, :w].to(dev), attention_mask=_block_mask(allowed.to(dev), run, p_out.dtype),
                       position_ids=pos.to(dev), cache=cache)
        scored = _Scored()
        for n, r in enumerate(resp):
            if len(r) > 1:
                scored.add(n, torch.arange(len(r) - 1), n)
        if scored.row:
            s, t, g = scored.gather(r_out, r_ids)
            states.append(s), tgts.append(t), segs.append(g)
    return torch.cat(states), torch.cat(tgts), torch.cat(segs)


def _packed(lists: Sequence[EncodedList], pad_id: int, run: _Runner):
    """One row per list, [prompt, r_1, ..., r_K] without padding between them, rows right-padded.

    Tree mask: a response token sees the prompt and its own response's earlier tokens; position
    ids restart at P for every response (padding-free packing of the K candidates).
    """
    seqs, segs, poss, scored = [], [], [], _Scored()
    n = 0
    for b, lst in enumerate(lists):
        p = len(lst.prompt)
        seq, seg, pos = list(lst.prompt), [0] * p, list(range(p))
        for j, r in enumerate(lst.responses):
            start = len(seq)
            # the first response token is predicted at the prompt's last position p - 1
            scored.add(b, torch.cat([torch.tensor([p - 1]), torch.arange(start, start + len(r) - 1)])
                       if r else torch.zeros(0, dtype=torch.long), n)
            seq += r
            seg += [j + 1] * len(r)
            pos += range(p, p + len(r))
            n += 1
        seqs.append(seq), segs.append(seg), poss.append(pos)
    ids = _right_pad(seqs, pad_id)
    seg = _right_pad(segs, -1, ids.shape[1])
    allowed = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril()[None] & (
        (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None]))
    dev = run.device
    out, _ = run(ids.to(dev), attention_mask=_block_mask(allowed.to(dev), run, _param_dtype(run.base)),
                 position_ids=_right_pad(poss, 0, ids.shape[1]).to(dev))
    states, _, seg_idx = scored.gather(out, ids)
    # Targets are the responses' tokens in order (the prompt's last position predicts each
    # response's first token, which is not the next token of the row).
    tgts = torch.cat([torch.tensor(r, dtype=torch.long) for lst in lists for r in lst.responses if r] or
                     [torch.zeros(0, dtype=torch.long)]).to(dev)
    return states, tgts, seg_idx


_NOTED: set[str] = set()


def _checkpointing(model) -> bool:
    """Whether activation (gradient) checkpointing is on; transformers 5.25 renamed ``is_gradient_checkpointing``
    (now a FutureWarning on every read) to ``is_activation_checkpointing``."""
    value = getattr(model, "is_activation_checkpointing", None)  # a PEFT wrapper forwards it to its base model
    return bool(getattr(model, "is_gradient_checkpointing", False) if value is None else value)


def _note_once(message: str) -> None:
    if message not in _NOTED:
        _NOTED.add(message)
        logging.getLogger(__name__).info(message)


def _param_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


_LAYOUTS = {"padded": _padded, "shared_prompt": _shared_prompt, "packed": _packed}


def sequence_logps(model, lists: Sequence[EncodedList], pad_id: int, forward: str = "padded",
                   chunk: int | None = 512) -> torch.Tensor:
    """Summed response log-probs of all candidates: float [N] (N = Σ k_i), differentiable under grad.

    logp(y|x) = Σ_t log softmax(z_t)[y_t] over response positions only; z_t are the logits.
    ``forward``: how the candidates go through the model (FORWARDS; all give the same values):
    ``padded`` one [prompt, response] row per candidate; ``shared_prompt`` each prompt once and
    its responses on its KV cache; ``packed`` one row per list with a tree mask.
    ``chunk``: None = the model's own logits over every position ([rows, L, V]); an int = the
    head applied to response positions only, that many tokens at a time, recomputed in the
    backward, so the peak holds one [chunk, V] block instead of the full logits — for a
    vocabulary wider than the hidden size only (a narrower one takes the model's logits: nothing to save).
    """
    if forward not in _LAYOUTS:
        raise ValueError(f"train.forward={forward!r} is not one of {FORWARDS}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"train.logprob_chunk={chunk} must be >= 1 or null (the full-logits path)")
    if forward == "shared_prompt" and model.training and _checkpointing(model):
        # Gradient checkpointing turns the KV cache off in training, and shared_prompt lives on it;
        # packed shares the prompt the same way without a cache (same values, see the tests).
        _note_once("train.forward=shared_prompt needs the KV cache, which gradient checkpointing turns off; "
                   "using train.forward=packed (the same log-probs)")
        forward = "packed"
    run = _Runner(model, chunk)
    run.device = next(model.parameters()).device
    states, tgt, seg = _LAYOUTS[forward](lists, pad_id, run)
    tok = _logp_of(states, tgt, run)
    n = sum(len(lst.responses) for lst in lists)
    return torch.zeros(n, dtype=torch.float32, device=tok.device).index_add(0, seg, tok)


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
def list_logps(model, tokenizer, rows: Sequence[dict], max_tokens: int, progress: bool = False,
               forward: str = "padded", chunk: int | None = 512) -> list[list[float]]:
    """Per-candidate response log-probs of every row (no grad), in the rows' order (``sequence_logps``'s switches)."""
    from larpo.console import progress as tqdm

    lists = encode_lists(tokenizer, rows)
    result: list[list[float]] = [[] for _ in rows]
    batches = pack_by_tokens(lists, max_tokens)
    for batch in tqdm(batches, desc="log-probs", disable=not progress, leave=False):
        flat = sequence_logps(model, [lists[i] for i in batch], tokenizer.pad_token_id, forward, chunk).cpu()
        start = 0
        for i in batch:
            k = len(lists[i].responses)
            result[i] = flat[start : start + k].tolist()
            start += k
    return result

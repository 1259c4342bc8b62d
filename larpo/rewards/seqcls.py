"""Sequence-classification reward models (FsfairX-LLaMA3-RM, Skywork-Reward-V2, ArmoRM, ...).

Each (prompt, response) pair is rendered with the reward model's *own* tokenizer and chat
template (not the policy's) and scored by one forward pass of an ``AutoModelForSequenceClassification``.
The model is loaded on the first ``score()`` call and released when that call returns, so a
reward model never sits in memory while the policy trains; ``with reward.loaded(): ...`` keeps
it loaded across several ``score()`` calls (e.g. the batches of an evaluation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from larpo.rewards.common import (
    LoadedOnDemand,
    check_finite,
    check_remote_code,
    keep_end,
    pad_right,
    read_config_dict,
    resolve_checkpoint,
    resolve_device,
    resolve_dtype,
    sorted_batches,
    unflatten,
)

logger = logging.getLogger(__name__)

_HUGE = 10**7  # tokenizers without a real limit report model_max_length ~ 1e30


class SeqClsReward(LoadedOnDemand):
    """A scalar reward r(x, y) from a sequence-classification model; absolute, not list-relative.

    Args (plain scalars, so every one is a Hydra override ``reward.<arg>=...``):
        pretrained: hub id or local checkpoint folder of the reward model.
        tokenizer: hub id or folder of its tokenizer; None = ``pretrained``.
        batch_size: sequences per forward pass (sequences are sorted by length first).
        max_length: token limit per rendered pair; None = the smaller of the tokenizer's
            ``model_max_length`` and the model's ``max_position_embeddings``. Longer pairs lose
            the start of the prompt (left truncation, BOS kept); the count is logged.
        dtype: ``auto`` (bf16 on CUDA when supported, else fp32) | float32 | bfloat16 | float16.
        device: ``auto`` | cpu | cuda | cuda:N.
        trust_remote_code: allow a checkpoint's own Python code (ArmoRM needs it); off by default.
        score_attr: None = ``output.logits[:, 0]``; a name (ArmoRM: ``score``) = that output field.
        name: recorded in scores.jsonl; None = ``seqcls:<pretrained>``.
        task: ignored (every reward is built as ``instantiate(cfg.reward, task=task)``).
    """

    list_relative = False  # a score means the same in any list: candidates of several rounds can be pooled

    def __init__(
        self,
        pretrained: str,
        tokenizer: str | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        dtype: str = "auto",
        device: str = "auto",
        trust_remote_code: bool = False,
        score_attr: str | None = None,
        name: str | None = None,
        task=None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"reward.batch_size must be >= 1, got {batch_size}")
        self.pretrained = str(pretrained)
        self.tokenizer_path = str(tokenizer) if tokenizer is not None else None
        self.batch_size = int(batch_size)
        self.max_length = max_length
        self.dtype = dtype
        self.device = device
        self.trust_remote_code = bool(trust_remote_code)
        self.score_attr = score_attr
        self.name = name or f"seqcls:{self.pretrained}"
        self._tok = None  # the tokenizer is light and kept; the model is not
        self._config: dict | None = None
        self._model = None

    # ---- public API -------------------------------------------------------------------------

    def score(
        self, prompts: Sequence[str], responses: Sequence[Sequence[str]], finished: Sequence[Sequence[bool]]
    ) -> list[list[float]]:
        """Rewards [P][K] for prompts [P] and responses [P][K].

        ``finished`` is not used: the reward model judges the text as it stands, cut or not.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} response lists")
        seqs = self.encode(prompts, responses)
        if not seqs:
            return [[] for _ in prompts]
        with self.loaded():
            flat = self._forward_all(seqs)
        out = unflatten(flat, [len(rs) for rs in responses])
        check_finite(out, prompts, self.name)
        return out

    def encode(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[list[int]]:
        """Token ids of every rendered (prompt, response) pair, flattened in order: [P*K] lists.

        The pair is rendered with the RM's chat template and tokenized with
        ``add_special_tokens=False`` (the template writes the special tokens). The sequence then
        starts with exactly one BOS iff the tokenizer itself adds one: templates that write
        ``{{ bos_token }}`` (Llama-3, FsfairX) would otherwise get two, which is what the FsfairX
        model card avoids by stripping the BOS from the text before the pipeline tokenizes it.
        """
        tok = self._tokenizer()
        bos = _leading_bos(tok)
        max_length = self._max_length(tok)
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
            )
            for p, rs in zip(prompts, responses)
            for r in rs
        ]
        seqs, n_cut = [], 0
        for ids in tok(texts, add_special_tokens=False).input_ids if texts else []:
            if bos is not None:
                while ids and ids[0] == bos:
                    ids = ids[1:]
                ids = [bos, *ids]
            ids, cut = keep_end(ids, max_length, keep_first=int(bos is not None))
            n_cut += cut
            seqs.append(ids)
        if n_cut:
            logger.warning(
                "reward %s: %d of %d (prompt, response) pairs exceeded max_length=%d tokens and lost the "
                "start of their prompt (left truncation; the response end is kept)",
                self.name,
                n_cut,
                len(seqs),
                max_length,
            )
        return seqs

    # ---- loading ----------------------------------------------------------------------------

    def _checkpoint_config(self) -> dict:
        """Checks the checkpoint before anything is loaded: it exists, and its custom code is allowed."""
        if self._config is None:
            path = resolve_checkpoint(self.pretrained, "reward model")
            config = read_config_dict(path, "reward model")
            check_remote_code(config, self.pretrained, self.trust_remote_code, "reward.trust_remote_code")
            self.pretrained, self._config = path, config
        return self._config

    def _tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            self._checkpoint_config()
            path = resolve_checkpoint(self.tokenizer_path or self.pretrained, "reward tokenizer")
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=self.trust_remote_code)
            if not getattr(tok, "chat_template", None):
                raise ValueError(
                    f"reward tokenizer at {path!r} has no chat_template; a reward model must render "
                    "(prompt, response) the way it was trained (set reward.tokenizer to one that has it)"
                )
            if tok.pad_token_id is None:
                # Padding is masked out; _pad_id() swaps in an id absent from the batch where needed.
                tok.pad_token = tok.eos_token
            self._tok = tok
        return self._tok

    def _max_length(self, tok) -> int | None:
        if self.max_length is not None:
            return int(self.max_length)
        limits = [tok.model_max_length, self._checkpoint_config().get("max_position_embeddings")]
        limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < _HUGE]
        return min(limits) if limits else None

    def _load_model(self):
        from transformers import AutoModelForSequenceClassification

        self._checkpoint_config()
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        logger.info("loading reward model %s (%s on %s)", self.pretrained, dtype, device)
        # device_map puts CUDA weights straight on the GPU instead of staging an 8B model in RAM.
        extra = {"device_map": str(device)} if device.type == "cuda" else {}
        model = AutoModelForSequenceClassification.from_pretrained(
            self.pretrained, dtype=dtype, trust_remote_code=self.trust_remote_code, **extra
        )
        return model.to(device).eval()

    # ---- scoring ----------------------------------------------------------------------------

    def _forward_all(self, seqs: list[list[int]]) -> list[float]:
        """One score per sequence [N], batched by similar length and put back in input order."""
        from larpo.console import progress as tqdm

        model, tok = self._model, self._tokenizer()
        device = next(model.parameters()).device
        out = [0.0] * len(seqs)
        batches = sorted_batches([len(s) for s in seqs], self.batch_size)
        with torch.inference_mode():
            for batch in tqdm(batches, desc=f"score {self.name}", leave=False):
                pad_id = _pad_id([seqs[i] for i in batch], tok)
                # Sequence classifiers locate each sequence's end through config.pad_token_id.
                model.config.pad_token_id = pad_id
                ids, mask = pad_right([seqs[i] for i in batch], pad_id)
                output = model(input_ids=ids.to(device), attention_mask=mask.to(device))
                for i, value in zip(batch, self._read(output, len(batch)).float().cpu().tolist()):
                    out[i] = value
        return out

    def _read(self, output, n: int) -> torch.Tensor:
        """The scalar score per sequence [n] from the model output."""
        field = self.score_attr or "logits"
        value = getattr(output, field, None)
        if value is None:
            raise ValueError(
                f"reward model {self.pretrained!r} returns no {field!r} field "
                f"(reward.score_attr={self.score_attr!r}); ArmoRM uses score_attr=score, most RMs null"
            )
        return value.reshape(n, -1)[:, 0]  # num_labels > 1: the first label is the reward


def _leading_bos(tok) -> int | None:
    """The BOS id if this tokenizer puts one in front of plain text by itself, else None."""
    bos = tok.bos_token_id
    if bos is None:
        return None
    ids = tok("a", add_special_tokens=True).input_ids
    return bos if ids and ids[0] == bos else None


def _pad_id(seqs: Sequence[Sequence[int]], tok) -> int:
    """A pad id that occurs in none of ``seqs``: the tokenizer's own when free, else the first free id.

    Sequence classifiers find the end of a sequence through the pad id: HF's current heads read
    the rightmost token that is not the pad id, older heads and custom code (ArmoRM) the token
    before the *first* pad id. When the pad token is the EOS (no pad token of its own) and the
    template writes EOS (at the end, or after each turn as Llama-3's <|eot_id|>), either rule
    reads the wrong token. Padding is masked out, so any id absent from the batch pads safely.
    """
    used = set().union(*seqs)
    for candidate in (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id, tok.bos_token_id, *range(len(tok))):
        if candidate is not None and candidate not in used:
            return int(candidate)
    raise ValueError("no token id is free to pad with")  # unreachable for a batch shorter than the vocabulary

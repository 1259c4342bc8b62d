"""PairRM (llm-blender/PairRM-hf), the paper's main reranker, without the llm-blender package.

llm-blender 0.0.2 does not import on transformers 5, so the small pairwise model is re-built
here in the checkpoint's own layout (``DebertaV2PairRM`` of llm-blender's
``llm_blender/pair_ranker/pairrm.py``, also vendored by rewardbench): a DeBERTa-v2 backbone
``pretrained_model.*`` and a head ``head_layer`` = Dropout, Linear(2H, H), Tanh, Dropout,
Linear(H, n_tasks), so the hub weights load by name with no missing keys.

One comparison reads, for the sequence
``[CLS]<|source|>x[SEP] [CLS]<|candidate1|>y_i[SEP] [CLS]<|candidate2|>y_j[SEP]``
(llm-blender's ``tokenize_pair``: each part encoded with its special tokens, source cut to
1224 tokens, each candidate to (2048 - len(source)) // 2), the encoder states h_s, h_1, h_2 at
the three prefix tokens, and returns the logit that y_i beats y_j:
``mean_tasks(head([h_s; h_1]) - head([h_s; h_2]))``.

A list of K candidates is scored as llm-blender's ``Blender.rank`` does: every ordered pair
(i, j), i != j, gives C[i, j] (``CrossCompareReranker._full_predict``; C[i, i] = 0), and
candidate i scores ``mean_j (C - Cᵀ)[i, j]`` (``gpt_eval.utils.get_scores_from_cmps``,
policy ``max_logits``: the mean over all K columns, diagonal included). (C - Cᵀ)[i, j] combines
both orders, [i, j] and [j, i], which cancels the model's position bias; it is what
llm-blender's ``compare(mode="[A,B]+[B,A]")`` and rewardbench's ``PairRMPipeline`` (AB - BA) use.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import torch

from larpo.rewards.common import (
    LoadedOnDemand,
    check_finite,
    pad_right,
    read_config_dict,
    resolve_checkpoint,
    resolve_device,
    resolve_dtype,
    sorted_batches,
)

logger = logging.getLogger(__name__)

SOURCE_PREFIX = "<|source|>"
CAND1_PREFIX = "<|candidate1|>"
CAND2_PREFIX = "<|candidate2|>"
CAND_PREFIX = "<|candidate|>"  # in the vocabulary; llm-blender's training-time placeholder, unused here


@functools.cache
def pairrm_model_class():
    """``DebertaV2PairRM``, built on first use so that importing larpo does not import transformers."""
    from torch import nn
    from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2Model, DebertaV2PreTrainedModel

    class DebertaV2PairRM(DebertaV2PreTrainedModel):
        """DeBERTa-v2 + pairwise head; module names are those of the PairRM-hf checkpoint."""

        def __init__(self, config) -> None:
            super().__init__(config)
            hidden, drop = config.hidden_size, getattr(config, "drop_out", 0.05)
            self.pretrained_model = DebertaV2Model(config)
            self.head_layer = nn.Sequential(
                nn.Dropout(drop),
                nn.Linear(2 * hidden, hidden),
                nn.Tanh(),
                nn.Dropout(drop),
                nn.Linear(hidden, getattr(config, "n_tasks", 1)),
            )
            self.post_init()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor):
            """Logit that candidate 1 beats candidate 2: [B].

            input_ids, attention_mask: [B, T]; positions: [B, 3] indices of the source,
            candidate-1 and candidate-2 prefix tokens (known from the encoding, so a prefix
            string typed inside a response cannot be mistaken for the real one).
            """
            encs = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            rows = torch.arange(encs.shape[0], device=encs.device)
            source, cand1, cand2 = (encs[rows, positions[:, n]] for n in range(3))
            left = self.head_layer(torch.cat([source, cand1], dim=-1))
            right = self.head_layer(torch.cat([source, cand2], dim=-1))
            return (left - right).mean(dim=-1)

    return DebertaV2PairRM


def list_scores(compare: torch.Tensor) -> torch.Tensor:
    """Per-candidate scores [K] from a comparison matrix C [K, K]: row means of (C - Cᵀ).

    Dividing by K (diagonal included) is llm-blender's ``get_scores_from_cmps``. The scores
    sum to 0, since C - Cᵀ is antisymmetric.
    """
    return (compare - compare.T).mean(dim=-1)


class PairRMReward(LoadedOnDemand):
    """Pairwise reward model scoring each candidate against the rest of its own list.

    Scores are relative to their list: the same response gets a different score in another
    list, and a list of one scores 0.0. Candidates pooled from several rounds must be scored
    again together, never compared across lists (hence ``list_relative = True``).

    Args: pretrained (hub id or folder of a PairRM-hf checkpoint), batch_size (pairs per
    forward), source_max_length / candidate_max_length (llm-blender's 1224 / 412), dtype
    (``auto``: bf16 on CUDA when supported, else fp32), device, name (None =
    ``pairrm:<pretrained>``), task (ignored).
    """

    list_relative = True

    def __init__(
        self,
        pretrained: str,
        batch_size: int = 16,
        source_max_length: int = 1224,
        candidate_max_length: int = 412,
        dtype: str = "auto",
        device: str = "auto",
        name: str | None = None,
        task=None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"reward.batch_size must be >= 1, got {batch_size}")
        if min(source_max_length, candidate_max_length) < 3:
            raise ValueError("PairRM source/candidate max lengths must leave room for [CLS] <prefix> [SEP]")
        self.pretrained = str(pretrained)
        self.batch_size = int(batch_size)
        self.source_max_length = int(source_max_length)
        self.candidate_max_length = int(candidate_max_length)
        self.dtype = dtype
        self.device = device
        self.name = name or f"pairrm:{self.pretrained}"
        self._tok = None
        self._model = None

    def score(
        self, prompts: Sequence[str], responses: Sequence[Sequence[str]], finished: Sequence[Sequence[bool]]
    ) -> list[list[float]]:
        """Rewards [P][K]: candidate i of prompt p scores mean_j (C - Cᵀ)[i, j] within its list.

        ``finished`` is not used: PairRM judges the text as it stands.
        """
        out = [[float(x) for x in list_scores(c).tolist()] for c in self.comparison_matrices(prompts, responses)]
        check_finite(out, prompts, self.name)
        return out

    def comparison_matrices(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """C [K_p, K_p] per prompt: C[i, j] = logit that y_i (as candidate 1) beats y_j (as candidate 2)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} response lists")
        keys, seqs, positions = self.encode(prompts, responses)
        mats = [torch.zeros(len(rs), len(rs)) for rs in responses]
        if seqs:
            with self.loaded():
                logits = self._forward_all(seqs, positions)
            for (p, i, j), value in zip(keys, logits):
                mats[p][i, j] = value
        return mats

    def encode(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]):
        """Every ordered pair (p, i, j), i != j, as (keys [N], token ids [N], prefix positions [N][3])."""
        tok = self._tokenizer()
        keys, seqs, positions, n_cut = [], [], [], 0
        for p, (prompt, cands) in enumerate(zip(prompts, responses)):
            if len(cands) < 2:
                continue  # a list of one (or none) has no pair; its score is 0
            source, cut = _encode_part(tok, SOURCE_PREFIX, prompt, self.source_max_length)
            n_cut += cut
            limit = (self.source_max_length + 2 * self.candidate_max_length - len(source)) // 2
            first = [_encode_part(tok, CAND1_PREFIX, c, limit) for c in cands]
            second = [_encode_part(tok, CAND2_PREFIX, c, limit)[0] for c in cands]
            n_cut += sum(cut for _, cut in first)
            for i in range(len(cands)):
                for j in range(len(cands)):
                    if i != j:
                        keys.append((p, i, j))
                        seqs.append(source + first[i][0] + second[j])
                        # each part is [CLS] <prefix> ...: the prefix is its second token
                        positions.append((1, len(source) + 1, len(source) + len(first[i][0]) + 1))
        if n_cut:
            logger.warning(
                "reward %s: %d prompts/candidates were truncated to PairRM's limits "
                "(source %d tokens, candidates share the rest of %d)",
                self.name,
                n_cut,
                self.source_max_length,
                self.source_max_length + 2 * self.candidate_max_length,
            )
        return keys, seqs, positions

    def _tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            self.pretrained = resolve_checkpoint(self.pretrained, "PairRM checkpoint")
            config = read_config_dict(self.pretrained, "PairRM checkpoint")
            tok = AutoTokenizer.from_pretrained(self.pretrained)
            for prefix, key in (
                (SOURCE_PREFIX, "source_prefix_id"),
                (CAND1_PREFIX, "cand1_prefix_id"),
                (CAND2_PREFIX, "cand2_prefix_id"),
            ):
                token_id = tok.convert_tokens_to_ids(prefix)
                if token_id is None or token_id == tok.unk_token_id or config.get(key, token_id) != token_id:
                    raise ValueError(
                        f"PairRM tokenizer at {self.pretrained!r}: {prefix} is id {token_id}, "
                        f"config.json says {key}={config.get(key)}; not a PairRM-hf checkpoint?"
                    )
            if tok.cls_token_id is None or tok.sep_token_id is None or tok.pad_token_id is None:
                raise ValueError(f"PairRM tokenizer at {self.pretrained!r} needs [CLS], [SEP] and [PAD] tokens")
            self._tok = tok
        return self._tok

    def _load_model(self):
        self._tokenizer()  # checks the checkpoint first
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        logger.info("loading PairRM %s (%s on %s)", self.pretrained, dtype, device)
        model, info = pairrm_model_class().from_pretrained(self.pretrained, dtype=dtype, output_loading_info=True)
        if info.get("missing_keys"):
            raise ValueError(
                f"PairRM checkpoint {self.pretrained!r} lacks weights {sorted(info['missing_keys'])[:8]}"
                "; is it llm-blender/PairRM-hf (not the llm-blender/PairRM package layout)?"
            )
        if info.get("unexpected_keys"):
            logger.warning("PairRM checkpoint: unused weights %s", sorted(info["unexpected_keys"])[:8])
        return model.to(device).eval()

    def _forward_all(self, seqs: list[list[int]], positions: list[tuple[int, int, int]]) -> list[float]:
        """One comparison logit per pair sequence [N], batched by similar length, in input order."""
        from larpo.console import progress as tqdm

        model, pad_id = self._model, self._tok.pad_token_id
        device = next(model.parameters()).device
        out = [0.0] * len(seqs)
        with torch.inference_mode():
            for batch in tqdm(
                sorted_batches([len(s) for s in seqs], self.batch_size), desc=f"score {self.name}", leave=False
            ):
                ids, mask = pad_right([seqs[i] for i in batch], pad_id)
                pos = torch.tensor([positions[i] for i in batch], dtype=torch.long, device=device)
                logits = model(ids.to(device), mask.to(device), pos).float().cpu().tolist()
                for i, value in zip(batch, logits):
                    out[i] = value
        return out


def _encode_part(tok, prefix: str, text: str, max_length: int) -> tuple[list[int], bool]:
    """``[CLS] prefix+text [SEP]`` cut to ``max_length`` tokens from the right, as llm-blender's
    ``tokenize_pair`` does with ``tokenizer.encode(prefix + text, max_length=..., truncation=True)``;
    and whether it was cut."""
    body = tok(prefix + text, add_special_tokens=False).input_ids
    if not body or body[0] != tok.convert_tokens_to_ids(prefix):
        raise ValueError(f"PairRM tokenizer does not keep {prefix} as one leading token of {text[:40]!r}")
    room = max_length - 2
    return [tok.cls_token_id, *body[:room], tok.sep_token_id], len(body) > room

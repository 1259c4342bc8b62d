"""Helpers shared by the model rewards: checkpoint checks, devices, batching, truncation, NaN checks.

Everything heavy (transformers) is imported inside the functions that need it, so that
``import larpo.rewards`` stays light and a reward can be constructed without loading anything.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

# "owner/name" or a bare "name", as the hub spells repository ids; anything else is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_checkpoint(path: str, what: str) -> str:
    """``path`` as given when it is an existing folder or looks like a hub id; else a clear error.

    Without this check transformers answers a mistyped local path with "Repo id must use
    alphanumeric chars", which does not say that the folder is missing.
    """
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise FileNotFoundError(f"{what} {path!r} is a file; give the checkpoint folder (with config.json)")
        return str(local)
    if path.startswith((".", "/", "~")) or "\\" in path or not _HUB_ID.match(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist (no such local folder)")
    return path


def read_config_dict(path: str, what: str) -> dict:
    """The checkpoint's ``config.json`` as a plain dict, without instantiating any (custom) class."""
    local = Path(path)
    if local.is_dir():
        file = local / "config.json"
        if not file.exists():
            raise FileNotFoundError(f"{what} {path!r} has no config.json; is it a model checkpoint folder?")
        return json.loads(file.read_text())
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(path)
    except OSError as err:
        raise FileNotFoundError(
            f"{what} {path!r} is neither a local folder nor a reachable Hugging Face hub id: {err}"
        ) from err
    return config


def check_remote_code(config: dict, path: str, trust_remote_code: bool, key: str) -> None:
    """Refuse a checkpoint that needs its own Python code unless the config allows it (``key``)."""
    if config.get("auto_map") and not trust_remote_code:
        raise ValueError(
            f"{path!r} ships custom model code (auto_map in config.json: {sorted(config['auto_map'])}); "
            f"read it, then set {key}=true to run it"
        )


def resolve_device(name: str) -> torch.device:
    from larpo.model import resolve_device as _resolve

    return _resolve(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a CUDA device that supports it (halves memory, RMs are trained in it), else fp32."""
    if name == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"reward dtype={name!r} is not one of {['auto', *sorted(_DTYPES)]}")
    return _DTYPES[name]


def free_memory(device: torch.device) -> None:
    """Collect garbage and hand cached CUDA blocks back, so the policy can use them next."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (so an OOM shows at once).

    lengths: [N] -> batches of indices into it; together a permutation of range(N).
    """
    if batch_size < 1:
        raise ValueError(f"reward batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` [B, T] and ``attention_mask`` [B, T].

    Right padding keeps every real token at the position it has unpadded (causal models here
    derive positions from the index, not from the mask), so a padded batch scores like singles.
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids, mask


def keep_end(ids: list[int], max_length: int | None, keep_first: int = 0) -> tuple[list[int], bool]:
    """Left truncation to ``max_length`` tokens: keep the first ``keep_first`` (BOS) and the end.

    A reward model reads its score at the end of the sequence (the response's last tokens and
    the template's end of turn), so the start of the prompt is what is dropped.
    Returns (ids, whether they were truncated).
    """
    if max_length is None or len(ids) <= max_length:
        return ids, False
    tail = max_length - keep_first
    if tail < 1:
        raise ValueError(f"reward max_length={max_length} leaves no room after {keep_first} leading token(s)")
    return ids[:keep_first] + ids[len(ids) - tail :], True


def check_finite(scores: Sequence[Sequence[float]], prompts: Sequence[str], name: str) -> None:
    """A NaN/inf score is an error naming the prompt (first 80 characters) and the candidate index."""
    for prompt, row in zip(prompts, scores):
        for k, value in enumerate(row):
            if not math.isfinite(value):
                raise ValueError(
                    f"reward {name!r} gave a non-finite score ({value}) to candidate {k} of prompt {prompt[:80]!r}"
                )


def unflatten(values: Sequence[float], sizes: Sequence[int]) -> list[list[float]]:
    """[sum(sizes)] -> [len(sizes)][size]: the inverse of flattening a list of lists in order."""
    out, start = [], 0
    for n in sizes:
        out.append([float(v) for v in values[start : start + n]])
        start += n
    return out


class LoadedOnDemand:
    """Mixin of the reward models: ``loaded()`` keeps the model (``self._load_model()``) in memory
    inside the block, re-entrant, and releases it (and the CUDA cache) on exit."""

    _model: Any = None
    device: str = "auto"

    def _load_model(self) -> Any:  # pragma: no cover - every reward model defines it
        raise NotImplementedError

    @contextmanager
    def loaded(self) -> Iterator[None]:
        if self._model is not None:  # score() inside an open block reuses the loaded model
            yield
            return
        self._model = self._load_model()
        try:
            yield
        finally:
            self._model = None
            free_memory(resolve_device(self.device))

"""Loading policies and tokenizers, and the rendering of prompts: the model's own chat template with the
generation prompt; a sequence is the rendered prompt's ids, the response's ids and EOS when it finished.

The embedded default and a hub model take the same path: a checkpoint directory written by
``save_pretrained`` is re-loaded with ``from_pretrained``. Only round 0 of the embedded run
builds a model from a config instead of loading one.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from larpo.errors import CheckpointError, SystemMessageError

logger = logging.getLogger(__name__)

EMBEDDED_TOKENIZER = Path(__file__).parent / "assets" / "tokenizer"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but CUDA is not available; use device=cpu")
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"model.dtype={name!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id ("org/name"): absolute, relative with ./ or ../, or existing."""
    return path.startswith(("/", "./", "../", "~")) or Path(path).expanduser().exists()


def check_local(path: str | Path, what: str) -> None:
    """A local path that does not exist fails here, not in the hub client ("Repo id must use ..."); the
    folder of a fetchable model names the command that fetches it (:func:`larpo.fetch.fetch_hint`)."""
    path = str(path)
    if looks_local(path) and not Path(path).expanduser().exists():
        from larpo.fetch import fetch_hint

        raise CheckpointError(f"{what}: no such file or folder: {path}{fetch_hint(path)}")


def load_tokenizer(path: str | Path | None, trust_remote_code: bool = False):
    """Load a tokenizer; None means the embedded character-level tokenizer of the repo."""
    from transformers import AutoTokenizer

    path = str(path) if path is not None else str(EMBEDDED_TOKENIZER)
    check_local(path, "tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error(path, "a tokenizer from", e, "model.tokenizer") from e
    if tok.pad_token_id is None:
        # Many hub chat models ship no pad token; padding is masked out everywhere anyway.
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer at {path!r} has no eos_token; LarPO needs one to end responses")
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"tokenizer at {path!r} has no chat_template; prompts are rendered with it")
    return tok


def _load_error(path: str, what: str, e: Exception, key: str) -> CheckpointError:
    """A loading failure explained: custom code not trusted, or a hub id with no network and no cache."""
    text = str(e)
    if "trust_remote_code" in text:
        return CheckpointError(f"{what} {path} needs its own code from the hub repo (auto_map); set "
                               f"{key.rsplit('.', 1)[0]}.trust_remote_code=true if you trust it")
    if not looks_local(path) and isinstance(e, OSError):
        return CheckpointError(
            f"could not load {what} '{path}' from the Hugging Face hub (no network, and not in the local cache?): "
            f"download it where there is a network (`hf download {path} --local-dir DIR`) and set {key}=DIR"
        )
    return CheckpointError(f"could not load {what} {path}: {type(e).__name__}: {text}")


def load_model_config(model_cfg, tokenizer):
    """The policy's transformers config, without loading weights (for start-up checks)."""
    from transformers import AutoConfig

    if not model_cfg.pretrained:
        return arch_config(dict(model_cfg.arch), tokenizer)
    path = str(model_cfg.pretrained)
    check_local(path, "model.pretrained")
    if looks_local(path) and not (Path(path) / "config.json").exists():
        raise CheckpointError(f"model.pretrained: {path} is not a model folder (config.json missing)")
    trust = bool(model_cfg.trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust)
    except (OSError, ValueError) as e:
        raise _load_error(path, "the model config of", e, "model.pretrained") from e
    # transformers silently falls back to its own class when model_type is known too: the repo's
    # code (a custom head, say) would be skipped without a word.
    if "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}) and not trust:
        raise _load_error(path, "the model", ValueError("trust_remote_code"), "model.pretrained")
    return config


def arch_config(arch: dict, tokenizer):
    """The LlamaConfig of a model built from scratch: ``arch`` sized, with the tokenizer's vocabulary."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **arch)


def build_model(arch: dict, tokenizer, dtype: torch.dtype = torch.float32):
    """A fresh Llama-architecture causal LM sized by ``arch`` (the embedded default)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(arch_config(arch, tokenizer)).to(dtype)
    n = sum(p.numel() for p in model.parameters())
    logger.info("built a Llama model from config: %.2f M parameters", n / 1e6)
    return model


def load_pretrained(path: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | None = None,
                    attn_implementation: str | None = None, trust_remote_code: bool = False):
    """``from_pretrained`` of a full-weights checkpoint directory or hub id, in eval mode, on ``device``.

    A run's checkpoints may be LoRA adapters instead: :func:`larpo.checkpoints.load_model` loads either."""
    from transformers import AutoModelForCausalLM

    path = str(path)
    check_local(path, "model checkpoint")
    if looks_local(path) and not (Path(path) / "config.json").exists():
        raise CheckpointError(f"no model checkpoint at {path} (config.json missing)")
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    except Exception as e:  # safetensors, torch and hub errors have no common base
        if "trust_remote_code" in str(e) or not looks_local(path):
            raise _load_error(path, "the model", e, "model.pretrained") from e
        raise CheckpointError(f"could not load the model at {path}: {type(e).__name__}: {e}") from e
    model.eval()
    if device is not None:
        model.to(device)
    return model


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def storage_error(e: BaseException, where: Path) -> BaseException:
    """An OSError for a write that failed in native code: safetensors (Rust) and torch raise their
    own types with the OS's words in the text ("File too large (os error 27)") where Python raises
    OSError(errno); the pipeline turns the OSError into its storage message (disk full, ulimit -f)."""
    match = _OS_ERROR.search(str(e)) if not isinstance(e, OSError) else None
    if match is None:
        return e
    code = int(match.group(1))
    return OSError(code, os.strerror(code), str(where))


def render_prompt(tokenizer, prompt: str, system: str | None = None) -> str:
    """The prompt as the model sees it: its own chat template with the generation prompt (and a system
    message first, when one is given: a benchmark's harness may send one, as MixEval's does)."""
    messages = [{"role": "user", "content": prompt}]
    if system is None:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    try:
        return tokenizer.apply_chat_template([{"role": "system", "content": system}, *messages],
                                             add_generation_prompt=True, tokenize=False)
    except Exception as e:  # noqa: BLE001  (jinja2's TemplateError, raised by the template's own code)
        raise SystemMessageError(f"the model's chat template refuses a system message ({e})") from None


def prompt_ids(tokenizer, prompts: list[str], system: str | None = None) -> list[list[int]]:
    rendered = [render_prompt(tokenizer, p, system) for p in prompts]
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def response_ids(tokenizer, responses: list[str], finished: list[bool]) -> list[list[int]]:
    """Response token ids; the EOS id is appended when the response finished (it is scored)."""
    ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"] if responses else []
    return [r + [tokenizer.eos_token_id] if f else r for r, f in zip(ids, finished)]

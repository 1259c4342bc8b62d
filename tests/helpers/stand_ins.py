"""Tiny offline stand-ins for hub checkpoints, for tests (the hub is unreachable here).

Each builder writes a complete checkpoint folder with ``save_pretrained`` into the folder it
is given and returns that folder, so the code under test loads it with ``from_pretrained``
exactly as it would load the real model. All builders are deterministic (fixed seeds, a
fixed in-code corpus) and take well under 2 s once transformers is imported.

- ``make_bpe_tokenizer``: a byte-level BPE tokenizer (any text encodes) with a chat template.
- ``make_causal_lm``: a tiny llama / mistral / gemma2 / qwen2 causal LM with its tokenizer.
- ``make_seqcls_rm``: a tiny ``LlamaForSequenceClassification`` reward model with its own
  tokenizer and a chat template different from the policy's.
- ``make_pairrm``: a tiny PairRM in llm-blender/PairRM-hf's layout (config, weights, DeBERTa-v2
  tokenizer with the ``<|source|>``/``<|candidate1|>``/``<|candidate2|>`` tokens).
- ``make_custom_code_rm``: a reward model whose config.json has an ``auto_map`` (custom code).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# The policy's template: role tags, EOS closes an assistant turn (as the embedded tokenizer's).
DEFAULT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# A reward model's template, different on purpose: it writes its own BOS (as Llama-3 templates
# do) and ends with EOS, the two cases where RM scoring goes wrong silently.
RM_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}### {{ m['role'] | upper }}:\n{{ m['content'] }}\n{% endfor %}"
    "{{ eos_token }}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 12 + 34? The answer is 46.",
    "Sort the numbers 5, 3, 9 and 1: 1, 3, 5, 9.",
    "A reward model scores a response to a prompt; a policy proposes responses.",
    "hello world, hello there, good morning, thank you!",
    "user assistant system: ### USER ASSISTANT",
]
ARCHS = ("llama", "mistral", "gemma2", "qwen2")


def make_bpe_tokenizer(
    directory: str | Path,
    chat_template: str | None = DEFAULT_TEMPLATE,
    vocab_size: int = 320,
    bos_token: str = "<s>",
    eos_token: str = "</s>",
    pad_token: str | None = "<pad>",
    unk_token: str = "<unk>",
    add_bos: bool = False,
    extra_special_tokens: tuple[str, ...] = ("<|user|>", "<|assistant|>", "<|system|>"),
) -> Path:
    """A byte-level BPE tokenizer trained on ``CORPUS``, saved in ``directory``.

    ``pad_token=None`` leaves it without a pad token (like Llama/Mistral tokenizers);
    ``add_bos=True`` makes it put BOS in front of every encoded text (like Llama's);
    ``chat_template=None`` leaves it without a template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in (unk_token, bos_token, eos_token, pad_token, *extra_special_tokens) if t]
    tk = Tokenizer(models.BPE(unk_token=unk_token))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(CORPUS, trainer)
    if add_bos:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A $B", special_tokens=[(bos_token, tk.token_to_id(bos_token))]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        unk_token=unk_token,
        additional_special_tokens=list(extra_special_tokens),
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    directory = Path(directory)
    tok.save_pretrained(directory)
    return directory


def _load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def make_causal_lm(
    directory: str | Path,
    arch: str = "llama",
    tokenizer_dir: str | Path | None = None,
    hidden_size: int = 32,
    num_layers: int = 1,
    seed: int = 0,
) -> Path:
    """A tiny causal LM of ``arch`` (llama | mistral | gemma2 | qwen2) with its tokenizer, saved.

    ``tokenizer_dir``: a tokenizer folder to copy in; None builds ``make_bpe_tokenizer`` there.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch not in ARCHS:
        raise ValueError(f"arch {arch!r} is not one of {ARCHS}")
    directory = Path(directory)
    tok = _load_tokenizer(Path(tokenizer_dir) if tokenizer_dir else make_bpe_tokenizer(directory))
    config = AutoConfig.for_model(
        arch,
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=hidden_size // 2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def make_seqcls_rm(
    directory: str | Path,
    chat_template: str | None = RM_TEMPLATE,
    pad_token: str | None = None,
    hidden_size: int = 32,
    num_layers: int = 1,
    seed: int = 0,
    initializer_range: float = 0.2,
) -> Path:
    """A tiny ``LlamaForSequenceClassification`` reward model (num_labels=1), saved with its tokenizer.

    Its tokenizer adds BOS by itself, has no pad token by default (config.pad_token_id = EOS,
    as many hub RMs) and uses ``RM_TEMPLATE``, unlike the policy's ``DEFAULT_TEMPLATE``.
    ``initializer_range`` is large enough that scores differ visibly between inputs.
    """
    from transformers import LlamaConfig, LlamaForSequenceClassification

    directory = Path(directory)
    tok = _load_tokenizer(make_bpe_tokenizer(directory, chat_template=chat_template, pad_token=pad_token, add_bos=True))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        num_labels=1,
        initializer_range=initializer_range,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(directory)
    return directory


def make_pairrm_tokenizer():
    """A DeBERTa-v2 tokenizer (Unigram over characters, built in memory: no sentencepiece needed)
    with PairRM's prefix tokens added as llm-blender adds them (``tokenizer.add_tokens``)."""
    from transformers import DebertaV2Tokenizer

    chars = sorted(set("".join(CORPUS)) - {" "})
    words = sorted({w for line in CORPUS for w in line.lower().split()})
    vocab = [(t, 0.0) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    vocab += [("▁", -2.0)] + [(c, -4.0) for c in chars] + [("▁" + c, -4.5) for c in chars]
    vocab += [("▁" + w, -3.0 - 0.01 * len(w)) for w in words if len(w) > 1]
    tok = DebertaV2Tokenizer(vocab=vocab)
    tok.add_tokens(["<|source|>", "<|candidate1|>", "<|candidate2|>", "<|candidate|>"])
    return tok


def make_pairrm(directory: str | Path, hidden_size: int = 32, num_layers: int = 2, seed: int = 0) -> Path:
    """A tiny PairRM saved in llm-blender/PairRM-hf's layout: config.json (DeBERTa-v3 style
    relative attention + PairRM's fields), model.safetensors (``pretrained_model.*``,
    ``head_layer.1.*``, ``head_layer.4.*``) and tokenizer files."""
    from transformers import DebertaV2Config

    from larpo.rewards.pairrm import pairrm_model_class

    directory = Path(directory)
    tok = make_pairrm_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|source|>", "<|candidate1|>", "<|candidate2|>", "<|candidate|>")}
    config = DebertaV2Config(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=512,
        type_vocab_size=0,
        relative_attention=True,
        position_biased_input=False,
        pos_att_type=["p2c", "c2p"],
        max_relative_positions=-1,
        position_buckets=256,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        initializer_range=0.2,
        pad_token_id=tok.pad_token_id,
        # PairRM-hf's own fields, read by DebertaV2PairRM.__init__ upstream
        n_tasks=1,
        drop_out=0.05,
        sep_token_id=tok.sep_token_id,
        source_prefix_id=ids["<|source|>"],
        cand1_prefix_id=ids["<|candidate1|>"],
        cand2_prefix_id=ids["<|candidate2|>"],
        cand_prefix_id=ids["<|candidate|>"],
    )
    torch.manual_seed(seed)
    pairrm_model_class()(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def make_custom_code_rm(directory: str | Path) -> Path:
    """A reward model checkpoint whose config.json names custom code in ``auto_map`` (as ArmoRM's)."""
    directory = make_seqcls_rm(directory)
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_custom.CustomRewardModel"}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "modeling_custom.py").write_text(
        "from transformers import LlamaForSequenceClassification\n\n\n"
        "class CustomRewardModel(LlamaForSequenceClassification):\n    pass\n"
    )
    return directory


# A run of a few seconds on the stand-ins (tests/integration/conftest.py's `stand_ins` fixture builds them).
SMALL_HUB_RUN = ["rounds=2", "sampling.prompts_per_round=8", "sampling.n_samples=4", "sampling.max_new_tokens=8",
                 "sampling.batch_size=4", "train.lists_per_step=4", "train.lr=1e-3", "task.n_eval=6", "eval.n_prompts=6",
                 "eval.batch_size=6", "select.drop_ties=false", "task.max_prompt_tokens=100", "threads=1"]

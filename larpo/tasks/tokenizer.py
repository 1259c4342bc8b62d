"""The embedded character-level tokenizer (`python -m larpo.tasks.tokenizer` rebuilds the assets).

One token per character keeps the tiny model's job purely arithmetic (no BPE merges to learn)
and makes decoding exact, spaces included. The files ship in `larpo/assets/tokenizer/` so the
default run is offline and loads it like any hub tokenizer, with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "tokenizer"

# Order fixes the ids: <pad> must be 0 (padding ids are never trained on, 0 is conventional).
SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>", "<|user|>", "<|assistant|>"]
CHARACTERS = "0123456789abcdefghijklmnopqrstuvwxyz +-*=,:;?#()"

# Roles render as <|role|>; only assistant turns end with EOS, so the model learns to stop
# after its answer while the generation prompt leaves the assistant turn open.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

log = logging.getLogger(__name__)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh tokenizer: WordLevel over single characters, Fuse decoder, chat template."""
    # Imported here so `import larpo.tasks` (e.g. for TOKENIZER_DIR) stays light.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + list(CHARACTERS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Splitting on the empty pattern isolates every character (spaces included).
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    # Fuse concatenates tokens without separators, so decode(encode(s)) == s.
    backend.decoder = decoders.Fuse()
    # Registered as special so "<|user|>" is matched whole before character splitting.
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
        # The default clean-up would drop spaces before punctuation.
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def main() -> None:
    """Write the tokenizer files into the repo's assets folder."""
    logging.basicConfig(level=logging.INFO)
    TOKENIZER_DIR.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save_pretrained(TOKENIZER_DIR)
    log.info("saved tokenizer to %s", TOKENIZER_DIR)


if __name__ == "__main__":
    main()

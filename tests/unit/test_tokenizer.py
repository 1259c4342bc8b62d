"""The embedded tokenizer: one id per character, exact decoding, chat template, shipped files."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
from transformers import AutoTokenizer  # noqa: E402

from larpo.tasks.tokenizer import CHARACTERS, SPECIAL_TOKENS, TOKENIZER_DIR, build_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def render(tok, prompt: str) -> str:
    messages = [{"role": "user", "content": prompt}]
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_special_tokens(tok) -> None:
    assert tok.pad_token == "<pad>" and tok.pad_token_id == 0
    assert tok.eos_token == "<eos>" and tok.unk_token == "<unk>"
    assert tok.bos_token is None
    assert len(tok) == len(SPECIAL_TOKENS) + len(CHARACTERS)


def test_chat_template_renders_and_survives_reload(tok) -> None:
    assert render(tok, "12+34=") == "<|user|>12+34=<|assistant|>"
    convo = [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]
    assert tok.apply_chat_template(convo, tokenize=False) == "<|user|>1+1=<|assistant|>2<eos>"


def test_one_id_per_character(tok) -> None:
    ids = tok(render(tok, "12+34="), add_special_tokens=False).input_ids
    # <|user|> + 6 characters + <|assistant|>
    assert len(ids) == 8
    assert ids[0] == tok.convert_tokens_to_ids("<|user|>")
    assert ids[-1] == tok.convert_tokens_to_ids("<|assistant|>")
    assert tok.convert_ids_to_tokens(ids[1:-1]) == list("12+34=")


def test_no_specials_added_to_plain_text(tok) -> None:
    assert tok.convert_ids_to_tokens(tok("57", add_special_tokens=False).input_ids) == ["5", "7"]
    assert tok("57").input_ids == tok("57", add_special_tokens=False).input_ids


@pytest.mark.parametrize("text", ["a b  c", " 12, 3 ", "sort:5,31,9,2=", "-333", "(x*y)#?;"])
def test_decode_round_trip(tok, text: str) -> None:
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text)
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == text


def test_unknown_character_maps_to_unk(tok) -> None:
    assert tok("A!", add_special_tokens=False).input_ids == [tok.unk_token_id] * 2


def test_shipped_files_match_fresh_build(tok) -> None:
    fresh = build_tokenizer()
    assert tok.get_vocab() == fresh.get_vocab()
    assert tok.chat_template == fresh.chat_template
    saved = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())
    assert saved["model"]["vocab"] == fresh.backend_tokenizer.get_vocab()

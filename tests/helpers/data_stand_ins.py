"""Tiny local stand-ins for the hub datasets (invented text), written in every local format.

The rows have the hub schemas, so the tasks read them through the same code path as a hub
load (`datasets` builders, `load_from_disk`):
  * UltraFeedback (HuggingFaceH4/ultrafeedback_binarized): prompt, prompt_id, chosen and
    rejected ([user, assistant] chats), messages, score_chosen, score_rejected;
  * GSM8K (openai/gsm8k, "main"): question, answer (a solution ending in "#### <number>").
Prompts use lower-case letters, digits and simple punctuation so the embedded character-level
tokenizer encodes them one token per character.
"""

from __future__ import annotations

import json
from pathlib import Path

UF_PROMPTS = [f"write a short poem about the number {i} and the sea" for i in range(16)]
UF_LONG = "describe in detail " + "a very long winding road, " * 12 + "and nothing else"
# Each a duplicate of an earlier prompt after whitespace normalisation.
UF_DUPLICATES = [UF_PROMPTS[3], "  write a short poem about the number 5\nand   the sea ", UF_PROMPTS[7]]
UF_EVAL_PROMPTS = [f"explain why {i} plus {i} is {2 * i}" for i in range(6)]
# An eval prompt that is also in the train split (with other whitespace): train must drop it.
UF_SHARED = UF_PROMPTS[10]


def _chat(prompt: str, response: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def uf_row(prompt: str, i: int) -> dict:
    """One row in the ultrafeedback_binarized schema."""
    return {
        "prompt": prompt,
        "prompt_id": f"{i:064x}",
        "chosen": _chat(prompt, f"good answer {i}"),
        "rejected": _chat(prompt, f"bad answer {i}"),
        "messages": _chat(prompt, f"good answer {i}"),
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    }


def uf_train_rows() -> list[dict]:
    """20 rows: 16 distinct short prompts, 1 over-long prompt, 3 duplicates."""
    prompts = [*UF_PROMPTS, UF_LONG, *UF_DUPLICATES]
    return [uf_row(p, i) for i, p in enumerate(prompts)]


def uf_eval_rows() -> list[dict]:
    """7 rows: 6 distinct eval prompts and one shared with train (extra spaces)."""
    prompts = [*UF_EVAL_PROMPTS, UF_SHARED.replace(" ", "  ")]
    return [uf_row(p, 100 + i) for i, p in enumerate(prompts)]


GSM_TRAIN = [
    (f"tom has {i} apples and buys {i + 3} more. how many apples does he have?",
     f"tom has {i} apples.\nhe buys {i + 3} more: <<{i}+{i + 3}={2 * i + 3}>>{2 * i + 3}.\n#### {2 * i + 3}")
    for i in range(18)
]
GSM_EVAL = [
    ("a box holds 12 eggs. how many eggs are in 250 boxes?", "12 * 250 = <<12*250=3000>>3000\n#### 3,000"),
    ("ann had 5 dollars and spent 12. what is her balance?", "5 - 12 = <<5-12=-7>>-7\n#### -7"),
    ("a pen costs 2.5 dollars. what do 3 pens cost?", "3 * 2.5 = <<3*2.5=7.5>>7.5\n#### 7.50"),
]


def gsm8k_train_rows() -> list[dict]:
    """20 rows: 18 distinct problems and 2 duplicates (one with other whitespace)."""
    rows = [{"question": q, "answer": a} for q, a in GSM_TRAIN]
    rows.append(dict(rows[2]))
    rows.append({"question": rows[4]["question"].replace(" ", "   "), "answer": rows[4]["answer"]})
    return rows


def gsm8k_eval_rows() -> list[dict]:
    return [{"question": q, "answer": a} for q, a in GSM_EVAL]


FORMATS = ("json", "jsonl", "parquet", "csv", "disk")


def write_rows(rows: list[dict], fmt: str, folder: Path, name: str = "data") -> Path:
    """Write `rows` under `folder` as a .json array, .jsonl, .parquet, .csv or a `save_to_disk`
    Dataset folder ("disk"); returns the path to hand to the task. csv needs flat rows."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        path = folder / f"{name}.json"
        path.write_text(json.dumps(rows))
    elif fmt == "jsonl":
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif fmt == "parquet":
        path = folder / f"{name}.parquet"
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif fmt == "csv":
        path = folder / f"{name}.csv"
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False)
    elif fmt == "disk":
        path = folder / name
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    else:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    return path


def write_dataset_dict(splits: dict[str, list[dict]], folder: Path) -> Path:
    """A `DatasetDict.save_to_disk` folder with one split per key."""
    import datasets

    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(folder))
    return folder

"""UltraFeedback prompts, the paper's training prompts (a reward model scores the responses).

Default source: HuggingFaceH4/ultrafeedback_binarized (splits train_prefs 61k / test_prefs
2k; fields prompt, chosen, rejected, messages, ...). `chosen` is a chat, [user, assistant]:
its assistant message is the gold answer, used by the optional SFT warm-start ("sft" split).
There is no verifier: the reward model (e.g. PairRM) is the judge, so this task has neither
`verify`, `answer` nor `is_correct`.

Splits, prompt ids and filters are those of `larpo.tasks.hf_data.HFPromptTask`: duplicates
(whitespace-normalised) dropped, prompts longer than `max_prompt_tokens` tokens of the
policy's tokenizer (chat-rendered) dropped, a seeded order, eval prompts never in train/sft,
ids "<split>-<sha256(normalised prompt)[:12]>".
"""

from __future__ import annotations

from larpo.tasks.hf_data import HFPromptTask, Item


def chosen_text(value: object) -> str:
    """The gold response in a `chosen` field: the last assistant message of a chat, or the
    string itself; "" when there is none."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for message in reversed(value):
            if isinstance(message, dict) and message.get("role") == "assistant":
                return str(message.get("content") or "")
    return ""


class UltraFeedbackTask(HFPromptTask):
    """UltraFeedback-style prompts with the chosen response as the gold answer.

    path: hub id, local .json/.jsonl/.parquet/.csv file, or a `save_to_disk` folder.
    config: the hub dataset's config name (None: its default).
    train_split / eval_split / sft_split: split names in the source (sft_split None: train_split).
    eval_path: where eval comes from when not `path` (None: `path`).
    prompt_field: the user prompt (required). answer_field: the chosen response (optional;
    absent -> answer ""). family_field: per-family metrics key (absent -> "ultrafeedback").
    seed: the seeded order. n_train / n_eval / n_sft: prompts kept per split (None: all).
    max_prompt_tokens / tokenizer: the paper's prompt-length filter with the POLICY's
    tokenizer (hub id or path); tokenizer None -> no filter, with a warning.
    dedup: drop repeated prompts. cache_dir: datasets' cache (None: HF_DATASETS_CACHE).
    """

    name = "ultrafeedback"

    def __init__(
        self,
        path: str = "HuggingFaceH4/ultrafeedback_binarized",
        config: str | None = None,
        train_split: str = "train_prefs",
        eval_split: str = "test_prefs",
        sft_split: str | None = None,
        eval_path: str | None = None,
        prompt_field: str = "prompt",
        answer_field: str = "chosen",
        family_field: str = "source",
        seed: int = 0,
        n_train: int | None = None,
        n_eval: int | None = 512,
        n_sft: int | None = None,
        max_prompt_tokens: int | None = 1000,
        tokenizer: str | None = None,
        dedup: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(path, config, train_split, eval_split, sft_split, eval_path, seed, n_train, n_eval,
                         n_sft, max_prompt_tokens, tokenizer, dedup, cache_dir)
        self.prompt_field, self.answer_field, self.family_field = prompt_field, answer_field, family_field

    def _fields(self) -> tuple[list[str], list[str]]:
        return [self.prompt_field], [self.answer_field, self.family_field]

    def _item(self, row: dict) -> Item:
        family = row.get(self.family_field)
        return (
            str(row[self.prompt_field] or ""),
            chosen_text(row.get(self.answer_field)),
            family if isinstance(family, str) and family else self.name,
        )

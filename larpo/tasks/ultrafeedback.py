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

from larpo.errors import RowError
from larpo.tasks.hf_data import HFPromptTask, Item, short


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


def prompt_text(value: object, name: str) -> str:
    """The user prompt in a prompt field: a string (null = empty), or a chat (UltraFeedback's
    ``messages`` rows: ``[{"role": "user", "content": ...}, {"role": "assistant", ...}]``) read as
    messages: its one user message, which may be followed by assistant answers. Anything else (a
    dict, a number, a list that is no chat, a chat with a system message or several user turns,
    which one prompt cannot hold) is a :class:`RowError`: never turned into text with ``str``."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                 and m.get("role") in ("system", "user", "assistant") for m in value):
        roles = [m["role"] for m in value]
        if roles[0] == "user" and roles.count("user") == 1 and "system" not in roles:
            return value[0]["content"]
        raise RowError(f"field {name!r} is a chat of roles {roles}; a prompt is one user message, optionally "
                       "followed by assistant answers (no system message, no second user turn)")
    raise RowError(f"field {name!r} is {type(value).__name__} {short(value)}, expected a string or a chat "
                   "(a list of {'role', 'content'} messages)")


class UltraFeedbackTask(HFPromptTask):
    """UltraFeedback-style prompts with the chosen response as the gold answer.

    path: hub id, local .json/.jsonl/.parquet/.csv file, or a `save_to_disk` folder.
    config: the hub dataset's config name (None: its default).
    train_split / eval_split / sft_split: split names in the source (sft_split None: train_split).
    eval_path: where eval comes from when not `path` (None: `path`).
    prompt_field: the user prompt (required): a string, or a chat read as messages (its one user
    message; see :func:`prompt_text`); any other type is refused, naming file, row and field. answer_field: the chosen response (optional;
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
            prompt_text(row[self.prompt_field], self.prompt_field),
            chosen_text(row.get(self.answer_field)),
            family if isinstance(family, str) and family else self.name,
        )

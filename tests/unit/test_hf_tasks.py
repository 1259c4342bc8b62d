"""Hub-backed tasks (UltraFeedback, GSM8K) and their loader, on local stand-ins: no network.

The stand-ins (tests/helpers/data_stand_ins.py) have the hub schemas and go through the same
`datasets` code path as a hub load; the hub itself is only reached, offline, to check the
error message.
"""

from __future__ import annotations

import hashlib
import logging
from decimal import Decimal
from pathlib import Path

import pytest

from larpo.tasks.gsm8k import GSM8KTask, extract_number
from larpo.tasks.hf_data import PromptLengthFilter, load_rows, normalise
from larpo.tasks.tokenizer import TOKENIZER_DIR
from larpo.tasks.ultrafeedback import UltraFeedbackTask
from tests.helpers import data_stand_ins as si


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """datasets' conversion cache, kept out of the user's ~/.cache."""
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def uf_dir(tmp_path_factory) -> Path:
    """ultrafeedback_binarized in miniature: a DatasetDict with train_prefs and test_prefs."""
    return si.write_dataset_dict({"train_prefs": si.uf_train_rows(), "test_prefs": si.uf_eval_rows()},
                                 tmp_path_factory.mktemp("uf") / "dd")


@pytest.fixture(scope="module")
def gsm_dir(tmp_path_factory) -> Path:
    return si.write_dataset_dict({"train": si.gsm8k_train_rows(), "test": si.gsm8k_eval_rows()},
                                 tmp_path_factory.mktemp("gsm") / "dd")


def uf(path: Path, cache: str, **kw) -> UltraFeedbackTask:
    return UltraFeedbackTask(path=str(path), cache_dir=cache, **{"n_eval": None, **kw})


def gsm(path: Path, cache: str, **kw) -> GSM8KTask:
    return GSM8KTask(path=str(path), config=None, cache_dir=cache, **kw)


def prompts(examples) -> list[str]:
    return [e.prompt for e in examples]


# ---------------------------------------------------------------- load_rows


@pytest.mark.parametrize("fmt", si.FORMATS)
def test_load_rows_reads_each_local_format(tmp_path, cache, fmt):
    rows = si.gsm8k_train_rows()
    path = si.write_rows(rows, fmt, tmp_path)
    assert load_rows(str(path), "train", required=["question", "answer"], cache_dir=cache) == rows


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet", "disk"])
def test_load_rows_keeps_nested_chats_and_only_the_asked_fields(tmp_path, cache, fmt):
    rows = si.uf_train_rows()
    path = si.write_rows(rows, fmt, tmp_path)
    got = load_rows(str(path), required=["prompt"], optional=["chosen", "source"], cache_dir=cache)
    assert got == [{"prompt": r["prompt"], "chosen": r["chosen"]} for r in rows]


def test_a_folder_of_split_files_loads_like_a_hub_snapshot(tmp_path, cache):
    # A downloaded hub repo: datasets infers the splits from the file names.
    si.write_rows(si.gsm8k_train_rows(), "jsonl", tmp_path / "snapshot", "train")
    si.write_rows(si.gsm8k_eval_rows(), "jsonl", tmp_path / "snapshot", "test")
    task = gsm(tmp_path / "snapshot", cache)
    assert len(task.split("eval")) == 3 and len(task.split("train")) == 18
    with pytest.raises(ValueError, match=r"several splits; name one of \['test', 'train'\]"):
        load_rows(str(tmp_path / "snapshot"), cache_dir=cache)


def test_load_rows_picks_the_split_of_a_dataset_dict(uf_dir):
    got = load_rows(str(uf_dir), "test_prefs", required=["prompt"])
    assert [r["prompt"] for r in got] == [r["prompt"] for r in si.uf_eval_rows()]
    with pytest.raises(ValueError, match=r"no split 'test'; available splits: \['test_prefs', 'train_prefs'\]"):
        load_rows(str(uf_dir), "test")


@pytest.mark.parametrize("path", ["/no/such/dir/uf.jsonl", "./no_such_folder", "../no/such", "missing.parquet"])
def test_missing_local_path_is_named_not_looked_up_on_the_hub(path):
    with pytest.raises(FileNotFoundError, match=f"no such file or folder: /.*{Path(path).name}$"):
        load_rows(path, "train")


def test_missing_field_names_it_and_the_fields_present(tmp_path, cache):
    path = si.write_rows(si.gsm8k_train_rows(), "jsonl", tmp_path)
    with pytest.raises(ValueError, match=r"no field 'prompt'; the fields present are \['question', 'answer'\]"):
        load_rows(str(path), required=["prompt"], cache_dir=cache)
    with pytest.raises(ValueError, match="no field 'prompt'"):
        uf(path, cache).split("eval")


def test_hub_id_without_network_says_what_to_do(monkeypatch, tmp_path):
    import datasets.config
    import huggingface_hub.constants

    # The libraries read these at import time, so the module constants are patched too.
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    task = UltraFeedbackTask(path="larpo-nobody/made-up-dataset", cache_dir=str(tmp_path))
    with pytest.raises(ConnectionError) as err:
        task.split("train")
    msg = str(err.value)
    assert "could not load dataset 'larpo-nobody/made-up-dataset' from the Hugging Face hub (no network?)" in msg
    assert ".save_to_disk(dir)" in msg and "task.path=<dir>" in msg


# ---------------------------------------------------------------- UltraFeedback


def test_uf_examples_answers_families_and_ids(uf_dir, cache):
    task = uf(uf_dir, cache)
    train = {e.prompt: e for e in task.split("train")}
    first = train[si.UF_PROMPTS[3]]  # duplicated later in the source: the first row wins
    assert first.answer == "good answer 3" and first.family == "ultrafeedback"
    assert first.prompt_id == "train-" + hashlib.sha256(si.UF_PROMPTS[3].encode()).hexdigest()[:12]
    sft = task.split("sft")
    assert {e.prompt for e in sft} == set(train) and all(e.answer.startswith("good answer") for e in sft)
    assert all(e.prompt_id.startswith("sft-") for e in sft)


def test_uf_family_from_a_source_field_and_sft_only_with_an_answer(tmp_path, cache):
    rows = [{**r, "source": "evol_instruct" if i % 2 else ""} for i, r in enumerate(si.uf_train_rows())]
    for i in (0, 1, 2, 4, 6, 8):  # prompts without duplicates
        rows[i]["chosen"] = rows[i]["chosen"][:1]  # no assistant message: no answer
    task = uf(si.write_rows(rows, "jsonl", tmp_path), cache, n_eval=3)
    families = {e.family for e in task.split("eval") + task.split("train")}
    assert families == {"evol_instruct", "ultrafeedback"}
    no_answer = {e.prompt for e in task.split("train") if not e.answer}
    assert no_answer and not no_answer & set(prompts(task.split("sft")))


def test_uf_dedup_drops_and_logs_repeated_prompts(uf_dir, cache, caplog):
    with caplog.at_level(logging.INFO, logger="larpo.tasks.hf_data"):
        train = uf(uf_dir, cache).split("train")
    # 20 rows = 16 short + 1 long + 3 duplicates; one short prompt is also in eval.
    assert len(train) == 16 and len({normalise(p) for p in prompts(train)}) == 16
    assert "3 duplicate" in caplog.text and "1 in eval" in caplog.text
    undeduped = uf(uf_dir, cache, dedup=False).split("train")
    assert len(undeduped) == 19 and len({e.prompt_id for e in undeduped}) == 19  # ids stay unique


def test_uf_length_filter_drops_exactly_the_long_prompt(uf_dir, cache, caplog):
    with caplog.at_level(logging.INFO, logger="larpo.tasks.hf_data"):
        train = uf(uf_dir, cache, tokenizer=str(TOKENIZER_DIR), max_prompt_tokens=200).split("train")
    assert si.UF_LONG not in prompts(train) and len(train) == 15
    assert "1 over 200 tokens" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="larpo.tasks.hf_data"):
        unfiltered = uf(uf_dir, cache, tokenizer=None, max_prompt_tokens=200).split("train")
    assert si.UF_LONG in prompts(unfiltered)
    assert "no tokenizer given" in caplog.text


def test_length_counts_the_chat_rendered_prompt():
    # The embedded template renders "<|user|>abc<|assistant|>": 1 + 3 + 1 tokens.
    lengths = PromptLengthFilter(str(TOKENIZER_DIR), 5)
    assert lengths.lengths(["abc", ""]) == [5, 2]
    assert lengths.keep(["abc", "abcd"]) == [True, False]


def test_uf_eval_prompts_never_in_train_or_sft(uf_dir, cache):
    task = uf(uf_dir, cache)
    eval_keys = {normalise(p) for p in prompts(task.split("eval"))}
    assert normalise(si.UF_SHARED) in eval_keys
    for name in ("train", "sft"):
        assert not eval_keys & {normalise(p) for p in prompts(task.split(name))}


def test_uf_single_file_carves_eval_out_of_train(tmp_path, cache):
    task = uf(si.write_rows(si.uf_train_rows(), "parquet", tmp_path), cache, n_eval=5)
    ev, train = prompts(task.split("eval")), prompts(task.split("train"))
    assert len(ev) == 5 and len(train) == 17 - 5 and not set(ev) & set(train)


def test_uf_splits_are_deterministic_and_seeded(uf_dir, cache):
    a, b = uf(uf_dir, cache, n_train=8), uf(uf_dir, cache, n_train=8)
    for name in ("train", "eval", "sft"):
        assert a.split(name) == b.split(name)
    other = uf(uf_dir, cache, seed=1)
    assert prompts(other.split("train")) != prompts(uf(uf_dir, cache).split("train"))
    assert set(prompts(other.split("train"))) == set(prompts(uf(uf_dir, cache).split("train")))


def test_uf_ids_and_order_survive_rows_added_to_the_source(tmp_path, cache):
    rows, eval_path = si.uf_train_rows(), str(si.write_rows(si.uf_eval_rows(), "jsonl", tmp_path, "eval"))
    small = uf(si.write_rows(rows[:10], "jsonl", tmp_path, "small"), cache, eval_path=eval_path).split("train")
    big = uf(si.write_rows(rows, "jsonl", tmp_path, "big"), cache, eval_path=eval_path).split("train")
    assert len(big) > len(small)
    ids = {e.prompt: e.prompt_id for e in big}
    assert all(ids[e.prompt] == e.prompt_id for e in small)
    assert [p for p in prompts(big) if p in set(prompts(small))] == prompts(small)  # new rows slot in between


def test_a_split_left_empty_is_an_error(tmp_path, cache):
    task = gsm(si.write_rows(si.gsm8k_train_rows(), "jsonl", tmp_path), cache)  # one file, n_eval all
    assert len(task.split("eval")) == 18
    with pytest.raises(ValueError, match="split 'train' .* is empty .*18 in eval"):
        task.split("train")


def test_tasks_are_lazy(tmp_path):
    task = UltraFeedbackTask(path=str(tmp_path / "not_yet.jsonl"))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        task.split("train")


# ---------------------------------------------------------------- GSM8K

EXTRACTION = [
    ("#### 42", "42"),
    ("The answer is 42.", "42"),
    ("so the total is \\boxed{42} eggs", "42"),
    ("It costs $1,234.50 in all.", "1234.5"),
    ("-7", "-7"),
    ("#### 42 apples, not 43", "42"),
    ("3 + 4 = 7, then 7 * 2 = 14 and we are done", "14"),  # no marker: the last number
    ("so 5 + 7 = 12.\n#### 12\nCheck: 12 - 5 = 7", "12"),  # the marked one
    ("The answer is 42. Check: 42 * 2 = 84", "42"),
    ("\\boxed{1,000} (one thousand, 1000 > 999)", "1000"),
    ("Answer: $-5", "-5"),
    ("read pages 3-4", "4"),  # a hyphen between numbers is no minus sign
    ("no number here", None),
]


@pytest.mark.parametrize(("text", "number"), EXTRACTION)
def test_extract_number(text, number):
    assert extract_number(text) == (None if number is None else Decimal(number))


@pytest.mark.parametrize(("a", "b"), [("42", "#### 42.0"), ("1,000", "#### 1000"), ("$7.50", "7.5")])
def test_numbers_compare_numerically(a, b):
    assert extract_number(a) == extract_number(b)


def test_gsm8k_splits_and_gold_answers(gsm_dir, cache):
    task = gsm(gsm_dir, cache)
    assert len(task.split("eval")) == 3 and len(task.split("train")) == 18 and len(task.split("sft")) == 18
    by_question = {e.prompt.split("\n")[0]: e for e in task.split("eval")}
    egg = by_question["a box holds 12 eggs. how many eggs are in 250 boxes?"]
    assert egg.prompt.endswith('"#### <number>".') and egg.answer.endswith("#### 3,000") and egg.family == "gsm8k"
    assert task.answer(egg.prompt) == "3000"
    assert sorted(task.answer(e.prompt) for e in task.split("eval")) == ["-7", "3000", "7.5"]


def test_gsm8k_verify_and_is_correct(gsm_dir, cache):
    task = gsm(gsm_dir, cache)  # no split asked for yet: verify loads the gold answers itself
    prompt = task.prompt_template.replace("{question}", si.GSM_EVAL[0][0])
    assert task.verify(prompt, "12 * 250 = 3000\n#### 3,000") == 1.0
    assert task.verify(prompt, "The answer is 3000.0") == 1.0
    assert task.verify(prompt, "12 * 250 = 3000, oh no, 2500") == 0.0
    assert task.verify(prompt, "#### 3000", finished=False) == 0.5
    assert task.verify(prompt, "nothing") == 0.0
    assert task.is_correct(prompt, "#### 3000") and not task.is_correct(prompt, "#### 3000", finished=False)
    assert not task.is_correct(prompt, "#### 2999")
    strict = gsm(gsm_dir, cache, unfinished_factor=0.0)
    assert strict.verify(prompt, "#### 3000", finished=False) == 0.0
    with pytest.raises(ValueError, match="prompt not in task gsm8k's data"):
        task.verify("what is 2 + 2?", "4")


def test_gsm8k_sft_targets(gsm_dir, cache):
    sft = gsm(gsm_dir, cache).split("sft")
    assert all("<<" in e.answer and e.answer.rsplit("\n", 1)[1].startswith("#### ") for e in sft)
    stripped = gsm(gsm_dir, cache, strip_calculator=True).split("sft")
    assert all("<<" not in e.answer and "####" in e.answer for e in stripped)


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize(("name", "cls", "hub_id"), [
    ("gsm8k", GSM8KTask, "openai/gsm8k"),
    ("ultrafeedback", UltraFeedbackTask, "HuggingFaceH4/ultrafeedback_binarized"),
])
def test_task_yamls_compose_and_instantiate_without_loading(monkeypatch, name, cls, hub_id):
    from hydra.utils import instantiate

    from tests.helpers.config import compose_config

    def no_loading(*args, **kwargs):
        raise AssertionError("the task read data when it was only constructed")

    monkeypatch.setattr("larpo.tasks.hf_data.load_rows", no_loading)
    cfg = compose_config([f"task={name}", "run_dir=/tmp/x", "seed=3"])
    task = instantiate(cfg.task)
    assert isinstance(task, cls) and task.path == hub_id and task.seed == 0  # the data seed, not the run seed (3)


# ---------------------------------------------------------------- issue 19: no silent data corruption


def test_a_chat_prompt_is_read_as_messages(tmp_path, cache):
    """Issue 19, 1: a chat-format prompt (UltraFeedback's `messages` rows) is its user message, not str(list)."""
    rows = si.uf_train_rows()
    chats = [{**r, "prompt": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": "ok"}]}
             for r in rows]
    as_text = uf(si.write_rows(rows, "jsonl", tmp_path, "text"), cache, n_eval=5).split("train")
    as_chat = uf(si.write_rows(chats, "jsonl", tmp_path, "chat"), cache, n_eval=5).split("train")
    assert prompts(as_chat) == prompts(as_text) and not any(p.startswith("[{") for p in prompts(as_chat))


BAD_PROMPTS = {
    "a dict": ({"text": "hi"}, "field 'prompt' is dict {'text': 'hi'}, expected a string or a chat"),
    "an int": (7, "field 'prompt' is int 7, expected a string or a chat"),
    "a list of strings": (["a", "b"], "field 'prompt' is list ['a', 'b'], expected a string or a chat"),
    "a chat with a system message": ([{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}],
                                     "field 'prompt' is a chat of roles ['system', 'user']; a prompt is one user "
                                     "message"),
    "two user turns": ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                        {"role": "user", "content": "c"}], "field 'prompt' is a chat of roles ['user', 'assistant', "
                                                           "'user']"),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_a_prompt_of_another_type_is_refused_naming_file_row_and_field(tmp_path, cache, case):
    """Issue 19, 1: never str(...) of a dict, an int or a list; mixed types in one file included."""
    value, message = BAD_PROMPTS[case]
    rows = si.uf_train_rows()
    rows[3] = {**rows[3], "prompt": value}
    path = si.write_rows(rows, "jsonl", tmp_path)  # mixed types: strings, then the bad one on row 4
    from larpo.errors import TaskDataError

    with pytest.raises(TaskDataError) as err:
        uf(path, cache).split("train")
    # one file serves every split; eval, read first, names it
    assert str(err.value).startswith(f"task ultrafeedback: {path} [test_prefs] row 4: {message}")


def test_a_parquet_prompt_column_of_the_wrong_type_is_refused(tmp_path, cache):
    """Issue 19, 1: a parquet column of integers is refused at its first row (it was the text "11", "12", ...)."""
    rows = [{"prompt": 11 + i, "chosen": "x", "source": "s"} for i in range(12)]
    path = si.write_rows(rows, "parquet", tmp_path)
    with pytest.raises(ValueError, match=rf"^task ultrafeedback: {path} \[test_prefs\] row 1: field 'prompt' is "
                                         "int 11, expected a string or a chat"):
        uf(path, cache).split("train")


def test_gsm8k_rows_without_a_marked_answer_are_left_out_and_counted(tmp_path, cache, caplog):
    """Issue 19, 2: "9 + 12 = 21 apples, 2 of them red." has no "#### n": its gold is not guessed (it was 2)."""
    rows = si.gsm8k_train_rows()
    rows[1] = {**rows[1], "answer": "he has 9 + 12 = 21 apples, 2 of them red."}
    rows[4] = {**rows[4], "answer": "the answer is 5"}
    path = si.write_rows(rows, "jsonl", tmp_path)
    task = gsm(path, cache, n_eval=3)
    with caplog.at_level(logging.INFO, logger="larpo.tasks.hf_data"):
        kept = task.split("eval") + task.split("train")
    good = {normalise(r["question"]) for i, r in enumerate(rows) if i not in (1, 4)}
    assert len(kept) == len(good)  # every other distinct problem, once
    assert not any("21 apples" in e.answer or "answer is 5" in e.answer for e in kept)
    assert (f"task gsm8k: 2 of {len(rows)} rows of {path} [test] left out: no '#### <number>' final answer in "
            "field 'answer' (rows 2, 5)") in caplog.text
    assert "2 no '#### <number>' final answer in field 'answer'" in caplog.text  # in the split's "dropped"
    question = rows[1]["question"].strip()
    with pytest.raises(ValueError, match="prompt not in task gsm8k's data"):
        task.answer(task.prompt_template.replace("{question}", question))


def test_a_gsm8k_file_without_any_marked_answer_is_refused_with_the_count(tmp_path, cache):
    rows = [{**r, "answer": r["answer"].replace("####", "=")} for r in si.gsm8k_train_rows()]
    task = gsm(si.write_rows(rows, "jsonl", tmp_path), cache)
    with pytest.raises(ValueError, match=rf"split 'eval' .* is empty \(dropped: {len(rows)} no '#### <number>' final "
                                         "answer in field 'answer'\\)"):
        task.split("eval")


def test_an_empty_data_file_is_named_with_the_fix(tmp_path, cache):
    """Issue 19, 13: an empty task.path gave a bare StopIteration."""
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match=rf"^{path}: the file is empty; it should hold the task's rows \(prompts\); "
                                         "fix the file or point task.path"):
        uf(path, cache).split("train")


@pytest.mark.parametrize("suffix", ["jsonl", "json"])
def test_a_malformed_json_line_names_file_and_line(tmp_path, cache, suffix):
    """Issue 19, 13: datasets' DatasetGenerationError named no file."""
    rows = si.uf_train_rows()
    path = si.write_rows(rows, "jsonl", tmp_path)
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-3]
    bad = path.with_suffix(f".{suffix}")
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"^{bad}:3: malformed JSON line \(.* at column \d+\); fix the file"):
        uf(bad, cache).split("train")

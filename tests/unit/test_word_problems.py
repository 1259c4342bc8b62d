"""The real-model task: seeded English word problems with GSM8K's final-number verifier."""

from __future__ import annotations

import re

import pytest
from hydra.utils import instantiate

from larpo.tasks.hf_data import normalise
from larpo.tasks.word_problems import FAMILIES, WordProblemsTask
from tests.helpers.config import compose_config


@pytest.fixture(scope="module")
def task():
    return WordProblemsTask(n_train=600, n_eval=200, n_sft=300)


def test_the_held_out_split_is_never_trained_on(task):
    held_out = {normalise(ex.prompt) for ex in task.split("eval")}
    for split in ("train", "sft"):
        assert not held_out & {normalise(ex.prompt) for ex in task.split(split)}, split
    train = [normalise(ex.prompt) for ex in task.split("train")]
    assert len(set(train)) == len(train) == 600


def test_the_same_seed_gives_the_same_problems_and_another_seed_others(task):
    again = WordProblemsTask(n_train=600, n_eval=200, n_sft=300)
    assert again.split("eval") == task.split("eval") and again.split("train") == task.split("train")
    other = WordProblemsTask(seed=1, n_train=600, n_eval=200, n_sft=300)
    assert [ex.prompt for ex in other.split("eval")] != [ex.prompt for ex in task.split("eval")]


def test_every_family_is_dealt_and_its_gold_number_is_its_arithmetic(task):
    exs = task.split("eval")
    assert [ex.family for ex in exs[:5]] == list(FAMILIES)
    for ex in exs:
        numbers = [int(x) for x in re.findall(r"[0-9]+", ex.prompt.split("\n")[0])]
        gold = int(task.answer(ex.prompt))
        expected = {"add": lambda n: n[0] + n[1], "sub": lambda n: n[0] - n[1], "mul": lambda n: n[0] * n[1],
                    "compare": lambda n: n[0] - n[1], "two_step": lambda n: n[0] * n[1] - n[2]}[ex.family](numbers)
        assert gold == expected, ex.prompt
        assert gold > 0
        assert ex.answer.endswith(f"#### {gold}")
        assert task.is_correct(ex.prompt, ex.answer)  # the worked solution passes its own verifier


def test_the_verifier_reads_the_final_number_in_the_stated_format(task):
    ex = task.split("eval")[2]  # a mul problem
    gold = task.answer(ex.prompt)
    assert task.verify(ex.prompt, f"Let me count: 1, 2, 3.\n#### {gold}") == 1.0
    assert task.verify(ex.prompt, f"#### {gold}\nor maybe 7") == 1.0  # the #### line wins over later numbers
    assert task.verify(ex.prompt, f"The answer is {gold}.") == 1.0
    assert task.verify(ex.prompt, f"{gold} and then 1") == 0.0  # no format: the last number counts
    assert task.verify(ex.prompt, f"#### {gold}", finished=False) == 0.5
    assert not task.is_correct(ex.prompt, f"#### {gold}", finished=False)
    with pytest.raises(ValueError, match="prompt not in task word_problems"):
        task.verify("How many legs has a cat?", "4")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"families": ["add", "div"]}, r"unknown \['div'\]"),
    ({"prompt_template": "Solve it."}, "must contain {question}"),
    ({"unfinished_factor": 2.0}, "must be a number in"),
    ({"families": ["mul"], "n_eval": 20000}, "cannot draw 20000 distinct eval problems"),
])
def test_bad_options_are_refused_naming_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WordProblemsTask(**kwargs).split("eval")


def test_the_config_group_instantiates_the_task():
    cfg = compose_config(["task=word_problems", "run_dir=x"])
    task = instantiate(cfg.task)
    assert isinstance(task, WordProblemsTask) and len(task.split("eval")) == 500

"""The embedded arithmetic task: gold answers, graded reward, splits, config."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from larpo.tasks import FAMILIES, ArithmeticTask, Example, Task, operation_of
from larpo.tasks.arithmetic import DEFAULT_FAMILIES

CONF = Path(__file__).resolve().parents[2] / "conf" / "task" / "arithmetic.yaml"


@pytest.fixture(scope="module")
def task() -> ArithmeticTask:
    return ArithmeticTask(families=list(FAMILIES), n_sft=2000, n_train=500, n_eval=300)


# One hand-solved prompt per family (and a few edge cases), in the family's own format.
FAMILY_CASES = {
    "sort9": ("sort:5,1,9,2=", "1,2,5,9"),
    "add21": ("37+5=", "42"),
    "max": ("max:5,31,9,2=", "31"),
    "sub": ("45-73=", "-28"),
    "add2": ("37+45=", "82"),
    "sort": ("sort:5,31,9,2=", "2,5,9,31"),
    "sub3": ("12-345=", "-333"),
    "sum3": ("12+45+33=", "90"),
    "add3": ("348+571=", "919"),
}
EDGE_CASES = [("99+99=", "198"), ("50-50=", "0"), ("720-87=", "633"), ("sort:7,7,0=", "0,7,7")]


@pytest.mark.parametrize(("prompt", "answer"), [*FAMILY_CASES.values(), *EDGE_CASES])
def test_answers(task: ArithmeticTask, prompt: str, answer: str) -> None:
    assert task.answer(prompt) == answer


def test_every_family_is_covered_and_samples_its_operation() -> None:
    assert set(FAMILY_CASES) == set(FAMILIES)
    rng = random.Random(0)
    for name, family in FAMILIES.items():
        for _ in range(50):
            prompt = family.sample(rng)
            assert operation_of(prompt)[0] is family.operation, (name, prompt)
        assert operation_of(FAMILY_CASES[name][0])[0] is family.operation


def test_unknown_prompt_names_it(task: ArithmeticTask) -> None:
    with pytest.raises(ValueError, match="'what is 2\\+2'"):
        task.verify("what is 2+2", "4")
    with pytest.raises(ValueError, match="'sort:='"):
        task.answer("sort:=")


@pytest.mark.parametrize(
    ("prompt", "response", "finished", "expected"),
    [
        ("37+45=", "82", True, 1.0),
        ("37+45=", " 82\n", True, 1.0),  # surrounding whitespace is ignored
        ("37+45=", "82", False, 0.5),  # correct but unterminated
        ("37+45=", "72", True, 0.25),  # 1 of 2 digits: 0.5 * 1/2
        ("37+45=", "72", False, 0.125),  # 0.5 * 0.25
        ("37+45=", "182", True, 0.5 * 2 / 3),  # both digits right, 3 positions
        ("37+45=", "13", True, 0.0),  # well-formed, no digit right
        ("12-345=", "333", True, 0.5 * 3 / 4),  # sign wrong: one more wrong position
        ("12-345=", "-323", True, 0.5 * 2 / 3),
        ("720-87=", "-633", True, 0.5 * 3 / 4),
        ("sort:5,31,9,2=", "2,5,9,31", True, 1.0),
        ("sort:5,31,9,2=", "2,9,5,31", True, 0.5 * 2 / 4),
        ("sort:5,31,9,2=", "2,5,9", True, 0.5 * 3 / 4),  # missing item
        ("sort:5,31,9,2=", "2,5,9,31,7", True, 0.5 * 4 / 5),  # extra item
        ("max:5,31,9,2=", "39", True, 0.25),
    ],
)
def test_graded_reward(task, prompt: str, response: str, finished: bool, expected: float) -> None:
    assert task.verify(prompt, response, finished) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prompt", "response"),
    [
        ("37+45=", ""),
        ("37+45=", "   "),
        ("37+45=", "eighty two"),
        ("37+45=", "8 2"),
        ("37+45=", "82,1"),  # a list where a number is expected
        ("37+45=", "+82"),
        ("12-345=", "--333"),
        ("sort:5,31,9,2=", "2,5,,9,31"),
        ("sort:5,31,9,2=", "[2,5,9,31]"),
        ("sort:5,31,9,2=", "2, 5, 9, 31"),
    ],
)
def test_unparsable_scores_zero(task: ArithmeticTask, prompt: str, response: str) -> None:
    assert task.verify(prompt, response) == 0.0
    assert task.verify(prompt, response, finished=False) == 0.0


def test_reward_bounds_on_model_like_outputs(task: ArithmeticTask) -> None:
    junk = ["", "0", "-", "9999999999", "1,2,3", "-0", "00082", "abc", "82<eos>", "?"]
    for ex in task.split("eval")[:60]:
        for response in [ex.answer, ex.answer[::-1], ex.answer + "1", *junk]:
            for finished in (True, False):
                reward = task.verify(ex.prompt, response, finished)
                assert 0.0 <= reward <= 1.0
                assert reward < 1.0 or (response == ex.answer and finished)
        assert task.verify(ex.prompt, ex.answer) == 1.0


def test_splits_have_configured_sizes_and_unique_ids(task: ArithmeticTask) -> None:
    for name, n in [("sft", 2000), ("train", 500), ("eval", 300)]:
        split = task.split(name)
        assert len(split) == n
        assert all(isinstance(e, Example) for e in split)
        assert len({e.prompt_id for e in split}) == n
        assert split[42].prompt_id == f"{name}-00042"
        assert {e.family for e in split} == set(FAMILIES)  # uniform mix covers every family
        assert all(task.answer(e.prompt) == e.answer for e in split)


def test_eval_disjoint_and_unique(task: ArithmeticTask) -> None:
    eval_prompts = [e.prompt for e in task.split("eval")]
    assert len(set(eval_prompts)) == len(eval_prompts)
    for name in ("sft", "train"):
        assert not set(eval_prompts) & {e.prompt for e in task.split(name)}


def test_splits_deterministic_by_seed() -> None:
    def prompts(seed: int, name: str) -> list[str]:
        return [e.prompt for e in ArithmeticTask(seed=seed, n_sft=200, n_eval=100).split(name)]

    for name in ("sft", "train", "eval"):
        assert prompts(0, name) == prompts(0, name)
        assert prompts(0, name) != prompts(1, name)
    assert prompts(0, "sft") != prompts(0, "train")[:200]


def test_formats_fit_the_tokenizer_and_length_budget() -> None:
    from larpo.tasks.tokenizer import CHARACTERS

    examples = ArithmeticTask(families=list(FAMILIES), n_eval=50).split("sft")
    assert max(len(e.prompt) for e in examples) <= 24
    assert max(len(e.answer) for e in examples) <= 12
    assert set("".join(e.prompt + e.answer for e in examples)) <= set(CHARACTERS)


def test_unknown_family_and_split() -> None:
    with pytest.raises(ValueError, match=r"unknown task family 'foo' in task.families; choose from \["):
        ArithmeticTask(families=["add2", "foo"])
    with pytest.raises(ValueError, match="unknown split"):
        ArithmeticTask().split("test")


def test_task_protocol() -> None:
    assert isinstance(ArithmeticTask(), Task)
    assert ArithmeticTask.name == "arithmetic"


def test_hydra_instantiate_yaml() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"seed": 7, "task": OmegaConf.load(CONF)})
    task = instantiate(cfg.task)
    assert isinstance(task, ArithmeticTask)
    assert task.seed == 0  # the data seed is fixed: the run seed (7) does not move the prompts
    assert [f.name for f in task.families] == list(DEFAULT_FAMILIES)
    assert task.sizes == {"sft": 20000, "train": 4096, "eval": 1000}
    assert len(task.split("eval")) == 1000


def test_binary_reward_without_partial_credit() -> None:
    binary = ArithmeticTask(partial_credit=False, n_sft=10, n_train=10, n_eval=10)
    assert binary.verify("37+45=", "82") == 1.0
    assert binary.verify("37+45=", "72") == 0.0  # graded: 0.5 * 1/2 = 0.25
    assert binary.verify("37+45=", "82", finished=False) == 0.5
    assert ArithmeticTask(n_sft=10, n_train=10, n_eval=10).verify("37+45=", "72") == 0.25


# The sloppy annotator's slips, worked out by hand.
SLIP_CASES = [
    ("37+45=", "72"),  # carry forgotten (gold 82)
    ("95+17=", "2"),  # 9+1 -> 0, 5+7 -> 2: "02" (gold 112)
    ("37+5=", "32"),  # gold 42
    ("12+45+33=", "80"),  # 1+4+3 = 8, 2+5+3 = 10 -> 0 (gold 90)
    ("31+24=", "55"),  # no carry: the slip is the gold answer
    ("45-73=", "28"),  # minus sign dropped (gold -28)
    ("73-45=", "28"),  # positive: unchanged
    ("sort:5,31,9,2=", "2,31,5,9"),  # sorted as strings (gold 2,5,9,31)
    ("sort:64,17,36=", "17,36,64"),  # same number of digits: unchanged
    ("max:5,31,9,2=", "9"),  # compared as strings (gold 31)
]


@pytest.mark.parametrize(("prompt", "slip"), SLIP_CASES)
def test_slips(task: ArithmeticTask, prompt: str, slip: str) -> None:
    assert task.slip(prompt) == slip
    # A slip is well-formed: full credit where it changes nothing, partial credit (< 0.5) otherwise.
    reward = task.verify(prompt, slip)
    if slip == task.answer(prompt):
        assert reward == 1.0
    else:
        assert 0.0 <= reward < 0.5


def test_demo_noise_corrupts_only_sft_demonstrations() -> None:
    sizes = {"n_sft": 4000, "n_train": 200, "n_eval": 200}
    clean, noisy = ArithmeticTask(**sizes), ArithmeticTask(demo_noise=0.5, **sizes)
    for split in ("train", "eval"):
        assert noisy.split(split) == clean.split(split)
    pairs = list(zip(clean.split("sft"), noisy.split("sft")))
    assert all(c.prompt == n.prompt for c, n in pairs)  # same prompts whatever the noise
    changed = [n for c, n in pairs if c.answer != n.answer]
    assert all(n.answer == noisy.slip(n.prompt) for n in changed)
    # Of the demonstrations a slip would change, about half are changed.
    could = [c for c in clean.split("sft") if clean.slip(c.prompt) != c.answer]
    assert 0.45 < len(changed) / len(could) < 0.55
    assert all(noisy.verify(n.prompt, n.answer) < 1.0 for n in changed)  # the reward knows better
    full = ArithmeticTask(demo_noise=1.0, **sizes)
    assert all(e.answer == full.slip(e.prompt) for e in full.split("sft"))
    for bad in (1.5, -0.1, "abc", None):
        with pytest.raises(ValueError, match="task.demo_noise"):
            ArithmeticTask(demo_noise=bad)

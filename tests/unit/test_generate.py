"""Candidate generation: per-batch seeds, resume from the journal, EOS handling; round slices; hard negatives."""

from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf

from larpo.artifacts import BatchJournal, read_jsonl
from larpo.config import validate_options
from larpo.context import RunContext
from larpo.errors import ConfigError
from larpo.generation.candidates import generate_candidates
from larpo.generation.negatives import related_prompts
from larpo.generation.plan import SamplingPlan, check_sampling
from larpo.generation.sampling import decode_new_tokens, sample
from larpo.seeds import derive_seed
from larpo.tasks import Example
from tests.helpers.config import compose_config
from tests.helpers.tiny import tiny_policy

SAMPLING = OmegaConf.create(dict(n_samples=3, temperature=1.0, top_p=1.0, max_new_tokens=6, batch_size=2))


def examples(n: int) -> list[Example]:
    return [Example(f"train-{i:05d}", "37+45=", "82", "add2") for i in range(n)]  # one prompt, n times


def generate(path, n=4, seed=0):
    model, tok = tiny_policy()
    journal = BatchJournal(path)
    generate_candidates(model, tok, examples(n), SamplingPlan.of(SAMPLING), seed, journal, 1)
    journal.commit()
    return read_jsonl(path)


def test_each_batch_has_its_own_seed(tmp_path):
    rows = generate(tmp_path / "g.jsonl")
    seeds = [row["sampling"]["seed"] for row in rows]
    assert seeds == [derive_seed(0, 1, "generate", b) for b in (0, 0, 1, 1)]
    # The same prompt in two batches: the samples differ (they would be equal under one seed).
    assert rows[0]["responses"] != rows[2]["responses"]


def test_resume_from_the_journal_redoes_only_missing_batches(tmp_path):
    full = generate(tmp_path / "full.jsonl")
    path = tmp_path / "part.jsonl"
    journal = BatchJournal(path)
    journal.append(0, full[:2])  # batch 0 journaled before an interruption
    model, tok = tiny_policy(seed=1)  # a *different* model: batch 0 must come from the journal
    generate_candidates(model, tok, examples(4), SamplingPlan.of(SAMPLING), 0, journal, 1)
    journal.commit()
    part = read_jsonl(path)
    assert part[:2] == full[:2] and part[2:] != full[2:]


def test_journal_of_other_prompts_is_refused(tmp_path):
    journal = BatchJournal(tmp_path / "g.jsonl")
    journal.append(0, [{"prompt_id": "train-00009"}, {"prompt_id": "train-00001"}])
    model, tok = tiny_policy()
    with pytest.raises(ValueError, match="batch 0 holds other prompts"):
        generate_candidates(model, tok, examples(4), SamplingPlan.of(SAMPLING), 0, journal, 1)


def test_decode_cuts_at_the_first_eos():
    _, tok = tiny_policy()
    ids = tok("82", add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    texts, finished = decode_new_tokens(tok, torch.tensor([ids + [eos] + ids + [eos], ids + ids + ids]))
    assert texts == ["82", "828282"] and finished == [True, False]


class FakeCtx:
    def __init__(self, n_train: int, per_round: int):
        self.task = type("T", (), {"split": lambda self, name: examples(n_train)})()
        self.plan = SamplingPlan.of({"prompts_per_round": per_round})


def test_each_round_takes_the_next_slice_wrapping_around():
    ctx = FakeCtx(n_train=5, per_round=2)
    ids = [[ex.prompt_id[-1] for ex in RunContext.round_prompts(ctx, r)] for r in (1, 2, 3, 4)]
    assert ids == [["0", "1"], ["2", "3"], ["4", "0"], ["1", "2"]]


# --- Hard negatives: temperature schedules and splits, extra candidates, the ladder (docs/design.md, "Sampling plan") ---

PROMPTS = [("12+34=", "add2"), ("sort:5,1,9=", "sort"), ("12+35=", "add2"), ("sort:7,2,4=", "sort")]


def family_examples(prompts=PROMPTS) -> list[Example]:
    return [Example(f"train-{i:05d}", p, "", fam) for i, (p, fam) in enumerate(prompts)]


def run(tmp_path, name="g.jsonl", exs=None, task=None, seed=0, round_=1, **over):
    model, tok = tiny_policy()
    journal = BatchJournal(tmp_path / name)
    generate_candidates(model, tok, exs or family_examples(), SamplingPlan.of(OmegaConf.merge(SAMPLING, over)), seed, journal,
                        round_, task)
    journal.commit()
    return read_jsonl(tmp_path / name)


def direct(prompts, n, temperature, seed):
    """What ``sample`` gives for these prompts: the reference the stage's candidates must equal."""
    model, tok = tiny_policy()
    return sample(model, tok, prompts, n=n, temperature=temperature, top_p=1.0, max_new_tokens=6, seed=seed)[0]


class OddIsCorrect:
    """A task whose "correct" responses have an even length: about half of the tiny model's draws."""

    name = "odd"

    def is_correct(self, prompt: str, response: str, finished: bool = True) -> bool:
        return len(response) % 2 == 0


class AlwaysCorrect:
    name = "always"

    def is_correct(self, prompt: str, response: str, finished: bool = True) -> bool:
        return True


def test_schedule_picks_each_rounds_temperature_the_last_repeating(tmp_path):
    plan = SamplingPlan.of(OmegaConf.merge(SAMPLING, {"temperature_schedule": [1.0, 0.5, 0.25]}))
    assert [plan.round_temperature(r) for r in (1, 2, 3, 4, 7)] == [1.0, 0.5, 0.25, 0.25, 0.25]
    rows = run(tmp_path, round_=2, temperature_schedule=[1.0, 0.5, 0.25])
    assert {row["sampling"]["temperature"] for row in rows} == {0.5}
    assert rows[0]["sampling"]["temperatures_per_candidate"] == [0.5] * 3
    seed = derive_seed(0, 2, "generate", 0)
    assert [rows[0]["responses"], rows[1]["responses"]] == direct([p for p, _ in PROMPTS[:2]], 3, 0.5, seed)


def test_temperatures_split_the_samples_and_are_recorded_per_candidate(tmp_path):
    rows = run(tmp_path, n_samples=4, temperatures=[0.5, 1.0, 2.0])
    assert rows[0]["sampling"]["temperatures_per_candidate"] == [0.5, 0.5, 1.0, 2.0]  # 4 over 3: 2, 1, 1
    assert all(len(row["responses"]) == 4 and row["sampling"]["kinds"] == ["sample"] * 4 for row in rows)
    b1 = [p for p, _ in PROMPTS[2:]]
    for g, (temperature, k, lo) in enumerate([(0.5, 2, 0), (1.0, 1, 2), (2.0, 1, 3)]):
        want = direct(b1, k, temperature, derive_seed(0, 1, "generate", 1, "temperature", g))
        assert [row["responses"][lo : lo + k] for row in rows[2:]] == want


def test_extra_negatives_are_appended_at_their_temperature(tmp_path):
    rows = run(tmp_path, extra_negatives=2, extra_temperature=0.2)
    s = rows[0]["sampling"]
    assert s["kinds"] == ["sample"] * 3 + ["extra"] * 2
    assert s["temperatures_per_candidate"] == [1.0] * 3 + [0.2] * 2
    assert SamplingPlan.of(OmegaConf.merge(SAMPLING, {"extra_negatives": 2})).candidates == 5
    want = direct([p for p, _ in PROMPTS[:2]], 2, 0.2, derive_seed(0, 1, "generate", 0, "extra"))
    assert [row["responses"][3:] for row in rows[:2]] == want
    assert [row["responses"][:3] for row in rows[:2]] == direct([p for p, _ in PROMPTS[:2]], 3, 1.0,
                                                                derive_seed(0, 1, "generate", 0))


def test_easiest_answers_another_prompt_of_the_round(tmp_path):
    rows = run(tmp_path, negatives="easiest", negatives_n=3)  # 3 of the 3 others: any self-pick shows
    ids = {row["prompt_id"]: row["prompt"] for row in rows}
    for row in rows:
        s = row["sampling"]
        assert len(row["responses"]) == 6 and s["kinds"][3:] == ["negative:easiest"] * 3
        assert len(s["negative_sources"]) == 3
        assert all(src in ids and ids[src] != row["prompt"] for src in s["negative_sources"])


def test_easy_answers_a_prompt_of_the_same_family(tmp_path):
    # Families cut across text similarity here, so "the nearest text" would pick another family.
    exs = family_examples([("12+34=", "a"), ("12+35=", "b"), ("sort:5,1,9=", "a"), ("sort:5,1,8=", "b")])
    rows = run(tmp_path, exs=exs, negatives="easy")
    family = {ex.prompt_id: ex.family for ex in exs}
    for row in rows:
        (src,) = row["sampling"]["negative_sources"]
        assert src != row["prompt_id"] and family[src] == family[row["prompt_id"]]
        assert row["sampling"]["kinds"][-1] == "negative:easy"


def test_easy_without_families_takes_the_most_similar_prompt():
    exs = family_examples([("sort:5,1,9=", "x"), ("12+34=", "x"), ("sort:9,9,9=", "x"), ("12+35=", "x")])
    rng = random.Random(0)
    assert [related_prompts(i, exs, 1, rng) for i in range(4)] == [[2], [3], [0], [1]]


@pytest.mark.parametrize(("level", "temperature"), [("hard", 1.2), ("hardest", 0.3)])
def test_hard_negatives_are_incorrect_per_the_task(tmp_path, level, temperature):
    task = OddIsCorrect()
    rows = run(tmp_path, task=task, negatives=level, negatives_n=2)
    for row in rows:
        s = row["sampling"]
        assert s["kinds"][3:] == [f"negative:{level}"] * 2 and s["temperatures_per_candidate"][3:] == [temperature] * 2
        assert s["negatives_found"] == [True, True]
        assert not any(task.is_correct(row["prompt"], y, f) for y, f in zip(row["responses"][3:], row["finished"][3:]))


def test_no_incorrect_response_falls_back_and_says_so(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        rows = run(tmp_path, task=AlwaysCorrect(), negatives="hardest", negatives_tries=2, negatives_per_try=1)
    assert all(len(row["responses"]) == 4 and row["sampling"]["negatives_found"] == [False] for row in rows)
    assert "4 of 4 hardest negatives found no incorrect response" in caplog.text


ALL_ON = dict(n_samples=4, temperatures=[0.7, 1.3], extra_negatives=1)


@pytest.mark.parametrize("level", ["hard", "easiest"])
def test_same_seed_same_rows_and_resume_is_identical(tmp_path, level):
    over = {**ALL_ON, "negatives": level}
    full = run(tmp_path, "a.jsonl", task=OddIsCorrect(), **over)
    assert run(tmp_path, "b.jsonl", task=OddIsCorrect(), **over) == full
    assert run(tmp_path, "c.jsonl", task=OddIsCorrect(), seed=1, **over) != full
    journal = BatchJournal(tmp_path / "d.jsonl")
    journal.append(0, full[:2])  # batch 0 done before an interruption: batch 1 must not depend on its draws
    model, tok = tiny_policy()
    generate_candidates(model, tok, family_examples(), SamplingPlan.of(OmegaConf.merge(SAMPLING, over)), 0, journal, 1,
                        OddIsCorrect())
    journal.commit()
    assert read_jsonl(tmp_path / "d.jsonl") == full


@pytest.mark.parametrize(("over", "task", "message"), [
    ({"negatives": "hard"}, object(), "sampling.negatives=hard needs incorrect responses, but task 'object' has no "
                                      "is_correct"),
    ({"temperatures": [0.5, 1.0], "temperature_schedule": [1.0]}, None, "are both set: choose one"),
    ({"temperatures": [0.5, 1.0, 1.5, 2.0]}, None, "has more temperatures than sampling.n_samples=3"),
    ({"negatives": "hardest", "negatives_n": 3, "negatives_per_try": 2}, OddIsCorrect(), "negatives_per_try=2 is below"),
    ({"negatives": "easiest", "prompts_per_round": 1}, None, "sampling.prompts_per_round=1"),
])
def test_start_up_refuses_impossible_sampling(over, task, message):
    with pytest.raises(ConfigError, match="^invalid option: ") as e:
        check_sampling(SamplingPlan.of(OmegaConf.merge(SAMPLING, {"prompts_per_round": 4}, over)), task)
    assert message in str(e.value)


@pytest.mark.parametrize(("override", "message"), [
    ("sampling.temperature_schedule=[1.0,0.0]", "sampling.temperature_schedule=[1.0, 0.0] is out of range"),
    ("sampling.temperatures=[]", "sampling.temperatures=[] is out of range: allowed a non-empty list, each > 0"),
    ("sampling.extra_negatives=-1", "sampling.extra_negatives=-1 is out of range"),
])
def test_list_and_count_options_are_checked_with_the_others(override, message, tmp_path):
    with pytest.raises(ConfigError, match="invalid option") as e:
        validate_options(compose_config([f"run_dir={tmp_path}", override]))
    assert message in str(e.value)


def test_the_plan_counts_candidates_per_prompt_samples_extras_and_ladder():
    assert SamplingPlan.of(SAMPLING).candidates == 3
    assert SamplingPlan.of(OmegaConf.merge(SAMPLING, {"extra_negatives": 2, "negatives": "easy",
                                                            "negatives_n": 2})).candidates == 7
    assert SamplingPlan.of(OmegaConf.merge(SAMPLING, {"negatives": "none"})).candidates == 3


def test_every_policy_backend_takes_the_keywords_sample_passes():
    """``sample`` hands its keywords to a backend's ``sample_texts`` (vLLM in-process, or the vLLM evaluation
    child through ServedPolicy, which forwards them to VLLMPolicy): each takes exactly the same ones, with the
    same defaults. ServedPolicy once lacked ``system``, so MixEval (a system message) failed under
    ``sampling.backend=vllm``."""
    import inspect

    from larpo.generation.vllm_backend import VLLMPolicy
    from larpo.generation.vllm_server import ServedPolicy

    def keywords(fn, skip):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values() if p.name not in skip]

    expected = keywords(sample, {"model", "tokenizer"})
    assert [name for name, _, _ in expected][:4] == ["prompts", "n", "temperature", "max_new_tokens"]
    for backend in (VLLMPolicy.sample_texts, ServedPolicy.sample_texts):
        assert keywords(backend, {"self"}) == expected, backend.__qualname__


def test_the_served_policy_sends_every_keyword_to_its_child(tmp_path):
    """What ServedPolicy writes to the vLLM child is the call itself (the child runs VLLMPolicy.sample_texts(**it)),
    a benchmark's system message included; the child's reply comes back as (responses, finished)."""
    import json
    import os

    from larpo.generation.vllm_server import ServedPolicy

    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    with os.fdopen(req_r) as sent, os.fdopen(req_w, "w") as requests, os.fdopen(rep_r) as replies:
        with os.fdopen(rep_w, "w") as child:
            child.write(json.dumps({"responses": [["4"]], "finished": [[True]]}) + "\n")
        served = ServedPolicy(None, requests, replies, tmp_path / "eval_vllm.log", config=None)
        got = sample(served, None, ["2+2="], n=1, temperature=0.0, max_new_tokens=8, max_prompt_tokens=100,
                     system="You are a helpful assistant.")
        call = json.loads(sent.readline())
    assert got == ([["4"]], [[True]])
    assert call == {"prompts": ["2+2="], "n": 1, "temperature": 0.0, "max_new_tokens": 8, "top_p": 1.0, "seed": 0,
                    "max_prompt_tokens": 100, "system": "You are a helpful assistant."}


def test_a_system_message_the_childs_template_refuses_is_raised_as_on_hf(tmp_path):
    """The child answers a request its chat template refuses with ``{"refused": why}`` (a Gemma template and
    MixEval's system message); the parent raises SystemMessageError, which MixEval turns into the option to
    set, as it does on HF, instead of reporting a dead engine."""
    import json
    import os

    from larpo.errors import SystemMessageError
    from larpo.generation.vllm_server import ServedPolicy

    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    with os.fdopen(req_r) as _, os.fdopen(req_w, "w") as requests, os.fdopen(rep_r) as replies:
        with os.fdopen(rep_w, "w") as child:
            child.write(json.dumps({"refused": "the model's chat template refuses a system message (no)"}) + "\n")
        served = ServedPolicy(None, requests, replies, tmp_path / "eval_vllm.log", config=None)
        with pytest.raises(SystemMessageError, match=r"refuses a system message \(no\)"):
            sample(served, None, ["2+2="], n=1, temperature=0.0, max_new_tokens=8, system="Be brief.")

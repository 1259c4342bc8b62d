"""The bad-input corpus: bad options and bad files, each with the exact message it must produce,
and a check that nothing in the run directory changed."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from larpo.artifacts import RunDir
from larpo.errors import CheckpointError
from larpo.pipeline import run
from tests.helpers.faults import fault_cfg, raw_digest

# (overrides, the exact message). None of them may create the run directory.
BAD_OPTIONS = {
    "rounds=-1": "invalid option: rounds=-1 is out of range: allowed >= 0",
    "eval.n_prompts=0": "invalid option: eval.n_prompts=0 is out of range: allowed >= 1",
    "task.n_train=0": "invalid option: task.n_train=0 is out of range: allowed >= 1",
    "sampling.prompts_per_round=0": "invalid option: sampling.prompts_per_round=0 is out of range: allowed >= 1",
    "sampling.batch_size=0": "invalid option: sampling.batch_size=0 is out of range: allowed >= 1",
    "train.lists_per_step=0": "invalid option: train.lists_per_step=0 is out of range: allowed >= 1",
    "sampling.temperature=-1": "invalid option: sampling.temperature=-1.0 is out of range: allowed > 0",
    "sampling.top_p=0": "invalid option: sampling.top_p=0.0 is out of range: allowed (0, 1]",
    "train.lr=-1": "invalid option: train.lr=-1.0 is out of range: allowed > 0",
    "sampling.max_new_tokens=0": "invalid option: sampling.max_new_tokens=0 is out of range: allowed >= 1",
    "threads=-1": "invalid option: threads=-1 is out of range: allowed >= 1",
    "train.warmup_ratio=1": "invalid option: train.warmup_ratio=1.0 is out of range: allowed [0, 1)",
    "stage=score": "invalid option: stage=score needs round=<r>: the round whose stage to re-run",
    "device=tpu": "invalid option: device='tpu' is not one of auto, cpu, cuda, cuda:N, mps",
    "rounds=-1 train.lr=0": "invalid options: rounds=-1 is out of range: allowed >= 0; "
                            "train.lr=0.0 is out of range: allowed > 0",
    "task.demo_noise=2": "task.demo_noise=2 must be a probability in [0, 1]",
    "sampling.max_new_tokens=200": "the longest prompt ({n} tokens, rendered) + sampling.max_new_tokens=200 = {t} "
                                   "exceeds the model's max_position_embeddings=128 (model.arch.max_position_embeddings);"
                                   " lower sampling.max_new_tokens or filter long prompts",
    "model.pretrained=/nonexistent": "model.pretrained: no such file or folder: /nonexistent",
    "model.tokenizer=/nonexistent/tok": "model.tokenizer: no such file or folder: /nonexistent/tok",
    "select.n_top=5": "select.n_top + select.n_bottom = 5 + 2 = 7 exceeds the 6 candidates per prompt "
                      "(sampling.n_samples + extra_negatives + the ladder's negatives_n): lower them or sample more "
                      "candidates",
    "loss.beta=0": "loss 'lambdarank': beta must be > 0, got 0",
    # Issue 19, 12: every float option is finite, a component's too (beta=inf trained to NaN, marked done).
    "loss.beta=inf": "invalid option: loss.beta=inf is not a finite number",
    "loss.beta=nan": "invalid option: loss.beta=nan is not a finite number",
    "train.lr=inf": "invalid option: train.lr=inf is out of range: allowed > 0",
}


@pytest.mark.parametrize("overrides", list(BAD_OPTIONS), ids=list(BAD_OPTIONS))
def test_bad_option_is_refused_before_anything_is_written(overrides, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(Exception) as info:
        run(fault_cfg(run_dir, *overrides.split()))
    expected = re.escape(BAD_OPTIONS[overrides]).replace(r"\{n\}", r"\d+").replace(r"\{t\}", r"\d+")
    assert re.fullmatch(expected, str(info.value)), str(info.value)
    assert not run_dir.exists()


@pytest.fixture
def unfetched(tmp_path, monkeypatch) -> Path:
    """The folder of a fetchable model (a REGISTRY entry, as smollm2 is) that has not been fetched."""
    from larpo import fetch

    folder = tmp_path / "models" / "tiny-chat"
    monkeypatch.setitem(fetch.REGISTRY, "tiny-chat", dataclasses.replace(fetch.REGISTRY["smollm2"], dest=str(folder)))
    return folder


@pytest.mark.parametrize(("key", "extra"), [("model.pretrained", []),
                                            ("judge.pretrained", ["eval=[task,alpacaeval2]", "judge=hf_local"])],
                         ids=["policy", "benchmark judge"])
def test_an_unfetched_model_folder_names_the_command_that_fetches_it(key, extra, unfetched, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(CheckpointError) as info:
        run(fault_cfg(run_dir, *extra, f"{key}={unfetched}"))
    assert str(info.value) == (f"{key}: no such file or folder: {unfetched}; fetch it with `make real-model` "
                               "(python -m larpo.fetch tiny-chat)")
    assert not run_dir.exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run(fault_cfg(run_dir))
    return run_dir


def edit_line(path: Path, line: int, fn: Callable[[dict], dict | str]) -> None:
    rows = path.read_text().splitlines()
    new = fn(json.loads(rows[line - 1]))
    rows[line - 1] = new if isinstance(new, str) else json.dumps(new)
    path.write_text("\n".join(rows) + "\n")


def set_field(key, value):
    return lambda row: {**row, key: value}


G, S, L = "round_1/generations.jsonl", "round_1/scores.jsonl", "round_1/lists.jsonl"
# name: (file, line, edit, the stage that reads it (its marker and all after it are cleared), message)
BAD_FILES = {
    "NaN reward": (S, 2, lambda r: json.dumps(r).replace('"rewards": [', '"rewards": [NaN, '), "select",
                   "{d}/round_1/scores.jsonl:2: malformed JSON line (NaN is not a finite number)"),
    "Infinity reward": (S, 1, lambda r: json.dumps(r).replace('"rewards": [', '"rewards": [Infinity, '), "select",
                        "{d}/round_1/scores.jsonl:1: malformed JSON line (Infinity is not a finite number)"),
    "rewards shorter than responses": (S, 3, lambda r: {**r, "rewards": r["rewards"][:-1]}, "select",
                                       "{d}/round_1/scores.jsonl:3: field 'rewards' has 5 entries for the 6 "
                                       "responses of {d}/round_1/generations.jsonl:3"),
    "string reward": (S, 1, lambda r: {**r, "rewards": ["high"] + r["rewards"][1:]}, "select",
                      "{d}/round_1/scores.jsonl:1: field 'rewards': element 0 is 'high', expected a finite number"),
    "boolean reward": (S, 1, lambda r: {**r, "rewards": [True] + r["rewards"][1:]}, "select",
                       "{d}/round_1/scores.jsonl:1: field 'rewards': element 0 is True, expected a finite number"),
    "unknown prompt id in scores": (S, 4, set_field("prompt_id", "train-99999"), "select",
                                    "{d}/round_1/scores.jsonl:4: prompt_id 'train-99999' is not in "
                                    "{d}/round_1/generations.jsonl"),
    "responses as a string": (G, 2, set_field("responses", "abcdef"), "score",
                              "{d}/round_1/generations.jsonl:2: field 'responses' is 'abcdef', expected a list of "
                              "(a string)"),
    "fewer candidates than sampled": (G, 1, lambda r: {**r, "responses": r["responses"][:3],
                                                       "finished": r["finished"][:3]}, "score",
                                      "{d}/round_1/generations.jsonl:1: 3 candidate(s), expected exactly 6"),
    "finished shorter than responses": (G, 1, lambda r: {**r, "finished": r["finished"][:5]}, "score",
                                        "{d}/round_1/generations.jsonl:1: fields of one entry per candidate differ "
                                        "in length (responses 6, finished 5)"),
    "one-candidate list": (L, 1, lambda r: {k: (v[:1] if isinstance(v, list) else v) for k, v in r.items()}, "train",
                           "{d}/round_1/lists.jsonl:1: 1 candidate(s), expected at least 2"),
    "list of an unknown prompt": (L, 1, set_field("prompt_id", "eval-00001"), "train",
                                  "{d}/round_1/lists.jsonl:1: prompt_id 'eval-00001' is not in "
                                  "{d}/round_1/generations.jsonl"),
    "torn lists line": (L, 2, lambda r: json.dumps(r)[:30], "train",
                        "{d}/round_1/lists.jsonl:2: malformed JSON line (...)"),
    "eval output without reward": (
        "round_0/eval_outputs.jsonl", 5, lambda r: {k: v for k, v in r.items() if k != "reward"}, "evaluate",
        "{d}/round_0/eval_outputs.jsonl:5: missing field(s) ['reward']"),
}


def clear_from(rd: RunDir, stage: str) -> None:
    stages = ("generate", "score", "select", "train", "evaluate")
    for s in stages[stages.index(stage):]:
        rd.clear_done(1, s)


@pytest.mark.parametrize("case", [*BAD_FILES, "a prompt twice"])
def test_bad_file_is_refused_with_file_line_and_field(case, finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    rd = RunDir(run_dir)
    if case == "a prompt twice":
        path, stage = run_dir / G, "score"
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0], lines[1], lines[0], *lines[3:]]) + "\n")
        expected = f"{run_dir}/{G}:3: prompt_id 'train-00000' appears again (first on line 1)"
    else:
        name, line, edit, stage, message = BAD_FILES[case]
        edit_line(run_dir / name, line, edit)
        expected = message.format(d=run_dir)
    clear_from(rd, stage)
    before = raw_digest(run_dir)
    before.pop(".lock")
    with pytest.raises(Exception) as info:
        run(fault_cfg(run_dir))
    message = str(info.value)
    if expected.endswith("(...)"):  # the JSON parser's own words follow
        assert message.startswith(expected[:-4]) and message.endswith(")"), message
    else:
        assert message == expected
    after = raw_digest(run_dir)
    after.pop(".lock")
    assert after == before  # nothing in the run directory changed


@pytest.mark.parametrize("marker", ["with checksums", "from before checksums"])
def test_truncated_checkpoint_names_path_and_the_stage_to_redo(finished, tmp_path, marker):
    """The sha256 recorded in the done marker catches it before loading; a marker written before markers
    held checksums (empty) leaves it to the loader, whose failure names the same command."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    weights = run_dir / "round_0/checkpoint/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    rd = RunDir(run_dir)
    clear_from(rd, "generate")
    if marker == "from before checksums":
        rd.marker(0, "sft").write_text("")
    with pytest.raises(Exception) as info:
        run(fault_cfg(run_dir))
    message = str(info.value)
    if marker == "with checksums":
        assert message == (f"{weights}: its sha256 differs from the one recorded when round 0's sft stage wrote it "
                           f"({rd.marker(0, 'sft')}): it was changed or damaged since; re-create it with "
                           "`stage=sft round=0`")
    else:
        assert message.startswith(f"could not load the model at {run_dir}/round_0/checkpoint: ")
        assert message.endswith("the round-0 checkpoint is damaged: re-create it with `stage=sft round=0`")


def test_directory_with_artifacts_but_no_manifest(finished, tmp_path):
    """Finding 9: without manifest.json nothing says which config made the artifacts."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "manifest.json").unlink()
    before = raw_digest(run_dir)
    with pytest.raises(Exception) as info:
        run(fault_cfg(run_dir, "loss.beta=0.5"))
    assert str(info.value) == (f"{run_dir} holds artifacts but no manifest.json, so nothing says which config made "
                               "them; use another run_dir=, or adopt=true to resume it with this config (a new "
                               "manifest is written)")
    assert raw_digest(run_dir) == before
    run(fault_cfg(run_dir, "adopt=true"))  # the user says otherwise
    assert (run_dir / "manifest.json").exists()


def test_a_run_made_before_new_options_resumes_at_their_defaults(finished, tmp_path, caplog):
    """A manifest written by an older LarPO lacks options added since: at their defaults (the schema's,
    or the component constructor's) the run resumes, doing nothing, with a warning naming them;
    at another value it is refused like any other difference."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    del manifest["config"]["select"]["pool"]  # a component option (Selector's keyword default)
    del manifest["config"]["sampling"]["negatives"]  # a schema option (SamplingConfig's default)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    before = raw_digest(run_dir)
    with caplog.at_level("WARNING", logger="larpo.pipeline"):
        run(fault_cfg(run_dir))
    assert "predates option(s) sampling.negatives, select.pool; resuming with their defaults" in caplog.text
    after = raw_digest(run_dir)
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}
    # nothing re-done, the old manifest kept (.lock records the last holder)
    with pytest.raises(Exception, match=r"1 key\(s\) differ: select.pool: None -> 'all'"):
        run(fault_cfg(run_dir, "select.pool=all"))


def test_a_run_made_in_another_checkout_resumes(tmp_path):
    """The default policy is a shipped asset recorded as an absolute path: a run made in another
    clone (or a moved checkout) is the same run; a different asset is still a different config."""
    from larpo.artifacts import RunDir
    from larpo.manifest import check_run_dir, write_manifest
    from tests.helpers.config import compose_config

    cfg = compose_config([f"run_dir={tmp_path}"])
    assert cfg.model.pretrained.endswith("/larpo/assets/round0")
    rd = RunDir(tmp_path)
    write_manifest(rd, cfg)
    manifest = json.loads(rd.manifest.read_text())
    manifest["config"]["model"]["pretrained"] = "/elsewhere/clone/larpo/assets/round0"
    rd.manifest.write_text(json.dumps(manifest))
    assert check_run_dir(rd, cfg) is False  # the same run: resume, keep the manifest
    manifest["config"]["model"]["pretrained"] = "/elsewhere/clone/larpo/assets/tokenizer"
    rd.manifest.write_text(json.dumps(manifest))
    with pytest.raises(Exception, match=r"model.pretrained: '<larpo asset tokenizer>' -> '<larpo asset round0>'"):
        check_run_dir(rd, cfg)


def test_different_config_is_refused_and_changes_nothing(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    before = raw_digest(run_dir)
    with pytest.raises(Exception) as info:
        run(fault_cfg(run_dir, "loss.beta=0.5"))
    assert str(info.value) == (f"{run_dir} was made with a different config (1 key(s) differ: loss.beta: 0.1 -> 0.5);"
                               " use another run_dir= or restore the original settings")
    assert raw_digest(run_dir) == before

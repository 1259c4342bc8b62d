"""One source for every default: the dataclass schemas of larpo/config.py.

A group file composed on a schema (``conf/model``, ``sft``, ``sampling``, ``train``, ``eval/task.yaml``) holds
only what its choice changes: a key whose value equals the schema's default is a default written twice (it
drifts: ``train.lr`` was 1e-4 in the schema and 5e-5 in conf/train/default.yaml, ``eval.alpaca_style`` false
in the schema and null in conf/eval/task.yaml), and a key whose value differs must say why, here.

Out of scope: the component groups chosen by ``_target_`` (loss, select, reward, task, logger, judge and the
benchmark nodes), whose yaml node is the component's whole record in the run's manifest and identity (a key
taken out of one would change every run directory's name), and conf/experiment/, the paper's presets, which
spell out the paper's values on purpose.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from larpo.config import Config, EvalConfig, SamplingConfig, SFTConfig, TrainConfig
from tests.helpers.config import CONF_DIR, compose_config

# Why a group file contradicts its schema's default: the choice it names changes that option.
HUB_7B = "a 7-8 B hub model on GPUs: bfloat16 weights, sdpa attention, activations recomputed to fit"
ALLOWED: dict[str, dict[str, str]] = {
    "eval/task": {"held_out": "eval=task is the choice of the task's held-out metrics (a benchmark alone has none)"},
    "model/embedded": {"pretrained": "the embedded default starts from the round-0 policy shipped in larpo/assets"},
    "model/tiny": {f"arch.{k}": "model=tiny builds its Llama from this architecture (no pretrained weights)"
                   for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                             "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings")},
    "model/gemma2_2b_it": {"pretrained": "the hub model", "dtype": "bfloat16 on GPUs",
                           "attn_implementation": "Gemma 2 soft-caps attention logits, which sdpa ignores: eager",
                           "gradient_checkpointing": "activations recomputed to fit the GPU"},
    **{f"model/{name}": {"pretrained": "the hub model", "dtype": HUB_7B, "attn_implementation": HUB_7B,
                         "gradient_checkpointing": HUB_7B}
       for name in ("llama3_8b_instruct", "mathstral_7b", "mistral_7b_base_sft", "mistral_7b_instruct")},
    "model/qwen25_05b_instruct": {"pretrained": "the hub model", "attn_implementation": "sdpa: the real models' kernel"},
    "model/smollm2_135m": {"pretrained": "the hub model", "attn_implementation": "sdpa: the real models' kernel"},
    "sft/tiny": {"steps": "sft=tiny is the choice of a warm-start (the embedded model built from scratch)"},
}


def schema_groups() -> dict[str, type]:
    """The config groups of conf/ whose options compose on a dataclass of larpo/config.py."""
    hints = typing.get_type_hints(Config)
    return {name: t for name, t in hints.items()
            if isinstance(t, type) and dataclasses.is_dataclass(t) and (CONF_DIR / name).is_dir()}


def package(path: Path) -> str:
    first = path.read_text().splitlines()[:1]
    return first[0].split()[-1] if first and first[0].startswith("# @package") else path.parent.name


def group_files() -> list[Path]:
    """Every option of a schema group whose node is the schema's (not a ``_target_`` node packaged below it)."""
    return [p for group in sorted(schema_groups()) for p in sorted((CONF_DIR / group).glob("*.yaml"))
            if package(p) == group]


def leaves(node, prefix: str = "") -> dict:
    """Every leaf of a raw yaml node (interpolations unresolved), by dotted key; an empty mapping is a leaf."""
    out = {}
    for key, value in (node.items() if isinstance(node, dict) else []):
        if key == "defaults":
            continue
        if isinstance(value, dict) and value:
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def schema_default(schema, key: str):
    node = OmegaConf.structured(schema)
    value = OmegaConf.select(node, key, default="<no such key>", throw_on_missing=False)
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, enum_to_str=True)
    return getattr(value, "value", value)


def check(path: Path, schema, allowed: dict[str, str]) -> list[str]:
    """What is wrong with a group file composed on ``schema`` (a dataclass, or an instance of one)."""
    problems = []
    for key, value in leaves(OmegaConf.to_container(OmegaConf.load(path), resolve=False)).items():
        default = schema_default(schema, key)
        if value == default:
            problems.append(f"{key}: {value!r} is the schema's default, written twice")
        elif key not in allowed:
            problems.append(f"{key}: {value!r} contradicts the schema's default {default!r} and ALLOWED says not why")
    return problems


@pytest.mark.parametrize("path", group_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_group_file_holds_only_what_its_choice_changes(path):
    schema = schema_groups()[path.parent.name]
    assert check(path, schema, ALLOWED.get(f"{path.parent.name}/{path.stem}", {})) == []


def test_the_checked_groups_and_the_allow_list_are_current():
    assert set(schema_groups()) == {"model", "sft", "sampling", "train", "eval"}
    files = {f"{p.parent.name}/{p.stem}" for p in group_files()}
    assert set(ALLOWED) <= files
    for name, keys in ALLOWED.items():
        written = leaves(OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{name}.yaml"), resolve=False))
        assert set(keys) <= set(written), f"{name}: ALLOWED names keys the file no longer writes"


def test_a_drift_is_caught(tmp_path):
    """The drift this test was written for: conf/train/default.yaml said lr 5e-5, the schema 1e-4."""
    drifted = tmp_path / "default.yaml"
    drifted.write_text("lr: 5.0e-5\nepochs: 2\n")
    schema = dataclasses.replace(TrainConfig(), lr=1e-4)  # the schema as it was
    assert check(drifted, schema, {}) == ["lr: 5e-05 contradicts the schema's default 0.0001 and ALLOWED says "
                                                "not why", "epochs: 2 is the schema's default, written twice"]


@pytest.mark.parametrize("group, schema", [("train", TrainConfig), ("sampling", SamplingConfig), ("sft", SFTConfig)])
def test_the_default_run_uses_the_schema_defaults(group, schema):
    """What `python run.py` runs with is what the schema says (the lr drift: the run used the yaml's 5e-5)."""
    cfg = compose_config(["run_dir=x"])
    ran = OmegaConf.to_container(cfg[group], enum_to_str=True)
    assert ran == OmegaConf.to_container(OmegaConf.structured(schema), enum_to_str=True)
    assert cfg.train.lr == 5e-5 and cfg.eval.alpaca_style is None  # the values users got before the fix


def test_the_resume_check_knows_the_defaults_the_run_used():
    """larpo.manifest's test for "an option added since, at its default" reads the schema: it must agree with
    the values the default run uses (with the drift it called lr=5e-5, the default run's lr, not a default)."""
    from larpo.manifest import is_default, run_config

    cfg = compose_config(["run_dir=x"])
    config = run_config(cfg)
    for group in ("train", "sampling", "sft"):
        for key, value in leaves(config[group]).items():
            assert is_default(f"{group}.{key}", value, config), f"{group}.{key}={value!r}"
    assert is_default("eval.alpaca_style", config["eval"]["alpaca_style"], config)


def test_a_run_made_before_alpaca_style_s_default_was_written_once_resumes(tmp_path):
    """eval=[alpacaeval2] alone (no held-out metrics, where alpaca_style does nothing) recorded the schema's old
    false; the same command resumes that run."""
    from larpo.artifacts import RunDir
    from larpo.manifest import check_run_dir, run_config

    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path}", "eval=[alpacaeval2]"])
    old = run_config(cfg)
    assert old["eval"]["held_out"] is False and old["eval"]["alpaca_style"] is None
    old["eval"]["alpaca_style"] = False
    (tmp_path / "manifest.json").write_text(json.dumps({"config": old}))
    assert check_run_dir(RunDir(tmp_path), cfg) is False  # resumable, nothing to write


def test_eval_keeps_held_out_off_in_the_schema():
    """A benchmark alone (``eval=[alpacaeval2]``) has no held-out metrics: only eval=task turns them on."""
    assert EvalConfig.held_out is False and compose_config(["run_dir=x", "eval=[alpacaeval2]"]).eval.held_out is False

"""Run directories people can name (larpo/runs.py): named by what the run computes, safe as a path, the same
for the same run however it is typed; a refused command leaves no directory and changes no file; directories
of the earlier naming are still found; `python -m larpo.runs` lists runs with their overrides."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from larpo.runs import dirname, identity, main, run_hash
from tests.helpers.config import compose_config
from tests.helpers.faults import raw_digest
from tests.helpers.runs import run_py

REPO = Path(__file__).resolve().parents[2]
# A run of seconds: round 0 only (warm-start + evaluation).
SMALL = ["experiment=smoke", "rounds=0", "sft.steps=10", "eval.pass_at_max=0", "eval.alpaca_style=false", "threads=1"]
NAME = re.compile(r"^[A-Za-z0-9._]+-[A-Za-z0-9._]+-s\d+-[0-9a-f]{8}$")


def everything(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_the_name_is_the_runs_identity_readable_and_safe():
    base = compose_config(SMALL)
    name = dirname(base, {"model": "tiny", "loss": "listwise"})
    assert NAME.match(name) and name.startswith("tiny-listwise-s0-"), name
    same = [  # a default written out, and everything that changes no trained artifact
        ["loss=listwise"], ["sampling.temperature=1.0"], ["train.logprob_max_tokens=16384"], ["judge=reward"],
        ["eval=[task,mixeval_hard]", "eval.mixeval_hard.source=/data/mixeval"], ["logger=wandb"], ["threads=2"],
        ["device=cpu"], ["rounds=5"], ["stage=evaluate", "round=0"], ["paths.runs=/elsewhere"],
        ["sampling.vllm.gpu_memory_utilization=0.5"],
    ]
    for overrides in same:
        assert run_hash(compose_config([*SMALL, *overrides])) == run_hash(base), overrides
    for override in ["sampling.temperature=0.9", "train.lr=0.002", "seed=1", "reference=initial", "loss=pairwise"]:
        assert run_hash(compose_config([*SMALL, override])) != run_hash(base), override
    # A path value is hashed, never a folder of the name; the stem is the chosen options only.
    odd = compose_config([*SMALL, "model.pretrained='/data/no/such,model=x'"])
    assert "/" not in dirname(odd) and "," not in dirname(odd) and "=" not in dirname(odd)
    # Two names of one objective stay two runs (a table shows the name that was chosen).
    lam = compose_config([*SMALL, "loss=lambdarank"])
    assert identity(lam) == identity(base)  # the same config ...
    assert run_hash(lam, {"loss": "lambdarank"}) != run_hash(base, {"loss": "listwise"})  # ... named apart


def test_refused_commands_change_nothing_in_a_finished_run(tmp_path):
    """Issue 19.8: a refused command (another config on run_dir=, an option out of range) rewrote .hydra/;
    now every file of the run directory is byte for byte the same, and no other folder appears."""
    first = run_py(tmp_path, *SMALL)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = [p.parent for p in (tmp_path / "runs").rglob("manifest.json")]
    assert (run_dir / ".hydra" / "overrides.yaml").exists() and (run_dir / "run.log").exists()
    before, listing = raw_digest(run_dir), everything(tmp_path)
    for override, says in [("sampling.temperature=0.5", "sampling.temperature"), ("train.lr=-1", "train.lr"),
                           ("sampling.top_p=0", "sampling.top_p")]:
        proc = run_py(tmp_path, *SMALL, f"run_dir={run_dir}", override)
        assert proc.returncode != 0 and says in proc.stdout + proc.stderr, (override, proc.stderr[-2000:])
        assert raw_digest(run_dir) == before, override
        assert everything(tmp_path) == listing, override


def test_a_refusal_makes_no_directory(tmp_path):
    """Issue 19.14: `rounds=-1` and a missing model.pretrained made runs/default/... (the latter nested by the
    path's slashes) before being refused; now nothing is created."""
    for override, says in [("rounds=-1", "rounds"), ("model.pretrained=/data/no/such/model", "/data/no/such/model")]:
        proc = run_py(tmp_path, override)
        assert proc.returncode != 0 and says in proc.stdout + proc.stderr, proc.stderr[-2000:]
        assert everything(tmp_path) == [], override


def test_a_directory_of_the_earlier_naming_is_resumed_by_the_same_command(tmp_path):
    """Before, a run lived in runs/<name>/<override_dirname> (keys sorted; experiment, rounds, threads left
    out). The same command finds such a directory when it holds this run's config, and only then."""
    def legacy(*extra: str) -> Path:
        return tmp_path / "runs" / "smoke" / ",".join(sorted(["eval.alpaca_style=false", "eval.pass_at_max=0",
                                                               "sft.steps=10", *extra]))

    made = run_py(tmp_path, *SMALL, f"run_dir='{legacy()}'")  # quoted: the old name holds `=` and `,`
    assert made.returncode == 0, made.stderr[-3000:]
    again = run_py(tmp_path, *SMALL)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "a run directory of the earlier naming" in again.stdout and f"run directory: {legacy()}" in again.stdout
    assert [p.parent for p in (tmp_path / "runs").rglob("manifest.json")] == [legacy()]
    # An old directory of this command's name that holds another config is left alone: a new one is made.
    other = run_py(tmp_path, *SMALL, f"run_dir='{legacy('seed=1')}'", "seed=1", "sampling.temperature=0.9")
    assert other.returncode == 0, other.stderr[-3000:]
    fresh = run_py(tmp_path, *SMALL, "seed=1")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "earlier naming" not in fresh.stdout and len(list((tmp_path / "runs").rglob("manifest.json"))) == 3


def test_runs_listing_names_each_run_with_its_overrides(tmp_path, capsys):
    for name, overrides in [("tiny-listwise-s0-0123abcd", ["experiment=smoke", "seed=0"]), ("loss=dpo,seed=1", None)]:
        d = tmp_path / "runs" / "smoke" / name
        (d / "round_0" / ".done").mkdir(parents=True)
        (d / "round_0" / ".done" / "evaluate").write_text("")
        manifest = {"config": {"rounds": 3}, "created": "2026-12-06T10:00:00+0000"}
        if overrides is not None:
            manifest["command"] = {"overrides": overrides, "choices": {"loss": "listwise"}}
        (d / "manifest.json").write_text(json.dumps(manifest))
    main([str(tmp_path / "runs")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "created", "rounds", "overrides"] and len(lines) == 3
    assert lines[1].endswith("0/3     loss=dpo,seed=1")  # the earlier naming: the name was the overrides
    assert lines[2].endswith("0/3     experiment=smoke seed=0")


@pytest.mark.parametrize("argv", [["--help"]])
def test_help_is_the_projects_own_summary(tmp_path, argv):
    proc = run_py(tmp_path, *argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert "local.example" not in text and "Powered by Hydra" not in text
    assert "python -m larpo.runs" in text and "stage=evaluate round=3" in text and "runs/<name>/" in text
    from larpo.config import CONF_DIR, NOT_GROUPS

    groups = text.split("Option groups")[1].splitlines()
    for group in (p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in NOT_GROUPS):
        line = next(x for x in groups if x.split()[:1] == [group.name])
        assert all(f.stem in line for f in group.glob("*.yaml")), group.name
    assert everything(tmp_path) == []

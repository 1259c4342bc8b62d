"""The study aggregator on hand-made run directories: means, SEs and the verdict by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from larpo.studies import EXPERIMENTS, aggregate, collect, load_study, verdict


def fake_run(root: Path, loss: str, seed: int, accuracy: float) -> None:
    d = root / f"loss={loss},seed={seed}"
    d.mkdir(parents=True)
    config = {"seed": seed, "loss": {"_target_": f"larpo.losses.x.{loss.capitalize()}Loss", "beta": 0.1}}
    (d / "manifest.json").write_text(json.dumps({"config": config}))
    rounds = [{"round": 0, "eval": {"accuracy": 0.4}}, {"round": 3, "eval": {"accuracy": accuracy}}]
    (d / "summary.json").write_text(json.dumps({"rounds": rounds}))


@pytest.fixture
def runs(tmp_path):
    for seed, (a, b) in enumerate([(0.50, 0.44), (0.56, 0.46), (0.53, 0.48)]):
        fake_run(tmp_path / "sweep", "lambdarank", seed, a)
        fake_run(tmp_path / "sweep", "pairwise", seed, b)
    return tmp_path / "sweep"


def test_collect_takes_the_last_round_by_factor_and_seed(runs):
    data = collect(runs, "loss", "accuracy")
    assert data == {"lambdarank": {0: 0.50, 1: 0.56, 2: 0.53}, "pairwise": {0: 0.44, 1: 0.46, 2: 0.48}}


def test_verdict_is_the_paired_difference_over_seeds(runs):
    data = collect(runs, "loss", "accuracy")
    # Paired differences 0.06, 0.10, 0.05: mean 0.07; sample sd sqrt((1e-4 + 9e-4 + 4e-4) / 2) = sqrt(7e-4);
    # SE = sqrt(7e-4 / 3) = 0.01528 -> 0.07 > 2 SE: holds.
    line = verdict(data, {"better": "lambdarank", "than": "pairwise"}, "accuracy")
    assert line == ("lambdarank > pairwise on accuracy: holds, +0.070 ± 0.015 (paired over 3 seeds; holds = above "
                    "2 SE)")
    assert math.isclose(math.sqrt(7e-4 / 3), 0.015275, rel_tol=1e-4)
    # The other way round it does not hold.
    assert "does not hold, -0.070" in verdict(data, {"better": "pairwise", "than": "lambdarank"}, "accuracy")
    assert "not tested" in verdict(data, {"better": "listmle", "than": "pairwise"}, "accuracy")


def test_aggregate_writes_table_plot_and_verdict(runs, tmp_path):
    text = aggregate({"name": "toy", "sweep": ["loss=a,b"], "factor": "loss", "metric": "accuracy",
                      "claim": {"better": "lambdarank", "than": "pairwise"}}, root=runs, out_dir=tmp_path / "out")
    assert "| lambdarank | 0.530 ± 0.017 | 3 | 0: 0.500, 1: 0.560, 2: 0.530 |" in text  # sd 0.03, SE 0.03/sqrt(3)
    assert "**Verdict:** lambdarank > pairwise on accuracy: holds" in text
    assert (tmp_path / "out" / "results.md").read_text() == text
    assert (tmp_path / "out" / "results.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["objectives", "memorization", "negatives", "temperature", "listsize", "passn"])
def test_every_study_sweep_composes(name):
    """Every value of each study sweep composes as `python run.py` overrides, extra sweeps too."""
    from tests.helpers.config import compose_config

    study = load_study(name)
    for sweep in [study["sweep"], *study.get("extra_sweeps", [])]:
        keys = [o.split("=", 1) for o in sweep]
        for key, values in keys:
            for value in values.split(","):
                fixed = [f"{k}={v.split(',')[0]}" for k, v in keys if k != key]
                cfg = compose_config(["run_dir=/tmp/unused", *fixed, f"{key}={value}"])
                assert cfg is not None
    assert study["real"]


@pytest.mark.parametrize("name", sorted(p.parent.name for p in EXPERIMENTS.glob("*/study.yaml")))
def test_every_job_of_a_study_has_a_run_directory_of_its_own(name):
    """Jobs of one study sharing a run directory: the pipeline refuses all but the first, and the study loses
    them (a sweep over an evaluation key, which is not part of a run's identity, did this to passn)."""
    import itertools

    from larpo.runs import IDENTITY_GROUPS, dirname
    from tests.helpers.config import compose_config

    study = load_study(name)
    dirs = []
    for sweep in [study["sweep"], *study.get("extra_sweeps", [])]:
        keys = [o.split("=", 1) for o in sweep]
        for values in itertools.product(*[v.split(",") if "${" not in v else [v] for _, v in keys]):
            job = [(k, v.replace("${hydra:sweep.dir}", "/sweep")) for (k, _), v in zip(keys, values)]
            cfg = compose_config([f"{k}={v}" for k, v in job])
            dirs.append(cfg.run_dir or dirname(cfg, {k: v for k, v in job if k in IDENTITY_GROUPS}))
    assert len(dirs) == len(set(dirs)), sorted(d for d in dirs if dirs.count(d) > 1)


def test_a_group_factor_is_labelled_by_its_choice_name(tmp_path):
    """`loss=dpo` and `loss=pairwise` share a class; the job directory's override names them apart."""
    root = tmp_path / "sweep"
    for loss, acc in [("pairwise", 0.5), ("dpo", 0.4)]:
        fake_run(root, loss, 0, acc)
        config = {"seed": 0, "loss": {"_target_": "larpo.losses.pairwise.PairwiseLoss", "beta": 0.1}}
        (root / f"loss={loss},seed=0" / "manifest.json").write_text(json.dumps({"config": config}))
    fake_run(root / "default", "lambdarank", 0, 0.6)
    (root / "default" / "loss=lambdarank,seed=0").rename(root / "default" / "seed=0")
    assert collect(root, "loss", "accuracy") == {"pairwise": {0: 0.5}, "dpo": {0: 0.4}, "lambdarank": {0: 0.6}}


def test_extra_sweeps_and_parallel_jobs_are_one_command_each():
    from larpo.studies import sweep_commands

    study = {"name": "toy", "sweep": ["loss=a,b", "seed=0,1"], "extra_sweeps": [["loss=dpo", "seed=0,1"]]}
    serial, parallel = sweep_commands(study, ["rounds=1"], 1), sweep_commands(study, [], 2)
    assert [c[3:-1] for c in serial] == [["loss=a,b", "seed=0,1", "rounds=1"], ["loss=dpo", "seed=0,1", "rounds=1"]]
    assert all(c[2] == "-m" and c[-1].startswith("hydra.sweep.dir=") and c[-1].endswith("study_toy") for c in serial)
    assert parallel[1][3:-1] == ["loss=dpo", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                 "threads=1"]


def test_a_list_of_claims_gives_one_verdict_each(runs, tmp_path):
    text = aggregate({"name": "toy", "sweep": ["loss=a,b"], "factor": "loss", "metric": "accuracy",
                      "claim": [{"better": "lambdarank", "than": "pairwise"}, {"better": "pairwise", "than": "lambdarank"}]},
                     root=runs, out_dir=tmp_path / "out", note="Wall time of the sweep: 1.0 min")
    assert "lambdarank > pairwise on accuracy: holds, +0.070" in text
    assert "; pairwise > lambdarank on accuracy: does not hold, -0.070" in text
    assert text.endswith("Wall time of the sweep: 1.0 min\n")


def test_results_json_holds_the_curves_and_the_notebook_reader_draws_them(runs, tmp_path):
    from larpo.studies import load_results, plot_results

    aggregate({"name": "toy", "sweep": ["loss=a,b"], "factor": "loss", "metric": "accuracy",
               "claim": {"better": "lambdarank", "than": "pairwise"}}, root=runs, out_dir=tmp_path / "toy",
              note="Wall time of the sweep: 2.0 min")
    results = load_results("toy", experiments=tmp_path)
    assert results["final"]["pairwise"] == {0: 0.44, 1: 0.46, 2: 0.48}
    assert results["series"]["lambdarank"][1] == [(0.0, 0.4), (3.0, 0.56)]  # (round, accuracy)
    assert results["verdict"].startswith("lambdarank > pairwise on accuracy: holds")
    fig = plot_results(results, tmp_path / "again.png")
    assert len(fig.axes) == 2 and (tmp_path / "again.png").stat().st_size > 0
    # A redraw without a new sweep keeps the sweep's wall time.
    text = aggregate({"name": "toy", "sweep": ["loss=a,b"], "factor": "loss", "metric": "accuracy"}, root=runs,
                     out_dir=tmp_path / "toy")
    assert text.endswith("Wall time of the sweep: 2.0 min\n")


def test_pass_at_n_curves_come_from_the_last_round(tmp_path):
    from larpo.studies import collect_series

    d = tmp_path / "eval.pass_temperature=0.5,seed=0"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"config": {"seed": 0, "eval": {"pass_temperature": 0.5}}}))
    ev = {"pass@1": 0.4, "pass@2": 0.5, "pass@4": 0.7, "pass@max": 0.9, "accuracy": 0.45}
    (d / "summary.json").write_text(json.dumps({"rounds": [{"round": 0, "eval": ev}]}))
    series = collect_series(tmp_path, "eval.pass_temperature", "pass@4", "pass@N")
    assert series == {"0.5": {0: [(1.0, 0.4), (2.0, 0.5), (4.0, 0.7)]}}


def test_dry_prints_and_launches_nothing(monkeypatch, capsys):
    """`make fig-passn DRY=1` (larpo.studies run-dry): the sweep's commands, and no process started."""
    import subprocess

    from larpo import studies

    def refuse(*args, **kwargs):
        raise AssertionError(f"DRY launched {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    studies.main(["run-dry", "passn", "--jobs", "2"])
    (line,) = capsys.readouterr().out.splitlines()
    assert " -m " in line and "eval.pass_temperature=0.1,0.5,1.0" in line and "hydra.launcher.n_jobs=2" in line
    studies.main(["real-dry", "passn"])
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("scale", ["", "real"])
def test_make_dry_is_dry_at_every_scale(scale):
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(["make", "-n", "fig-passn", "DRY=1", f"SCALE={scale}", "VIRTUAL_ENV=/nonexistent"], cwd=repo,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (study,) = [x for x in out.stdout.splitlines() if "larpo.studies" in x]
    assert f"larpo.studies {'real' if scale else 'run'}-dry passn" in study


@pytest.mark.parametrize("name", ["real_objectives", "real_listsize"])
def test_a_real_model_study_runs_one_job_at_a_time(name, monkeypatch, capsys):
    """vLLM's CPU engine and the trainer each take the machine's cores: the study's `jobs: 1` holds over
    LARPO_JOBS (two parallel runs of SmolLM2 would each run at half speed and double the RAM)."""
    from larpo import studies

    monkeypatch.setenv("LARPO_JOBS", "4")
    studies.main(["run-dry", name])
    lines = capsys.readouterr().out.splitlines()
    assert lines and all("experiment=smollm2_cpu" in line and "joblib" not in line for line in lines)
    studies.main(["run-dry", name, "--jobs", "2"])  # an explicit --jobs still wins
    assert all("hydra.launcher.n_jobs=2" in line for line in capsys.readouterr().out.splitlines())


def test_results_come_in_one_order_whatever_the_directories_are_called(tmp_path):
    """Factor values as the table sorts them (numbers by value), seeds ascending: since runs are named by a hash,
    the directories' order is arbitrary, and results.json must not follow it (listsize came out 10, 4, 6, 8)."""
    for name, n, seed in [("z-s1", 4, 1), ("a-s0", 10, 0), ("m-s0", 4, 0), ("b-s1", 10, 1), ("c-s0", 6, 0)]:
        d = tmp_path / name
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({"config": {"seed": seed, "sampling": {"n_samples": n}}}))
        (d / "summary.json").write_text(json.dumps({"rounds": [{"round": 0, "eval": {"accuracy": 0.1 * n + seed}}]}))
    data = collect(tmp_path, "sampling.n_samples", "accuracy")
    assert list(data) == ["4", "6", "10"]
    assert [list(seeds) for seeds in data.values()] == [[0, 1], [0], [0, 1]]


def test_a_run_that_has_not_reached_its_last_round_is_left_out(tmp_path, caplog):
    """A run still going (or stopped) has a summary with its rounds so far: its last value is not the final one, and
    a study aggregated mid-sweep counted it as final (listmle at round 1 beside the others' round 3)."""
    for seed, last in [(0, 3), (1, 1)]:
        d = tmp_path / f"s{seed}"
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({"config": {"seed": seed, "rounds": 3, "loss": "x"}}))
        rounds = [{"round": r, "eval": {"accuracy": 0.1 * r}} for r in range(last + 1)]
        (d / "summary.json").write_text(json.dumps({"rounds": rounds}))
    with caplog.at_level("WARNING", logger="larpo.studies"):
        data = collect(tmp_path, "loss", "accuracy")
    assert data == {"x": {0: pytest.approx(0.3)}}
    assert f"{tmp_path / 's1'}: left out, evaluated up to round 1 of 3" in caplog.text

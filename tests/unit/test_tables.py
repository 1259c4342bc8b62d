"""`make table-real` (python -m larpo.tables) over a sweep: a shell glob with multirun.yaml in it, a sweep
folder, rows with the seed and the objective as the run named it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from larpo.tables import main

LAMBDARANK = {"_target_": "larpo.losses.lambdarank.LambdaRankLoss", "beta": 0.1}


def fake_run(d: Path, seed: int, loss_choice: str | None, lc: float) -> None:
    config = {"seed": seed, "rounds": 1, "loss": LAMBDARANK, "select": {"n_top": 2, "n_bottom": 2},
              "sampling": {"n_samples": 8}, "reward": {"_target_": "larpo.rewards.verifier.VerifierReward"},
              "model": {"pretrained": "/x/larpo/assets/round0"}}
    manifest = {"config": config}
    if loss_choice is not None:
        manifest["command"] = {"overrides": [f"loss={loss_choice}", f"seed={seed}"], "choices": {"loss": loss_choice}}
    for r in (0, 1):
        (d / f"round_{r}").mkdir(parents=True)
        (d / f"round_{r}" / "eval.json").write_text(json.dumps({"alpacaeval2/lc_win_rate": lc + r,
                                                               "alpacaeval2/judge": "reward:verifier"}))
    (d / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun" / "default"
    fake_run(root / "round0-listwise-s0-aaaaaaaa", 0, "listwise", 40.0)
    fake_run(root / "round0-lambdarank-s1-bbbbbbbb", 1, "lambdarank", 50.0)
    fake_run(root / "loss=dpo,seed=2", 2, None, 60.0)  # a directory of the earlier naming: no command record
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def rows(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()[2:]]


def test_a_glob_over_a_sweep_skips_multirun_yaml_and_names_loss_and_seed(sweep, tmp_path, capsys):
    main([str(tmp_path / "out"), *map(str, sorted(sweep.glob("*")))])  # what the shell makes of multirun/default/*
    md = capsys.readouterr().out
    assert md.splitlines()[0] == ("| model | method | seed | round | LC % | WR % | MixEval | MixEval-Hard | judge |"
                                  " parser |")
    got = {(r[1].split(" ")[0], r[2], r[3]) for r in rows(md)}
    assert got == {("start", "0", "0"), ("listwise", "0", "1"), ("start", "1", "0"), ("lambdarank", "1", "1"),
                   ("start", "2", "0"), ("dpo", "2", "1")}
    assert (tmp_path / "out.md").read_text() == md and (tmp_path / "out.csv").exists()


def test_a_sweep_folder_is_every_run_under_it(sweep, tmp_path, capsys):
    main([str(tmp_path / "out"), str(sweep)])
    assert len(rows(capsys.readouterr().out)) == 6


def test_a_folder_without_runs_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="empty: no run directory here"):
        main([str(tmp_path / "out"), str(tmp_path / "empty")])

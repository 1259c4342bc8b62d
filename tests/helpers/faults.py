"""The fault suite's pieces (tests/faults/): the faulted run's config, artifact digests, the driver process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.config import REPO, compose_config

# experiment=smoke with one round: every stage of round 0 and of a LarPO round, in seconds.
FAULT_OVERRIDES = ("experiment=smoke", "rounds=1", "threads=1", "eval.pass_prompts=4", "sft.steps=40")
_TIMING = {"wall_s", "tokens_per_s"}


def fault_cfg(run_dir: Path, *extra: str):
    return compose_config([*FAULT_OVERRIDES, f"run_dir={run_dir}", *extra])


def _normalised(path: Path, data: bytes) -> bytes:
    """Files whose content legitimately differs between two runs of one config, made comparable."""
    if path.name == "manifest.json":
        return json.dumps(json.loads(data)["config"], sort_keys=True).encode()
    if path.name == "train.json":
        return json.dumps({k: v for k, v in json.loads(data).items() if k not in _TIMING}, sort_keys=True).encode()
    if path.parent.name == ".done" and data.strip():  # a marker: the sha256 of its stage's outputs
        recorded = json.loads(data)["sha256"]
        # train.json holds timing fields, so its recorded hash differs between runs; every other one is compared
        return json.dumps({k: v for k, v in recorded.items() if not k.endswith("/train.json")}, sort_keys=True).encode()
    if path.name == "summary.json":
        rounds = json.loads(data)["rounds"]
        for r in rounds:
            r["train"] = {k: v for k, v in r["train"].items() if k not in _TIMING}
        return json.dumps(rounds, sort_keys=True).encode()
    return data


def digest(run_dir: Path) -> dict[str, str]:
    """sha256 of every file of a run directory (timing fields and the lock's holder text left out)."""
    out = {}
    for path in sorted(Path(run_dir).rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        # .hydra/ and <job>.log: Hydra's own record of a run.py launch; .lock: the last holder's name.
        hydra_own = rel.startswith(".hydra/") or ("/" not in rel and rel.endswith(".log"))
        if not path.is_file() or rel == ".lock" or hydra_own or rel.endswith(".png"):
            continue
        out[rel] = hashlib.sha256(_normalised(path, path.read_bytes())).hexdigest()
    return out


def raw_digest(run_dir: Path) -> dict[str, str]:
    """sha256 of every file byte for byte (for "nothing changed")."""
    root = Path(run_dir)
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_driver(run_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run tests/helpers/fault_driver.py in a fresh process (it may kill itself)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tests.helpers.fault_driver", str(run_dir), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)

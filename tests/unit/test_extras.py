"""The `gpu` extra can resolve beside the core requirements (no network: pyproject.toml against vLLM's pins).

vLLM pins torch and transformers exactly; the core requirements must admit those versions or
`pip install -e '.[gpu]'` has no solution. The pins below are vllm 0.33.0's (its metadata, read by
`.ci/gpu-extra-resolves`, which asks pip itself); bumping the vllm pin means updating them.
"""

from __future__ import annotations

from pathlib import Path

import tomllib
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
VLLM_PINS = {"0.33.0": {"torch": "==2.14.0", "transformers": ">=5.16.1,<5.21"}}
# What pip resolved for `.[gpu,dev,eval,cluster]` (dry run, 2026-12-04): one version inside both ranges.
RESOLVED = {"torch": "2.14.0", "transformers": "5.20.2"}


def _reqs(items: list[str]) -> dict[str, Requirement]:
    return {Requirement(r).name.lower(): Requirement(r) for r in items}


def test_core_requirements_admit_the_versions_vllm_pins():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    core = _reqs(project["dependencies"])
    (vllm,) = [Requirement(r) for r in project["optional-dependencies"]["gpu"] if Requirement(r).name == "vllm"]
    pinned = [str(s.version) for s in vllm.specifier if s.operator == "=="]
    assert pinned and pinned[0] in VLLM_PINS, f"gpu extra pins {vllm}; add that vLLM's torch/transformers pins here"
    for name, spec in VLLM_PINS[pinned[0]].items():
        version = RESOLVED[name]
        assert Requirement(f"{name}{spec}").specifier.contains(version)
        assert core[name].specifier.contains(version), (
            f"core requirement {core[name]} excludes {name} {version}, which vllm {pinned[0]} needs ({spec})")


def test_every_extra_the_readme_installs_exists():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert {"dev", "eval", "gpu", "cluster"} <= set(extras)
    assert any(r.startswith("hydra-submitit-launcher") for r in extras["dev"])  # its test runs in CI


def test_the_gpu_install_carries_what_evaluation_needs():
    """`pip install -e '.[gpu]'` (Running at scale) then an AlpacaEval 2 run: the eval extra comes with it."""
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert "larpo[eval]" in extras["gpu"]
    assert any(Requirement(r).name == "alpaca-eval" for r in extras["eval"])

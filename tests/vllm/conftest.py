"""The vLLM tests run against a real engine: vLLM's CPU build (``make vllm-env``; ``make test-vllm``).

Where vLLM cannot run they are skipped with the reason; under ``--require-vllm`` (what ``make
test-vllm`` and CI pass) they fail instead, so a green ``make test-vllm`` means they ran. The real
SmolLM2 weights come from ``make real-model`` (models/smollm2-135m-instruct).
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

import pytest

from larpo.model import EMBEDDED_TOKENIZER

ROOT = Path(__file__).resolve().parents[2]
ROUND0 = EMBEDDED_TOKENIZER.parent / "round0"
SMOLLM2 = ROOT / "models" / "smollm2-135m-instruct"
# A small KV cache (GiB of host RAM): the models are small and CI machines are shared.
ENGINE = {"enforce_eager": True, "cpu_kv_cache_gb": 1.0}


@functools.cache
def vllm_missing() -> str | None:
    from larpo.generation.vllm_backend import vllm_platform, vllm_problem

    problem = vllm_problem()
    if problem is None and vllm_platform() != "cpu":
        problem = f"the installed vLLM is a {vllm_platform()} build; these tests are for its CPU build (tests/gpu)"
    return problem


def _not_here(config, why: str) -> None:
    if config.getoption("--require-vllm"):
        pytest.fail(f"--require-vllm: {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(autouse=True, scope="module")  # module: before the module-scoped engines, which need vLLM
def vllm_here(request):
    problem = vllm_missing()
    if problem:
        _not_here(request.config, f"needs vLLM's CPU build: {problem} (make vllm-env; make test-vllm)")


@pytest.fixture(scope="session")
def smollm2(request) -> Path:
    """The real SmolLM2-135M-Instruct checkpoint folder."""
    if not (SMOLLM2 / "config.json").exists():
        _not_here(request.config, f"real weights not fetched: {SMOLLM2} is missing (make real-model)")
    return SMOLLM2


def session_processes(sid: int) -> list[int]:
    """Pids of the live (not zombie) processes of session ``sid``, read from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def children_running(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (e.g. a run directory's path)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if marker in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

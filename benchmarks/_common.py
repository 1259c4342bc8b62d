"""Shared pieces of the benchmark scripts: config composition, workers in subprocesses,
peak memory, and markdown tables.

Every measurement that reports a peak memory runs in a subprocess of its own (a *worker*),
so peaks of different systems never mix; the parent only orchestrates and prints. A worker
prints one line ``RESULT <json>`` on stdout, which :func:`run_worker` parses.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's larpo, not another installed copy (editable installs elsewhere)
    sys.path.insert(1, str(REPO))
CONF_DIR = REPO / "conf"
RESULTS = REPO / "benchmarks" / "results"
RESULT_TAG = "RESULT "


def compose(overrides: Sequence[str] = ()):
    """The config ``python run.py <overrides>`` would see (Hydra's compose API, no runtime)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import larpo.config  # noqa: F401  (registers the schema and resolvers)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def set_overrides(sets: Sequence[str], prefix: str = "train.") -> list[str]:
    """``--set key=value`` items as Hydra overrides; a bare key is taken under ``prefix``.

    ``--set forward=chunked`` and ``--set train.forward=chunked`` mean the same; a key under
    another group (``model.dtype=...``) is passed as is.
    """
    out = []
    for item in sets:
        if "=" not in item:
            raise SystemExit(f"--set {item!r}: expected key=value")
        key = item.split("=", 1)[0].lstrip("+~")
        out.append(item if "." in key else prefix + item)
    return out


def override_value(overrides: Sequence[str], key: str) -> str | None:
    """The value the last of ``overrides`` (Hydra ``key=value``, ``+``/``++`` allowed) gives ``key``, or None."""
    values = [o.split("=", 1)[1] for o in overrides if "=" in o and o.split("=", 1)[0].lstrip("+") == key]
    return values[-1] if values else None


def peak_memory_mb(device: str = "cpu") -> float:
    """Peak memory of this process: max RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def emit(result: dict) -> None:
    """A worker's answer to its parent (the only line it prints on stdout with this tag)."""
    sys.stdout.write(RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()


def run_worker(script: Path, args: Sequence[str], timeout: float | None = None) -> dict:
    """Run ``python script --worker ...`` in a fresh interpreter and return its RESULT."""
    cmd = [sys.executable, str(script), *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker failed (rc={proc.returncode}): {' '.join(cmd)}\n"
                           f"--- stderr (tail) ---\n{proc.stderr[-4000:]}\n--- stdout (tail) ---\n{proc.stdout[-2000:]}")
    out = json.loads(lines[-1][len(RESULT_TAG):])
    out["process_s"] = round(time.perf_counter() - t0, 2)
    return out


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name


def machine_line(device: str = "cpu") -> str:
    """One line that says where and how a table was measured."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{device_name(device)}; {os.cpu_count()} CPUs visible, torch threads {torch.get_num_threads()}; "
            f"torch {torch.__version__}; load average {load:.1f} at start; {time.strftime('%Y-%m-%d %H:%M')}")


def med_range(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``median [min–max]`` of several runs (just the value for one run)."""
    values = list(values)
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def write_result(name: str, text: str, out_dir: Path | None = None) -> Path:
    """Write ``text`` to ``<out_dir or benchmarks/results>/<name>.md`` atomically and return the path."""
    out_dir = Path(out_dir) if out_dir is not None else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text.rstrip() + "\n")
    os.replace(tmp, path)
    return path

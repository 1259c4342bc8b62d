"""benchmarks/gpu_check.py (`make gpu-check`) at toy size on the CPU: arguments, model build, measurements, table."""

from __future__ import annotations

import pytest

from tests.helpers.scripts import load_script


@pytest.fixture(scope="module")
def gpu_check():
    return load_script("gpu_check")


def test_cpu_smoke_measures_and_prints_the_table(gpu_check, tmp_path):
    report = gpu_check.main(["--cpu-smoke", "--out", str(tmp_path)])
    assert (tmp_path / "model" / "config.json").exists()
    assert (tmp_path / "gpu_check.md").read_text().strip() == report
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in report.splitlines() if line.startswith("| ")]
    rows = {k: v for k, v in cells}
    assert rows["vLLM, same requests, tokens/s"] == "skipped (no CUDA)"
    hf = float(rows["HF generate, 4 prompts x 2 x 8 tokens, tokens/s"].replace(",", ""))
    train = float(rows["train stage (lambdarank, 4 x 8-token candidates), tokens/s"].replace(",", ""))
    assert hf > 0 and train > 0


def test_without_a_gpu_the_full_check_refuses(gpu_check, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit, match="gpu_check needs a CUDA GPU"):
        gpu_check.main(["--out", str(tmp_path)])

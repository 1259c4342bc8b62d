"""GPU tests: skipped, with the reason, where CUDA or vllm is missing (`make gpu-check` runs them)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

NO_CUDA = not torch.cuda.is_available()
NO_VLLM = importlib.util.find_spec("vllm") is None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/gpu/" not in str(item.fspath).replace("\\", "/"):
            continue
        item.add_marker(pytest.mark.gpu)
        if NO_CUDA:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (run `make gpu-check` on a GPU machine)"))
        elif NO_VLLM and "vllm" in item.name:
            item.add_marker(pytest.mark.skip(reason="needs vllm: pip install -e '.[gpu]'"))

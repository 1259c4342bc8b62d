"""Fixtures of the integration tests."""

from __future__ import annotations

import pytest

from tests.helpers.data_stand_ins import uf_eval_rows, uf_train_rows, write_dataset_dict
from tests.helpers.stand_ins import make_causal_lm, make_pairrm, make_seqcls_rm


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Hub stand-ins written once per module: a chat policy, a sequence-classification RM, PairRM and
    UltraFeedback prompts in a save_to_disk folder."""
    root = tmp_path_factory.mktemp("hub")
    return {
        "policy": make_causal_lm(root / "policy", arch="qwen2"),
        "seqcls": make_seqcls_rm(root / "rm"),
        "pairrm": make_pairrm(root / "pairrm"),
        "data": write_dataset_dict({"train_prefs": uf_train_rows(), "test_prefs": uf_eval_rows()}, root / "uf"),
    }

"""Reward models ("rerankers"): every one has ``name``, ``list_relative`` and ``score()``.

``score(prompts [P], responses [P][K], finished [P][K]) -> [P][K] floats``. Chosen in
``conf/reward/`` by ``_target_``; hub ids appear only in those yamls. Importing this package
does not import transformers: models load on the first ``score()`` call.
"""

from larpo.rewards.pairrm import PairRMReward, list_scores
from larpo.rewards.seqcls import SeqClsReward
from larpo.rewards.verifier import VerifierReward

__all__ = ["PairRMReward", "SeqClsReward", "VerifierReward", "list_scores"]

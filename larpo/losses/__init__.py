"""List losses of LarPO: pure tensor functions plus the Hydra-instantiated callables (DESIGN §3)."""

from larpo.losses.base import (
    ListLoss,
    LossOutput,
    best_worst,
    preference_pairs,
    sort_by_reward,
)
from larpo.losses.contrastive import ContrastiveLoss, contrastive_loss
from larpo.losses.lambdarank import LambdaRankLoss, lambdarank_loss
from larpo.losses.listmle import ListMLELoss, listmle_loss
from larpo.losses.pairwise import PairwiseLoss, pairwise_loss

__all__ = [
    "ContrastiveLoss",
    "LambdaRankLoss",
    "ListLoss",
    "ListMLELoss",
    "LossOutput",
    "PairwiseLoss",
    "best_worst",
    "contrastive_loss",
    "lambdarank_loss",
    "listmle_loss",
    "pairwise_loss",
    "preference_pairs",
    "sort_by_reward",
]

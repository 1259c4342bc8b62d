"""List losses of LarPO: pure tensor functions plus the Hydra-instantiated callables (docs/design.md, "Loss API")."""

from larpo.losses.base import (
    ListLoss,
    LossOutput,
    best_worst,
    preference_pairs,
    sort_by_reward,
)
from larpo.losses.baselines import (
    BaselineLoss,
    IPOLoss,
    KTOLoss,
    RDPOLoss,
    ipo_loss,
    kto_loss,
    rdpo_loss,
)
from larpo.losses.contrastive import ContrastiveLoss, contrastive_loss
from larpo.losses.lambdarank import LambdaRankLoss, lambdarank_loss
from larpo.losses.listmle import ListMLELoss, listmle_loss
from larpo.losses.pairwise import PairwiseLoss, pairwise_loss
from larpo.losses.reference_free import (
    CPOLoss,
    RRHFLoss,
    SFTLoss,
    SimPOLoss,
    SLiCLoss,
    cpo_loss,
    rrhf_loss,
    sft_loss,
    simpo_loss,
    slic_loss,
)

__all__ = [
    "BaselineLoss",
    "CPOLoss",
    "ContrastiveLoss",
    "IPOLoss",
    "KTOLoss",
    "LambdaRankLoss",
    "ListLoss",
    "ListMLELoss",
    "LossOutput",
    "PairwiseLoss",
    "RDPOLoss",
    "RRHFLoss",
    "SFTLoss",
    "SLiCLoss",
    "SimPOLoss",
    "best_worst",
    "contrastive_loss",
    "cpo_loss",
    "ipo_loss",
    "kto_loss",
    "lambdarank_loss",
    "listmle_loss",
    "pairwise_loss",
    "preference_pairs",
    "rdpo_loss",
    "rrhf_loss",
    "sft_loss",
    "simpo_loss",
    "slic_loss",
    "sort_by_reward",
]

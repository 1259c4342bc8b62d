"""The accelerate worker: one rank of the train stage under ``train.launcher=accelerate``.

larpo/training/launch.py starts::

    accelerate launch [...] -m larpo.training.worker RUN_DIR ROUND

Every rank rebuilds the run's config from ``RUN_DIR/manifest.json`` (:func:`larpo.config.rebuild`, as
the vLLM children rebuild theirs) and trains its share of each step (larpo/training/runners.py) through
:func:`larpo.training.round.train_round`; only rank 0 writes, each file atomically, plus
``round_<r>/train_steps.jsonl`` (the per-step metrics, which the parent replays into its logger).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from larpo.artifacts import RunDir, read_json, write_jsonl

logger = logging.getLogger(__name__)


def _usage() -> str:
    return "usage: accelerate launch [options] -m larpo.training.worker RUN_DIR ROUND"


def main(argv: list[str] | None = None) -> int:
    """Entry of one rank under ``accelerate launch``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType
    from hydra.utils import instantiate

    from larpo.config import rebuild
    from larpo.model import resolve_dtype
    from larpo.training.round import train_round
    from larpo.training.runners import AccelerateRunner

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        sys.stderr.write(_usage() + "\n")
        return 2
    rd, r = RunDir(Path(args[0])), int(args[1])
    cfg = rebuild(read_json(rd.manifest)["config"])
    acc = Accelerator(step_scheduler_with_optimizer=False)
    logging.basicConfig(level=logging.INFO if acc.is_main_process else logging.WARNING,
                        format=f"%(asctime)s [rank {acc.process_index}] %(name)s: %(message)s")
    if acc.distributed_type == DistributedType.DEEPSPEED:
        ds = acc.state.deepspeed_plugin.deepspeed_config
        # accelerate fills an unset clipping with 1.0 silently: make it train.max_grad_norm, always.
        if ds.get("gradient_clipping") not in (None, "auto", cfg.train.max_grad_norm):
            logger.warning("DeepSpeed gradient_clipping %s replaced by train.max_grad_norm=%s",
                           ds["gradient_clipping"], cfg.train.max_grad_norm)
        ds["gradient_clipping"] = float(cfg.train.max_grad_norm)
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = 1  # one micro-batch of lists per backward (no dataloader here)
    logger.info("round %d train: %d process(es), %s, mixed precision %s", r, acc.num_processes,
                acc.distributed_type, acc.mixed_precision)
    steps: list[dict] = []
    train_round(cfg, rd, r, instantiate(cfg.loss), resolve_dtype(cfg.model.dtype), None,
                lambda m: steps.append({**m, "round": r}), AccelerateRunner(acc))
    if acc.is_main_process:
        write_jsonl(rd.train_steps(r), steps)
    acc.wait_for_everyone()
    acc.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How :func:`larpo.training.loop.train_on_lists` executes its optimizer steps: in one process, or as
one rank of an ``accelerate launch`` (DDP, DeepSpeed ZeRO, FSDP — the same code for all).

A step covers ``lists_per_step`` lists packed into micro-batches M_1..M_m (whole lists under
the token budget). The one-process gradient of a step is

    g = Σ_j (|M_j| / |step|) · ∇ loss(M_j)

(loss = mean over a micro-batch's lists, so g is the gradient of the mean over the step).
With W ranks, rank w takes M_w, M_{w+W}, ...; accelerate averages gradients over ranks and
divides each backward by its accumulation count G, so each rank back-propagates
``W · G · |M_j| / |step| · loss(M_j)`` and the average over ranks is g again. Ranks with fewer
micro-batches than G (G = the most any rank has in any step) run padding micro-batches of
weight 0: ZeRO-2/3 and FSDP communicate in every forward/backward, so every rank must run the
same number of them, and DeepSpeed fixes G in its config at ``prepare``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch


class LocalRunner:
    """This process alone: plain ``backward``, torch's gradient clipping."""

    world, rank, is_main = 1, 0, True
    loss_factor = 1.0

    def configure(self, plan: Sequence) -> None:
        pass

    def prepare(self, model, optimizer, scheduler):
        return model, optimizer, scheduler

    def share(self, micros: list[list[int]]) -> list[tuple[list[int], bool]]:
        """This rank's micro-batches of a step as (list indices, real?)."""
        return [(m, True) for m in micros]

    def accumulate(self, model):
        return contextlib.nullcontext()

    @staticmethod
    def backward(loss: torch.Tensor) -> None:
        loss.backward()

    def clip(self, model, max_norm: float) -> float:
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))

    def sum_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

    def sum_count(self, n: int) -> int:
        return n

    def full_state_dict(self) -> dict | None:
        """The whole model's state dict where weights are sharded across ranks; None = the model's own."""
        return None

    def barrier(self) -> None:
        pass


class AccelerateRunner(LocalRunner):
    """One rank of an ``accelerate launch``; ``accelerator`` built with ``step_scheduler_with_optimizer=False``.

    (Accelerate otherwise steps a prepared scheduler once per process per step, and the
    schedule is defined per global step here.)
    """

    def __init__(self, accelerator) -> None:
        self.acc = accelerator
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        self.is_main = accelerator.is_main_process
        self.accumulation = 1

    @property
    def loss_factor(self) -> float:
        return float(self.world * self.accumulation)

    def configure(self, plan: Sequence) -> None:
        """G = the most micro-batches any rank gets in any step; set before ``prepare`` (DeepSpeed reads it there)."""
        self.accumulation = max((math.ceil(len(micros) / self.world) for _, _, micros in plan), default=1)
        self.acc.gradient_accumulation_steps = self.accumulation
        padding = sum(self.accumulation * self.world - len(micros) for _, _, micros in plan)
        if self.is_main and padding:
            import logging

            logging.getLogger(__name__).info(
                "%d ranks x %d micro-batches per step; %d padding micro-batches in %d steps", self.world,
                self.accumulation, padding, len(plan))

    def prepare(self, model, optimizer, scheduler):
        self.model, optimizer, scheduler = self.acc.prepare(model, optimizer, scheduler)
        return self.model, optimizer, scheduler

    def share(self, micros: list[list[int]]) -> list[tuple[list[int], bool]]:
        mine = [(m, True) for m in micros[self.rank :: self.world]]
        # Padding: the step's smallest micro-batch (packing sorts by length), weight 0.
        return mine + [(micros[-1], False)] * (self.accumulation - len(mine))

    def accumulate(self, model):
        return self.acc.accumulate(model)

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss)

    def clip(self, model, max_norm: float) -> float:
        # DeepSpeed clips inside its own step (gradient_clipping in its config, set by the
        # worker to train.max_grad_norm) and returns the norm; DDP/FSDP clip here.
        norm = self.acc.clip_grad_norm_(model.parameters(), max_norm)
        return float("nan") if norm is None else float(norm)

    def sum_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The step's metrics: each rank holds the list-weighted sums of its own micro-batches."""
        if self.world == 1:
            return metrics
        from accelerate.utils import gather_object

        out: dict[str, float] = {}
        for part in gather_object([metrics]):
            for k, v in part.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def sum_count(self, n: int) -> int:
        from accelerate.utils import gather_object

        return n if self.world == 1 else sum(gather_object([n]))

    def full_state_dict(self) -> dict | None:
        from accelerate.utils import DistributedType

        dt = self.acc.distributed_type
        sharded = dt == DistributedType.FSDP or (
            dt == DistributedType.DEEPSPEED and self.acc.state.deepspeed_plugin.zero_stage == 3)
        # A collective: every rank calls it; rank 0 gets the gathered weights.
        return self.acc.get_state_dict(self.model) if sharded else None

    def barrier(self) -> None:
        self.acc.wait_for_everyone()

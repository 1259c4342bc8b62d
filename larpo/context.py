"""What every stage receives: the run's config, its directory, its components and its sampling plan.

:func:`larpo.pipeline.build_context` builds one :class:`RunContext` per command, after every check
has passed; the stages (larpo/stages/) read and write the run directory through it. The sampling
plan (:class:`~larpo.generation.plan.SamplingPlan`) is built once, there, and carried here: no
stage re-reads ``cfg.sampling`` for what a round samples (docs/design.md, "Sampling plan").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from larpo.artifacts import RunDir, checkpoint_stage
from larpo.checkpoints import is_adapter_checkpoint, is_checkpoint, load_model
from larpo.errors import CheckpointError, PipelineError
from larpo.generation.plan import SamplingPlan
from larpo.model import load_tokenizer
from larpo.schemas import GENERATIONS, Table, read_table


@dataclass
class RunContext:
    cfg: Any  # the composed DictConfig
    rd: RunDir
    task: Any
    reward: Any
    selector: Any
    loss_fn: Any
    metrics: Any  # a larpo.loggers.RunLogger
    device: torch.device
    dtype: torch.dtype
    plan: SamplingPlan  # cfg.sampling as the generate stage uses it, checked once (build_context)
    # Markers a forced evaluation makes stale, cleared only when it writes its outputs (pipeline.rerun_one).
    invalidates: list[tuple[int, str]] = field(default_factory=list)

    def checkpoint(self, r: int) -> Path:
        """Round r's checkpoint folder, its files checked against the sha256 its stage recorded."""
        path = self.rd.checkpoint(r)
        if not is_checkpoint(path):
            raise PipelineError(
                f"the round-{r} checkpoint is missing at {path}; run the earlier stages first "
                f"(`python run.py` without stage=) or re-create it with `stage={checkpoint_stage(r)} round={r}`"
            )
        self.rd.verify(r, checkpoint_stage(r), [path])
        if r > 0 and is_adapter_checkpoint(path):  # a LoRA round's adapter applies to round 0's weights
            self.rd.verify(0, "sft", [self.rd.checkpoint(0)])
        return path

    def load_policy(self, r: int):
        path = self.checkpoint(r)
        m = self.cfg.model
        try:
            return (load_model(path, self.dtype, self.device, m.attn_implementation, m.trust_remote_code),
                    load_tokenizer(path, m.trust_remote_code))
        except CheckpointError as e:
            raise PipelineError(f"{e}; the round-{r} checkpoint is damaged: re-create it with "
                                f"`stage={checkpoint_stage(r)} round={r}`") from e

    def round_prompts(self, r: int) -> list:
        """Round r's slice of the train prompts (wrapping around), as in the authors' code."""
        train = self.task.split("train")
        n = self.plan.prompts_per_round
        start = (r - 1) * n
        return [train[(start + i) % len(train)] for i in range(min(n, len(train)))]

    def generations(self, r: int) -> Table:
        n = self.plan.candidates  # samples + extra and ladder negatives
        return self.read(r, "generate", self.rd.generations(r), GENERATIONS, (n, n))

    def read(self, r: int, stage: str, path: Path, schema, n_candidates=(1, None), check=None) -> Table:
        """An artifact that round r's ``stage`` wrote: there (else named with the command that re-creates
        it), valid line by line (and by ``check(table)``, cross-file checks), then its sha256 as recorded:
        the line checks' messages say more, and nothing is used before the checksum passed."""
        self.rd.verify(r, stage, [path], hashes=False)
        table = read_table(path, schema, n_candidates=n_candidates)
        if check is not None:
            check(table)
        self.rd.verify(r, stage, [path])
        return table

    def clear_for_writing(self, r: int, stage: str) -> None:
        """Right before a stage replaces its outputs: its marker, and those its new outputs make stale."""
        for q, other in [(r, stage), *self.invalidates]:
            self.rd.clear_done(q, other)
        self.invalidates = []

    def log(self, metrics: dict) -> None:
        self.metrics.log(metrics)

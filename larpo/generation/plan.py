"""What one round samples per prompt, read from ``cfg.sampling``; the start-up checks that need the task.

The candidates of a generations row, in this order (``sampling.kinds`` names each one):

1. ``n_samples`` samples (kind ``sample``) at the round's temperature: ``temperature_schedule[r-1]``
   (the last element repeats for later rounds), else ``temperature``. With ``temperatures`` set
   they are split across those temperatures instead, as evenly as possible, earlier temperatures
   taking the remainder (10 over [0.6, 1.0, 1.4] -> 4, 3, 3).
2. ``extra_negatives`` samples (kind ``extra``) at ``extra_temperature`` (default 0.2): low
   temperature candidates that become hard negatives when the reward ranks them low.
3. ``negatives_n`` ladder candidates (kind ``negative:<level>``) for ``negatives=<level>``;
   see :mod:`larpo.generation.negatives`.

:attr:`SamplingPlan.candidates` is the one place that counts them; every reader of the
generations file (``RunContext.generations``) expects exactly that many per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from larpo.errors import ConfigError

# The ladder's default temperatures (paper Fig. 2b: low temperature is confidently wrong,
# high temperature wanders); ``negatives_temperature`` overrides them.
LADDER_TEMPERATURE = {"hard": 1.2, "hardest": 0.3}
NEEDS_CORRECTNESS = ("hard", "hardest")
NEEDS_OTHER_PROMPTS = ("easiest", "easy")


@dataclass(frozen=True)
class SamplingPlan:
    """What the generate stage samples, as plain values: ``cfg.sampling`` but its engine (``backend``, ``vllm``).

    Built once per command (:meth:`of`, in :func:`larpo.pipeline.build_context`), checked once
    (:func:`check_sampling`), carried on the :class:`~larpo.context.RunContext` and sent as is to the
    vLLM children (:meth:`to_dict` / :meth:`from_dict`). Every default is the schema's
    (:class:`larpo.config.SamplingConfig`): this class writes none.

    Counts per prompt: ``n_samples`` candidates are *sampled* at the round's temperature(s);
    :attr:`candidates` is the length of a generations row (samples + extras + ladder negatives).
    """

    n_samples: int
    prompts_per_round: int
    temperature: float
    top_p: float
    max_new_tokens: int
    batch_size: int
    temperature_schedule: tuple[float, ...] | None
    temperatures: tuple[float, ...] | None
    extra_negatives: int
    extra_temperature: float
    negatives: str | None  # None when off ("none" is read as None)
    negatives_n: int
    negatives_temperature: float | None
    negatives_tries: int
    negatives_per_try: int
    length_batching: bool

    @classmethod
    def of(cls, sampling: Any) -> SamplingPlan:
        """The plan of ``sampling``: a ``cfg.sampling`` node, a :class:`SamplingConfig`, or a mapping of some of
        its keys (the others: the schema's defaults; an unknown key is refused)."""
        from omegaconf import OmegaConf

        from larpo.config import SamplingConfig

        node = OmegaConf.merge(OmegaConf.structured(SamplingConfig), sampling)
        return cls.from_dict({name: OmegaConf.select(node, name) for name in cls.__dataclass_fields__})

    @classmethod
    def from_dict(cls, values: dict) -> SamplingPlan:
        """The plan from :meth:`to_dict`'s output (lists for tuples; enum members or their values)."""
        values = {name: getattr(v, "value", v) for name, v in values.items()}  # OmegaConf hands enums as members
        for name in ("temperature_schedule", "temperatures"):
            if values[name] is not None:
                values[name] = tuple(float(x) for x in values[name])
        if values["negatives"] == "none":
            values["negatives"] = None
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain JSON values (a vLLM child's job file)."""
        out = dict(self.__dict__)
        for name in ("temperature_schedule", "temperatures"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    def round_temperature(self, r: int) -> float:
        """Round r's temperature (r >= 1): the schedule's element r-1, its last for later rounds."""
        if not self.temperature_schedule:
            return self.temperature
        return self.temperature_schedule[min(r - 1, len(self.temperature_schedule) - 1)]

    def sample_groups(self, r: int) -> list[tuple[float, int]]:
        """(temperature, count) of the ``n_samples`` samples in round r, in candidate order."""
        if not self.temperatures:
            return [(self.round_temperature(r), self.n_samples)]
        k = len(self.temperatures)
        counts = [self.n_samples // k + (i < self.n_samples % k) for i in range(k)]
        return [(t, c) for t, c in zip(self.temperatures, counts) if c > 0]

    def ladder_temperature(self, r: int) -> float:
        """The ladder's sampling temperature; easiest/easy sample the other prompt as its own samples are."""
        if self.negatives_temperature is not None:
            return self.negatives_temperature
        return LADDER_TEMPERATURE.get(self.negatives, self.round_temperature(r))

    @property
    def candidates(self) -> int:
        """Candidates in each generations row: samples + extra low-temperature ones + ladder negatives."""
        return self.n_samples + self.extra_negatives + (self.negatives_n if self.negatives else 0)

    def batches(self, n_prompts: int) -> int:
        """Generate batches of a round of ``n_prompts`` prompts (``batch_size`` prompts each)."""
        return (n_prompts + self.batch_size - 1) // self.batch_size


def check_sampling(plan: SamplingPlan, task: Any) -> None:
    """Start-up checks of the sampling plan that cross options or need the task; raises ConfigError.

    Called once per command (:func:`larpo.pipeline.build_context`), before anything is loaded.
    """
    p = plan
    problems = []
    if p.temperatures and p.temperature_schedule:
        problems.append(f"sampling.temperatures={list(p.temperatures)} and sampling.temperature_schedule="
                        f"{list(p.temperature_schedule)} are both set: choose one (a split, or one per round)")
    if p.temperatures and len(p.temperatures) > p.n_samples:
        problems.append(f"sampling.temperatures={list(p.temperatures)} has more temperatures than "
                        f"sampling.n_samples={p.n_samples}: each needs at least one sample")
    if p.negatives in NEEDS_CORRECTNESS and not callable(getattr(task, "is_correct", None)):
        name = getattr(task, "name", type(task).__name__)
        problems.append(f"sampling.negatives={p.negatives} needs incorrect responses, but task {name!r} has no "
                        "is_correct(prompt, response, finished); use sampling.negatives=easiest|easy or a verifiable task")
    if p.negatives in NEEDS_CORRECTNESS and p.negatives_per_try < p.negatives_n:
        problems.append(f"sampling.negatives_per_try={p.negatives_per_try} is below sampling.negatives_n="
                        f"{p.negatives_n}: one draw must be able to fill the negatives (or their fallback)")
    if p.negatives in NEEDS_OTHER_PROMPTS and p.prompts_per_round < 2:
        problems.append(f"sampling.negatives={p.negatives} takes responses to other prompts of the round, "
                        f"but sampling.prompts_per_round={p.prompts_per_round}")
    if p.length_batching and p.negatives in NEEDS_OTHER_PROMPTS:
        problems.append(f"sampling.length_batching=true does not support sampling.negatives={p.negatives} "
                        "(it picks other prompts by their position in a contiguous batch); set one of them off")
    if problems:
        raise ConfigError("invalid option" + ("s" if len(problems) > 1 else "") + ": " + "; ".join(problems))


@dataclass
class Block:
    """Candidates of one kind for each prompt of a batch: [P][k] responses and per-candidate records."""

    kind: str
    temperature: float
    responses: list[list[str]]
    finished: list[list[bool]]
    sources: list[list[str]] | None = None  # easiest/easy: the prompt_id each response answers
    found: list[list[bool]] | None = None  # hard/hardest: incorrect as asked (False: the fallback)

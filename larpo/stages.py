"""The stages of a round as functions of (context, round): read files, do work, write files.

Each stage reads only the run-directory artifacts of DESIGN §3, writes its outputs
atomically and leaves its ``.done`` marker last; the pipeline decides which to run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from larpo.artifacts import BatchJournal, RunDir, read_json, write_json, write_jsonl
from larpo.errors import CheckpointError, PipelineError
from larpo.generate import generate_candidates
from larpo.generation.plan import candidates_per_prompt, check_sampling
from larpo.model import build_model, is_adapter_checkpoint, is_checkpoint, load_model, load_tokenizer, save_checkpoint
from larpo.schemas import GENERATIONS, LISTS, SCORES, Table, check_candidates, check_ids, read_table
from larpo.seeds import derive_seed

logger = logging.getLogger(__name__)


def reward_loaded(reward):
    """The reward's ``loaded()`` context (a reward model stays loaded inside it), or a no-op."""
    from contextlib import nullcontext

    return reward.loaded() if hasattr(reward, "loaded") else nullcontext()


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
    # Markers a forced evaluation makes stale, cleared only when it writes its outputs (pipeline.rerun_one).
    invalidates: list[tuple[int, str]] = field(default_factory=list)

    def checkpoint(self, r: int) -> Path:
        """Round r's checkpoint folder, its files checked against the sha256 its stage recorded."""
        path = self.rd.checkpoint(r)
        if not is_checkpoint(path):
            raise PipelineError(
                f"the round-{r} checkpoint is missing at {path}; run the earlier stages first "
                f"(`python run.py` without stage=) or re-create it with `stage={'sft' if r == 0 else 'train'} round={r}`"
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
            redo = "stage=sft round=0" if r == 0 else f"stage=train round={r}"
            raise PipelineError(f"{e}; the round-{r} checkpoint is damaged: re-create it with `{redo}`") from e

    def generations(self, r: int) -> Table:
        n = candidates_per_prompt(self.cfg.sampling)  # samples + extra and ladder negatives
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


def checkpoint_stage(r: int) -> str:
    """The stage that writes round r's checkpoint."""
    return "sft" if r == 0 else "train"


def stage_outputs(rd: RunDir, r: int, stage: str) -> list[Path]:
    """The files (and folders) a finished stage leaves, whose sha256 its done marker records."""
    rdir = rd.round_dir(r)
    outputs = {
        "sft": [rd.checkpoint(0), rd.train_log(0)],
        "generate": [rd.generations(r)],
        "score": [rd.scores(r)],
        "select": [rd.lists(r)],
        "train": [rd.checkpoint(r), rd.train_log(r), rdir / "train_steps.jsonl"],
        "evaluate": [rd.eval(r), *sorted(rdir.glob("eval_*.jsonl"))],  # eval_outputs.jsonl and the benchmarks'
    }[stage]
    return [p for p in outputs if p.exists()]


def round_prompts(ctx: RunContext, r: int) -> list:
    """Round r's slice of the train prompts (wrapping around), as in the authors' code."""
    train = ctx.task.split("train")
    n = ctx.cfg.sampling.prompts_per_round
    start = (r - 1) * n
    return [train[(start + i) % len(train)] for i in range(min(n, len(train)))]


def stage_sft(ctx: RunContext, r: int) -> None:
    from larpo.sft import sft

    cfg = ctx.cfg
    m = cfg.model
    tok = load_tokenizer(m.tokenizer or m.pretrained, m.trust_remote_code)
    if m.pretrained:
        model = load_model(m.pretrained, ctx.dtype, ctx.device, m.attn_implementation, m.trust_remote_code)
    else:
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = build_model(dict(cfg.model.arch), tok, ctx.dtype).to(ctx.device)
    stats, opt_state = {}, None
    if cfg.sft.steps > 0:
        stats, opt_state = sft(model, tok, ctx.task.split("sft"), cfg.sft, derive_seed(cfg.seed, "sft"), ctx.log)
    save_checkpoint(model, tok, ctx.rd.checkpoint(0), opt_state if cfg.train.carry_optimizer else None)
    write_json(ctx.rd.train_log(0), stats)


def stage_generate(ctx: RunContext, r: int) -> None:
    check_sampling(ctx.cfg.sampling, ctx.task)  # before the policy loads (build_context checks it too, if wired)
    journal = BatchJournal(ctx.rd.generations(r))
    if ctx.cfg.sampling.backend == "vllm":  # child processes load the checkpoint folder into vLLM (GPU)
        from larpo.errors import VLLMGenerationError
        from larpo.generation.vllm_backend import generate_in_children

        try:
            generate_in_children(ctx.checkpoint(r - 1), round_prompts(ctx, r), ctx.cfg, r, journal)
        except VLLMGenerationError as e:
            raise PipelineError(f"round {r}, stage generate: {e}") from e
    else:
        model, tok = ctx.load_policy(r - 1)
        generate_candidates(model, tok, round_prompts(ctx, r), ctx.cfg.sampling, ctx.cfg.seed, journal, r, ctx.task)
    journal.commit()


def stage_score(ctx: RunContext, r: int) -> None:
    from larpo.score import score_rows

    gens = ctx.generations(r)
    write_jsonl(ctx.rd.scores(r), score_rows(ctx.reward, gens.rows))


def _scored_round(ctx: RunContext, r: int) -> tuple[Table, Table]:
    """Round r's generations and scores, validated and matched candidate by candidate."""
    gens = ctx.generations(r)

    def matches(scores: Table) -> None:
        check_ids(scores, gens)
        check_candidates(scores, gens, "rewards", "responses")

    return gens, ctx.read(r, "score", ctx.rd.scores(r), SCORES, check=matches)


def stage_select(ctx: RunContext, r: int) -> None:
    """Pool (``select.pool``), de-duplicate, re-score list-relative rewards, select; then reference log-probs.

    The pool's earlier rounds are read through the same validating readers as round r's. A
    list-relative reward (PairRM) scores a pooled list again inside this stage, and lists.jsonl
    carries the rewards the selection used; scores.jsonl stays round r's own scores.
    """
    from larpo.logprobs import list_logps
    from larpo.select import build_lists
    from larpo.train import forward_options

    gens, scores = _scored_round(ctx, r)
    earlier = [(q, *_scored_round(ctx, q)) for q in ctx.selector.pool_rounds(r)]
    lists, counts = build_lists(ctx.selector, gens, scores, r, earlier=earlier, reward=ctx.reward, seed=ctx.cfg.seed)
    ctx.log({**{f"select/{k}": v for k, v in counts.items()}, "round": r})
    if not lists:
        raise PipelineError(f"round {r}: no list carries a preference (all rewards tied, below select.min_gap, "
                            "or too few distinct candidates); nothing to train on")
    ref_round = r - 1 if ctx.cfg.reference == "behavior" else 0
    ref_model, tok = ctx.load_policy(ref_round)
    ref = list_logps(ref_model, tok, lists, ctx.cfg.train.logprob_max_tokens, progress=True,
                     **forward_options(ctx.cfg.train))
    for row, lp in zip(lists, ref):
        row["ref_logps"] = lp
    write_jsonl(ctx.rd.lists(r), lists)


def stage_train(ctx: RunContext, r: int) -> None:
    """Train on round r's lists: in this process, or (``train.launcher=accelerate``) in a child
    ``accelerate launch`` (larpo/launch.py); both write the same checkpoint and train.json."""
    from larpo.train_round import train_round

    gens = ctx.generations(r)
    ctx.read(r, "select", ctx.rd.lists(r), LISTS, (ctx.loss_fn.min_candidates, None),
             check=lambda rows: check_ids(rows, gens, exact=False))
    ctx.checkpoint(r - 1)  # a missing or damaged checkpoint is reported here, not inside a child process
    log = lambda m: ctx.log({**m, "round": r})  # noqa: E731
    if ctx.cfg.train.launcher == "accelerate":
        from larpo.launch import launch_train

        launch_train(ctx.cfg.train, ctx.rd, r, ctx.device, log)
        return
    from larpo.errors import NonFiniteLossError

    try:
        train_round(ctx.cfg, ctx.rd, r, ctx.loss_fn, ctx.dtype, ctx.device, log)
    except NonFiniteLossError as e:
        raise PipelineError(f"round {r}, stage train: {e}") from None
    except CheckpointError as e:
        redo = "stage=sft round=0" if r == 1 else f"stage=train round={r - 1}"
        raise PipelineError(f"{e}; the round-{r - 1} checkpoint is damaged: re-create it with `{redo}`") from e


def stage_evaluate(ctx: RunContext, r: int) -> None:
    """The task's held-out metrics (``eval=task``) and the configured benchmarks, into eval.json.

    Metrics already in eval.json that this evaluation does not produce are kept, so a benchmark
    run alone on a checkpoint (``stage=evaluate round=2 eval=[alpacaeval2]``) adds to it. With
    ``sampling.backend=vllm`` the answers come from a vLLM engine in a child process
    (larpo/generation/vllm_server.py; its log is ``round_<r>/eval_vllm.log``), else from HF. Nothing
    is written (and no marker cleared) until every part succeeded: a failed benchmark leaves the
    round's evaluation as it was, and never touches the task's files.
    """
    import contextlib

    ctx.rd.verify(r, "evaluate", stage_outputs(ctx.rd, r, "evaluate"))  # what is kept must be intact
    with contextlib.ExitStack() as stack:
        if ctx.cfg.sampling.backend == "vllm":
            from larpo.generation.vllm_server import served_policy

            m = ctx.cfg.model
            tok = load_tokenizer(ctx.checkpoint(r), m.trust_remote_code)
            model = stack.enter_context(served_policy(ctx.checkpoint(r), ctx.cfg.sampling.vllm,
                                                      ctx.rd.round_dir(r) / "eval_vllm.log", m.trust_remote_code,
                                                      m.dtype))
        else:
            model, tok = ctx.load_policy(r)
        _evaluate(ctx, r, model, tok)


def _evaluate(ctx: RunContext, r: int, model, tok) -> None:
    from larpo.evals.bench import BENCHMARKS, run_benchmarks
    from larpo.evaluate import held_out_metrics

    metrics = dict(read_json(ctx.rd.eval(r))) if ctx.rd.eval(r).exists() else {}
    # A part that runs again replaces all of its own earlier numbers (a key it no longer gives must go).
    redone = {name for name in BENCHMARKS if ctx.cfg.eval.get(name)} | ({None} if ctx.cfg.eval.held_out else set())
    metrics = {k: v for k, v in metrics.items() if _part(k) not in redone}
    files: dict[Path, list[dict]] = {}
    if ctx.cfg.eval.held_out:
        with reward_loaded(ctx.reward):  # one load of a reward model for all the stage's batches
            held_out, files[ctx.rd.eval_outputs(r)] = held_out_metrics(ctx, r, model, tok)
        metrics.update(held_out)

    def keep_rows(name: str, rows: list[dict]) -> None:
        files[ctx.rd.round_dir(r) / f"eval_{name}.jsonl"] = rows
        ctx.metrics.log_table(f"eval/{name}/outputs_round{r}", rows)

    official: dict[Path, Any] = {}

    def keep_file(name: str, key: str, data: Any) -> None:  # e.g. round_2/alpacaeval2/model_outputs.json
        official[ctx.rd.round_dir(r) / name / f"{key}.json"] = data

    # The generator names the run (its directory) and the round: alpaca_eval's leaderboard row.
    metrics.update(run_benchmarks(ctx.cfg.eval, ctx.cfg.judge, ctx.reward, model, tok,
                                  f"{ctx.rd.root.name}_round{r}", keep_rows, keep_file))
    ctx.clear_for_writing(r, "evaluate")
    for path, rows in files.items():
        write_jsonl(path, rows)
    for path, data in official.items():
        write_json(path, data)
    write_json(ctx.rd.eval(r), metrics)
    ctx.log({**{f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, "round": r})


def _part(key: str) -> str | None:
    """Which part of an evaluation an eval.json key belongs to: a benchmark's name, or None (the task's)."""
    from larpo.evals.bench import BENCHMARKS

    head = key.split("/", 1)[0]
    return head if "/" in key and head in BENCHMARKS else None


def summarize(rd: RunDir) -> dict:
    """summary.json from every finished round on disk (round 0 up to the first round not evaluated),
    whatever ``rounds`` this command asks for: a lower ``rounds=`` never drops a finished round."""
    out = []
    r = 0
    while rd.is_done(r, "evaluate"):
        rd.verify(r, "evaluate", [rd.eval(r)])
        train = {}
        if rd.train_log(r).exists():
            rd.verify(r, checkpoint_stage(r), [rd.train_log(r)])
            train = read_json(rd.train_log(r))
        out.append({"round": r, "eval": read_json(rd.eval(r)), "train": train})
        r += 1
    summary = {"rounds": out}
    write_json(rd.summary, summary)
    return summary


ROUND_ZERO = ("sft", "evaluate")
ROUND_STAGES = ("generate", "score", "select", "train", "evaluate")
STAGE_FUNCS = {
    "sft": stage_sft, "generate": stage_generate, "score": stage_score,
    "select": stage_select, "train": stage_train, "evaluate": stage_evaluate,
}

"""AlpacaEval 2 on the real ``alpaca_eval`` package (optional ``eval`` extra, imported lazily).

The policy's answers to the 805 AlpacaEval instructions are compared with GPT-4-turbo's reference
answers by a judge (``larpo.evals.judges``) through ``alpaca_eval.evaluate``; the raw win rate
comes from ``alpaca_eval.metrics.get_winrate`` and the length-controlled (LC) one from
``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate``. Numbers are in percent, as
alpaca_eval reports them.

Offline data (alpaca_eval 0.6.6 fetches all three from the hub dataset ``tatsu-lab/alpaca_eval``;
its reference loader is a loading script that datasets >= 4 refuses, upstream #454):
``alpaca_eval_gpt4_baseline.json`` (instructions + references), ``df_gamed.csv`` (LC regression
data and per-instruction difficulty) and ``instruction_difficulty.csv`` are taken from local paths
when configured, else from ``huggingface_hub.hf_hub_download`` when a network exists.

How LC weights reach alpaca_eval offline: ``glm_winrate`` calls the module-level name
``hf_hub_download(repo_id=..., filename=...)`` itself and has no argument for a file. Within
``local_lc_weights`` that one name in that one module is replaced, under a lock, by a function
that returns the configured local path for ``df_gamed.csv`` / ``instruction_difficulty.csv`` and
raises for anything else; the original is restored on exit. ``save_weights_dir=None`` keeps
alpaca_eval from writing into site-packages.

LC is only meaningful on the full set in canonical order: ``glm_winrate`` looks the instruction
difficulty up by row position. It is computed only when the evaluated instructions are exactly the
reference's, in its order, and as many as ``df_gamed.csv`` has instructions; otherwise the result
carries ``lc_absent_reason``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from larpo.evals.judges import ASSETS

logger = logging.getLogger(__name__)

HUB_REPO = "tatsu-lab/alpaca_eval"
REFERENCE_FILE = "alpaca_eval_gpt4_baseline.json"
ANNOTATOR_ASSETS = ASSETS / "alpaca_eval"
# completions_kwargs of alpaca_eval's built-in annotators that describe *its* client (model, endpoint,
# prompt format), not the decoding: our judge object owns those, so they are dropped when deriving.
CLIENT_KWARGS = frozenset({"model_name", "requires_chatml", "price_per_token", "client_kwargs", "model_kwargs",
                           "is_chatml_prompt", "batch_size", "num_procs"})
_PATCH_LOCK = threading.Lock()


def import_alpaca_eval():
    """Import alpaca_eval, undoing its import-time ``logging.getLogger().setLevel(INFO)``."""
    root, level = logging.getLogger(), logging.getLogger().level
    import alpaca_eval  # noqa: F401  (loads .env too: alpaca_eval's own behaviour)
    import alpaca_eval.metrics  # noqa: F401

    root.setLevel(level)
    return alpaca_eval


def alpaca_eval_problem() -> str | None:
    """Why alpaca_eval cannot be used here (not installed, or its import fails), or None."""
    try:
        import_alpaca_eval()
    except ImportError as e:  # ModuleNotFoundError too: alpaca_eval itself, or what it imports (pkg_resources)
        return f"{type(e).__name__}: {e}"
    return None


def alpaca_style_on(eval_cfg) -> bool:
    """``eval.alpaca_style``: true/false as set; null = when alpaca_eval can be imported."""
    if eval_cfg.alpaca_style is None:
        if not eval_cfg.held_out:
            return False
        if importlib.util.find_spec("alpaca_eval") is None:
            return False  # not installed: said once at start-up (check_extras)
        problem = alpaca_eval_problem()
        if problem is not None:
            logger.warning("eval.alpaca_style: alpaca_eval is installed but cannot be imported (%s); the "
                           "AlpacaEval-style win rates are left out", problem)
        return problem is None
    return bool(eval_cfg.alpaca_style)


def fetch_file(path: str | Path | None, filename: str, setting: str) -> Path:
    """A local file, or ``filename`` from the hub dataset when no path is set; a clear error if neither works."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{setting}={path!s}: no such file ({filename} of {HUB_REPO})")
        return Path(path)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HUB_REPO, filename, repo_type="dataset"))
    except Exception as err:  # offline, hub down, no huggingface_hub: all mean "give me a path"
        raise FileNotFoundError(
            f"{filename}: {setting} is not set and downloading it from the hub dataset {HUB_REPO} failed "
            f"({type(err).__name__}: {err}); download it once and set {setting} to its local path") from None


def load_reference(path: str | Path | None = None) -> list[dict]:
    """The AlpacaEval 2 instructions with GPT-4-turbo's reference outputs, in canonical order."""
    file = fetch_file(path, REFERENCE_FILE, "reference_path")
    rows = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {"instruction", "output"} <= r.keys()
                                             for r in rows):
        raise ValueError(f"{file}: expected a JSON list of objects with 'instruction' and 'output'")
    return [{"generator": "reference", **r} for r in rows]


@contextlib.contextmanager
def local_lc_weights(df_gamed: str | Path, instruction_difficulty: str | Path | None = None) -> Iterator[None]:
    """Serve alpaca_eval's LC weight files from local paths while the block runs (see module doc)."""
    import_alpaca_eval()
    from alpaca_eval.metrics import glm_winrate

    files = {"df_gamed.csv": df_gamed, "instruction_difficulty.csv": instruction_difficulty}

    def serve(repo_id: str, filename: str, **kwargs: Any) -> str:  # glm_winrate's call: keywords
        if repo_id != HUB_REPO or files.get(filename) is None:
            raise FileNotFoundError(f"no local copy of {repo_id}/{filename} was configured")
        return str(files[filename])

    with _PATCH_LOCK:
        original = glm_winrate.hf_hub_download
        glm_winrate.hf_hub_download = serve
        try:
            yield
        finally:
            glm_winrate.hf_hub_download = original


def lc_difficulty_count(df_gamed: str | Path) -> int:
    """How many instructions the LC regression knows (the canonical set size, 805 for AlpacaEval 2)."""
    import pandas as pd

    return int(pd.read_csv(df_gamed)["index"].nunique())


def resolve_annotator(annotator: str | Path, workdir: str | Path) -> Path:
    """An annotator config path usable with ``fn_completions=`` (a YAML without ``fn_completions``).

    ``annotator`` is a path to such a YAML (or its folder), a config shipped in
    ``larpo/evals/assets/alpaca_eval`` (``larpo_reward``), or the name of one of alpaca_eval's
    built-in configs (``weighted_alpaca_eval_gpt4_turbo``, ``weighted_alpaca_eval_vllm_llama3_70b``,
    ``alpaca_eval_llama3_70b_fn``, ...). A built-in is copied into ``workdir`` with
    ``fn_completions`` and client settings removed and its prompt template made absolute: same
    prompt, parser and decoding settings; the judge object does the calling.
    """
    import yaml

    path = Path(annotator)
    if not path.exists() and (ANNOTATOR_ASSETS / str(annotator)).is_dir():
        path = ANNOTATOR_ASSETS / str(annotator)
    if path.exists():
        file = path / "configs.yaml" if path.is_dir() else path
        configs = yaml.safe_load(file.read_text())
        for name, cfg in configs.items():
            if "fn_completions" in cfg:
                raise ValueError(f"annotator {file}: {name} sets fn_completions; the judge supplies it, remove it")
            if not (file.parents[1] / cfg["prompt_template"]).is_file():  # alpaca_eval would use the path as text
                raise FileNotFoundError(f"annotator {file}: prompt_template {cfg['prompt_template']} not found")
        return file
    from alpaca_eval import constants

    source = Path(constants.EVALUATORS_CONFIG_DIR) / str(annotator) / "configs.yaml"
    if not source.is_file():
        raise ValueError(f"annotator {annotator!r} is neither a path, a larpo asset nor an alpaca_eval config")
    configs = yaml.safe_load(source.read_text())
    for cfg in configs.values():
        cfg.pop("fn_completions", None)
        cfg["completions_kwargs"] = {k: v for k, v in cfg.get("completions_kwargs", {}).items()
                                     if k not in CLIENT_KWARGS}
        cfg["prompt_template"] = str(Path(constants.EVALUATORS_CONFIG_DIR) / cfg["prompt_template"])
    out = Path(workdir) / str(annotator) / "configs.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(configs))
    return out


def _lc_absent_reason(instructions: Sequence[str], reference: Sequence[dict], n_lc: int | None,
                      lc_error: str | None) -> str | None:
    if lc_error is not None:
        return lc_error
    canonical = [r["instruction"] for r in reference]
    if len(instructions) != n_lc or len(canonical) != n_lc:
        return (f"LC needs the full set of {n_lc} instructions (difficulty is looked up by row position); "
                f"{len(instructions)} were evaluated against a reference of {len(canonical)}")
    if list(instructions) != canonical:
        return "instructions are not in the reference's canonical order (difficulty is looked up by row position)"
    return None


def _check_renderable(instructions: Sequence[str], outputs: Sequence[str]) -> None:
    # alpaca_eval fills templates by replacing the first "{field}" in turn, and the reward judge reads its
    # delimiters back: a field holding either would be mis-rendered or mis-read, so refuse it up front.
    bad = ("{instruction}", "{output_1}", "{output_2}", "<|larpo:")
    for i, text in enumerate(list(instructions) + list(outputs)):
        if any(b in text for b in bad):
            raise ValueError(f"text #{i} holds a template marker {bad}; alpaca_eval cannot render it faithfully")


def evaluate_outputs(instructions: Sequence[str], outputs: Sequence[str], reference: Sequence[dict], judge: Any,
                     generator_name: str, annotator: str | Path | None = None,
                     df_gamed_path: str | Path | None = None, instruction_difficulty_path: str | Path | None = None,
                     workdir: str | Path | None = None, seed: int = 0, offline: bool = False) -> dict[str, Any]:
    """Judge ``outputs`` against the reference with alpaca_eval; win rates in percent.

    Returns lc_win_rate, lc_win_rate_se (alpaca_eval's ``lc_standard_error``: the SEM of the
    per-instruction GLM predictions), win_rate, win_rate_se, avg_length (characters, alpaca_eval's
    definition), n, n_wins, n_draws, judge, annotator, lc_absent_reason (None when LC was computed),
    ``annotations`` (one dict per instruction, for a W&B table) and ``model_outputs`` (:func:`model_outputs`).
    """
    if len(instructions) != len(outputs):
        raise ValueError(f"{len(instructions)} instructions but {len(outputs)} outputs")
    by_instruction = {r["instruction"]: r for r in reference}
    missing = [i for i in instructions if i not in by_instruction]
    if missing:
        raise ValueError(f"{len(missing)} instructions are not in the reference, e.g. {missing[0][:80]!r}")
    _check_renderable(instructions, outputs)
    alpaca_eval = import_alpaca_eval()
    from alpaca_eval import metrics

    n_lc, lc_error, df_gamed = None, None, None
    try:
        if offline and df_gamed_path is None:  # a set of its own (e.g. the development set): no hub, no LC data
            raise FileNotFoundError("df_gamed_path is not set for this instruction set")
        df_gamed = fetch_file(df_gamed_path, "df_gamed.csv", "df_gamed_path")
        n_lc = lc_difficulty_count(df_gamed)
    except FileNotFoundError as err:
        lc_error = f"LC weights unavailable: {err}"
    lc_reason = _lc_absent_reason(instructions, reference, n_lc, lc_error)
    ref_rows = [dict(by_instruction[i]) for i in instructions]
    model_rows = model_outputs(instructions, outputs, reference, generator_name)
    fn_metric, glm = metrics.get_winrate, {}
    if lc_reason is None:
        def fn_metric(annotations):  # noqa: E306  (alpaca_eval calls fn_metric(annotations))
            import pandas as pd

            df = pd.DataFrame(annotations)  # a DataFrame gets the per-row glm_preference added in place
            out = metrics.get_length_controlled_winrate(df, save_weights_dir=None)
            glm["glm_preference"] = df["glm_preference"].tolist()
            return out
    with contextlib.ExitStack() as stack:
        tmp = workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="larpo-alpacaeval-"))
        config = resolve_annotator(annotator or judge.default_annotator, tmp)
        if lc_reason is None:
            stack.enter_context(local_lc_weights(df_gamed, instruction_difficulty_path))
        leaderboard, annotations = alpaca_eval.evaluate(
            model_outputs=model_rows, reference_outputs=ref_rows, annotators_config=str(config), name=generator_name,
            output_path=None, precomputed_leaderboard=None, is_return_instead_of_print=True, fn_metric=fn_metric,
            sort_by="win_rate", is_cache_leaderboard=False, caching_path=None, seed=seed,
            annotation_kwargs={"is_ordered": True}, fn_completions=judge.alpaca_eval_completions)
    row = leaderboard.loc[generator_name]
    lc = lc_reason is None
    return {"lc_win_rate": float(row["length_controlled_winrate"]) if lc else None,
            "lc_win_rate_se": float(row["lc_standard_error"]) if lc else None,
            "win_rate": float(row["win_rate"]), "win_rate_se": float(row["standard_error"]),
            "avg_length": int(row["avg_length"]), "n": int(row["n_total"]), "n_wins": int(row["n_wins"]),
            "n_draws": int(row["n_draws"]), "judge": judge.name, "annotator": Path(config).parent.name,
            "lc_absent_reason": lc_reason, "annotations": _annotation_rows(annotations, glm),
            "model_outputs": model_rows}


def model_outputs(instructions: Sequence[str], outputs: Sequence[str], reference: Sequence[dict],
                  generator_name: str) -> list[dict]:
    """The policy's answers in alpaca_eval's ``model_outputs.json`` format (``alpaca_eval evaluate
    --model_outputs FILE`` reads it): instruction, output, generator, and the reference's dataset."""
    dataset = {r["instruction"]: r.get("dataset") for r in reference}
    return [{"instruction": i, "output": o, "generator": generator_name,
             **({"dataset": dataset[i]} if dataset.get(i) is not None else {})} for i, o in zip(instructions, outputs)]


def _annotation_rows(annotations: Any, extra: dict[str, list]) -> list[dict]:
    import pandas as pd

    keep = ["instruction", "output_1", "output_2", "generator_1", "generator_2", "preference", "glm_preference",
            "annotator", "raw_completion"]
    df = pd.DataFrame(annotations).assign(**extra)
    df = df.rename(columns={"preference_raw_completion": "raw_completion"})
    df = df[[c for c in keep if c in df.columns]]
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in df.to_dict("records")]


class AlpacaEval2:
    """The ``eval`` node for AlpacaEval 2: ``AlpacaEval2(...)(generate_fn, generator_name) -> dict``.

    Everything that can fail without a GPU (reference file, judge key, annotator config) is checked
    in ``__call__`` before ``generate_fn`` runs; the judge itself fails at construction when its
    key is missing.
    """

    name = "alpacaeval2"

    def __init__(self, judge: Any, annotator: str | None = None, reference_path: str | None = None,
                 df_gamed_path: str | None = None, instruction_difficulty_path: str | None = None,
                 max_instances: int | None = None, seed: int = 0, offline: bool = False,
                 note: str | None = None) -> None:
        self.judge, self.annotator, self.reference_path = judge, annotator, reference_path
        self.df_gamed_path, self.instruction_difficulty_path = df_gamed_path, instruction_difficulty_path
        self.max_instances, self.seed, self.offline, self.note = max_instances, seed, offline, note

    def check(self) -> None:
        """Start-up: the reference (a configured file, or the hub), every configured data file and the
        annotator config are there, before any answer is generated."""
        load_reference(self.reference_path)
        for setting in ("df_gamed_path", "instruction_difficulty_path"):  # unset: LC is absent if unreachable
            path = getattr(self, setting)
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"{setting}={path}: no such file")
        with tempfile.TemporaryDirectory(prefix="larpo-alpacaeval-") as tmp:
            resolve_annotator(self.annotator or self.judge.default_annotator, tmp)

    def __call__(self, generate_fn: Callable[[list[str]], list[str]], generator_name: str,
                 workdir: str | Path | None = None) -> dict[str, Any]:
        reference = load_reference(self.reference_path)
        with tempfile.TemporaryDirectory(prefix="larpo-alpacaeval-") as tmp:
            resolve_annotator(self.annotator or self.judge.default_annotator, tmp)  # fail before generating
        instructions = [r["instruction"] for r in reference][: self.max_instances]
        outputs = list(generate_fn(instructions))
        out = evaluate_outputs(instructions, outputs, reference, self.judge, generator_name,
                               annotator=self.annotator, df_gamed_path=self.df_gamed_path,
                               instruction_difficulty_path=self.instruction_difficulty_path, workdir=workdir,
                               seed=self.seed, offline=self.offline)
        return out | ({"note": self.note} if self.note else {})


# --- the embedded task: a round vs round 0, AlpacaEval-style --------------------------------------


def stored_reward_preference(key: str = "reward") -> Callable[[list[dict], list[dict]], list[float]]:
    """A preference function from rewards already stored in the rows (``eval_outputs`` rows)."""

    def prefer(baseline_rows: list[dict], rows: list[dict]) -> list[float]:
        return [2.0 if r[key] > b[key] else 1.0 if r[key] < b[key] else 1.5 for b, r in zip(baseline_rows, rows)]

    return prefer


def reward_preference(reward: Any) -> Callable[[list[dict], list[dict]], list[float]]:
    """A preference function that re-scores both responses with ``reward`` (rows need ``prompt``)."""
    from larpo.evals.judges import RewardJudge

    judge = RewardJudge(reward)

    def prefer(baseline_rows: list[dict], rows: list[dict]) -> list[float]:
        return judge.preferences([r["prompt"] for r in rows], [b["response"] for b in baseline_rows],
                                 [r["response"] for r in rows])

    return prefer


def _minimal_lc(df: Any) -> tuple[float, float]:
    """alpaca_eval's ``length_controlled_minimal`` GLM (length term + intercept), fitted with its own code."""
    import pandas as pd
    from alpaca_eval.metrics import glm_winrate as glm

    info = glm.GLM_INFO["length_controlled_minimal"]
    delta = (df["output_1"].str.len() - df["output_2"].str.len()).astype(float)
    std = delta.std()
    data = pd.DataFrame({"preference": df["preference"].astype(float) - 1,  # alpaca_eval: [0, 1] here
                         "std_delta_len": delta / std if std > 0 else 0.0, "not_gamed_baseline": True})
    test = data[["not_gamed_baseline"]].copy()
    test["std_delta_len"] = 0.0  # the prediction: what if both answers had the same length
    train, x_test = glm.make_dmatrix_for_model(data, test, formula=info["formula"])
    model = glm.fit_LogisticRegressionCV(train[train["preference"].notna()], "preference", is_ytrue_proba=True,
                                         **info["kwargs"])
    p = pd.Series(model.predict_proba(x_test)[:, 1])
    return float(p.mean() * 100), float(p.sem() * 100)


def win_rates_vs_baseline(rows: Sequence[dict], baseline_rows: Sequence[dict],
                          preference_fn: Callable[[list[dict], list[dict]], list[float]]) -> dict[str, Any]:
    """AlpacaEval-style raw and LC win rate (percent) of a round's responses over round 0's.

    ``rows`` / ``baseline_rows``: dicts with ``prompt_id`` and ``response`` (e.g. eval_outputs rows),
    matched on ``prompt_id``. ``preference_fn(baseline_rows, rows)`` gives alpaca_eval preferences
    (1: round 0 better, 2: this round better, 1.5: tie), e.g. ``stored_reward_preference()``.
    Raw: ``alpaca_eval.metrics.get_winrate``. LC here is alpaca_eval's ``length_controlled_minimal``
    GLM (preference ~ tanh(standardised length difference) + intercept, 5-fold CV, fitted by
    ``glm_winrate.fit_LogisticRegressionCV``), predicted at equal lengths: the win rate with the
    part explained by answering longer (or shorter) than round 0 removed. Unlike AlpacaEval 2's LC
    it has no instruction-difficulty term (the embedded prompts have none) and no gamed baselines.
    """
    import_alpaca_eval()
    import pandas as pd
    from alpaca_eval import metrics

    base = {r["prompt_id"]: r for r in baseline_rows}
    pairs = [(base[r["prompt_id"]], r) for r in rows if r["prompt_id"] in base]
    if not pairs:
        raise ValueError("AlpacaEval-style win rate: no prompt is shared with the round-0 outputs")
    b_rows, r_rows = [p[0] for p in pairs], [p[1] for p in pairs]
    df = pd.DataFrame({"instruction": [str(r["prompt_id"]) for r in r_rows],
                       "output_1": [b["response"] for b in b_rows], "output_2": [r["response"] for r in r_rows],
                       "preference": [float(p) for p in preference_fn(b_rows, r_rows)]})
    raw = metrics.get_winrate(df)
    out = {"win_rate": float(raw["win_rate"]), "win_rate_se": float(raw["standard_error"]), "n": len(df),
           "avg_length": float(df["output_2"].str.len().mean()), "lc_win_rate": None, "lc_win_rate_se": None,
           "lc_absent_reason": None}
    if len(df) < 2 * info_splits():
        out["lc_absent_reason"] = f"the LC regression's {info_splits()}-fold CV needs >= {2 * info_splits()} prompts"
        return out
    try:
        out["lc_win_rate"], out["lc_win_rate_se"] = _minimal_lc(df)
    except ValueError as err:  # e.g. a fold without both outcomes: report why, keep the raw rate
        logger.warning("AlpacaEval-style LC not computed: %s", err)
        out["lc_absent_reason"] = f"LC regression failed: {err}"
    return out


def info_splits() -> int:
    """Folds of alpaca_eval's LC cross-validation (``GLM_INFO[...]['kwargs']['n_splits']``)."""
    from alpaca_eval.metrics import glm_winrate as glm

    return int(glm.GLM_INFO["length_controlled_minimal"]["kwargs"]["n_splits"])

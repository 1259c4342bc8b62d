"""Every command in README.md and docs/*.md is run by a test here, or by the test or CI script that
RUN_ELSEWHERE names (docs/design.md, *House rules*, 13); the README stays within 200 lines and its
relative links (and the docs') resolve, anchors included.

A command is a line of a fenced ```bash block (``\\`` continuations joined, comments and leading
``VAR=value`` assignments dropped), or an inline code span of the prose that starts like one
(``python run.py``, ``make ``, ``python -m larpo.``, ``pip install ``) and is not a template (``<...>``, ``…``, `` [``, ``|``).
Each is checked without doing the work:

- ``make TARGET [VAR=value ...]``: the target exists and ``make -n`` of it succeeds; every ``run.py`` and
  ``-m larpo.<module>`` line the dry run prints is checked as below (so ``make real-demo ARGS=seed=1``
  checks ``experiment=smollm2_cpu seed=1``);
- ``[.venv-vllm/bin/]python run.py [-m] OVERRIDES``: what ``run.py`` checks before any work — the misspelt-key
  and run_dir checks on argv, Hydra's composition against the schema (every value of a sweep), the option
  ranges, and the components built from ``_target_`` and fitted together (``startup_checks``); what depends
  on the machine (installed extras, fetched weights, a GPU) is left to preflight and its own tests;
- ``pip install -e '.[extras]'``: every extra is one of pyproject.toml's;
- ``python -m larpo.<module> ARGS``: the module imports and its ``main`` accepts the arguments, in a dry mode
  (``MODULE_CHECKS``: ``larpo.studies run`` runs as ``run-dry``, ``larpo.fetch`` with its download stubbed);
- anything else must match a prefix of RUN_ELSEWHERE, whose test function must exist.

A new command in the docs that none of these covers fails ``test_every_command_is_covered``.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 200

# Commands the checks above do not run, each with the test (file::function) or CI script that runs it.
RUN_ELSEWHERE = {
    "alpaca_eval evaluate --model_outputs":
        "tests/integration/test_alpaca_cli.py::test_the_official_cli_reads_model_outputs_json_and_agrees",
    "cp -r conf/local.example conf/local":
        "tests/cluster/test_submitit.py::test_the_slurm_example_composes_and_names_no_run_dir",
}

INLINE_STARTS = ("python run.py", ".venv-vllm/bin/python run.py", "make ", "python -m larpo.", "pip install ")
TEMPLATE_MARKS = ("<", "…", " [", "|")


@dataclass(frozen=True)
class Command:
    text: str
    where: str  # file:line


# --- extraction ---------------------------------------------------------------------------------------------


def _strip_env(tokens: list[str]) -> list[str]:
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):
        tokens = tokens[1:]
    return tokens


def block_commands(path: Path) -> list[Command]:
    """The command lines of the file's ```bash blocks."""
    out, in_bash, in_other, pending, start = [], False, False, "", 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = line.strip().startswith("```")
        if fence and not (in_bash or in_other):
            in_bash, in_other = line.strip() == "```bash", line.strip() != "```bash"
            continue
        if fence:
            in_bash = in_other = False
            continue
        if not in_bash:
            continue
        if not pending:
            start = n
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        text, pending = shlex.join(_strip_env(shlex.split(pending, comments=True))), ""
        if text:
            out.append(Command(text, f"{path.relative_to(REPO)}:{start}"))
    return out


def inline_commands(path: Path) -> list[Command]:
    """Inline code spans of the prose that are whole commands (not templates)."""
    text = path.read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
    out = []
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose):
        span = " ".join(m.group(1).split())
        if "\n\n" in m.group(1) or not span.startswith(INLINE_STARTS) or any(t in span for t in TEMPLATE_MARKS):
            continue
        line = prose.count("\n", 0, m.start()) + 1
        out.append(Command(shlex.join(shlex.split(span)), f"{path.relative_to(REPO)}:{line} (inline)"))
    return out


def all_commands() -> list[Command]:
    return [c for doc in DOCS for c in (*block_commands(doc), *inline_commands(doc))]


# --- python run.py --------------------------------------------------------------------------------------------


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import larpo.config  # noqa: F401  (registers the schema)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _sweep_points(args: list[str]) -> list[list[str]]:
    """The override lists of a -m sweep: every value of each swept key once (the others at their first value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    choices = []
    for arg in args:
        (o,) = parser.parse_overrides([arg])
        if o.is_sweep_override():
            key = o.get_key_element()
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([arg])
    first = [c[0] for c in choices]
    points = [first]
    for i, values in enumerate(choices):
        points += [first[:i] + [v] + first[i + 1:] for v in values[1:]]
    return points


@contextlib.contextmanager
def _local_example(args: list[str]):
    """``local=NAME`` for a file the user copies from conf/local.example: the example, on a search path."""
    names = [a.split("=", 1)[1] for a in args if a.startswith("local=")]
    missing = [n for n in names if not (CONF_DIR / "local" / f"{n}.yaml").exists()]
    if not missing:
        yield []
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "local").mkdir()
        for n in missing:
            shutil.copy(CONF_DIR / "local.example" / f"{n}.yaml", Path(tmp) / "local" / f"{n}.yaml")
        yield [f"hydra.searchpath=[file://{tmp}]"]


def startup_checks(args: list[str]) -> None:
    """What ``python run.py <args>`` checks before it does any work (run.py's argv checks, then
    larpo.pipeline.run up to the components: options, backend, run directory name, build_context).
    Raises what run.py would refuse with."""
    from larpo.config import check_override_keys, check_run_dirs, validate_options
    from larpo.manifest import resolve_run_dir
    from larpo.pipeline import build_context, resolve_backend

    problem = check_override_keys(args) or check_run_dirs(args)
    if problem:
        raise AssertionError(problem)
    overrides = [a for a in args if not a.startswith("-")]  # -m / --multirun
    with _local_example(overrides) as extra:
        for point in _sweep_points(overrides):
            cfg = _compose(point + extra)
            validate_options(cfg)
            resolve_backend(cfg)
            cfg.run_dir = str(resolve_run_dir(cfg))
            build_context(cfg, metrics=None)


# --- python -m larpo.<module> ------------------------------------------------------------------------------------


def _quiet(fn, *args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args)
    return result, out.getvalue()


def check_runs(args: list[str], tmp: Path, monkeypatch) -> None:
    from larpo.runs import main

    monkeypatch.chdir(tmp)  # reads runs/ and multirun/ of the current directory: none here
    _, printed = _quiet(main, args)
    assert printed


def check_studies(args: list[str], tmp: Path, monkeypatch) -> None:
    from larpo.studies import load_study, main

    assert len(args) >= 2 and args[0] in ("run", "run-dry", "aggregate", "real", "real-dry"), args
    if args[0] == "aggregate":  # writes the study's results: only the study is checked
        load_study(args[1])
        return
    dry = args[0] if args[0].endswith("-dry") else f"{args[0]}-dry"
    _, printed = _quiet(main, [dry, *args[1:]])
    assert printed.strip(), f"{dry} printed no command"


def check_fetch(args: list[str], tmp: Path, monkeypatch) -> None:
    import larpo.fetch

    asked = []
    monkeypatch.setattr(larpo.fetch, "fetch", lambda *a: asked.append(a) or tmp)
    assert _quiet(larpo.fetch.main, args)[0] == 0 and asked


def check_tables(args: list[str], tmp: Path, monkeypatch) -> None:
    import larpo.tables

    assert len(args) >= 2 and callable(larpo.tables.main), "usage: python -m larpo.tables OUT RUN_DIR..."


def check_ship(args: list[str], tmp: Path, monkeypatch) -> None:
    import larpo.ship

    assert 1 <= len(args) <= 2 and callable(larpo.ship.ship_round0), "usage: python -m larpo.ship RUN_DIR [DEST]"


def check_pip(words: list[str]) -> None:
    """``pip install -e .`` or ``pip install -e '.[a,b]'``: every extra named is one of pyproject.toml's."""
    import tomllib

    assert words[1:3] == ["install", "-e"] and len(words) == 4, f"not a `pip install -e .[extras]`: {words}"
    m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", words[3])
    assert m, f"not the repository: {words[3]}"
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    unknown = sorted(set((m.group(1) or "").split(",")) - set(extras) - {""})
    assert not unknown, f"no such extra in pyproject.toml: {unknown}"


MODULE_CHECKS = {"larpo.runs": check_runs, "larpo.studies": check_studies, "larpo.fetch": check_fetch,
                 "larpo.tables": check_tables, "larpo.ship": check_ship}


# --- make ------------------------------------------------------------------------------------------------------


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return {t for line in text.splitlines() if not line.startswith(("\t", "#")) and ":" in line
            and "=" not in line.split(":", 1)[0] for t in line.split(":", 1)[0].split()}


def check_make(tokens: list[str], tmp: Path, monkeypatch) -> None:
    targets = [t for t in tokens[1:] if "=" not in t and not t.startswith("-")]
    assert targets, "make with no target"
    unknown = sorted(set(targets) - make_targets())
    assert not unknown, f"no such Makefile target: {unknown}"
    dry = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(REPO), *tokens[1:]],
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    for line in dry.stdout.splitlines():  # what the target would run: its run.py and larpo commands too
        words = _strip_env(shlex.split(line))
        if len(words) > 1 and Path(words[0]).name.startswith("python") and (
                words[1] == "run.py" or words[1:3] and words[1] == "-m" and words[2].startswith("larpo.")):
            check_words(words, tmp, monkeypatch)


# --- dispatch --------------------------------------------------------------------------------------------------


def _elsewhere(text: str) -> str | None:
    return next((v for k, v in RUN_ELSEWHERE.items() if text.startswith(k)), None)


def check_words(words: list[str], tmp: Path, monkeypatch) -> None:
    """Check one command (its words); an uncovered command raises AssertionError."""
    if words[0] == "make":
        return check_make(words, tmp, monkeypatch)
    if words[0] == "pip" and _elsewhere(shlex.join(words)) is None:
        return check_pip(words)
    if Path(words[0]).name.startswith("python"):
        if len(words) > 1 and words[1] == "run.py":
            return startup_checks(words[2:])
        if len(words) > 2 and words[1] == "-m" and words[2].startswith("larpo."):
            check = MODULE_CHECKS.get(words[2])
            assert check is not None, f"python -m {words[2]}: add a check for it to MODULE_CHECKS"
            return check(words[3:], tmp, monkeypatch)
    assert _elsewhere(shlex.join(words)) is not None, (
        f"not covered: `{' '.join(words)}`: no check runs it; write a test (or name the one that runs it in "
        "RUN_ELSEWHERE)")
    return None


COMMANDS = all_commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) > 40 and any(c.text.startswith("make run") for c in COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"{c.where} {c.text[:60]}" for c in COMMANDS])
def test_every_command_is_covered(cmd, tmp_path, monkeypatch):
    check_words(shlex.split(cmd.text), tmp_path, monkeypatch)


@pytest.mark.parametrize("prefix", sorted(RUN_ELSEWHERE))
def test_run_elsewhere_names_an_existing_test_and_is_used(prefix):
    where = RUN_ELSEWHERE[prefix]
    file, _, func = where.partition("::")
    path = REPO / file
    assert path.is_file(), f"{where}: no such file"
    if func:
        assert re.search(rf"^\s*(async\s+)?def {re.escape(func)}\(", path.read_text(encoding="utf-8"), re.M), (
            f"{where}: no such test function")
    assert any(c.text.startswith(prefix) for c in COMMANDS), f"RUN_ELSEWHERE[{prefix!r}]: no doc has this command"


@pytest.mark.parametrize("bad", [
    "python run.py los=pairwise",                      # a misspelt key
    "python run.py rounds=-1",                         # out of range
    "python run.py loss=pairwise select=all sampling.n_samples=1",   # a list of 1 for a pairwise loss
    "python run.py -m loss=pairwise,no_such_loss",     # one value of a sweep
    "make no-such-target",
    "make real-demo ARGS=sampling.top_p=0",            # a make target's run.py overrides
    "python -m larpo.studies run no_such_study",
    "python -m larpo.no_such_module",
    "pip install -e '.[no_such_extra]'",
    "frobnicate --all",                                # nothing covers it
])
def test_the_checks_refuse_a_bad_command(bad, tmp_path, monkeypatch):
    with pytest.raises((Exception, SystemExit)):  # noqa: B017  (whichever refusal: the command must not pass)
        check_words(shlex.split(bad), tmp_path, monkeypatch)


def test_the_readme_is_short():
    n = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail to docs/ (at most {README_MAX_LINES})"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_relative_links_resolve(doc):
    text = re.sub(r"^```.*?^```", "", doc.read_text(encoding="utf-8"), flags=re.S | re.M)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target} (no heading #{anchor} in {path.relative_to(REPO)})")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_the_commands_make_runs_are_its_targets():
    """Every target a doc names is a Makefile target (the list the make check reads is the Makefile's)."""
    assert {"run", "test", "real-demo", "real-objectives", "real-listsize", "bench-vllm"} <= make_targets()

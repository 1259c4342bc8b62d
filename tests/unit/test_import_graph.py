"""The import graph of larpo/: no circles, no import from a lower layer to a higher one, no private names.

Read from the source with ``ast`` (module-level and function-level imports alike: a lazy import still makes
the two modules depend on each other), so the test needs no import of the package. Every module has a
layer (:data:`LAYERS`, by the longest matching module prefix); a new module must be placed there.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "larpo"

# Module prefix -> layer. A module may import from its own layer or a lower one, never from a higher one.
LAYERS: dict[str, int] = {
    # 0: the ground: errors, seeds, the console, child processes; nothing of LarPO below them
    "larpo": 0, "larpo.errors": 0, "larpo.seeds": 0, "larpo.console": 0, "larpo.processes": 0, "larpo.fetch": 0,
    "larpo.loggers": 0, "larpo.report": 0,
    # 1: the config schemas, run-directory I/O, the tasks and the losses (pure tensor math)
    "larpo.config": 1, "larpo.artifacts": 1, "larpo.tasks": 1, "larpo.losses": 1, "larpo.studies": 1,
    # 2: what reads them: artifact schemas, models and tokenizers, run names, tables, the sampling plan
    "larpo.schemas": 2, "larpo.model": 2, "larpo.runs": 2, "larpo.tables": 2, "larpo.ship": 2,
    "larpo.generation.plan": 2,
    # 3: model-facing primitives: LoRA adapters, log-probs, rewards, HF sampling
    "larpo.lora": 3, "larpo.logprobs": 3, "larpo.rewards": 3, "larpo.generation.sampling": 3,
    # 4: checkpoints (full weights or LoRA), selection
    "larpo.checkpoints": 4, "larpo.select": 4,
    # 5: the stages' libraries
    "larpo.generation": 5, "larpo.training": 5, "larpo.evals": 5,
    # 6: the run context and the stages
    "larpo.context": 6, "larpo.stages": 6,
    # 7: the run: its record, start-up checks, the round loop
    "larpo.manifest": 7, "larpo.preflight": 7, "larpo.pipeline": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) of every larpo import in ``path``, at any depth."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "larpo"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "larpo":
                continue
            for a in node.names:  # `from larpo.stages import evaluate` imports the module larpo.stages.evaluate
                sub = f"{mod}.{a.name}"
                out.append((sub, "", node.lineno) if sub in known else (mod, a.name, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {target for target, _, _ in imports(p, set(mods)) if target != m} for m, p in mods.items()}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS and (n > 1 or module == "larpo"):
            return LAYERS[prefix]
    return None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def back_arrows(edges: dict[str, set[str]]) -> list[str]:
    return [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
            for a, targets in sorted(edges.items()) for b in sorted(targets)
            if layer_of(b) is not None and layer_of(a) is not None and layer_of(b) > layer_of(a)]


def test_every_module_has_a_layer_and_there_are_at_most_eight():
    assert [m for m in modules() if layer_of(m) is None] == []
    assert set(LAYERS.values()) <= set(range(8))


def test_every_import_names_a_module_that_exists():
    mods = modules()
    edges = graph()
    assert sorted({b for targets in edges.values() for b in targets} - set(mods)) == []


def test_no_circles():
    assert cycles(graph()) == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    assert back_arrows(graph()) == []


def test_no_private_name_is_imported_across_modules():
    mods = modules()
    private = [f"{module_name(p)}:{line} imports {name} from {target}"
               for p in mods.values() for target, name, line in imports(p, set(mods))
               if name.startswith("_") and target != module_name(p)]
    assert private == []


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_circle_finder(edges, expected):
    assert cycles(edges) == expected


def test_a_back_import_is_caught():
    """What the layer check reports when a low module imports a high one (e.g. artifacts -> pipeline)."""
    edges = {**graph(), "larpo.artifacts": {"larpo.pipeline"}}
    assert back_arrows(edges) == ["larpo.artifacts (layer 1) imports larpo.pipeline (layer 7)"]
    assert any({"larpo.artifacts", "larpo.pipeline"} <= set(c) for c in cycles(edges))  # pipeline imports artifacts


def test_one_child_process_supervisor():
    """Long-lived children (accelerate's ranks, vLLM engines) start only through larpo.processes.supervised:
    its own session, the group killed on every way out, SIGKILL after a grace period, the pid in the lock file.
    Nothing else in larpo/ calls Popen or signals a process group; the launchers use supervised()."""
    calls = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        used |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        calls[name] = used
    assert [m for m, used in calls.items() if used & {"Popen", "killpg"} and m != "larpo.processes"] == []
    launchers = ("larpo.training.launch", "larpo.generation.vllm_backend", "larpo.generation.vllm_server")
    assert all("supervised" in calls[m] for m in launchers)

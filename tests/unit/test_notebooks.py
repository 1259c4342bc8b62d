"""notebooks/studies.ipynb: executed with its outputs saved, and it runs top to bottom on a clean
checkout (it reads only the committed experiments/*/results.json when no run directories are here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_studies_notebook_is_saved_executed_with_a_figure_per_study():
    nb = json.loads((NOTEBOOKS / "studies.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["execution_count"] for c in code), "re-run `make notebooks`"
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    images = sum("image/png" in o.get("data", {}) for c in code for o in c["outputs"])
    studies = {p.parent.name for p in (NOTEBOOKS.parent / "experiments").glob("*/results.json")}
    assert images == len(studies) > 0


def test_studies_notebook_runs_top_to_bottom(tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / "studies.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    texts = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("with results:" in t for t in texts)

"""Build notebooks/studies.ipynb (the cells below) and execute it in place, outputs saved.

    python notebooks/make_studies.py        # or: make notebooks

The notebook only reads artifacts: experiments/<study>/results.json (what `python -m larpo.studies`
writes) and, when present, the sweeps' run directories under multirun/ and the default run under runs/default; the drawing
code lives in larpo.studies and larpo.report (docs/design.md).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

CELLS = [
    ("markdown", """# LarPO studies in miniature: every table and figure

Each study of `experiments/<study>/study.yaml` is a Hydra multirun of the ordinary pipeline over three seeds
(`make paper-mini`, or one `make table-*` / `make fig-*` target). This notebook reads what they wrote —
`experiments/<study>/results.json` (committed, so it runs on a fresh clone) and, when they are on this machine,
the run directories — and draws every figure. Left panel: the study's metric per setting (mean ± 2 SE over
seeds); right panel: its curve over rounds (Pass@N over N for Fig. 2b)."""),
    ("code", """from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from larpo.studies import EXPERIMENTS, load_results, plot_results, sweep_dir

PAPER = {  # the paper's figure or table each study reproduces in miniature
    'passn': 'Fig. 2b: Pass@N of the retriever at three temperatures',
    'objectives': 'Tables 2/3: LarPO objectives and baselines',
    'memorization': 'Table 4: memorization (candidate pools of earlier rounds)',
    'negatives': 'Fig. 3a: hard-negative difficulty',
    'temperature': 'Fig. 3b: sampling temperature',
    'listsize': 'Fig. 3c: list size',
    'real_objectives': 'Tables 2/3 on a real chat model: SmolLM2-135M-Instruct on word problems',
    'real_listsize': 'Fig. 3c on a real chat model: list size 4 vs 8 (SmolLM2-135M-Instruct)',
}
studies = [p.parent.name for p in sorted(EXPERIMENTS.glob('*/study.yaml'))]
done = [s for s in studies if (EXPERIMENTS / s / 'results.json').exists()]
print('studies:', ', '.join(studies))
print('with results:', ', '.join(done) or 'none yet (make paper-mini)')"""),
    ("code", """def show(name):
    results = load_results(name)
    display(Markdown(f"## {PAPER.get(name, name)}\\n\\n**Verdict:** {results['verdict']}"
                     + (f"  \\n{results['note']}" if results.get('note') else '')))
    return plot_results(results)

for name in [s for s in PAPER if s in done]:
    fig = show(name)
    display(fig)
    plt.close(fig)"""),
    ("markdown", """## From the run directories

When the sweeps' run directories are here (`multirun/study_<name>/`), the same numbers can be re-read from
them: `python -m larpo.studies aggregate <name>` rewrites `results.json`; below, the per-round table of one
run of each study, and the default run's summary (`python run.py` writes `runs/default/embedded-listwise-s0-<hash>`;
`python -m larpo.runs` lists every run)."""),
    ("code", """from larpo.report import format_table, load_summary

for name in done:
    root = sweep_dir(name)
    runs = sorted(p.parent for p in root.rglob('summary.json')) if root.exists() else []
    if runs:
        print(f'{name}: {len(runs)} run directories under {root}; the first, {runs[0].relative_to(root)}:')
        print(format_table(load_summary(runs[0])))
    else:
        print(f'{name}: no run directories here (results.json only)')

default = sorted((Path('..') / 'runs' / 'default').glob('embedded-listwise-s0-*/summary.json'))
if default:
    print(format_table(load_summary(default[-1].parent)))"""),
]


def build():
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
                for kind, src in CELLS]
    return nb


def main() -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = build()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(nb, HERE / "studies.ipynb")


if __name__ == "__main__":
    main()

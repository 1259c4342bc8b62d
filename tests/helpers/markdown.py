"""Reading the markdown tables the benchmark scripts print."""

from __future__ import annotations


def table(text: str, after: str) -> list[list[str]]:
    """The cells of the first markdown table after the line containing ``after``."""
    lines = text[text.index(after):].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    assert set("".join(rows[1])) <= set("-"), "second line must be the header rule"
    return [rows[0], *rows[2:]]

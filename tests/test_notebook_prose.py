"""The notebooks' prose states no result that a code cell does not compute.

A number in a markdown cell (before its Exercises, whose expected ranges the solutions notebooks
assert) is either inside math (``$...$``, an equation's constant) or code
(backticks), or one of the constants listed here with where it comes from; anything else (a
decimal like "0.92" or a percentage) would be a result typed by hand that can drift from the
outputs beside it. Results are printed by code cells as sentences instead. The executed copies
in ``reports/notebooks`` have no empty section: every section with code shows some output.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
EXECUTED = (sorted((ROOT / "reports" / "notebooks").glob("*.ipynb"))
            + sorted((ROOT / "reports" / "notebooks" / "solutions").glob("*.ipynb")))

# constants that prose may state: settings of the paper, the simulator or a profile, not results
CONSTANTS = {
    "0.2": "the paper's dropout / the 4:1 validation fraction",
    "0.15": "the simulator's knockdown fold (target_fold)",
    "15%": "the simulator's knockdown fold (target_fold 0.15)",
    "0.05": "the Benjamini-Hochberg level of the effect ranking",
    "0.5": "a relative share named in the text (half)",
    "0.01": "the negligible-change threshold of notebook 07 / a 1% margin",
    "95%": "the level of every interval",
    "4.30": "the t quantile t(2, 0.975)",
    "2.78": "the t quantile t(4, 0.975)",
    "5%": "the paper's Figure 3 selection (top 5% of knockdowns)",
    "50%": "a share named in the text (half)",
    "20%": "the split's validation and transfer-validation fractions",
    "1%": "a margin named in the text",
    "0.5%": "the quick profile's early-stopping margin (min_delta 0.005)",
}
NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+|\d+(?:\.\d+)?\s?%)(?![\w.])")


def prose_numbers(text: str) -> list[str]:
    """Decimals and percentages of a markdown cell outside math and code spans (an Exercises
    section is left out: its expected ranges are asserted by the solutions notebooks)."""
    text = text.split("## Exercises")[0]
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$]*\$", " ", text)
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\(https?://[^)]*\)", " ", text)
    text = re.sub(r"^(#+\s*)\d+(\.\d+)*", r"\1", text, flags=re.M)  # section numbers of headings
    text = re.sub(r"(?i)\b(sections?|§)\s*\d+(\.\d+)*", " ", text)   # references to sections
    return [m.group(1).replace(" ", "") for m in NUMBER.finditer(text)]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_no_result_is_typed_into_the_prose(path):
    nb = nbformat.read(path, as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            found += [(i, n) for n in prose_numbers(cell.source) if n not in CONSTANTS]
    assert not found, (f"{path.name}: numbers in prose that no code cell computes (cell, number): {found}; "
                       "print them from the numbers instead, or list a true constant in CONSTANTS")


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: p.stem)
def test_no_empty_section_in_the_executed_notebooks(path):
    nb = nbformat.read(path, as_version=4)
    sections, current = [], None
    for cell in nb.cells:
        if cell.cell_type == "markdown" and re.match(r"#{2,3} ", cell.source):
            current = {"title": cell.source.splitlines()[0], "code": 0, "output": 0}
            sections.append(current)
        elif cell.cell_type == "code" and current is not None:
            current["code"] += 1
            current["output"] += bool(cell.get("outputs"))
    empty = [s["title"] for s in sections if s["code"] and not s["output"]]
    assert not empty, f"{path.name}: sections whose code prints nothing: {empty}"


def test_every_notebook_with_exercises_has_a_solutions_notebook():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        text = "".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        if "## Exercises" in text:
            assert (ROOT / "notebooks" / "solutions" / f"{path.stem[:2]}_solutions.ipynb").exists(), path.name


def test_the_scan_finds_typed_numbers():
    assert prose_numbers("S reaches about 0.92 and $R^2 = 0.5$, see `0.3` and 35% of cells") == ["0.92", "35%"]
    assert prose_numbers("$$x = 0.25$$ figure 3.") == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_driver_cells_are_short(path):
    nb = nbformat.read(path, as_version=4)
    long = [(i, cell.source.count("\n") + 1) for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and cell.source.count("\n") + 1 > 30]
    assert not long, f"{path.name}: code cells over 30 lines (cell, lines): {long}; move the logic into xtcdr/"

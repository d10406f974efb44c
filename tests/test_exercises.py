"""Every exercise is answerable: it states what to expect or is a discussion question, and has a
worked solution.

The Exercises section of a notebook ``NN_*.ipynb`` (the markdown after ``## Exercises`` up to the
next ``## `` heading) is a numbered list. Each item either contains ``*Expect`` (a direction or a
range that the solution asserts) or is marked ``(discussion)`` (no single answer). Every other
item ``k`` has a section headed ``Exercise k`` in ``notebooks/solutions/NN_solutions.ipynb``, and
that notebook has no section for an exercise that does not exist or is a discussion question. The
solutions notebooks themselves follow the notebooks' conventions: the title ``NN · Solutions to
the exercises of <the title of notebook NN>``, a first code cell tagged ``parameters``, and no
``warnings.filterwarnings``.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_solutions.ipynb"))

ITEM = re.compile(r"^(\d+)\.\s", re.M)
SECTION = re.compile(r"^#{1,4}\s+Exercise\s+(\d+)\b", re.M)


def exercises(nb) -> dict[int, str] | None:
    """The numbered exercises of a notebook (number -> text), or None without an Exercises section."""
    found = [c.source for c in nb.cells if c.cell_type == "markdown" and "## Exercises" in c.source]
    if not found:
        return None
    text = found[0].split("## Exercises", 1)[1]
    text = re.split(r"^## ", text, maxsplit=1, flags=re.M)[0]
    starts = list(ITEM.finditer(text))
    return {int(m.group(1)): text[m.start(): starts[i + 1].start() if i + 1 < len(starts) else len(text)]
            for i, m in enumerate(starts)}


def is_discussion(item: str) -> bool:
    return "(discussion)" in item


def solution_sections(nb) -> list[int]:
    """The exercise numbers of the ``Exercise k`` headings of a solutions notebook."""
    return [int(n) for c in nb.cells if c.cell_type == "markdown" for n in SECTION.findall(c.source)]


def problems(notebook, solutions, number: str) -> list[str]:
    """What is wrong with the exercises of ``notebook`` (a notebook node) and their ``solutions``
    (a notebook node, or None when the file does not exist); empty when nothing is."""
    items = exercises(notebook)
    if items is None:
        return []
    out = []
    if not items:
        out.append("the Exercises section has no numbered exercise")
    if sorted(items) != list(range(1, len(items) + 1)):
        out.append(f"exercises are not numbered 1..{len(items)}: {sorted(items)}")
    for k, text in items.items():
        if "*Expect" not in text and not is_discussion(text):
            out.append(f"exercise {k} states no *Expect* and is not marked (discussion)")
    answerable = sorted(k for k, text in items.items() if not is_discussion(text))
    if answerable and solutions is None:
        return out + [f"exercises {answerable} need notebooks/solutions/{number}_solutions.ipynb"]
    sections = solution_sections(solutions) if solutions is not None else []
    missing = [k for k in answerable if k not in sections]
    if missing:
        out.append(f"exercises {missing} have no 'Exercise k' section in {number}_solutions.ipynb")
    stray = sorted(set(sections) - set(answerable))
    if stray:
        out.append(f"{number}_solutions.ipynb has sections for exercises {stray}, "
                   "which do not exist or are discussions")
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_is_answerable(path):
    number = path.stem[:2]
    solution = ROOT / "notebooks" / "solutions" / f"{number}_solutions.ipynb"
    found = problems(nbformat.read(path, as_version=4),
                     nbformat.read(solution, as_version=4) if solution.exists() else None, number)
    assert not found, f"{path.name}: " + "; ".join(found)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solutions_follow_the_conventions(path):
    number = path.stem[:2]
    nb = nbformat.read(path, as_version=4)
    solved = [p for p in NOTEBOOKS if p.stem.startswith(number)]
    assert solved, f"{path.name} solves no notebook {number}_*.ipynb"
    solved_title = nbformat.read(solved[0], as_version=4).cells[0].source.splitlines()[0].removeprefix("# ")
    expected = f"# {number} · Solutions to the exercises of {solved_title}"
    title = nb.cells[0].source.splitlines()[0] if nb.cells and nb.cells[0].cell_type == "markdown" else ""
    assert title == expected, (
        f"{path.name}: the title should read {expected!r} (the title of {solved[0].name}), found {title!r}")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), (
        f"{path.name}: the first code cell is not tagged parameters")
    assert not any("warnings.filterwarnings" in c.source for c in code), (
        f"{path.name} filters warnings; fix a warning at its cause or show it")


# ----------------------------------------------------------------------------- the checker itself
def _notebook(exercises_md: str, *headings: str):
    cells = [nbformat.v4.new_markdown_cell("# 99 · A notebook"),
             nbformat.v4.new_markdown_cell("## Summary\n\nDone.\n\n" + exercises_md)]
    cells += [nbformat.v4.new_markdown_cell(h) for h in headings]
    return nbformat.v4.new_notebook(cells=cells)


GOOD = """## Exercises

1. Change a seed. *Expect:* the same drugs
   on every world.
2. Discuss the paper's choice. (discussion)
3. Score another gene set. *Expect* the ranking to stay.
"""


def test_the_checker_passes_a_notebook_that_follows_the_rules():
    nb = _notebook(GOOD)
    assert sorted(exercises(nb)) == [1, 2, 3]
    assert problems(nb, _notebook("", "## Exercise 1: seeds", "## Exercise 3: genes"), "99") == []
    assert problems(_notebook("No exercises here."), None, "99") == []


def test_the_checker_finds_an_exercise_without_expectation():
    nb = _notebook(GOOD.replace("*Expect* the ranking to stay.", "What happens?"))
    found = problems(nb, _notebook("", "## Exercise 1: seeds", "## Exercise 3: genes"), "99")
    assert found == ["exercise 3 states no *Expect* and is not marked (discussion)"]


def test_the_checker_finds_a_missing_or_stray_solution():
    nb = _notebook(GOOD)
    assert problems(nb, None, "99") == ["exercises [1, 3] need notebooks/solutions/99_solutions.ipynb"]
    found = problems(nb, _notebook("", "## Exercise 1: seeds", "## Exercise 2: a discussion"), "99")
    assert found == ["exercises [3] have no 'Exercise k' section in 99_solutions.ipynb",
                     "99_solutions.ipynb has sections for exercises [2], which do not exist or are discussions"]


def test_the_checker_finds_a_broken_numbering():
    nb = _notebook(GOOD.replace("3. Score", "4. Score"))
    found = problems(nb, _notebook("", "## Exercise 1: seeds", "## Exercise 4: genes"), "99")
    assert found == ["exercises are not numbered 1..3: [1, 2, 4]"]

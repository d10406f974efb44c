"""A verdict is printed from the verdict function, never typed into a notebook's prose.

The markdown of a notebook may explain what the verdict words mean, but a sentence that states a
result ("the model beats the source shift", "removing L_cross lowers R^2", "no variant helps") must
be printed by a code cell from `xtcdr.verdicts`, so it stays true when the data, the profile or the
worlds change. The check looks for result statements about the model, a baseline or a variant in
markdown cells; definitions of the words ("*beats* when the interval lies above zero") and
questions stay allowed.
"""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))

SUBJECT = r"(?:the model|xtransfercdr|the source shift|the (?:train mean|control|additive|linear transfer)(?: baseline)?|every variant|no variant|each variant|removing [^ ]+)"
VERB = r"(?:beats|loses to|outperforms|underperforms|is (?:better|worse) than|ties with|is equivalent to|" \
       r"lowers|raises|wins|fails to beat|does not beat|helps|hurts)"
# a result statement: a subject, then within a few words a verdict verb, in a sentence that is not a
# definition of the words (no "when", "if", "whether" between them) and not a question
DEFINITION = re.compile(r"\b(?:when|if|whether|unless|exercise|would|could|should|must|may|can)\b",
                        re.IGNORECASE)
RESULT = re.compile(rf"\b{SUBJECT}\b[^.?]{{0,40}}?\b{VERB}\b", re.IGNORECASE)


def result_statements(markdown: str) -> list[str]:
    """Sentences of ``markdown`` that state a verdict (see the module docstring)."""
    text = re.sub(r"\$[^$]*\$", "", markdown)          # formulas
    text = re.sub(r"`[^`]*`", "", text)                  # code
    sentences = re.split(r"(?<=[.?!])\s+|\n\s*[-*] ", text)
    return [s.strip() for s in sentences
            if RESULT.search(s) and not DEFINITION.search(s) and not s.strip().endswith("?")]


def test_the_checker_finds_typed_verdicts_and_spares_definitions():
    assert result_statements("On this twin the model beats the source shift by a wide margin.")
    assert result_statements("Removing L_cross lowers R^2 on the DEGs, as in the paper.")
    assert result_statements("No variant helps on the default task.")
    assert not result_statements("The model *beats* a baseline when the interval lies above zero.")
    assert not result_statements("Does the model beat the source shift?")
    assert not result_statements("The verdicts below say whether the model beats the source shift.")
    assert not result_statements("`verdicts.verdict` prints whether XTransferCDR beats a baseline.")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_notebook_types_a_verdict_into_its_prose(path):
    cells = json.loads(path.read_text())["cells"]
    found = [(i, s) for i, c in enumerate(cells) if c["cell_type"] == "markdown"
             for s in result_statements("".join(c["source"]))
             if "## Exercises" not in "".join(c["source"])]   # exercises ask; expectations are checked elsewhere
    assert not found, f"{path.name}: verdicts typed into markdown (print them from xtcdr.verdicts): {found}"

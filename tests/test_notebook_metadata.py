"""Stored notebooks carry the kernelspec JupyterLab writes, so opening one does not modify it.

JupyterLab resolves a notebook's kernel on open and writes the kernel's own spec into the
metadata; a different stored value marks the notebook modified (closing asks to save, saving
makes a git diff). ``python -m xtcdr store`` writes ``KERNELSPEC``; the browser check
(``make lab-check``) confirms in JupyterLab itself that nothing else is rewritten on open.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from xtcdr import __main__ as cli

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_kernelspec_is_jupyterlabs(path):
    nb = nbformat.read(path, as_version=4)
    assert dict(nb.metadata.get("kernelspec", {})) == cli.KERNELSPEC, (
        f"{path.name}: kernelspec {dict(nb.metadata.get('kernelspec', {}))} differs from "
        f"{cli.KERNELSPEC}; re-store it with `python -m xtcdr store {path.relative_to(path.parents[1])}`")


def test_store_writes_the_kernelspec(tmp_path, monkeypatch):
    """store() replaces an old kernelspec (executing is stubbed: a copy stands for the run)."""
    import shutil

    import papermill as pm

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\n1 + 1")])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    path = tmp_path / "01_example.ipynb"
    nbformat.write(nb, path)
    monkeypatch.setattr(pm, "execute_notebook", lambda src, dst, **kw: shutil.copy(src, dst))
    assert cli.store([str(path)]) == 0
    assert dict(nbformat.read(path, as_version=4).metadata["kernelspec"]) == cli.KERNELSPEC


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_store_no_widget_state(path):
    """Widget state (tqdm bars) belongs to outputs the store clears; it would only bloat the file."""
    nb = nbformat.read(path, as_version=4)
    assert "widgets" not in nb.metadata, (
        f"{path.name} stores widget state; re-store it with "
        f"`python -m xtcdr store {path.relative_to(path.parents[1])}`")

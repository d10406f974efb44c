"""Package hygiene: every module imports, no module imports one that imports it back (directly
or round a longer loop, at module level or inside a function), and every name a module's
``__all__`` lists exists."""
from __future__ import annotations

import ast
import graphlib
import importlib
import pkgutil
from pathlib import Path

import pytest

import xtcdr

PACKAGE = xtcdr.__name__
SOURCE = Path(xtcdr.__file__).resolve().parent
MODULES = sorted(f"{PACKAGE}.{m.name}" for m in pkgutil.iter_modules(xtcdr.__path__))


def _source(module: str) -> Path:
    return SOURCE / f"{module.rsplit('.', 1)[1]}.py"


def imported_modules(module: str, source: str, known: set[str]) -> set[str]:
    """The modules of the package that ``source`` (the text of ``module``) imports, anywhere in it:
    ``from .x import``, ``from . import x``, ``from xtcdr.x import``, ``from xtcdr import x`` and
    ``import xtcdr.x``. A name of the package that is not a module (``from . import __version__``)
    is an import of the package itself."""
    found = set()
    for node in ast.walk(ast.parse(source, filename=module)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(f"{PACKAGE}.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative, in a flat package: against the package
                target = f"{PACKAGE}.{node.module}" if node.module else PACKAGE
            elif node.module == PACKAGE or (node.module or "").startswith(f"{PACKAGE}."):
                target = node.module
            else:
                continue
            if target == PACKAGE:  # from . import x, y: each a module, or a name of the package
                found |= {f"{PACKAGE}.{a.name}" if f"{PACKAGE}.{a.name}" in known else PACKAGE
                          for a in node.names}
            else:
                found.add(target)
    return found - {module}


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of the package it imports, read from the source with ``ast``."""
    known = set(MODULES)
    graph = {PACKAGE: imported_modules(PACKAGE, (SOURCE / "__init__.py").read_text(), known)}
    for module in MODULES:
        graph[module] = imported_modules(module, _source(module).read_text(), known)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Loops of ``graph`` (module -> imports), each as ``[a, b, ..., a]`` with a importing b.

    ``graphlib`` names one loop at a time; the loop's first import is set aside and the search goes
    on until no loop is left. Every loop shares an import with a named one; a loop hidden behind a
    named one is named once that one is fixed."""
    graph = {m: set(imports) for m, imports in graph.items()}
    cycles = []
    while True:
        try:
            graphlib.TopologicalSorter(graph).prepare()  # an import is a predecessor of its importer
            return cycles
        except graphlib.CycleError as err:
            loop = list(reversed(err.args[1]))  # graphlib lists predecessors first: importer first here
            start = loop.index(min(loop[:-1]))
            loop = loop[start:-1] + loop[:start + 1]  # the same loop always starts at the same module
            cycles.append(loop)
            graph[loop[0]].discard(loop[1])


def test_the_graph_reader_sees_every_kind_of_import():
    source = """
from __future__ import annotations
import numpy as np
from . import config, __version__
from .model import XTransferCDR
import xtcdr.losses
from xtcdr.train import fit
from xtcdr import plots as p

def later():
    from .report import save_figure
"""
    known = {f"{PACKAGE}.{m}" for m in ("config", "model", "losses", "train", "plots", "report", "pipeline")}
    assert imported_modules(f"{PACKAGE}.pipeline", source, known) == {
        PACKAGE, *(f"{PACKAGE}.{m}" for m in ("config", "model", "losses", "train", "plots", "report"))}


def test_the_cycle_finder_names_every_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(import_cycles(graph)) == [["a", "b", "c", "a"], ["d", "e", "d"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module):
    importlib.import_module(module)


def test_no_module_imports_one_that_imports_it_back():
    cycles = import_cycles(import_graph())
    assert not cycles, "import loops:\n" + "\n".join(" -> ".join(loop) for loop in cycles)


@pytest.mark.parametrize("module", MODULES)
def test_every_name_in_all_exists(module):
    listed = list(getattr(importlib.import_module(module), "__all__", []))
    missing = [name for name in listed if not hasattr(importlib.import_module(module), name)]
    assert not missing, f"{module}.__all__ lists names it does not define: {missing}"
    namespace: dict = {}
    exec(f"from {module} import *", namespace)
    assert set(listed) <= set(namespace)
    assert len(listed) == len(set(listed)), f"{module}.__all__ lists a name twice"

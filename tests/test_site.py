"""The course site's builder (xtcdr.site) on a tiny fake reports folder, without sphinx-build, and
the browser check (tests/browser/site_check.py) on a tiny broken site, where Chromium is installed.

The full build of the committed reports and its check in Chromium run in ``make site-check``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from xtcdr import site

WIDGET = {"application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2,
                                                       "version_minor": 0},
          "text/plain": "progress:   0%|"}


def _notebook(path: Path, title: str, input_path: str | None = None, widget: bool = False) -> None:
    outputs = [new_output("stream", name="stdout", text="42\n")]
    if widget:
        outputs.insert(0, new_output("display_data", data=WIDGET))
    nb = new_notebook(cells=[new_markdown_cell(f"# {title}\n\nSome prose."),
                             new_code_cell("print(42)", execution_count=1, outputs=outputs)])
    if input_path:
        nb.metadata["papermill"] = {"input_path": input_path}
    if widget:
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture
def repo(tmp_path):
    """A repository in miniature: source notebooks and pages, and what make replicate wrote."""
    src_nb, rep = tmp_path / "notebooks", tmp_path / "reports"
    _notebook(src_nb / "01_data.ipynb", "01 · Data: the start")
    _notebook(src_nb / "04_eval.ipynb", "04 · Evaluation: tables")
    _notebook(src_nb / "solutions" / "01_solutions.ipynb", "Solutions of 01")
    (src_nb / "README.md").write_text(
        "# A class path\n\nRun [04](04_eval.ipynb), then read [the report](../reports/REPLICATION.md)"
        " and the [glossary](glossary.md).\n")
    (src_nb / "glossary.md").write_text("# Glossary\n\n## World\n\nA draw.\n")
    _notebook(rep / "notebooks" / "01_data.ipynb", "01 · Data: the start",
              input_path="/elsewhere/notebooks/01_data.ipynb")
    _notebook(rep / "notebooks" / "04_eval_twin4.ipynb", "04 · Evaluation: tables", widget=True)
    _notebook(rep / "notebooks" / "solutions" / "01_solutions.ipynb", "Solutions of 01")
    (rep / "tables").mkdir()
    (rep / "figures").mkdir()
    (rep / "tables" / "t1.csv").write_text("a,b\n1,2\n")
    (rep / "tables" / "unnamed.csv").write_text("a\n1\n")
    (rep / "figures" / "f.png").write_bytes(b"\x89PNG\r\n")
    (rep / "REPLICATION.md").write_text(
        "# Replication report\n\n- table `tables/t1.csv`; folder `tables/`; missing `tables/no.csv`\n"
        "- ![a figure](figures/f.png)\n")
    return tmp_path


def _tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_stage_writes_conf_index_copies_and_pages(repo, monkeypatch):
    monkeypatch.setenv("XTCDR_REPOSITORY_URL", "https://example.org/team/xtcdr/")
    monkeypatch.delenv("XTCDR_REPOSITORY_BRANCH", raising=False)
    before = {d: _tree_digest(repo / d) for d in ("reports", "notebooks")}
    staged = site.stage(repo / "reports", repo / "build" / "site-src", repo / "notebooks")
    src = repo / "build" / "site-src"
    assert staged.src == src.resolve()
    # nothing written into the inputs
    assert {d: _tree_digest(repo / d) for d in ("reports", "notebooks")} == before

    # the documents of each section, in notebook order
    assert staged.notebooks == ["notebooks/01_data", "notebooks/04_eval_twin4"]
    assert staged.solutions == ["notebooks/solutions/01_solutions"]
    assert staged.pages == ["notebooks/README", "notebooks/glossary"]
    assert staged.reports == ["REPLICATION"]
    # launch buttons open the source notebooks: papermill's input path, else the longest prefix
    assert staged.launch_sources == {
        "notebooks/01_data": "notebooks/01_data.ipynb",
        "notebooks/04_eval_twin4": "notebooks/04_eval.ipynb",
        "notebooks/solutions/01_solutions": "notebooks/solutions/01_solutions.ipynb"}

    # conf.py: execution off, the book theme, the repository from the environment
    conf: dict = {}
    exec(compile((src / "conf.py").read_text(), "conf.py", "exec"), conf)
    assert conf["nb_execution_mode"] == "off"
    assert conf["html_theme"] == "sphinx_book_theme"
    assert "sphinx-mathjax-offline" in conf["extensions"]
    options = conf["html_theme_options"]
    assert options["repository_url"] == "https://example.org/team/xtcdr"
    assert options["repository_branch"] == "main"
    assert options["launch_buttons"]["binderhub_url"] == site.BINDERHUB_URL
    assert conf["LAUNCH_SOURCES"] == staged.launch_sources
    assert (src / conf["html_favicon"]).is_file()

    # index.md: one toctree per section, short titles, in this order
    index = (src / "index.md").read_text()
    order = [index.index(s) for s in (":caption: The course", "notebooks/README",
                                      "notebooks/glossary", ":caption: Notebooks",
                                      "01 · Data <notebooks/01_data>",
                                      "04 · Evaluation (twin4) <notebooks/04_eval_twin4>",
                                      ":caption: Worked solutions", ":caption: Results",
                                      "\nREPLICATION\n")]
    assert order == sorted(order)

    # the executed copies: progress-bar widgets dropped, a second copy's title says which one
    copy = nbformat.read(src / "notebooks" / "04_eval_twin4.ipynb", as_version=4)
    assert "widgets" not in copy.metadata
    assert [o["output_type"] for o in copy.cells[1].outputs] == ["stream"]
    assert copy.cells[0].source.startswith("# 04 · Evaluation: tables (twin4)\n")
    assert (src / "notebooks" / "solutions" / "01_solutions.ipynb").is_file()

    # REPLICATION.md: what it names is linked and copied beside it, and nothing else
    replication = (src / "REPLICATION.md").read_text()
    assert "[`tables/t1.csv`](tables/t1.csv)" in replication
    assert "`tables/no.csv`" in replication and "](tables/no.csv)" not in replication
    assert (src / "tables" / "t1.csv").read_text() == "a,b\n1,2\n"
    assert (src / "figures" / "f.png").is_file()
    assert not (src / "tables" / "unnamed.csv").exists()

    # the class path's links point at the site's pages
    class_path = (src / "notebooks" / "README.md").read_text()
    assert "](04_eval_twin4.ipynb)" in class_path and "](../REPLICATION.md)" in class_path
    assert "](glossary.md)" in class_path


def test_stage_without_executed_notebooks_says_run_make_replicate(repo, capsys):
    for nb in (repo / "reports" / "notebooks").glob("*.ipynb"):
        nb.unlink()
    with pytest.raises(site.SiteError, match="run `make replicate` first"):
        site.stage(repo / "reports", repo / "build" / "site-src", repo / "notebooks")
    status = site.main(["--reports", str(repo / "reports"), "--out", str(repo / "build" / "site"),
                        "--notebooks", str(repo / "notebooks")])
    assert status == 1
    assert "run `make replicate` first" in capsys.readouterr().err
    assert not (repo / "build" / "site").exists()


def test_stage_and_main_refuse_folders_that_overlap_the_inputs(repo, capsys):
    before = _tree_digest(repo)
    for src in (repo / "reports" / "site-src", repo / "notebooks", repo):
        with pytest.raises(site.SiteError, match="overlaps"):
            site.stage(repo / "reports", src, repo / "notebooks")
    assert site.main(["--reports", str(repo / "reports"), "--out", str(repo),
                      "--notebooks", str(repo / "notebooks")]) == 1
    assert "output folder" in capsys.readouterr().err
    assert _tree_digest(repo) == before


def test_stage_without_the_pages_or_report_leaves_them_out(repo, capsys):
    (repo / "notebooks" / "glossary.md").unlink()
    (repo / "reports" / "REPLICATION.md").unlink()
    staged = site.stage(repo / "reports", repo / "build" / "site-src", repo / "notebooks")
    assert staged.pages == ["notebooks/README"] and staged.reports == []
    assert "glossary.md: that page is left out" in capsys.readouterr().out
    assert ":caption: Results" not in (staged.src / "index.md").read_text()


def test_launch_buttons_are_pointed_at_the_source_notebook():
    handlers = []

    class App:
        def connect(self, event, handler, priority=500):
            handlers.append((event, handler, priority))

    site.connect_launch_sources(App(), {"notebooks/04_eval_twin4": "notebooks/04_eval.ipynb"})
    (event, rewrite, priority), = handlers
    assert event == "html-page-context" and priority > 501  # after the theme's own handler

    def context(page):
        url = f"https://binder.example/v2/gh/o/r/main?urlpath=lab/tree/{page}.ipynb"
        return {"header_buttons": [{"label": "download-buttons", "buttons": []},
                                   {"label": "launch-buttons", "buttons": [{"url": url}]}]}

    ctx = context("notebooks/04_eval_twin4")
    rewrite(None, "notebooks/04_eval_twin4", "page.html", ctx, None)
    assert ctx["header_buttons"][1]["buttons"][0]["url"].endswith("lab/tree/notebooks/04_eval.ipynb")
    ctx = context("notebooks/unknown")
    rewrite(None, "notebooks/unknown", "page.html", ctx, None)
    assert [g["label"] for g in ctx["header_buttons"]] == ["download-buttons"]


# ---------------------------------------------------------------------------------------------
# the browser check fails on what it is meant to catch
# ---------------------------------------------------------------------------------------------
def _load_site_check():
    browser = Path(__file__).resolve().parent / "browser"
    sys.path.insert(0, str(browser))
    spec = importlib.util.spec_from_file_location("site_check", browser / "site_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SIDEBAR = ('<div id="pst-primary-sidebar"><nav class="bd-docs-nav"><a href="index.html">home</a>'
           '<a href="page.html">page</a><a href="search.html">search</a></nav></div>')


def test_site_check_reports_each_kind_of_failure(tmp_path, capsys):
    pytest.importorskip("playwright")
    site_check = _load_site_check()
    if site_check.find_chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    web = tmp_path / "site"
    web.mkdir()
    (web / "index.html").write_text(
        f"<html><body>{SIDEBAR}<h1 id='top'>Home</h1>"
        "<img src='missing.png'><script src='http://example.org/x.js'></script>"
        "<a href='nope.html'>broken</a> <a href='page.html#no-such-id'>anchor</a>"
        " <a href='page.html#here'>fine</a> <a href='https://example.org/'>outside</a>"
        "<script>console.error('boom')</script></body></html>")
    (web / "page.html").write_text("<html><body><h1 id='here'>No sidebar</h1></body></html>")
    (web / "search.html").write_text(f"<html><body>{SIDEBAR}</body></html>")
    status = site_check.run(web, shots=tmp_path / "shots")
    out = capsys.readouterr().out
    assert status == 1
    for expected in ("FAILED index.html: browser console error: boom",
                     "FAILED index.html: request leaves 127.0.0.1: http://example.org/x.js",
                     "FAILED index.html: image not loaded: missing.png",
                     "FAILED index.html: broken link: /nope.html",
                     "FAILED index.html: broken anchor: page.html#no-such-id",
                     "FAILED page.html: no navigation sidebar",
                     "FAILED search.html: search.html has no search box"):
        assert expected in out, f"{expected!r} not in the check's output:\n{out}"
    assert "page.html#here" not in out and "https://example.org/" not in out.replace("x.js", "")
    assert sorted(p.name for p in (tmp_path / "shots").glob("*.png")) == [
        "index.png", "page.png", "search.png"]

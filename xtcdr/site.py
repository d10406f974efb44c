"""The course site: a static HTML book of the executed notebooks, built offline with Sphinx.

``python -m xtcdr.site --reports reports --out build/site`` (``make site``) builds it from what
``make replicate`` wrote, and never executes a notebook:

1. **stage** (:func:`stage`) the sources in ``build/site-src/``: the executed notebooks of
   ``reports/notebooks/`` (and ``reports/notebooks/solutions/`` when it exists) under
   ``notebooks/``, the class path and the glossary (``notebooks/README.md``,
   ``notebooks/glossary.md``), ``REPLICATION.md`` with the tables and figures it names, a
   generated ``index.md`` (the table of contents, in notebook order) and ``conf.py``. Nothing is
   written into ``reports/`` or ``notebooks/``;
2. **build** (:func:`build`) the HTML with ``sphinx-build`` (MyST-NB with execution off, the
   book theme, MathJax served from the site itself): every script, style sheet and font comes
   from the installed packages, so the build and the pages need no network.

The launch buttons (Binder) open the *source* notebook of ``notebooks/`` that a page was executed
from, in the repository named by the environment variable ``XTCDR_REPOSITORY_URL`` (branch
``XTCDR_REPOSITORY_BRANCH``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SiteError", "Staged", "stage", "build", "source_notebook", "connect_launch_sources",
           "DEFAULT_REPOSITORY_URL", "main"]

# A placeholder until the repository has a public address: set XTCDR_REPOSITORY_URL to it.
DEFAULT_REPOSITORY_URL = "https://github.com/xtcdr/xtcdr"
BINDERHUB_URL = "https://mybinder.org"
# the hand-written pages of notebooks/ that go on the site, in this order
PAGES = ("README.md", "glossary.md")
# tqdm's progress bars in the executed notebooks: live widgets need a kernel, so they are dropped
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# a relative link target in markdown, `](target)`, and a `tables/...`/`figures/...` code span
_LINK = re.compile(r"\]\((?!(?:[a-z]+:|#|/))([^)\s]+)\)")
_CODE_PATH = re.compile(r"(?<!\[)`((?:tables|figures)/[^`\s]+\.\w+)`")
_NOTEBOOK_LINK = re.compile(r"\]\(([^)#\s/]+\.ipynb)((?:#[^)]*)?)\)")
_REPORTS_LINK = re.compile(r"\]\(\.\./reports/([^)\s]+)\)")


class SiteError(RuntimeError):
    """The site cannot be built from these inputs (the message says what to do)."""


@dataclass
class Staged:
    """What :func:`stage` wrote: the source folder and the documents of each toctree section."""

    src: Path
    pages: list[str] = field(default_factory=list)       # class path, glossary
    notebooks: list[str] = field(default_factory=list)   # executed notebooks, in order
    solutions: list[str] = field(default_factory=list)   # executed worked solutions
    reports: list[str] = field(default_factory=list)     # REPLICATION
    titles: dict[str, str] = field(default_factory=dict)  # docname -> short title in the sidebar
    launch_sources: dict[str, str] = field(default_factory=dict)  # docname -> source notebook


def _say(message: str) -> None:
    print(f"[site] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# staging
# --------------------------------------------------------------------------------------------
def source_notebook(executed: Path, sources: Path) -> Path | None:
    """The notebook of ``sources`` that ``executed`` was run from, or None.

    papermill records the input path in the notebook's metadata; when that file is not in
    ``sources``, the source is the notebook whose name is the longest prefix of the executed
    copy's (``04_sciplex_evaluation_synthetic_drugs`` -> ``04_sciplex_evaluation``).
    """
    meta = json.loads(executed.read_text()).get("metadata", {}).get("papermill", {})
    recorded = sources / Path(meta.get("input_path") or executed.name).name
    if recorded.is_file():
        return recorded
    candidates = [p for p in sources.glob("*.ipynb") if executed.stem.startswith(p.stem)]
    return max(candidates, key=lambda p: len(p.stem)) if candidates else None


def _copy_notebook(executed: Path, target: Path, title_suffix: str = "") -> str | None:
    """Copy an executed notebook for the site: widget outputs dropped, the title suffixed.

    Returns a short title for the table of contents (the title up to its colon), or None.
    """
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if WIDGET_VIEW not in o.get("data", {})]
    short = None
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("# "):
            first, _, rest = cell.source.partition("\n")
            if title_suffix:
                cell.source = f"{first} ({title_suffix})" + ("\n" + rest if rest else "")
            short = first[2:].split(":")[0].strip() + (f" ({title_suffix})" if title_suffix else "")
            break
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return short if short and "<" not in short else None


def _stage_notebooks(executed_dir: Path, sources: Path, src: Path, folder: str,
                     repo_root: Path, staged: Staged) -> list[str]:
    """Copy every executed notebook of ``executed_dir`` to ``src/folder``; their docnames."""
    docnames = []
    for executed in sorted(executed_dir.glob("*.ipynb")):
        docname = f"{folder}/{executed.stem}"
        source = source_notebook(executed, sources) if sources.is_dir() else None
        # a second copy of one source (04 on two twins) says which it is in its title
        suffix = (executed.stem[len(source.stem):].strip("_")
                  if source and executed.stem.startswith(source.stem) else "")
        title = _copy_notebook(executed, src / f"{docname}.ipynb", title_suffix=suffix)
        if title:
            staged.titles[docname] = title
        if source is not None:
            staged.launch_sources[docname] = source.resolve().relative_to(repo_root).as_posix()
        docnames.append(docname)
    return docnames


def _stage_replication(reports: Path, src: Path) -> bool:
    """REPLICATION.md with every table or figure it names copied beside it (and linked)."""
    path = reports / "REPLICATION.md"
    if not path.is_file():
        return False
    text = path.read_text()
    # a `tables/x.csv` code span that names an existing file becomes a link to it
    text = _CODE_PATH.sub(lambda m: f"[`{m.group(1)}`]({m.group(1)})"
                          if (reports / m.group(1)).is_file() else m.group(0), text)
    for target in _LINK.findall(text):
        file = reports / target.split("#")[0]
        if file.is_file():
            (src / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, src / target.split("#")[0])
    (src / "REPLICATION.md").write_text(text)
    return True


def _stage_pages(notebooks: Path, reports: Path, src: Path, staged: Staged) -> None:
    """The class path and the glossary, their links pointed at the site's pages.

    A link to a source notebook goes to its (first) executed page; a link into ``../reports/``
    goes to the staged copy (the site's root mirrors ``reports/``), copied there if needed.
    """
    by_source: dict[str, str] = {}  # "04_sciplex_evaluation.ipynb" -> its first executed page
    for docname, source in staged.launch_sources.items():
        if docname.startswith("notebooks/") and docname.count("/") == 1:
            by_source.setdefault(Path(source).name, Path(docname).name + ".ipynb")

    def into_reports(match: re.Match) -> str:
        rest = match.group(1)
        if (reports / rest).is_file() and not (src / rest).exists():
            (src / rest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(reports / rest, src / rest)
        return f"](../{rest})"

    for name in PAGES:
        page = notebooks / name
        if not page.is_file():
            _say(f"no {page}: that page is left out")
            continue
        text = _NOTEBOOK_LINK.sub(
            lambda m: f"]({by_source.get(m.group(1), m.group(1))}{m.group(2)})", page.read_text())
        text = _REPORTS_LINK.sub(into_reports, text)
        (src / "notebooks" / name).write_text(text)
        staged.pages.append(f"notebooks/{Path(name).stem}")


def _toctree(caption: str, docnames: list[str], titles: dict[str, str]) -> str:
    if not docnames:
        return ""
    entries = [f"{titles[d]} <{d}>" if d in titles else d for d in docnames]
    return "\n".join(["```{toctree}", f":caption: {caption}", ":maxdepth: 1", "", *entries,
                      "```", ""])


INDEX_INTRO = """\
# xtcdr: XTransferCDR, notebook by notebook

The teaching notebooks of xtcdr, a replication of XTransferCDR (Liu & Jin, AAAI 2025), as they
ran in `make replicate`: every output and figure is the one the run produced (quick profile, the
embedded synthetic twins; nothing was re-executed to build this site). Start with the class path,
keep the glossary at hand, and end with the replication report, which says which of the paper's
claims hold.

The rocket button at the top of a notebook page opens the *source* notebook in Binder (JupyterLab
with the repository's pinned environment), where it runs top to bottom; the download button gives
the executed copy shown here.

"""


def _write_index(staged: Staged) -> None:
    parts = [INDEX_INTRO] + [_toctree(caption, docnames, staged.titles) for caption, docnames in (
        ("The course", staged.pages), ("Notebooks", staged.notebooks),
        ("Worked solutions", staged.solutions), ("Results", staged.reports))]
    (staged.src / "index.md").write_text("\n".join(p for p in parts if p))


CONF_TEMPLATE = """\
# Generated by `python -m xtcdr.site` (make site): edit xtcdr/site.py, not this file.
project = "xtcdr"
html_title = "xtcdr: XTransferCDR, notebook by notebook"
extensions = ["myst_nb", "sphinx-mathjax-offline"]  # MathJax copied into _static/, no CDN
nb_execution_mode = "off"          # the notebooks ran in make replicate; never re-executed here
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
html_theme = "sphinx_book_theme"
html_favicon = "favicon.svg"     # written by stage(): without one the browser asks for a missing /favicon.ico
html_context = {{"default_mode": "light"}}  # the theme logs an error on a first visit without it
html_theme_options = {theme_options!r}

# docname -> the source notebook (repository path) its launch buttons open
LAUNCH_SOURCES = {launch_sources!r}


def setup(app):
    from xtcdr.site import connect_launch_sources
    connect_launch_sources(app, LAUNCH_SOURCES)
"""


FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
           '<rect width="16" height="16" rx="3" fill="#2b6a8f"/>'
           '<text x="8" y="12" font-size="11" font-family="sans-serif" text-anchor="middle" '
           'fill="white">x</text></svg>\n')


def _theme_options(repository_url: str, branch: str) -> dict:
    return {
        "repository_url": repository_url,
        "repository_branch": branch,
        "path_to_docs": "",
        "use_repository_button": True,
        "use_download_button": True,
        "home_page_in_toc": True,
        "footer_content_items": [],  # no author or copyright lines
        "show_toc_level": 2,
        "launch_buttons": {"binderhub_url": BINDERHUB_URL, "notebook_interface": "jupyterlab"},
    }


def _check_apart(folder: Path, what: str, *inputs: Path) -> None:
    """Refuse a folder that this module empties when it is, holds or sits inside an input."""
    for protected in inputs:
        if folder == protected or protected in folder.parents or folder in protected.parents:
            raise SiteError(f"the {what} {folder} overlaps {protected}, which is never written: "
                            "choose a folder under build/ (the default)")


def stage(reports: str | Path = "reports", src: str | Path = "build/site-src",
          notebooks: str | Path = "notebooks", repository_url: str | None = None,
          branch: str | None = None) -> Staged:
    """Write the Sphinx sources of the site into ``src`` (emptied first).

    Parameters
    ----------
    reports
        What ``make replicate`` wrote: ``notebooks/*.ipynb`` (executed; required),
        ``notebooks/solutions/*.ipynb``, ``REPLICATION.md``, ``tables/``, ``figures/``.
    src
        The staging folder (``build/site-src``); it must not be inside ``reports`` or
        ``notebooks``.
    notebooks
        The source notebooks (launch buttons open them) and the pages ``README.md`` (the class
        path) and ``glossary.md``.
    repository_url, branch
        For the launch and repository buttons; default: the environment variables
        ``XTCDR_REPOSITORY_URL`` (else :data:`DEFAULT_REPOSITORY_URL`) and
        ``XTCDR_REPOSITORY_BRANCH`` (else ``main``).

    Returns
    -------
    Staged
        The folder and the documents of each section of the table of contents.
    """
    reports, src, notebooks = Path(reports).resolve(), Path(src).resolve(), Path(notebooks).resolve()
    executed_dir = reports / "notebooks"
    if not executed_dir.is_dir() or not any(executed_dir.glob("*.ipynb")):
        raise SiteError(f"no executed notebooks in {executed_dir}: run `make replicate` first "
                        "(it writes them there)")
    _check_apart(src, "staging folder", reports, notebooks)
    repository_url = (repository_url or os.environ.get("XTCDR_REPOSITORY_URL")
                      or DEFAULT_REPOSITORY_URL).rstrip("/")
    branch = branch or os.environ.get("XTCDR_REPOSITORY_BRANCH") or "main"
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks").mkdir(parents=True)
    staged = Staged(src)
    repo_root = notebooks.parent
    staged.notebooks = _stage_notebooks(executed_dir, notebooks, src, "notebooks", repo_root, staged)
    if (executed_dir / "solutions").is_dir():
        staged.solutions = _stage_notebooks(executed_dir / "solutions", notebooks / "solutions",
                                            src, "notebooks/solutions", repo_root, staged)
    if _stage_replication(reports, src):
        staged.reports = ["REPLICATION"]
    _stage_pages(notebooks, reports, src, staged)
    _write_index(staged)
    (src / "favicon.svg").write_text(FAVICON)
    (src / "conf.py").write_text(CONF_TEMPLATE.format(
        theme_options=_theme_options(repository_url, branch), launch_sources=staged.launch_sources))
    return staged


# --------------------------------------------------------------------------------------------
# the Sphinx side
# --------------------------------------------------------------------------------------------
def connect_launch_sources(app, launch_sources: dict[str, str]) -> None:
    """Point each page's launch buttons at its source notebook (called from the generated conf.py).

    The book theme builds a launch URL from the page's own path (``notebooks/<executed>.ipynb``);
    this handler, run after the theme's, puts the source notebook's repository path in its place,
    and removes the buttons of a page that has no source notebook.
    """

    def rewrite(app, pagename, templatename, context, doctree):
        source = launch_sources.get(pagename)
        buttons = context.get("header_buttons") or []
        for group in list(buttons):
            if group.get("label") != "launch-buttons":
                continue
            if source is None:
                buttons.remove(group)
                continue
            for button in group.get("buttons", []):
                if "url" in button:
                    button["url"] = button["url"].replace(f"{pagename}.ipynb", source)

    app.connect("html-page-context", rewrite, priority=600)


def build(src: str | Path, out: str | Path, jobs: str = "1") -> int:
    """Run ``sphinx-build -b html src out`` in this process; the number of warnings."""
    from sphinx.cmd.build import build_main

    src, out = Path(src), Path(out)
    shutil.rmtree(out, ignore_errors=True)
    warnings_file = out.parent / f"{out.name}-warnings.log"
    status = build_main(["-b", "html", "-q", "-j", jobs, "-w", str(warnings_file),
                         "-d", str(src / "_doctrees"), str(src), str(out)])
    if status != 0:
        raise SiteError(f"sphinx-build failed (exit status {status}); its messages are above")
    text = warnings_file.read_text() if warnings_file.is_file() else ""
    return sum(1 for line in text.splitlines() if "WARNING" in line or "ERROR" in line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xtcdr.site", description=__doc__.split("\n")[0])
    parser.add_argument("--reports", default="reports", help="what make replicate wrote (default reports)")
    parser.add_argument("--out", default="build/site", help="the HTML site (default build/site)")
    parser.add_argument("--src", default=None, help="staging folder (default: site-src beside --out)")
    parser.add_argument("--notebooks", default="notebooks", help="the source notebooks and pages")
    args = parser.parse_args(argv)
    out = Path(args.out)
    src = Path(args.src) if args.src else out.parent / f"{out.name}-src"
    t0 = time.perf_counter()
    try:
        _check_apart(out.resolve(), "output folder", Path(args.reports).resolve(),
                     Path(args.notebooks).resolve())
        _say(f"staging {args.reports} into {src}")
        staged = stage(args.reports, src, args.notebooks)
        _say(f"staged {len(staged.notebooks)} notebooks, {len(staged.solutions)} solutions, "
             f"{len(staged.pages)} pages, {len(staged.reports)} report "
             f"({time.perf_counter() - t0:.1f} s)")
        _say(f"building HTML with sphinx-build into {out}")
        n_warnings = build(src, out)
    except SiteError as err:
        print(f"[site] error: {err}", file=sys.stderr)
        return 1
    _say(f"built in {time.perf_counter() - t0:.1f} s, {n_warnings} warning(s)"
         + (f" (listed in {out.parent / (out.name + '-warnings.log')})" if n_warnings else ""))
    _say(f"the site: {(out / 'index.html').resolve()} (make site-check opens every page in Chromium)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

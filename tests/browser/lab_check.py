"""The classroom check: every notebook opened and run in JupyterLab in a real (headless) browser.

``make lab-check`` (or ``.venv/bin/python tests/browser/lab_check.py [--only 02,03]``) does what a
student does and checks what the student would see:

1. copies ``notebooks/*.ipynb`` to ``build/lab-check/notebooks/`` (``partN/notebooks/`` for a part) (the repository's notebooks are
   never opened, so they are never modified);
2. starts JupyterLab from ``.venv`` on a free port of 127.0.0.1 with a random token, with the
   kernel environment ``CI=1 XTCDR_PROFILE=quick XTCDR_MAX_STEPS=150 XTCDR_OUT=build/lab-check/reports`` (the same as
   ``make notebooks``, so the checkpoints that nbval cached in ``data/`` are reused);
3. drives the system Chromium with Playwright; for each notebook it

   * opens it and fails if JupyterLab marks it modified right away (a kernelspec or other
     metadata that JupyterLab rewrites on open: closing would ask to save, saving makes a diff);
   * runs all cells, waits until the kernel is idle and every code cell has an execution count;
   * saves the copy from the browser and fails on any ``error`` output in it (read with nbformat),
     on a cell without an execution count, on an error shown in the page and on any error in the
     browser console;
   * for notebook 02: checks that the ipywidgets are live controls (not the static fallback),
     unticks a loss term, re-runs, and checks that the figure changed; then picks another pair in
     the pair explorer and checks that its figure changed;
   * writes a screenshot ``build/lab-check/<notebook>.png`` and prints the time it took.

By default the notebooks are split over two such processes (``--jobs``, ``LAB_CHECK_JOBS``), each
with its own server, browser and copies in ``build/lab-check/partN/``; screenshots stay in
``build/lab-check/``. The server is always stopped (also on Ctrl-C). The exit status is non-zero when any check fails;
each failure is printed with the notebook it happened in.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
BUILD = REPO / "build" / "lab-check"
TAG = "[lab-check]"  # "[lab-check part0]" in a part of a parallel check
WORK = BUILD  # notebook copies, JupyterLab settings and log of this process (a part: BUILD/partN)
NOTEBOOKS = REPO / "notebooks"

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

# Browser-console errors that JupyterLab itself logs in this offline set-up and that say nothing
# about the notebooks. Only exact messages are listed; anything else fails the check.
BENIGN_CONSOLE_ERRORS: dict[str, str] = {}



class LabCheckError(RuntimeError):
    """A set-up problem (no Chromium, no .venv, the server did not start): nothing was checked."""


@dataclass
class Result:
    notebook: str
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# set-up: Chromium, the notebook copies, the server
# --------------------------------------------------------------------------------------------
def find_chromium() -> str | None:
    """The system Chromium: /usr/bin/chromium, else ``chromium`` on PATH; None when absent."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_notebooks(only: list[str] | None) -> list[Path]:
    """Fresh copies of the notebooks (all, or those whose name starts with an ``only`` prefix)."""
    target = WORK / "notebooks"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    sources = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        sources = [p for p in sources if any(p.name.startswith(o) for o in only)]
    if not sources:
        raise LabCheckError(f"no notebooks to check in {NOTEBOOKS}" + (f" matching {only}" if only else ""))
    for p in sources:
        shutil.copy2(p, target / p.name)
    return [target / p.name for p in sources]


def write_lab_settings(settings_dir: Path) -> None:
    """User settings of the check's own JupyterLab (not the user's ~/.jupyter).

    ``windowingMode: none`` renders every cell, so that every output is in the page for the
    checks and the screenshot (the default renders only the cells near the viewport);
    ``fetchNews: false`` answers JupyterLab's news question, whose toast would cover outputs.
    """
    tracker = settings_dir / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    # no "Would you like to get notified about official Jupyter news?" toast (offline anyway)
    notification = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false"}))


class LabServer:
    """JupyterLab from .venv on 127.0.0.1, serving ``root``; ``stop()`` ends it and its kernels."""

    def __init__(self, root: Path, log_path: Path):
        self.root, self.log_path = root, log_path
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> None:
        jupyter = VENV_BIN / "jupyter"
        if not jupyter.exists():
            raise LabCheckError(f"{jupyter} not found: run `make install` first")
        env = dict(os.environ, CI="1", XTCDR_PROFILE="quick",
                   XTCDR_MAX_STEPS=os.environ.get("CI_MAX_STEPS", "150"),  # as the notebook tests
                   XTCDR_OUT=str((BUILD / "reports").resolve()),
                   JUPYTER_CONFIG_DIR=str(WORK / "jupyter" / "config"),
                   JUPYTER_RUNTIME_DIR=str(WORK / "jupyter" / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(WORK / "jupyter" / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(WORK / "jupyter" / "workspaces"))
        env.pop("XTCDR_HEADLESS", None)  # the widgets must be live in the browser
        shutil.rmtree(WORK / "jupyter", ignore_errors=True)
        write_lab_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
        cmd = [str(jupyter), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
               # exposes window.jupyterapp: the check runs JupyterLab's own commands (Run All, Save)
               "--LabApp.expose_app_in_browser=True",
               # offline: no update check and no news feed (they would only fail to connect)
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.news_url=None"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabCheckError(f"JupyterLab exited with status {self.proc.returncode} at start; "
                                    f"its log: {self.log_path}")
            try:
                self.api("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise LabCheckError(f"JupyterLab did not answer on {self.base} within {timeout:.0f} s; "
                            f"its log: {self.log_path}")

    def api(self, method: str, path: str):
        """A REST call to the server (JSON answer, or None)."""
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        for kernel in self.api("GET", "/api/kernels") or []:
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def stop(self) -> None:
        """Terminate the server's process group (the server and its kernels), then kill if needed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.shutdown_kernels()
        except Exception:  # the server may already be going down; the signal below still stops it
            pass
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._log.close()


# --------------------------------------------------------------------------------------------
# the browser side
# --------------------------------------------------------------------------------------------
# JavaScript run in the page. `window.jupyterapp` is JupyterLab's application object.
JS_PANEL = "window.jupyterapp.shell.currentWidget"
JS_STATE = f"""() => {{
  const panel = {JS_PANEL};
  if (!panel || !panel.content || !panel.context) return null;
  const nb = panel.content;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const prompts = [...panel.node.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
      .map(e => e.textContent.trim());
  return {{
    path: panel.context.path,
    ready: panel.context.isReady && panel.sessionContext.isReady,
    dirty: panel.context.model.dirty,
    tabDirty: !!document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty'),
    kernel: kernel ? kernel.status : 'none',
    running: prompts.filter(p => p.includes('*')).length,
    unexecuted: prompts.filter(p => !/\\[\\d+\\]/.test(p)).length,
    codeCells: prompts.length,
  }};
}}"""


def lab_state(page) -> dict | None:
    return page.evaluate(JS_STATE)


def wait_for(page, predicate, timeout: float, what: str, poll: float = 0.5) -> dict:
    """Poll the notebook state until ``predicate(state)``; raise TimeoutError naming ``what``."""
    deadline, state = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        state = lab_state(page)
        if state and predicate(state):
            return state
        page.wait_for_timeout(int(poll * 1000))
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last state {state}")


def metadata_diff(before: dict, after: dict) -> list[str]:
    """Notebook-level metadata keys whose value JupyterLab changed (for the 'modified' message)."""
    keys = sorted(set(before) | set(after))
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in keys if before.get(k) != after.get(k)]


def saved_notebook_problems(path: Path) -> list[str]:
    """Error outputs and unexecuted code cells in a notebook saved by the browser."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {i} raised {out.get('ename')}: {out.get('evalue')}")
        if cell.get("execution_count") is None and cell.source.strip():
            problems.append(f"cell {i} has no execution count (it never ran)")
    return problems


def check_widgets_02(page, result: Result) -> None:
    """The two explorers of notebook 02 are live and redraw when a control changes."""
    root = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    outputs = "\n".join(root.locator(".jp-OutputArea-output").all_inner_texts())
    if "no widget frontend" in outputs:
        result.failures.append("the explorers fell back to static figures ('no widget frontend' printed)")
        return
    boxes = root.locator(".widget-checkbox input[type=checkbox]")
    if boxes.count() < 5:
        result.failures.append(f"expected 5 loss-term checkboxes, found {boxes.count()} "
                               "(widgets not rendered: is jupyterlab_widgets installed?)")
        return
    # the explorer's figure: the first image inside its widget Output area
    explorer = root.locator(".jupyter-widgets.widget-vbox", has=page.locator(".widget-checkbox")).first
    image = explorer.locator(".widget-output img").first
    before = image.get_attribute("src")
    # untick the cross-transfer term (the row whose slider is labelled "cross")
    row = explorer.locator(".widget-hbox", has=page.locator(".widget-label", has_text="cross")).first
    box = row.locator("input[type=checkbox]")
    box.uncheck()
    if box.is_checked():
        result.failures.append("the 'cross' checkbox could not be unticked")
        return
    explorer.locator("button", has_text="re-run").click()
    status = explorer.locator(".widget-label").last
    try:
        page.wait_for_function(
            "([el, old]) => el.textContent.startsWith('done') && "
            "el.closest('.widget-vbox').querySelector('.widget-output img') && "
            "el.closest('.widget-vbox').querySelector('.widget-output img').src !== old",
            arg=[status.element_handle(), before], timeout=120_000)
    except Exception as err:
        result.failures.append(f"loss-weight explorer: no new figure after unticking 'cross' and "
                               f"re-running ({type(err).__name__}); status: {status.inner_text()!r}")
        return
    after = image.get_attribute("src")
    label = status.inner_text()
    if after == before:
        result.failures.append("loss-weight explorer: the figure did not change after unticking 'cross'")
    elif "cross=0" not in label:
        result.failures.append(f"loss-weight explorer: re-ran, but not without 'cross': {label!r}")
    else:
        result.notes.append(f"loss-weight explorer live: unticked 'cross', re-ran, new figure ({label})")
    # the pair explorer: pick another pair in the dropdown
    dropdown = root.locator(".widget-dropdown select").first
    pair_box = root.locator(".jupyter-widgets.widget-vbox", has=page.locator(".widget-dropdown")).first
    pair_image = pair_box.locator(".widget-output img").first
    old = pair_image.get_attribute("src")
    dropdown.select_option(index=1)
    try:
        page.wait_for_function(
            "([el, old]) => { const img = el.querySelector('.widget-output img');"
            " return img && img.src !== old; }",
            arg=[pair_box.element_handle(), old], timeout=60_000)
        result.notes.append("pair explorer live: pair 1 selected, new figure")
    except Exception:
        result.failures.append("pair explorer: the figure did not change after picking pair 1")


def screenshot(page, path: Path) -> None:
    """A tall screenshot of the notebook from its top: the viewport grown to the notebook's height
    (capped at 16,000 px, Chromium's limit), with the file browser collapsed."""
    if not page.evaluate("() => window.jupyterapp.shell.leftCollapsed"):
        page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
    extra = page.evaluate(f"""() => {{
        const outer = {JS_PANEL}.node.querySelector('.jp-WindowedPanel-outer');
        outer.scrollTop = 0;
        return outer.scrollHeight - outer.clientHeight; }}""")
    page.set_viewport_size({"width": 1280, "height": int(min(900 + max(extra, 0), 16000))})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1280, "height": 900})


def check_notebook(page, server: LabServer, copy: Path, console: list[str],
                   timeout: float) -> Result:
    """Open, run, save and check one notebook copy; returns its Result (failures listed)."""
    import nbformat

    result = Result(copy.stem)
    console.clear()
    t0 = time.perf_counter()
    stored_metadata = dict(nbformat.read(copy, as_version=4).metadata)
    page.goto(f"{server.base}/lab/tree/{copy.name}?reset", wait_until="domcontentloaded")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=60_000)
    state = wait_for(page, lambda s: s["path"] == copy.name and s["ready"] and s["kernel"] == "idle",
                     60, f"{copy.name} to open with an idle kernel")
    page.wait_for_timeout(2000)  # let JupyterLab apply the kernel's metadata (kernelspec, language_info)
    state = lab_state(page)
    if state["dirty"] or state["tabDirty"]:
        live = page.evaluate(f"() => {JS_PANEL}.context.model.toJSON().metadata")
        changed = metadata_diff(stored_metadata, live)
        result.failures.append("marked modified right after opening (closing asks to save); "
                               "JupyterLab changed: " + ("; ".join(changed) or "cell contents")
                               + ". Fix: store the notebook with `python -m xtcdr store`")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_timeout(1000)
    try:
        # two consecutive polls with nothing running, so that a pause between cells is not taken
        # for the end of the run
        for _ in range(2):
            state = wait_for(page, lambda s: s["kernel"] == "idle" and s["running"] == 0,
                             timeout, f"{copy.name} to finish running", poll=1.0)
            page.wait_for_timeout(1500)
        finished = state["unexecuted"] == 0
    except TimeoutError as err:
        result.failures.append(str(err))
        finished = False
    result.seconds = time.perf_counter() - t0
    if state["unexecuted"]:
        result.failures.append(f"{state['unexecuted']} of {state['codeCells']} code cells show no "
                               "execution count (run stopped early?)")
    if copy.stem.startswith("02_") and finished:
        check_widgets_02(page, result)
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    wait_for(page, lambda s: not s["dirty"], 30, f"{copy.name} to be saved")
    result.failures += [f"saved notebook: {p}" for p in saved_notebook_problems(copy)]
    shown = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")
    tracebacks = [t for t in shown.all_inner_texts() if "Traceback (most recent call last)" in t]
    if tracebacks:
        result.failures.append(f"page shows {len(tracebacks)} traceback(s): {tracebacks[0][:300]!r}")
    screenshot(page, BUILD / f"{copy.stem}.png")
    result.failures += [f"browser console error: {m}" for m in console]
    server.shutdown_kernels()
    return result


def run(only: list[str] | None, timeout: float) -> int:
    chromium = find_chromium()
    if chromium is None:
        raise LabCheckError("chromium not found (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise LabCheckError("the playwright package is missing from .venv: run `make install`") from None
    copies = copy_notebooks(only)
    (BUILD / "reports").mkdir(parents=True, exist_ok=True)
    server = LabServer(WORK / "notebooks", WORK / "jupyterlab.log")
    results: list[Result] = []
    t_all = time.perf_counter()
    try:
        server.start()
        print(f"{TAG} JupyterLab on {server.base} serving {WORK / 'notebooks'}", flush=True)
        with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="lab-check-chromium-") as profile:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900})
            page = context.pages[0] if context.pages else context.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text)
                    if m.type == "error" and m.text not in BENIGN_CONSOLE_ERRORS else None)
            page.on("pageerror", lambda e: console.append(f"uncaught page error: {e}"))
            page.goto(f"{server.base}/lab?token={server.token}", wait_until="domcontentloaded")
            for copy in copies:
                print(f"{TAG} {copy.name} ...", flush=True)
                t_notebook = time.perf_counter()
                try:
                    result = check_notebook(page, server, copy, console, timeout)
                except Exception as err:  # a failed step of the browser script fails the notebook
                    result = Result(copy.stem, failures=[f"{type(err).__name__}: {err}"],
                                    seconds=time.perf_counter() - t_notebook)
                    try:
                        page.screenshot(path=str(BUILD / f"{copy.stem}.png"))
                        (BUILD / f"{copy.stem}.html").write_text(page.content())
                    except Exception:
                        pass
                results.append(result)
                verdict = "ok" if not result.failures else "FAILED"
                print(f"{TAG} {copy.name}: {verdict} in {result.seconds:.0f} s", flush=True)
                for note in result.notes:
                    print(f"    {note}")
                for failure in result.failures:
                    print(f"    FAIL: {failure}")
            context.close()
    finally:
        server.stop()
    failed = [r for r in results if r.failures]
    total = time.perf_counter() - t_all
    (WORK / "results.json").write_text(json.dumps(
        [{"notebook": r.notebook, "ok": not r.failures, "seconds": round(r.seconds, 1)} for r in results]))
    print(f"{TAG} {len(results) - len(failed)} of {len(results)} notebooks passed in {total:.0f} s; "
          f"screenshots in {BUILD}/")
    print(f"{TAG.strip('[]')}: {len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        print(f"{TAG} FAILED: " + ", ".join(r.notebook for r in failed) + f" (server log: "
              f"{WORK / 'jupyterlab.log'})", file=sys.stderr)
        return 1
    return 0


def notebook_names(only: list[str] | None) -> list[str]:
    """The notebooks a check covers (all, or those whose name starts with an ``only`` prefix)."""
    names = [p.stem for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))]
    return [n for n in names if not only or any(n.startswith(o) for o in only)]


def deal(names: list[str], jobs: int) -> list[list[str]]:
    """``names`` dealt to ``jobs`` parts in snake order (0, 1, ..., 1, 0, ...), no part empty."""
    jobs = max(1, min(jobs, len(names)))
    parts: list[list[str]] = [[] for _ in range(jobs)]
    for i, name in enumerate(names):
        lap, pos = divmod(i, jobs)
        parts[pos if lap % 2 == 0 else jobs - 1 - pos].append(name)
    return parts


def run_parts(only: list[str] | None, timeout: float, jobs: int) -> int:
    """The check split over ``jobs`` processes, each with its own JupyterLab server and browser.

    Notebooks are dealt in snake order (01, 04, 05, 08 to one part and 02, 03, 06, 07 to the other
    for two parts); each part reports as one run would, and this prints the total.
    """
    names = notebook_names(only)
    if not names:
        raise LabCheckError(f"no notebooks to check in {NOTEBOOKS}" + (f" matching {only}" if only else ""))
    parts = deal(names, jobs)
    jobs = len(parts)
    t0 = time.perf_counter()
    procs = []
    for i, part in enumerate(parts):
        shutil.rmtree(BUILD / f"part{i}", ignore_errors=True)
        procs.append(subprocess.Popen([sys.executable, __file__, "--only", ",".join(part), "--part", str(i),
                                       "--timeout", str(timeout), "--jobs", "1"]))
    codes = [p.wait() for p in procs]
    results = []
    for i in range(jobs):
        path = BUILD / f"part{i}" / "results.json"
        results += json.loads(path.read_text()) if path.exists() else []
    failed = [r["notebook"] for r in results if not r["ok"]]
    missing = [n for n in names if n not in {r["notebook"] for r in results}]
    print(f"[lab-check] {len(results) - len(failed)} of {len(names)} notebooks passed in "
          f"{time.perf_counter() - t0:.0f} s over {jobs} parallel parts; screenshots in {BUILD}/")
    print(f"lab-check: {len(results) - len(failed)} passed, {len(failed) + len(missing)} failed")
    if failed or missing or any(codes):
        print("[lab-check] FAILED: " + ", ".join(failed + [f"{n} (did not run)" for n in missing])
              + f" (exit codes {codes}; logs: {BUILD}/part*/jupyterlab.log)", file=sys.stderr)
        return 1 if not any(c == 2 for c in codes) else 2
    return 0


def main(argv=None) -> int:
    global WORK, TAG
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None,
                        help="comma-separated notebook prefixes, e.g. 02,03 (default: all)")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds one notebook may run (default 900)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("LAB_CHECK_JOBS", "2")),
                        help="parallel JupyterLab + browser processes (default 2, or LAB_CHECK_JOBS)")
    parser.add_argument("--part", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    try:
        if args.part is not None:
            WORK, TAG = BUILD / f"part{args.part}", f"[lab-check part{args.part}]"
        elif args.jobs > 1:
            return run_parts(only, args.timeout, args.jobs)
        return run(only, args.timeout)
    except LabCheckError as err:
        print(f"[lab-check] cannot run: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("[lab-check] interrupted; server stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

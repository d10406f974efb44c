"""The course site in a real (headless) browser: every page of ``build/site/`` opened and checked.

``make site-check`` (or ``.venv/bin/python tests/browser/site_check.py [--site build/site]``), after
``make site``:

1. serves the site on a free port of 127.0.0.1 (the standard library's ``http.server`` in a
   thread);
2. opens every HTML page (``_static/`` excepted) in the system Chromium with Playwright, one
   browser and one page reused, with every host name but 127.0.0.1 made unresolvable, and fails a
   page on

   * any browser-console error or uncaught exception;
   * any request that fails, answers 400 or more, or leaves 127.0.0.1 (a script, style sheet,
     font or image from the internet);
   * any ``<img>`` that did not load (``naturalWidth == 0``);
   * any link to the site that does not resolve: the target file must exist and, for
     ``#anchor``, the target page must have an element with that id;
   * no navigation sidebar (the table of contents, with links);

3. types a word that is on the site into the search page and fails if no result comes back;
4. writes a screenshot per page to ``build/site-check/<page path with / as __>.png``.

It prints one line per page and a total, and exits non-zero on any failure, naming the page and
the problem.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab_check import CHROMIUM_ARGS, find_chromium  # noqa: E402  (the same Chromium set-up)

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "build" / "site"
SHOTS = REPO / "build" / "site-check"
SEARCH_WORD = "transfer"
SHOT_MAX_HEIGHT = 5000  # px of a page's screenshot, from its top (long notebooks are cut)
# offline on purpose: a request to any other host fails at once instead of waiting on DNS
OFFLINE_ARGS = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]

# What the page itself reports, once MathJax (when the page has math) has typeset and the fonts
# are in: images that did not load, resources from another origin, links, ids, the sidebar.
JS_INSPECT = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await document.fonts.ready;
  const images = [...document.images];
  await Promise.all(images.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  const resources = [...document.querySelectorAll(
      'script[src], link[href], img[src], iframe[src], source[src], video[src], audio[src]')]
    .map(e => e.src || e.href).filter(u => /^https?:/.test(u) && new URL(u).origin !== location.origin);
  const nav = document.querySelector('#pst-primary-sidebar nav.bd-docs-nav');
  const box = nav ? nav.getBoundingClientRect() : null;
  return {
    brokenImages: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src')),
    nImages: images.length,
    resources,
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id)
          .concat([...document.querySelectorAll('a[name]')].map(a => a.name)),
    navLinks: nav ? nav.querySelectorAll('a[href]').length : 0,
    navVisible: !!box && box.width > 0 && box.height > 0,
  };
}"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002  (the base class's name)
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """The site on 127.0.0.1 at a free port, in a daemon thread; (server, base URL)."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def site_pages(site: Path) -> list[str]:
    """Every HTML page of the site as a path relative to it, index first."""
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                   if not p.relative_to(site).parts[0].startswith("_"))
    return sorted(pages, key=lambda p: p != "index.html")


def shot_name(page: str) -> str:
    return page.removesuffix(".html").replace("/", "__") + ".png"


def link_target(href: str, base: str, site: Path) -> tuple[str, str] | None:
    """(site-relative file, fragment) of a link into the site; None for any other link."""
    parts = urlsplit(href)
    if parts.scheme not in ("http", "https") or f"{parts.scheme}://{parts.netloc}" != base:
        return None
    path = unquote(parts.path).lstrip("/")
    if path == "" or path.endswith("/"):
        path += "index.html"
    return path, unquote(parts.fragment)


def check_page(page, base: str, rel: str, site: Path, events: dict, shots: Path) -> tuple[list[str], dict]:
    """Open one page and check it; (failures, what the page reported)."""
    for value in events.values():
        value.clear()
    page.goto(f"{base}/{rel}", wait_until="load", timeout=60_000)
    info = page.evaluate(JS_INSPECT)
    failures = [f"browser console error: {m}" for m in events["console"]]
    failures += [f"failed request: {m}" for m in events["failed"]]
    failures += [f"request leaves 127.0.0.1: {u}" for u in events["external"]]
    failures += [f"resource from another site: {u}" for u in info["resources"]]
    failures += [f"image not loaded: {src}" for src in info["brokenImages"]]
    if info["navLinks"] < 3 or not info["navVisible"]:
        failures.append(f"no navigation sidebar (links in it: {info['navLinks']}, "
                        f"visible: {info['navVisible']})")
    for href in dict.fromkeys(info["links"]):
        target = link_target(href, base, site)
        if target and not (site / target[0]).is_file():
            failures.append(f"broken link: {href.removeprefix(base)} (no file {target[0]})")
    height = page.evaluate("() => document.documentElement.scrollHeight")
    page.screenshot(path=str(shots / shot_name(rel)), full_page=True,
                    clip={"x": 0, "y": 0, "width": 1280, "height": min(height, SHOT_MAX_HEIGHT)})
    return failures, info


def check_search(page, base: str, word: str, shots: Path) -> tuple[list[str], int]:
    """Type ``word`` into the search page; (failures, number of results)."""
    page.goto(f"{base}/search.html", wait_until="load")
    box = page.locator(".bd-search-container input[type=search]").first
    if box.count() == 0:
        return ["search.html has no search box (.bd-search-container input[type=search])"], 0
    box.fill(word)
    box.press("Enter")
    try:
        page.wait_for_selector("#search-results ul.search li", timeout=30_000)
    except Exception:
        summary = page.locator("#search-results").inner_text()
        return [f"search for {word!r} returned nothing (page says: {summary.strip()[:200]!r})"], 0
    page.wait_for_function("() => !document.querySelector('#search-results .search-summary')"
                           " || /found/i.test(document.querySelector('#search-results .search-summary').textContent)",
                           timeout=30_000)
    n = page.locator("#search-results ul.search li").count()
    page.screenshot(path=str(shots / "search-results.png"))
    return [], n


def run(site: Path, shots: Path = SHOTS) -> int:
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        print("[site-check] chromium not found (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    if not (site / "index.html").is_file():
        print(f"[site-check] no {site / 'index.html'}: run `make site` first", file=sys.stderr)
        return 2
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("*.png"):
        old.unlink()
    t0 = time.perf_counter()
    server, base = serve(site)
    pages = site_pages(site)
    failures: dict[str, list[str]] = {}
    ids: dict[str, set[str]] = {}
    anchors: list[tuple[str, str, str]] = []  # (page, target file, fragment)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS + OFFLINE_ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            events: dict[str, list[str]] = {"console": [], "failed": [], "external": []}
            page.on("console", lambda m: m.type == "error" and events["console"].append(
                f"{m.text} (at {m.location.get('url') or 'the page'})"))
            page.on("pageerror", lambda e: events["console"].append(f"uncaught {e}"))
            page.on("requestfailed", lambda r: events["failed"].append(f"{r.url} ({r.failure})"))
            page.on("response", lambda r: r.status >= 400 and events["failed"].append(f"{r.url} ({r.status})"))
            page.on("request", lambda r: r.url.startswith(("http:", "https:")) and not
                    r.url.startswith(base) and events["external"].append(r.url))
            for rel in pages:
                t = time.perf_counter()
                try:
                    problems, info = check_page(page, base, rel, site, events, shots)
                except Exception as err:  # a page that does not load is a failure, not a crash
                    problems, info = [f"{type(err).__name__}: {err}".splitlines()[0]], None
                if info:
                    ids[rel] = set(info["ids"])
                    anchors += [(rel, *target) for href in info["links"]
                                if (target := link_target(href, base, site)) and target[1]
                                and target[0].endswith(".html")]
                failures[rel] = problems
                print(f"[site-check] {'FAIL' if problems else 'ok  '} {rel}: "
                      + (f"{info['nImages']} images, {len(set(info['links']))} links" if info else "not loaded")
                      + f" ({time.perf_counter() - t:.1f} s)", flush=True)
            search_problems, n_results = check_search(page, base, SEARCH_WORD, shots)
            failures["search.html"] = failures.get("search.html", []) + search_problems
            print(f"[site-check] {'FAIL' if search_problems else 'ok  '} search for "
                  f"{SEARCH_WORD!r}: {n_results} result(s)", flush=True)
            browser.close()
    finally:
        server.shutdown()
    for rel, target, fragment in dict.fromkeys(anchors):
        known = ids.get(target)
        if known is not None and fragment not in known:
            failures[rel].append(f"broken anchor: {target}#{fragment} (no element with that id)")
    bad = {rel: problems for rel, problems in failures.items() if problems}
    for rel, problems in bad.items():
        for problem in problems:
            print(f"[site-check] FAILED {rel}: {problem}")
    print(f"[site-check] {len(pages)} pages, {len(pages) - len([r for r in bad if r in pages])} passed, "
          f"{len(bad)} with failures; search {'ok' if not search_problems else 'FAILED'}; "
          f"screenshots in {shots.relative_to(REPO) if shots.is_relative_to(REPO) else shots}; "
          f"{time.perf_counter() - t0:.1f} s")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", type=Path, default=SITE, help="the built site (default build/site)")
    return run(parser.parse_args(argv).site.resolve())


if __name__ == "__main__":
    sys.exit(main())

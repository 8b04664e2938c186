"""The docs site in a real browser, offline: every page's math is typeset and every image loads.

The built site (``tests/_docs_site.py``: built here, or the one ``REFSOFTMAX_DOCS_SITE``
names) is served by ``http.server`` on 127.0.0.1 and opened page by page in headless
Chromium, driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no
port, no extra package).  Chromium resolves no host but 127.0.0.1, so a page that needed
anything from outside (a CDN's MathJax, web fonts) fails here.  After MathJax's startup
promise and the images have settled, each page must have

* no raw TeX in its text outside code (``\\(``, ``\\[``, ``$$``, ``\\frac``, any ``\\command``),
  every ``arithmatex`` element typeset and no MathJax error;
* every ``<img>`` loaded, and no request answered with an error or refused;
* no uncaught script error; at 1280 px no horizontal scrolling of the page, nothing out of
  the text column that does not scroll in its own box (wide tables, code blocks), and no
  name in inline code broken between two of its letters (a break at a space or punctuation
  is fine).

Two pages are screenshot at 1280 × 2000 into ``REFSOFTMAX_CI_LOGS`` (default: a temporary
folder), CI's log folder.  Skipped without Chromium (``REFSOFTMAX_CHROMIUM`` names another
binary) or without mkdocs; ``REFSOFTMAX_REQUIRE_BROWSER=1`` turns the skip into a failure.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests import _docs_site

WIDTH, HEIGHT = 1280, 2000
#: pages screenshot into the CI logs: math and API reference; charts and wide tables
SCREENSHOTS = {"losses/sampled_softmax/": "docs-sampled_softmax.png", "performance/": "docs-performance.png"}
PAGE_TIMEOUT_S = 30.0

# TeX left in the rendered text: delimiters MathJax should have consumed, or any control word
RAW_TEX = re.compile(r"\\[()\[\]]|\$\$|\\[A-Za-z]{2,}")

PROBE = r"""
(async () => {
  const timeout = (ms, what) => new Promise((_, reject) => setTimeout(() => reject(new Error(what + ' timed out')), ms));
  document.querySelectorAll('img[loading="lazy"]').forEach(img => { img.loading = 'eager'; });
  const images = [...document.images];
  const settled = Promise.all(images.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done); img.addEventListener('error', done);
  })));
  let mathjax = null;
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await Promise.race([MathJax.startup.promise, timeout(20000, 'MathJax')]);
    mathjax = MathJax.version;
  }
  await Promise.race([settled, timeout(20000, 'images')]);
  if (document.fonts) await document.fonts.ready;
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('script, style, pre, code, mjx-container').forEach(e => e.remove());
  const arithmatex = [...document.querySelectorAll('.arithmatex')];
  const article = document.querySelector('article') || document.body;
  const right = article.getBoundingClientRect().right;
  // inline code wrapped between two word characters: a name split mid-word
  const breaksInsideAName = code => {
    const walker = document.createTreeWalker(code, NodeFilter.SHOW_TEXT);
    const range = document.createRange();
    let previous = null;  // [character, line top]
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (let i = 0; i < node.length; i++) {
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const rect = range.getBoundingClientRect();
        // a collapsed space at the end of a line has no width: it keeps the line it ends
        const here = [node.data[i], rect.width || !previous ? Math.round(rect.top) : previous[1]];
        if (previous && here[1] > previous[1] + 2 && /\w/.test(previous[0]) && /\w/.test(here[0])) return true;
        previous = here;
      }
    }
    return false;
  };
  const scrolls = e => {  // inside a box that scrolls sideways (code blocks, Material's table wrapper)
    for (let a = e; a && a !== article; a = a.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(a).overflowX)) return true;
    }
    return false;
  };
  return {
    mathjax,
    text: clone.textContent,
    arithmatex: arithmatex.length,
    untypeset: arithmatex.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80)),
    merrors: [...document.querySelectorAll('mjx-merror')].map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 120)),
    images: images.map(img => ({src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0})),
    overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    // (8 px: the padding of inline code wrapped at the end of a line)
    cut: [...article.querySelectorAll('table, pre, code, img, mjx-container')]
      .filter(e => Math.max(0, ...[...e.getClientRects()].map(r => r.right)) > right + 8 && !scrolls(e))
      .map(e => e.tagName.toLowerCase() + ': ' + e.textContent.slice(0, 60)),
    broken_names: [...article.querySelectorAll('code')]
      .filter(c => !c.closest('pre') && c.getClientRects().length > 1 && breaksInsideAName(c))
      .map(c => c.textContent),
  };
})()
"""


def _chromium() -> str | None:
    named = os.environ.get("REFSOFTMAX_CHROMIUM")
    if named:
        return shutil.which(named)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _skip(reason: str) -> None:
    if os.environ.get("REFSOFTMAX_REQUIRE_BROWSER"):
        pytest.fail(f"{reason} (REFSOFTMAX_REQUIRE_BROWSER is set)")
    pytest.skip(reason)


class _Server(http.server.ThreadingHTTPServer):
    """The site on 127.0.0.1 (a free port), recording each request's path and status."""

    daemon_threads = True

    def __init__(self, site: Path) -> None:
        self.statuses: list[tuple[str, int]] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(site), **kwargs)

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                server.statuses.append((self.path, int(code) if str(code).isdigit() else 0))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/"


def _above_9(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class _Browser:
    """Headless Chromium over the DevTools protocol on ``--remote-debugging-pipe`` (fds 3 and 4)."""

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium's ends above fd 9, so that putting them on fds 3 and 4 clobbers neither
        to_chrome_r, from_chrome_w = (_above_9(fd) for fd in (to_chrome_r, from_chrome_w))
        args = [
            "--headless", "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
            "--disable-gpu", "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-sandbox", "--mute-audio",
            f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
            # offline: nothing but the local server resolves
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "about:blank",
        ]
        # bash puts the pipe ends on the fds Chromium expects (dash takes one-digit fds only)
        script = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", script, binary, *args], pass_fds=(to_chrome_r, from_chrome_w),
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self._log.close()

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (status {self.proc.poll()})")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = PAGE_TIMEOUT_S) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float = PAGE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(self._read(deadline))


def _report(problems: dict[str, Any]) -> str:
    return "\n".join(f"{page}: {json.dumps(issue, ensure_ascii=False)[:2000]}" for page, issue in problems.items())


@functools.cache
def _visit_all() -> tuple[dict[str, dict[str, Any]], list[tuple[str, int]], str, Path]:
    """Open every page once; (per-page results, server log, server URL, screenshot folder)."""
    binary = _chromium()
    if binary is None:
        _skip("headless Chromium is not installed (Debian: apt-get install -y chromium)")
    assert binary is not None
    site = _docs_site.built_site()
    logs = Path(os.environ.get("REFSOFTMAX_CI_LOGS") or tempfile.mkdtemp(prefix="refsoftmax-ci-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    server = _Server(site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="refsoftmax-chromium-") as profile:
        browser = _Browser(binary, Path(profile), logs / "docs-chromium.log")
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Network"):
                browser.send(f"{domain}.enable", session=session)
            browser.send("Emulation.setDeviceMetricsOverride",
                         {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}, session=session)
            for page in _docs_site.pages(site):
                rel = page.parent.relative_to(site).as_posix()
                path = "" if rel == "." else rel + "/"
                browser.events.clear()
                browser.send("Page.navigate", {"url": server.url + path}, session=session)
                browser.wait_for("Page.loadEventFired", session)
                probe = browser.send("Runtime.evaluate", {"expression": PROBE, "awaitPromise": True,
                                                          "returnByValue": True}, session=session)
                if "exceptionDetails" in probe:
                    result: dict[str, Any] = {"probe_error": probe["exceptionDetails"].get("exception", {}).get("description")}
                else:
                    result = probe["result"]["value"]
                events = [e for e in browser.events if e.get("sessionId") == session]
                result["exceptions"] = [e["params"]["exceptionDetails"].get("exception", {}).get("description")
                                        or e["params"]["exceptionDetails"].get("text")
                                        for e in events if e.get("method") == "Runtime.exceptionThrown"]
                result["requests"] = [e["params"]["request"]["url"] for e in events
                                      if e.get("method") == "Network.requestWillBeSent"]
                result["failed"] = [e["params"].get("errorText") for e in events
                                    if e.get("method") == "Network.loadingFailed"
                                    and not e["params"].get("canceled")]
                result["bad_status"] = [(e["params"]["response"]["url"], e["params"]["response"]["status"])
                                        for e in events if e.get("method") == "Network.responseReceived"
                                        and e["params"]["response"]["status"] >= 400]
                if path in SCREENSHOTS:
                    shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
                    (logs / SCREENSHOTS[path]).write_bytes(base64.b64decode(shot["data"]))
                results[path or "/"] = result
        finally:
            browser.close()
            server.shutdown()
            server.server_close()
    return results, server.statuses, server.url, logs


@pytest.fixture(scope="module")
def visited() -> tuple[dict[str, dict[str, Any]], list[tuple[str, int]], str, Path]:
    return _visit_all()


def test_every_page_opened(visited):
    results, _, _, _ = visited
    assert len(results) >= 15, sorted(results)
    broken = {page: r["probe_error"] for page, r in results.items() if "probe_error" in r}
    assert not broken, _report(broken)


def test_math_is_typeset_offline(visited):
    results, _, _, _ = visited
    problems = {}
    for page, r in results.items():
        raw = sorted({m.group(0) for m in RAW_TEX.finditer(r.get("text", ""))})
        issue = {k: v for k, v in {"raw TeX in the text": raw, "untypeset": r.get("untypeset"),
                                    "MathJax errors": r.get("merrors")}.items() if v}
        if r.get("arithmatex") and not r.get("mathjax"):
            issue["MathJax"] = "not loaded"
        if issue:
            problems[page] = issue
    assert not problems, _report(problems)
    assert sum(r.get("arithmatex", 0) for r in results.values()) > 100  # the math is really there
    assert {r.get("mathjax") for r in results.values() if r.get("arithmatex")} == {"3.2.2"}


def test_every_image_loads(visited):
    results, statuses, _, _ = visited
    broken = {page: [i["src"] for i in r.get("images", []) if not i["ok"]] for page, r in results.items()}
    broken = {page: srcs for page, srcs in broken.items() if srcs}
    assert not broken, _report(broken)
    assert sum(len(r.get("images", [])) for r in results.values()) >= 10
    assert not [(path, code) for path, code in statuses if code >= 400 and not path.startswith("/favicon")]


def test_nothing_loads_from_outside_and_nothing_fails(visited):
    results, _, url, _ = visited
    problems = {}
    for page, r in results.items():
        outside = [u for u in r.get("requests", []) if not u.startswith((url, "data:", "blob:", "about:"))]
        issue = {k: v for k, v in {"outside": outside, "failed": r.get("failed"),
                                    "status >= 400": r.get("bad_status"),
                                    "script errors": r.get("exceptions")}.items() if v}
        if issue:
            problems[page] = issue
    assert not problems, _report(problems)


def test_layout_at_1280px(visited):
    """No page scrolls sideways, nothing sticks out of the text column unless it scrolls in
    its own box, and no name in inline code is broken between two of its letters."""
    results, _, _, _ = visited
    problems = {}
    for page, r in results.items():
        issue = {k: v for k, v in {"page overflow px": r.get("overflow", 0) > 1 and r["overflow"],
                                    "cut": r.get("cut"), "broken names": r.get("broken_names")}.items() if v}
        if issue:
            problems[page] = issue
    assert not problems, _report(problems)


def test_screenshots_written(visited):
    _, _, _, logs = visited
    for name in SCREENSHOTS.values():
        png = (logs / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name

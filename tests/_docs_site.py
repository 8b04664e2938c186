"""The built docs site, shared by the docs tests (built once per test session).

``REFSOFTMAX_DOCS_SITE`` names a site built already (CI builds it once with
``mkdocs build --strict --site-dir DIR`` and hands DIR to the tests); otherwise the site is
built here into a temporary folder with ``mkdocs build --strict``.  Without mkdocs, or
without the vendored MathJax (``python docs/scripts/fetch_mathjax.py``), the tests that
need the site are skipped — except under CI (``CI`` set), where a missing MathJax fails.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE_ENV = "REFSOFTMAX_DOCS_SITE"


@functools.cache
def _build() -> tuple[Path | None, str]:
    """(site folder, "") or (None, why not); cached, so a failing build runs only once."""
    given = os.environ.get(SITE_ENV)
    if given:
        site = Path(given)
        if not (site / "index.html").is_file():
            return None, f"fail:{SITE_ENV}={given} holds no built site (no index.html)"
        return site, ""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        return None, "skip:mkdocs/mkdocstrings are not installed (pip install -e '.[docs]')"
    if not (ROOT / "docs" / "_vendor" / "mathjax" / ".version").is_file():
        why = "the docs' MathJax is not vendored: run python docs/scripts/fetch_mathjax.py"
        return None, ("fail:" if os.environ.get("CI") else "skip:") + why
    site = Path(tempfile.mkdtemp(prefix="refsoftmax-site-"))
    atexit.register(shutil.rmtree, site, True)
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )
    if out.returncode != 0:
        return None, f"fail:mkdocs build --strict failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return site, ""


def built_site() -> Path:
    """The site's folder; skips or fails the calling test when there is none."""
    site, why = _build()
    if site is None:
        kind, _, reason = why.partition(":")
        if kind == "skip":
            pytest.skip(reason)
        pytest.fail(reason)
    return site


def pages(site: Path) -> list[Path]:
    """Every page of the site (its ``index.html`` files), the vendored MathJax left out."""
    return sorted(
        p for p in site.rglob("index.html")
        if p.relative_to(site).parts[0] not in {"javascripts", "assets", "search"}
    )

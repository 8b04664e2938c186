"""The docs site needs nothing from outside: MathJax is vendored, and a missing copy stops the build.

Browser-free checks (``tests/test_docs_browser.py`` opens the pages in Chromium):

* ``mkdocs.yml`` loads no script or stylesheet by URL, and Material's Google Fonts are off;
* ``docs/hooks/mathjax.py`` fails the build with the fetch command when the vendored MathJax
  is missing or of another version;
* the built site (``tests/_docs_site.py``) has no ``<script src>`` / ``<link href>`` off the
  site, and serves the MathJax its pages load, fonts included.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests import _docs_site

ROOT = Path(__file__).resolve().parents[1]


def _hook():
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location("refsoftmax_docs_hook_mathjax", ROOT / "docs" / "hooks" / "mathjax.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mkdocs_yml_loads_nothing_by_url():
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for key in ("extra_javascript", "extra_css"):
        block = re.search(rf"^{key}:\n((?:[ \t]+.*\n|\n)*)", text, re.M)
        assert block is not None, key
        entries = re.findall(r"^\s+-\s*(\S+)", block.group(1), re.M)
        assert entries and not [e for e in entries if "://" in e or e.startswith("//")], (key, entries)
    assert re.search(r"^  font: false\b", text, re.M), "theme.font: false (no Google Fonts)"


@pytest.mark.parametrize("state", ["missing", "other version"])
def test_hook_fails_the_build_without_the_vendored_mathjax(tmp_path, monkeypatch, state):
    PluginError = pytest.importorskip("mkdocs.exceptions").PluginError

    hook = _hook()
    vendor = tmp_path / "mathjax"
    if state == "other version":
        vendor.mkdir()
        (vendor / hook.fetch_mathjax.ENTRY).write_text("")
        (vendor / hook.fetch_mathjax.STAMP).write_text("2.7.0\n")
    monkeypatch.setattr(hook.fetch_mathjax, "VENDOR", vendor)
    with pytest.raises(PluginError, match=r"python docs/scripts/fetch_mathjax\.py"):
        hook.on_config(None)


def test_built_site_references_nothing_outside():
    site = _docs_site.built_site()
    tags = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)", re.I)
    outside = {}
    for page in [*_docs_site.pages(site), site / "404.html"]:
        urls = [u for u in tags.findall(page.read_text(encoding="utf-8")) if re.match(r"(?:[a-z]+:)?//", u, re.I)]
        if urls:
            outside[page.relative_to(site).as_posix()] = urls
    assert not outside
    mathjax = site / "javascripts" / "mathjax"
    assert (mathjax / "tex-mml-chtml.js").is_file()
    assert len(list((mathjax / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))) > 20
    assert (mathjax / "input" / "tex" / "extensions").is_dir()

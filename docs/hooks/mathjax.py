"""mkdocs hook: the site serves MathJax itself, from the copy ``docs/scripts/fetch_mathjax.py`` vendors.

``mkdocs.yml`` loads ``javascripts/mathjax/tex-mml-chtml.js`` (``extra_javascript``); this
hook copies ``docs/_vendor/mathjax/`` (the pinned MathJax's ``es5/`` folder, with its
fonts and autoloaded TeX extensions) to ``<site>/javascripts/mathjax/`` after each build,
so the pages typeset their math without any network.  When the vendored copy is missing or
of another version the build stops at once with the command that fetches it: a site whose
math would stay raw LaTeX is never built.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

_FETCH = Path(__file__).resolve().parents[1] / "scripts" / "fetch_mathjax.py"
_spec = importlib.util.spec_from_file_location("refsoftmax_docs_fetch_mathjax", _FETCH)
assert _spec is not None and _spec.loader is not None
fetch_mathjax = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fetch_mathjax)

#: where the vendored files go in the built site (``extra_javascript`` points below it)
SITE_PATH = "javascripts/mathjax"


def on_config(config: Any, **kwargs: Any) -> Any:
    found = fetch_mathjax.installed_version(fetch_mathjax.VENDOR)
    if found != fetch_mathjax.VERSION:
        state = "is missing" if found is None else f"is version {found}, not the pinned {fetch_mathjax.VERSION}"
        raise PluginError(
            f"MathJax for the docs {state} ({fetch_mathjax.VENDOR}); the site would show raw LaTeX. "
            "Fetch it with: python docs/scripts/fetch_mathjax.py"
        )
    wanted = f"{SITE_PATH}/{fetch_mathjax.ENTRY}"
    if not any(str(script) == wanted for script in config.extra_javascript):
        raise PluginError(f"mkdocs.yml's extra_javascript must load the vendored MathJax, {wanted}")
    return config


def on_post_build(config: Any, **kwargs: Any) -> None:
    dest = Path(config.site_dir) / SITE_PATH
    shutil.copytree(fetch_mathjax.VENDOR, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(fetch_mathjax.STAMP))

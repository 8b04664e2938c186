"""The API reference renders its numpydoc docstrings as intended.

* the built site (``tests/_docs_site.py``) shows no reST markup — double-backtick literals,
  roles such as ``:func:`` or ``:math:``, ``.. math::`` directives — in its text, inline
  code included; only code blocks (``<pre>``) may hold such text;
* every item section the pages render parses into items: a Returns/Yields section with
  several items has a description for each (a reST paragraph under ``Returns`` without a
  type line reads as several nameless, description-less types);
* the griffe extension (``docs/scripts/griffe_rst_math.py``) turns the reST markup of an
  item's type into plain text and leaves descriptions as Markdown.
"""

from __future__ import annotations

import html
import importlib.util
import re
from pathlib import Path

import pytest

from tests import _docs_site

ROOT = Path(__file__).resolve().parents[1]
_PATH = ROOT / "docs" / "scripts" / "griffe_rst_math.py"

RST = re.compile(r"``|:(?:py:)?(?:func|class|math|mod|meth|attr|data|exc|obj|ref|doc):`|\.\. math::")
_BLOCKS = re.compile(r"<(script|style|pre|textarea)\b.*?</\1>", re.S | re.I)
_TAGS = re.compile(r"<[^>]+>")


def _extension():
    spec = importlib.util.spec_from_file_location("griffe_rst_math_api", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_item_types_lose_their_rest_markup():
    pytest.importorskip("griffe")
    convert = _extension().rst_to_markdown
    text = "\n".join([
        "Summary with ``code``.",
        "",
        "Parameters",
        "----------",
        "weights : ``[C, D]`` float array",
        "    The ``weights``; see :func:`~refsoftmax.softmax.softmax`.",
        "mask : boolean array ``[..., C]``, the terms :math:`M`",
        "sampler : :class:`~refsoftmax.samplers.CandidateSampler`, optional",
        "",
        "Returns",
        "-------",
        "array ``[B]`` or scalar",
        "    Per-example losses ``[B]``.",
        "",
        "Notes",
        "-----",
        "weights : ``not an item`` here",
    ])
    out = convert(text).split("\n")
    assert out[0] == "Summary with ``code``."
    assert out[4] == "weights : [C, D] float array"
    assert out[5] == "    The ``weights``; see `softmax`."
    assert out[6] == "mask : boolean array [..., C], the terms M"
    assert out[7] == "sampler : CandidateSampler, optional"
    assert out[11] == "array [B] or scalar"
    assert out[12] == "    Per-example losses ``[B]``."
    assert out[16] == "weights : ``not an item`` here"


def _documented_paths() -> list[str]:
    paths = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        paths += re.findall(r"^::: *([\w.]+)", page.read_text(encoding="utf-8"), re.M)
    return paths


def test_item_sections_parse_into_items():
    griffe = pytest.importorskip("griffe")
    paths = _documented_paths()
    assert len(paths) > 30
    extensions = griffe.load_extensions(f"{_PATH}:RstMath")
    loader = griffe.GriffeLoader(
        search_paths=[str(ROOT)], extensions=extensions, docstring_parser=griffe.Parser.numpy,
        docstring_options={"warn_unknown_params": False},
    )
    package = loader.load("refsoftmax")
    problems = []

    def visit(obj) -> None:
        if obj.docstring is not None:
            for section in obj.docstring.parsed:
                items = section.value if isinstance(section.value, list) else []
                if section.kind.value in {"returns", "yields", "receives"} and len(items) > 1:
                    problems.extend(f"{obj.path}: {section.kind.value} item {str(i.annotation)!r} has no description"
                                    for i in items if not i.description.strip())
                for item in items:
                    annotation = str(getattr(item, "annotation", "") or "")
                    if "`" in annotation or ":math:" in annotation:
                        problems.append(f"{obj.path}: type {annotation!r} keeps reST markup")
        for name, member in obj.members.items():
            if not member.is_alias and not name.startswith("_") and (member.is_class or member.is_function
                                                                     or member.is_attribute):
                visit(member)

    for path in paths:
        visit(package[path.removeprefix("refsoftmax.")] if path != "refsoftmax" else package)
    assert not problems, "\n".join(problems)


def test_built_site_shows_no_rest_markup():
    site = _docs_site.built_site()
    pages = _docs_site.pages(site)
    assert len(pages) >= 15
    found = {}
    for page in pages:
        text = html.unescape(_TAGS.sub(" ", _BLOCKS.sub(" ", page.read_text(encoding="utf-8"))))
        hits = [text[max(0, m.start() - 40): m.end() + 40].replace("\n", " ") for m in RST.finditer(text)]
        if hits:
            found[page.parent.relative_to(site).as_posix()] = hits[:5]
    assert not found, "\n".join(f"{page}: {hits}" for page, hits in found.items())

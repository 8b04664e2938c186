"""The docs' griffe extension turns the docstrings' reST math into Markdown math."""

from __future__ import annotations

import importlib.util
import inspect
import pkgutil
from pathlib import Path

import pytest

pytest.importorskip("griffe")

import refsoftmax

_PATH = Path(__file__).resolve().parent.parent / "docs" / "scripts" / "griffe_rst_math.py"
_spec = importlib.util.spec_from_file_location("griffe_rst_math", _PATH)
assert _spec is not None and _spec.loader is not None
griffe_rst_math = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(griffe_rst_math)
convert = griffe_rst_math.rst_to_markdown


def test_inline_role_and_cross_references():
    text = "with :math:`p_c = e^{z_c}/s` see :func:`~refsoftmax.softmax.softmax` and :class:`a.B`"
    assert convert(text) == r"with \(p_c = e^{z_c}/s\) see `softmax` and `a.B`"


def test_directive_one_line_and_block_with_two_equations():
    text = "\n".join([
        "Intro",
        "",
        "    .. math:: a = b",
        "",
        "    .. math::",
        "",
        "        x = 1",
        "        + 2",
        "",
        "        y = 3",
        "",
        "    after",
    ])
    out = convert(text).split("\n")
    assert out[:3] == ["Intro", "", r"    \["]
    assert r"    \[" in out and r"    \]" in out
    blocks = "\n".join(out).split(r"\[")[1:]
    assert [b.split(r"\]")[0].split() for b in blocks] == [["a", "=", "b"], ["x", "=", "1", "+", "2"], ["y", "=", "3"]]
    assert out[-1] == "    after"


def test_every_docstring_of_the_package_converts_completely():
    seen = 0
    for info in pkgutil.walk_packages(refsoftmax.__path__, "refsoftmax."):
        if ".conformance" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in [module, *vars(module).values()]:
            doc = inspect.getdoc(obj) if getattr(obj, "__module__", module.__name__) == module.__name__ else None
            if not doc or (":math:" not in doc and ".. math::" not in doc):
                continue
            seen += 1
            out = convert(doc)
            assert ":math:" not in out and ".. math::" not in out, (info.name, obj)
            assert out.count(r"\[") == out.count(r"\]") and out.count(r"\(") == out.count(r"\)")
    assert seen > 20

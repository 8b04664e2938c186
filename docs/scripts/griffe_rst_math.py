"""A griffe extension: render the numpydoc (reST) markup of refsoftmax's docstrings as Markdown.

The docstrings follow numpydoc, as NumPy and SciPy do, so ``help()``, IDEs
and Sphinx read them unchanged.  mkdocstrings renders docstrings as Markdown,
where reST markup would show up verbatim; at build time this extension
rewrites, in each docstring it loads:

* ``:math:`x``` → ``\\(x\\)`` and a ``.. math::`` directive (one line, or
  the indented block after it) → a ``\\[ ... \\]`` display block, which
  ``pymdownx.arithmatex`` hands to MathJax like the math on the pages;
* ``:func:`~a.b.c``` (and ``:class:``, ``:mod:``, ``:meth:``, ``:attr:``,
  ``:data:``, ``:exc:``) → inline code ``c`` (``a.b.c`` without ``~``).

Configured in ``mkdocs.yml`` (``extensions:`` of the python handler).  The
docstrings themselves are never changed.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_XREF_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj):`(~?)([^`]+)`")
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")


def _xref(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _display_blocks(text: str) -> str:
    """Each ``.. math::`` directive as ``\\[ ... \\]`` at the directive's indentation."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent = match.group("indent")
        equations: list[list[str]] = [[match.group("rest").strip()] if match.group("rest").strip() else []]
        i += 1
        # the directive's content: the following lines indented deeper; reST separates
        # equations by blank lines, and each becomes its own display block
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
            if lines[i].strip():
                equations[-1].append(lines[i].strip())
            elif equations[-1]:
                equations.append([])
            i += 1
        for eq in (e for e in equations if e):
            out.extend([indent + r"\[", *(indent + line for line in eq), indent + r"\]", ""])
    return "\n".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST math and cross-reference roles in Markdown."""
    text = _display_blocks(text)
    text = _MATH_ROLE.sub(lambda m: rf"\({m.group(1)}\)", text)
    return _XREF_ROLE.sub(_xref, text)


class RstMath(Extension):
    """Rewrite every loaded docstring with :func:`rst_to_markdown`."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)

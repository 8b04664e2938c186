"""A griffe extension: render the numpydoc (reST) markup of refsoftmax's docstrings as Markdown.

The docstrings follow numpydoc, as NumPy and SciPy do, so ``help()``, IDEs
and Sphinx read them unchanged.  mkdocstrings renders docstrings as Markdown,
where reST markup would show up verbatim; at build time this extension
rewrites, in each docstring it loads:

* ``:math:`x``` → ``\\(x\\)`` and a ``.. math::`` directive (one line, or
  the indented block after it) → a ``\\[ ... \\]`` display block, which
  ``pymdownx.arithmatex`` hands to MathJax like the math on the pages;
* ``:func:`~a.b.c``` (and ``:class:``, ``:mod:``, ``:meth:``, ``:attr:``,
  ``:data:``, ``:exc:``) → inline code ``c`` (``a.b.c`` without ``~``);
* in the type of a Parameters/Returns/Yields/Raises/Attributes item (the ``name : type``
  line), reST literals, math and roles → plain text: mkdocstrings shows the type as
  code already, where a literal would keep its double backticks.  (In descriptions a
  reST literal is a Markdown code span as it stands.)

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


_LITERAL = re.compile(r"``([^`]+)``|`([^`]+)`")
_UNDERLINE = re.compile(r"[ \t]*-{3,}[ \t]*")
# numpydoc sections whose items start with a "name : type" (or a bare "type") line
_ITEM_SECTIONS = {"parameters", "other parameters", "returns", "yields", "receives",
                  "raises", "warns", "attributes"}
_TYPE_ONLY_SECTIONS = {"returns", "yields", "receives", "raises", "warns"}


def _xref_target(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return target.rsplit(".", 1)[-1] if short else target


def _xref(match: re.Match[str]) -> str:
    return f"`{_xref_target(match)}`"


def _plain_type(text: str) -> str:
    """A numpydoc type with its reST markup removed: ``:math:`M``` → M, roles → their target,
    literals → their text."""
    text = _MATH_ROLE.sub(lambda m: m.group(1), text)
    text = _XREF_ROLE.sub(_xref_target, text)
    return _LITERAL.sub(lambda m: m.group(1) or m.group(2), text)


def _item_types(text: str) -> str:
    """Each item line (``name : type``, or ``type`` in Returns-like sections) of the item
    sections with its type as plain text."""
    lines = text.split("\n")
    section, base = None, 0
    for i, line in enumerate(lines):
        if (i + 1 < len(lines) and line.strip() and _UNDERLINE.fullmatch(lines[i + 1])
                and _indent(lines[i + 1]) == _indent(line)):
            section, base = line.strip().lower(), _indent(line)
            continue
        if section not in _ITEM_SECTIONS or not line.strip() or _indent(line) != base:
            continue
        if _UNDERLINE.fullmatch(line):
            continue
        name, sep, kind = line.partition(" : ")
        if sep:
            lines[i] = name + sep + _plain_type(kind)
        elif section in _TYPE_ONLY_SECTIONS:
            lines[i] = _plain_type(line)
    return "\n".join(lines)


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
    text = _item_types(text)
    text = _display_blocks(text)
    text = _MATH_ROLE.sub(lambda m: rf"\({m.group(1)}\)", text)
    return _XREF_ROLE.sub(_xref, text)


class RstMath(Extension):
    """Rewrite every loaded docstring with :func:`rst_to_markdown`."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)

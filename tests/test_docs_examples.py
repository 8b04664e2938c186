"""Every example output printed in the docs is what the code prints.

The docs show an example as a fenced ```` ```python ```` block followed (with only blank
lines between) by a fenced ```` ```text ```` block holding what the python block prints.
For each page, the python blocks are executed **in order, in one namespace**, with stdout
captured, and the output of every python block must equal its ```` ```text ```` block
(exact string comparison after stripping trailing whitespace from every line and trailing
blank lines).  Top-level statements run one at a time; a statement that raises prints
``ExceptionType: message``, as an interactive session would, and the block goes on (so a
page can show an error).  Expressions are **not** echoed: an example shows output with
``print``.  A python block with no ```` ```text ```` block after it must print nothing.

The pages checked: the loss pages listed in :data:`REQUIRED` (each must contain at least
one python/text pair) and every other page under ``docs/`` that contains one.  Pages whose
blocks cannot run as they are here go in :data:`SKIP`, with the reason.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: Pages that must hold at least one python/text pair (their outputs are checked).
REQUIRED = (
    "losses/nce.md",
    "losses/linear_softmax_cross_entropy.md",
    "losses/am_softmax.md",
    "losses/temperature_softmax.md",
    "losses/sampled_softmax.md",
    "nan_policy.md",
)

#: ``{page: reason}`` for pages whose python blocks cannot run as they are here
#: (a GPU, a peer library that is not installed, ...).  Keep it small and explicit.
SKIP: dict[str, str] = {}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`]*)[^\n`]*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: its language, its text (dedented) and first line number."""

    lang: str
    code: str
    line: int


@dataclass(frozen=True)
class Example:
    """A python block and the text block that follows it (``None``: nothing may be printed)."""

    code: Block
    output: Block | None


def fenced_blocks(text: str) -> list[tuple[Block, int]]:
    """The fenced blocks of a Markdown page, each with the line index just past its closing fence."""
    lines = text.split("\n")
    out: list[tuple[Block, int]] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m["indent"], m["fence"], m["info"].lower()
        close = re.compile(rf"^{re.escape(indent)}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j == len(lines):
            msg = f"unclosed fence opened at line {i + 1}"
            raise ValueError(msg)
        body = "\n".join(ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1:j])
        out.append((Block(lang, textwrap.dedent(body), i + 1), j + 1))
        i = j + 1
    return out


def examples(text: str) -> list[Example]:
    """The python blocks of a page, each paired with the text block right after it, if any."""
    lines = text.split("\n")
    blocks = fenced_blocks(text)
    result = []
    for k, (block, end) in enumerate(blocks):
        if block.lang not in ("python", "py"):
            continue
        output = None
        if k + 1 < len(blocks):
            nxt, _ = blocks[k + 1]
            between = lines[end:nxt.line - 1]
            if nxt.lang == "text" and all(not ln.strip() for ln in between):
                output = nxt
        result.append(Example(block, output))
    return result


def normalise(text: str) -> str:
    """Trailing whitespace stripped from every line, trailing blank lines dropped."""
    return "\n".join(ln.rstrip() for ln in text.rstrip().split("\n")) if text.strip() else ""


def run_block(code: str, namespace: dict, filename: str) -> str:
    """Execute ``code`` statement by statement in ``namespace``; return what it printed."""
    tree = ast.parse(code, filename=filename)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        for statement in tree.body:
            module = ast.Module(body=[statement], type_ignores=[])
            try:
                exec(compile(module, filename, "exec"), namespace)
            except Exception as e:  # shown like an interactive session
                print(traceback.format_exception_only(type(e), e)[-1].rstrip())
    return buffer.getvalue()


def _pages() -> list[str]:
    found = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")
             if any(ex.output is not None for ex in examples(p.read_text(encoding="utf-8")))}
    return sorted(found | set(REQUIRED))


PAGES = _pages()


def test_required_pages_have_checked_examples() -> None:
    for page in REQUIRED:
        path = DOCS / page
        assert path.exists(), page
        assert any(ex.output is not None for ex in examples(path.read_text(encoding="utf-8"))), (
            f"{page} has no python block followed by a text block")
    for page in SKIP:
        assert (DOCS / page).exists(), f"SKIP names {page}, which does not exist"


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_print_what_the_page_shows(page: str) -> None:
    if page in SKIP:
        pytest.skip(SKIP[page])
    text = (DOCS / page).read_text(encoding="utf-8")
    namespace: dict = {"__name__": "docs_example_" + re.sub(r"\W", "_", page)}
    options = np.get_printoptions()
    failures = []
    try:
        for ex in examples(text):
            where = f"{page}:{ex.code.line}"
            got = normalise(run_block(ex.code.code, namespace, where))
            want = normalise(ex.output.code) if ex.output is not None else ""
            if got != want:
                failures.append(f"--- {where}: the python block prints\n{got}\n"
                                f"--- but the page shows{'' if ex.output else ' no text block'}\n{want}")
    finally:
        np.set_printoptions(**options)
    assert not failures, "\n\n".join(failures)


def test_a_wrong_digit_is_caught() -> None:
    page = (
        "```python\nprint(round(2 / 3, 4))\n```\n\n```text\n0.6667\n```\n"
        "```python\nx = 1\n```\n"
        "    ```python\n    print(x + 1); int('a')\n    ```\n\n    ```text\n    2\n"
        "    ValueError: invalid literal for int() with base 10: 'a'\n    ```\n"
    )
    namespace: dict = {}
    outputs = [normalise(run_block(ex.code.code, namespace, "t")) for ex in examples(page)]
    expected = [normalise(ex.output.code) if ex.output else "" for ex in examples(page)]
    assert outputs == expected
    wrong = page.replace("0.6667", "0.6668")
    ex = examples(wrong)[0]
    assert ex.output is not None
    assert normalise(run_block(ex.code.code, {}, "t")) != normalise(ex.output.code)

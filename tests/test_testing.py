"""``refsoftmax.testing.assert_conforms`` and the worked example of ``docs/ci.md``.

The page includes ``docs/examples/ci_example*.py`` with pymdownx snippets, so its code is those
files; here they are run, and the failure message the page shows must match the real one
(``...`` in the page stands for any text, as in a doctest with ``ELLIPSIS``).
"""

from __future__ import annotations

import doctest
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import refsoftmax
from refsoftmax.testing import assert_conforms

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "ci.md"
EXAMPLES = ("docs/examples/ci_example.py", "docs/examples/ci_example_buggy.py")


def _fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def _example(path: str) -> ModuleType:
    """The example file imported as a module named after it (as pytest would import a test file)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _strip(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def wraps_negative_labels(logits: Any, labels: Any, reduction: str = "none") -> Any:
    z = logits - logits.max(-1, keepdims=True)
    out = np.log(np.exp(z).sum(-1)) - z[np.arange(len(z)), labels]
    return out.mean() if reduction == "mean" else out.sum() if reduction == "sum" else out


def test_a_conforming_function_returns_its_report() -> None:
    report = assert_conforms(refsoftmax.sparse_softmax_cross_entropy, max_examples=2,
                             library="mine", options=("reduction", "ignore_index"))
    assert report.ok and report.library == "mine"
    assert {r.status for r in report.results} <= {"pass", "convention", "skipped"}


def test_a_failure_lists_the_summary_and_every_reproducer() -> None:
    report = refsoftmax.conformance.certify(wraps_negative_labels, max_examples=2)
    bad = [r for r in report.results if r.status in ("fail", "error")]
    assert bad, "the example should fail on the label -1 and on leading dims"
    with pytest.raises(AssertionError) as info:
        assert_conforms(wraps_negative_labels, max_examples=2)
    message = str(info.value)
    assert message.startswith(f"wraps_negative_labels does not conform: {len(bad)} of "
                              f"{len(report.results)} cases fail or error")
    assert report.summary_text() in message
    for r in bad:
        assert r.reproducer and r.reproducer in message
        assert f"# {r.status.upper()} {r.function} / {r.case}: " in message


def test_certify_arguments_are_passed_through() -> None:
    with pytest.raises(ValueError, match="not options of"):
        assert_conforms(refsoftmax.sparse_softmax_cross_entropy, options=("no_such_option",))


def test_the_page_includes_the_example_files() -> None:
    blocks = [_strip(b) for b in _fenced(PAGE.read_text(encoding="utf-8"), "python")]
    assert blocks == [f'--8<-- "{path}"' for path in EXAMPLES]
    for path in EXAMPLES:
        assert (ROOT / path).is_file()


def test_the_worked_example_passes() -> None:
    pytest.importorskip("torch")
    _example(EXAMPLES[0]).test_my_ce_conforms()


def test_the_buggy_example_fails_with_the_message_the_page_shows() -> None:
    pytest.importorskip("torch")
    test = _example(EXAMPLES[1]).test_buggy_ce_conforms
    with pytest.raises(AssertionError) as info:
        test()
    (shown,) = _fenced(PAGE.read_text(encoding="utf-8"), "text")
    got = _strip(str(info.value)) + "\n"
    checker = doctest.OutputChecker()
    assert checker.check_output(_strip(shown) + "\n", got, doctest.ELLIPSIS), (
        f"docs/ci.md shows\n{shown}\nbut the message is\n{got}")

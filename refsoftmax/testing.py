"""Test helpers: certify your own loss inside your test suite (``docs/ci.md``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from refsoftmax.conformance import Report, certify

__all__ = ["assert_conforms"]

_BAD = ("fail", "error")


def assert_conforms(fn: Callable[..., Any], **certify_kwargs: Any) -> Report:
    """Certify ``fn`` against the reference and raise ``AssertionError`` on any disagreement.

    Parameters
    ----------
    fn : callable
        A function with the reference signature of the loss, as for
        :func:`refsoftmax.conformance.certify`.
    **certify_kwargs
        Passed to :func:`refsoftmax.conformance.certify`: ``loss``,
        ``framework``, ``options``, ``conventions``, ``max_examples`` ...

    Returns
    -------
    Report
        The report, when every case passes, follows a declared convention or
        is skipped.

    Raises
    ------
    AssertionError
        When a case fails or errors; the message is the report's summary
        followed by the reproducer of every failing and erroring case (a
        script headed by a comment naming the case and what went wrong).

    Examples
    --------
    >>> import refsoftmax
    >>> from refsoftmax.testing import assert_conforms
    >>> report = assert_conforms(refsoftmax.sparse_softmax_cross_entropy, max_examples=2)
    >>> report.ok
    True
    """
    __tracebackhide__ = True  # pytest shows the failing test, not this frame
    report = certify(fn, **certify_kwargs)
    bad = [r for r in report.results if r.status in _BAD]
    if not bad:
        return report
    lines = [f"{report.library} does not conform: {len(bad)} of {len(report.results)} cases "
             f"fail or error (seed {report.seed}, max_examples {report.max_examples})",
             "", report.summary_text(), "", "Reproducers:"]
    for r in bad:  # each a script to paste, headed by the case's outcome as a comment
        lines += ["", f"# {r.status.upper()} {r.function} / {r.case}: {r.message}".replace("\n", "\n# "),
                  r.reproducer or "# (no reproducer)"]
    raise AssertionError("\n".join(lines))

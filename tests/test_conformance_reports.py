"""The checked-in certification (conformance/reports) must still describe the installed libraries.

For every library whose report is checked in and which is installed *at the
certified version*, the certification is re-run on the first random cases
(all curated cases, fewer random ones — their names and inputs are identical
because the case stream is seeded) and every outcome must match the report.  The
certification is the session's shared one (``certified`` in ``tests/conftest.py``), which
the library's own outcome tests read too: each library is certified once per session.
A changed outcome means either refsoftmax or the library changed: regenerate
with ``python conformance/run.py`` and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refsoftmax.conformance import adapters

REPORTS = Path(__file__).resolve().parents[1] / "conformance" / "reports"
CHECKED = sorted(p.stem for p in REPORTS.glob("*.json"))


@pytest.mark.parametrize("library", CHECKED)
def test_outcomes_unchanged(library, certified):
    saved = json.loads((REPORTS / f"{library}.json").read_text())
    module = adapters.load(library)
    if not module.available():
        pytest.skip(f"{library} is not installed")
    if module.version() != saved["version"]:
        pytest.skip(f"{library} {module.version()} installed, report is for {saved['version']}")
    if saved["seed"] != 0:  # the shared certification (tests/conftest.py) is seeded 0
        pytest.fail(f"{library}'s report was made with seed {saved['seed']}; regenerate it with seed 0")
    report = certified(library)  # the same certification the library's own tests read
    expected = {(r["function"], r["case"]): r["status"] for r in saved["results"]}
    changed = []
    for r in report.results:
        key = (r.function, r.case)
        if key in expected and expected[key] != r.status:
            changed.append(f"{r.function} / {r.case}: {expected[key]} -> {r.status} ({r.message})")
    assert not changed, "outcomes changed:\n" + "\n".join(changed)
    assert any((r.function, r.case) in expected for r in report.results), "no case of the report was re-run"

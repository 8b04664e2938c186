"""The checked-in certification (conformance/reports) must still describe the installed libraries.

For every library whose report is checked in and which is installed *at the
certified version*, the certification is re-run on the first random cases
(all curated cases, fewer random ones — their names and inputs are identical
because the case stream is seeded) and every outcome must match the report.
A changed outcome means either refsoftmax or the library changed: regenerate
with ``python conformance/run.py`` and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refsoftmax import conformance
from refsoftmax.conformance import adapters

REPORTS = Path(__file__).resolve().parents[1] / "conformance" / "reports"
CHECKED = sorted(p.stem for p in REPORTS.glob("*.json"))
MAX_EXAMPLES = 3


@pytest.mark.parametrize("library", CHECKED)
def test_outcomes_unchanged(library):
    saved = json.loads((REPORTS / f"{library}.json").read_text())
    module = adapters.load(library)
    if not module.available():
        pytest.skip(f"{library} is not installed")
    if module.version() != saved["version"]:
        pytest.skip(f"{library} {module.version()} installed, report is for {saved['version']}")
    report = conformance.certify_library(library, seed=saved["seed"], max_examples=MAX_EXAMPLES)
    expected = {(r["function"], r["case"]): r["status"] for r in saved["results"]}
    changed = []
    for r in report.results:
        key = (r.function, r.case)
        if key in expected and expected[key] != r.status:
            changed.append(f"{r.function} / {r.case}: {expected[key]} -> {r.status} ({r.message})")
    assert not changed, "outcomes changed:\n" + "\n".join(changed)
    assert any((r.function, r.case) in expected for r in report.results), "no case of the report was re-run"

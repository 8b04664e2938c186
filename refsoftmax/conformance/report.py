"""Conformance reports: JSON, Markdown and a terminal summary."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from refsoftmax.conformance.engine import FD_TOLERANCE, TOLERANCES, CaseResult

__all__ = ["STATUSES", "Report"]

STATUSES = ("pass", "convention", "fail", "error", "skipped")


@dataclass
class Report:
    """The certificate of one library (or one user function)."""

    library: str
    version: str
    backend: str
    results: list[CaseResult] = field(default_factory=list)
    seed: int = 0
    max_examples: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every case passed, followed a declared convention, or was skipped."""
        return not any(r.status in ("fail", "error") for r in self.results)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{function: {status: count}}``."""
        out: dict[str, Counter[str]] = {}
        for r in self.results:
            out.setdefault(r.function, Counter())[r.status] += 1
        return {f: {s: c[s] for s in STATUSES} for f, c in out.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "library": self.library,
            "version": self.version,
            "backend": self.backend,
            "seed": self.seed,
            "max_examples": self.max_examples,
            "tolerances": {"value_and_gradient_rtol": TOLERANCES, "finite_difference": FD_TOLERANCE},
            "notes": self.notes,
            "results": [r.as_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """The report :meth:`as_dict` (or :meth:`to_json`) wrote, e.g. in a subprocess.

        Errors written as ``null`` (not finite) come back as ``inf``; case tags and
        ``seconds``, which are not written, come back empty.
        """
        names = {f.name for f in fields(CaseResult)}
        results = []
        for entry in data.get("results", []):
            kw = {k: v for k, v in entry.items() if k in names}
            for k in ("max_abs_error", "max_rel_error"):
                kw[k] = math.inf if kw.get(k) is None else float(kw[k])
            kw["tags"] = tuple(kw.get("tags", ()))
            results.append(CaseResult(**kw))
        return cls(data["library"], data.get("version", ""), data.get("backend", "numpy"), results=results,
                   seed=data.get("seed", 0), max_examples=data.get("max_examples", 0),
                   notes=list(data.get("notes", [])))

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, allow_nan=False)

    def summary_rows(self) -> list[tuple[str, ...]]:
        rows = []
        for function, c in self.counts().items():
            rows.append((self.library, function, *(str(c[s]) for s in STATUSES)))
        return rows

    def to_markdown(self) -> str:
        lines = [
            f"# Conformance report: {self.library} {self.version}",
            "",
            f"Reference backend: {self.backend}; seed {self.seed}; {self.max_examples} random cases per loss "
            f"and dtype; {len(self.results)} cases in all.",
            "",
            "Tolerances (relative, per dtype of the candidate's inputs): "
            + ", ".join(f"{k} {v:g}" for k, v in TOLERANCES.items())
            + f"; finite-difference checks {FD_TOLERANCE:g} (float64 cases).",
            "",
        ]
        lines += [f"- {n}" for n in self.notes]
        lines += ["", "| function | " + " | ".join(STATUSES) + " |", "|---|" + "---:|" * len(STATUSES)]
        for function, c in self.counts().items():
            lines.append(f"| `{function}` | " + " | ".join(str(c[s]) for s in STATUSES) + " |")
        for status, title in (("fail", "Failures"), ("error", "Errors"), ("convention", "Conventions"),
                              ("skipped", "Skipped")):
            picked = [r for r in self.results if r.status == status]
            if not picked:
                continue
            lines += ["", f"## {title}", ""]
            for r in picked:
                lines.append(f"- `{r.function}` / `{r.case}`: {r.message}")
                if r.reproducer and status in ("fail", "error"):
                    lines += ["", "  ```python", *("  " + x for x in r.reproducer.splitlines()), "  ```", ""]
        return "\n".join(lines) + "\n"

    def summary_text(self) -> str:
        """A plain-text summary table, full names at any width (a pipe, a CI log, no ``rich``)."""
        header = ("library", "version", "function", *STATUSES)
        rows = [header, *((r[0], self.version, *r[1:]) for r in self.summary_rows())]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        out += [f"  note: {n}" for n in self.notes]
        bad = [r for r in self.results if r.status in ("fail", "error")]
        for r in bad[:10]:
            out.append(f"  {r.status.upper()} {r.function} / {r.case}: {r.message}")
        if len(bad) > 10:
            out.append(f"  ... and {len(bad) - 10} more (see the JSON or Markdown report)")
        return "\n".join(out)

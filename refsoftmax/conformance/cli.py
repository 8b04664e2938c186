"""``refsoftmax certify``: the command line of the conformance suite.

Exit status: 0 when every case passes, follows a declared convention or is
skipped; 1 when any case fails or errors; 2 on bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from refsoftmax import __version__

    p = argparse.ArgumentParser(prog="refsoftmax", description="Reference softmax losses and their conformance suite.")
    p.add_argument("--version", action="version", version=f"refsoftmax {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser(
        "certify",
        help="certify libraries' softmax losses against the reference",
        description="Certify libraries' softmax losses against the reference and finite differences. "
        "With no LIBRARY and no --impl, every supported library that is installed is certified.",
    )
    c.add_argument("libraries", nargs="*", metavar="LIBRARY", help="e.g. torch tensorflow optax keras entmax")
    c.add_argument("--impl", metavar="MODULE:FUNCTION", help="certify your own function (reference signature)")
    c.add_argument("--loss", default="sparse_softmax_cross_entropy", help="reference loss of --impl")
    c.add_argument("--framework", default="numpy", help="framework of --impl: numpy, torch, tensorflow, jax")
    c.add_argument("--options", default="reduction",
                   help="comma-separated reference options --impl accepts (default: reduction)")
    c.add_argument("--wrt", default=None, metavar="A,B",
                   help="array arguments of --impl whose gradients are compared (default: the "
                        "reference's differentiable ones, e.g. logits; features,weights for am_softmax_loss)")
    c.add_argument("--conventions", default="", metavar="KEY=VALUE,...",
                   help="reference options reproducing --impl's conventions, e.g. "
                        "label_smoothing_mode=others,mean_denominator=count")
    c.add_argument("--dtypes", default=None, metavar="D,D",
                   help="dtypes to certify --impl in (default: float64,float32,float16,bfloat16)")
    c.add_argument("--library", default=None, help="library name the report of --impl carries")
    c.add_argument("--library-version", default=None, help="version the report of --impl carries")
    c.add_argument("--backend", default="numpy", help="backend the reference runs on: numpy, torch, cupy")
    c.add_argument("--json", type=Path, metavar="PATH", help="write the JSON report (a folder for several)")
    c.add_argument("--markdown", type=Path, metavar="PATH", help="write the Markdown report (a folder for several)")
    c.add_argument("--max-examples", type=int, default=20, metavar="N", help="random cases per loss and dtype")
    c.add_argument("--seed", type=int, default=0, metavar="N")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class _Progress:
    """A rich progress bar when rich is installed and stderr is a terminal, else nothing."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._task: Any = None
        if enabled and sys.stderr.isatty():
            try:
                from rich.progress import Progress
            except ImportError:
                return
            self._bar = Progress(transient=True)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def __call__(self, done: int, total: int, label: str) -> None:
        if self._bar is None:
            return
        if self._task is None:
            self._task = self._bar.add_task(label, total=total)
        self._bar.update(self._task, completed=done, total=total, description=label[:60])
        if done == total:
            self._task = None


def _print_summary(reports: list[Any]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for r in reports:
            print(r.summary_text())
            print(f"({len(r.results)} cases, {r.seconds:.1f} s)\n")
        return
    from rich.markup import escape

    from refsoftmax.conformance.report import STATUSES

    table = Table(title="refsoftmax conformance")
    for col in ("library", "version", "function", *STATUSES):
        table.add_column(col, justify="right" if col in STATUSES else "left")
    for r in reports:
        for function, c in r.counts().items():
            cells = [str(c[s]) for s in STATUSES]
            if c["fail"] or c["error"]:
                cells[2] = f"[bold red]{cells[2]}[/]"
                cells[3] = f"[bold red]{cells[3]}[/]"
            table.add_row(escape(r.library), escape(r.version), escape(function), *cells)
    console = Console()
    console.print(table)
    for r in reports:
        bad = [x for x in r.results if x.status in ("fail", "error")]
        for x in bad[:5]:
            console.print(f"[red]{x.status.upper()}[/] " + escape(f"{x.function} / {x.case}: {x.message}"),
                          highlight=False)
        if len(bad) > 5:
            console.print(f"... and {len(bad) - 5} more in {r.library}'s report")


def _write(reports: list[Any], path: Path | None, kind: str) -> None:
    if path is None:
        return
    if len(reports) == 1 and path.suffix:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(reports[0].to_json() if kind == "json" else reports[0].to_markdown())
        return
    path.mkdir(parents=True, exist_ok=True)
    for r in reports:
        name = f"{r.library}.{'json' if kind == 'json' else 'md'}"
        (path / name).write_text(r.to_json() if kind == "json" else r.to_markdown())


def _load_impl(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        msg = f"--impl must be MODULE:FUNCTION, got {spec!r}"
        raise ValueError(msg)
    sys.path.insert(0, str(Path.cwd()))
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def _split(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _conventions(text: str) -> dict[str, Any]:
    """``key=value,...`` as a dict; values are Python literals (numbers, None, True) or strings."""
    import ast

    out: dict[str, Any] = {}
    for item in _split(text) or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            msg = f"--conventions items must be KEY=VALUE, got {item!r}"
            raise ValueError(msg)
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from refsoftmax import conformance
    from refsoftmax.conformance import adapters

    reports = []
    try:
        if args.max_examples < 0:
            msg = f"--max-examples must be >= 0, got {args.max_examples}"
            raise ValueError(msg)
        with _Progress(not args.quiet) as progress:
            if args.impl:
                fn = _load_impl(args.impl)
                options = [o for o in args.options.split(",") if o]
                dtypes = _split(args.dtypes)
                reports.append(conformance.certify(
                    fn, loss=args.loss, framework=args.framework, options=options,
                    conventions=_conventions(args.conventions), wrt=_split(args.wrt),
                    library=args.library or args.impl, library_version=args.library_version,
                    dtypes=dtypes if dtypes is not None else conformance.DTYPES,
                    backend=args.backend, seed=args.seed, max_examples=args.max_examples, progress=progress,
                ))
            elif args.wrt or args.conventions or args.dtypes or args.library or args.library_version:
                msg = "--wrt, --conventions, --dtypes, --library and --library-version apply to --impl"
                raise ValueError(msg)
            libraries = args.libraries or ([] if args.impl else adapters.available_adapters())
            for library in libraries:
                reports.append(conformance.certify_library(
                    library, backend=args.backend, seed=args.seed, max_examples=args.max_examples,
                    progress=progress,
                ))
    except (ValueError, ImportError, AttributeError) as exc:
        print(f"refsoftmax certify: error: {exc}", file=sys.stderr)
        return 2
    if not reports:
        print("refsoftmax certify: no supported library is installed (try: pip install torch==2.13.0)",
              file=sys.stderr)
        return 2
    _print_summary(reports)
    _write(reports, args.json, "json")
    _write(reports, args.markdown, "markdown")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

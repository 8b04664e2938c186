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
    c.add_argument("--returns", default="none", metavar="none|mean|sum",
                   help="what --impl returns: per-example values (none, default) or only their mean "
                        "or sum; cases needing another reduction are evaluated one example at a time")
    c.add_argument("--preconditions", default="", metavar="A,B",
                   help="what --impl states it needs (cases outside are skipped): finite_inputs, "
                        "min_two_classes, smoothing_below_one, unvalidated_inputs")
    c.add_argument("--compute-dtype", default=None, metavar="DTYPE",
                   help="the dtype --impl computes in whatever its input (e.g. float32): float64 "
                        "results within that dtype's tolerance are reported as convention")
    c.add_argument("--world-size", type=int, default=None, metavar="N",
                   help="certify a vocab-parallel --impl (framework torch, sparse CE) on N ranks of a "
                        "gloo group on 127.0.0.1; with LIBRARY names: the world sizes of sharded "
                        "adapters (megatron_core, fairscale, torch_loss_parallel; default 2 and 4)")
    c.add_argument("--layout", default="even", metavar="even|chunk|uneven",
                   help="with --world-size: the ranks' class blocks (C/N each; ceil(C/N) each, as a "
                        "Shard(-1) DTensor; proportional to 1..N)")
    c.add_argument("--no-empty-blocks", action="store_true",
                   help="with --world-size: a case that would leave a rank's block empty is widened")
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
    """A rich progress bar on a terminal; elsewhere (a pipe, a CI log) one line per target."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._lines = enabled and not sys.stderr.isatty()
        self._label = ""
        self._start = 0.0
        if enabled and sys.stderr.isatty():
            try:
                from rich.progress import Progress
            except ImportError:
                self._lines = True
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
        if self._lines:
            import time

            if label != self._label:
                self._label, self._start = label, time.perf_counter()
                print(f"refsoftmax certify: {label} (case {done} of {total}) ...", file=sys.stderr, flush=True)
            if done == total:
                print(f"refsoftmax certify: {total} cases done", file=sys.stderr, flush=True)
                self._label = ""
            return
        if self._bar is None:
            return
        if self._task is None:
            self._task = self._bar.add_task(label, total=total)
        self._bar.update(self._task, completed=done, total=total, description=label[:60])
        if done == total:
            self._task = None


def _print_summary(reports: list[Any]) -> None:
    import importlib.util

    if importlib.util.find_spec("rich") is None or not sys.stdout.isatty():
        for r in reports:  # a pipe, a CI log, no rich: plain text, full names at any width
            print(r.summary_text())
            print(f"({len(r.results)} cases, {r.seconds:.1f} s)\n")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

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
        for note in r.notes:
            console.print(escape(f"note ({r.library}): {note}"), highlight=False)
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
        name = f"{_file_stem(r.library)}.{'json' if kind == 'json' else 'md'}"
        (path / name).write_text(r.to_json() if kind == "json" else r.to_markdown())


def _file_stem(library: str) -> str:
    """A report's file name: the library name with anything but letters, digits, ``-_.`` as ``_``
    (``mypkg.losses:my_ce`` -> ``mypkg.losses_my_ce``: no colon, which Windows and some CI
    artifact stores refuse)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", library).strip("._") or "report"


def _framework_hint(report: Any, framework: str) -> None:
    """When every valid case of ``--impl`` raised, say which --framework might be meant."""
    ran = [r for r in report.results if r.status not in ("skipped",) and "invalid" not in r.tags]
    if not ran or any(r.status != "error" for r in ran):
        return
    words = " ".join(r.message for r in ran).lower()
    guess = next((fw for fw, marks in (("torch", ("tensor", "torch")), ("tensorflow", ("tf.", "tensorflow")),
                                       ("jax", ("jax", "jnp"))) if any(m in words for m in marks)), None)
    hint = (f"every valid case raised: is --framework right? --impl got {framework} arrays"
            + (f"; its errors mention {guess}: try --framework {guess}" if guess and guess != framework else ""))
    report.notes.append(hint)


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
    import os

    # peers' C++ log lines (TensorFlow, XLA) would land before the table: keep them out
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
                report = conformance.certify(
                    fn, loss=args.loss, framework=args.framework, options=options,
                    conventions=_conventions(args.conventions), wrt=_split(args.wrt),
                    library=args.library or args.impl, library_version=args.library_version,
                    returns=args.returns, preconditions=_split(args.preconditions) or (),
                    compute_dtype=args.compute_dtype,
                    dtypes=dtypes if dtypes is not None else conformance.DTYPES,
                    backend=args.backend, seed=args.seed, max_examples=args.max_examples, progress=progress,
                    **({"world_size": args.world_size, "layout": args.layout,
                        "empty_blocks": not args.no_empty_blocks} if args.world_size is not None else {}),
                )
                _framework_hint(report, args.framework)
                reports.append(report)
            elif (args.wrt or args.conventions or args.dtypes or args.library or args.library_version
                  or args.returns != "none" or args.preconditions or args.compute_dtype
                  or args.layout != "even" or args.no_empty_blocks):
                msg = ("--wrt, --conventions, --dtypes, --library, --library-version, --returns, "
                       "--preconditions, --compute-dtype, --layout and --no-empty-blocks apply to --impl")
                raise ValueError(msg)
            libraries = args.libraries or ([] if args.impl else adapters.available_adapters())
            if args.world_size is not None and not args.impl and not args.libraries:
                # --world-size alone: the installed sharded adapters
                libraries = [name for name in libraries if hasattr(adapters.load(name), "WORLD_SIZES")]
            for library in args.libraries:  # asked for by name: it must be installed
                if not adapters.load(library).available():
                    msg = f"{library} is not installed (its adapter needs it: pip install {library})"
                    raise ValueError(msg)
            for library in libraries:
                reports.append(conformance.certify_library(
                    library, backend=args.backend, seed=args.seed, max_examples=args.max_examples,
                    progress=progress,
                    **({"world_sizes": (args.world_size,)} if args.world_size is not None and not args.impl
                       else {}),
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

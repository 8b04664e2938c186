"""The conformance suite: certify other libraries' softmax losses against the reference.

>>> from refsoftmax import conformance
>>> import numpy as np
>>> def my_loss(logits, labels, reduction="none"):            # a NumPy implementation
...     z = logits - logits.max(-1, keepdims=True)
...     out = np.log(np.exp(z).sum(-1)) - np.take_along_axis(z, labels[:, None], -1)[:, 0]
...     return out.mean() if reduction == "mean" else out.sum() if reduction == "sum" else out
>>> report = conformance.certify(my_loss, loss="sparse_softmax_cross_entropy", framework="numpy",
...                              options=("reduction",), max_examples=5)
>>> sorted({r.case.split("[")[0] for r in report.results if r.status == "fail"})
['label-negative', 'leading-dims']

Two defects of ``my_loss`` are caught: ``labels[:, None]`` breaks leading
batch dims, and ``take_along_axis`` silently wraps the label -1 around to
the last class.  Without a ``grad_fn`` only values are checked for NumPy.

See ``refsoftmax certify --help`` for the command line and ``docs/conformance.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from refsoftmax.conformance import frameworks_extra as _frameworks_extra  # noqa: F401  (paddle, tinygrad drivers)
from refsoftmax.conformance import sampled as _sampled  # noqa: F401  (registers the sampled specs)
from refsoftmax.conformance import specs_fenchel_young as _specs_fenchel_young  # noqa: F401  (registers)
from refsoftmax.conformance.cases import DTYPES, Case, generate
from refsoftmax.conformance.engine import TOLERANCES, CaseResult, run_case
from refsoftmax.conformance.frameworks import get_framework
from refsoftmax.conformance.report import Report
from refsoftmax.conformance.targets import SPECS, Target, Unsupported

__all__ = [
    "TOLERANCES",
    "Case",
    "CaseResult",
    "Report",
    "Target",
    "Unsupported",
    "certify",
    "certify_library",
    "certify_targets",
]

Progress = Callable[[int, int, str], None]


def certify_targets(targets: Iterable[Target], *, library: str, version: str, backend: str = "numpy",
                    seed: int = 0, max_examples: int = 20, progress: Progress | None = None) -> Report:
    """Run every case of every target; ``progress(done, total, label)`` is called as cases finish."""
    start = time.perf_counter()
    report = Report(library, version, backend, seed=seed, max_examples=max_examples)
    plan: list[tuple[Target, Case]] = []
    cache: dict[str, list[Case]] = {}
    for target in targets:
        if target.loss not in cache:
            cache[target.loss] = generate(target.loss, seed=seed, max_examples=max_examples)
        plan += [(target, case) for case in cache[target.loss]]
    for i, (target, case) in enumerate(plan):
        # the cotangent/direction seed depends on the case's identity, not its position in the plan,
        # so a run with fewer random cases draws the same numbers for the cases it shares
        case_seed = zlib.crc32(f"{seed}/{target.function}/{case.name}".encode())
        report.results.append(run_case(target, case, backend=backend, seed=case_seed))
        if progress is not None:
            progress(i + 1, len(plan), target.function)
    report.seconds = time.perf_counter() - start
    return report


def certify(
    fn: Callable[..., Any],
    loss: str = "sparse_softmax_cross_entropy",
    framework: str = "numpy",
    grad_fn: Callable[..., dict[str, Any]] | None = None,
    *,
    options: Iterable[str] = ("reduction",),
    conventions: dict[str, Any] | None = None,
    wrt: tuple[str, ...] | None = None,
    library: str | None = None,
    function: str | None = None,
    dtypes: tuple[str, ...] = DTYPES,
    backend: str = "numpy",
    seed: int = 0,
    max_examples: int = 20,
    progress: Progress | None = None,
) -> Report:
    """Certify ``fn``, a callable with the reference signature of ``loss``.

    Parameters
    ----------
    fn : callable
        ``fn(logits, labels, **options)`` on ``framework`` arrays (plus
        ``class_weights=`` when ``"class_weights"`` is in ``options``),
        returning what the reference returns.
    loss : str
        The reference loss, e.g. ``"sparse_softmax_cross_entropy"``.
    framework : {"numpy", "torch", "tensorflow", "jax", ...}
        How inputs are built and, unless ``grad_fn`` is given, how gradients
        are taken (the framework's own autodiff).
    grad_fn : callable, optional
        ``grad_fn(inputs, options, cotangent) -> {"logits": ...}``; required
        for frameworks without autodiff (``"numpy"``) to check gradients.
    options : iterable of str
        The reference options ``fn`` accepts; cases using others are skipped.
    conventions : dict, optional
        Reference options reproducing ``fn``'s documented conventions.
    dtypes, backend, seed, max_examples, progress
        What to run, on which reference backend, how many random cases.
    """
    if loss not in SPECS:
        msg = f"loss={loss!r} has no conformance spec; known: {sorted(SPECS)}"
        raise ValueError(msg)
    fw = get_framework(framework)
    accepted = set(options)
    spec = SPECS[loss]

    def call(inputs: dict[str, Any], opts: dict[str, Any]) -> Any:
        extra = set(opts) - accepted
        if "class_weights" in inputs and "class_weights" not in accepted:
            extra.add("class_weights")
        if extra:
            raise Unsupported(f"{sorted(extra)} not among the options fn accepts")
        kwargs = dict(opts)
        if "class_weights" in inputs:
            kwargs["class_weights"] = inputs["class_weights"]
        return fn(*(inputs[n] for n in spec.positional), **kwargs)

    name = str(function or getattr(fn, "__name__", repr(fn)))
    has_grads = grad_fn is not None or framework != "numpy"
    target = Target(
        str(library or name), name, loss, framework, call,
        wrt=(wrt or (("logits",) if has_grads else ())), dtypes=dtypes, conventions=dict(conventions or {}),
        grad_fn=None if grad_fn is None else (lambda a, o, c: grad_fn(a, o, c)),
    )
    return certify_targets([target], library=target.library, version=fw.version() if fw.available() else "",
                           backend=backend, seed=seed, max_examples=max_examples, progress=progress)


def certify_library(library: str, *, backend: str = "numpy", seed: int = 0, max_examples: int = 20,
                    progress: Progress | None = None) -> Report:
    """Certify every target of an installed library's adapter (``refsoftmax certify LIBRARY``)."""
    from refsoftmax.conformance import adapters

    module = adapters.load(library)
    if not module.available():
        report = Report(library, "", backend, seed=seed, max_examples=max_examples)
        report.notes.append(f"{library} is not installed: skipped")
        report.results.append(CaseResult(library, "*", "*", "skipped", f"{library} is not installed"))
        return report
    if getattr(module, "ISOLATE", False) and not os.environ.get(_ISOLATED):
        return certify_in_subprocess(library, backend=backend, seed=seed, max_examples=max_examples)
    if hasattr(module, "certify"):  # an adapter that runs its own processes (Keras: one per backend)
        merged: Report = module.certify(backend=backend, seed=seed, max_examples=max_examples, progress=progress)
        return merged
    return certify_targets(module.targets(), library=library, version=module.version(), backend=backend,
                           seed=seed, max_examples=max_examples, progress=progress)


_ISOLATED = "REFSOFTMAX_CONFORMANCE_ISOLATED"


def certify_in_subprocess(library: str, *, backend: str = "numpy", seed: int = 0,
                          max_examples: int = 20, timeout: float = 900.0) -> Report:
    """``certify_library`` in a fresh Python process, for libraries that cannot share one.

    Paddle 3.3 crashes the interpreter (SIGSEGV) when imported after TensorFlow
    2.21, so its adapter sets ``ISOLATE = True``.  A crash of the subprocess is
    reported as one ``"error"`` row instead of taking the caller down.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, f"{library}.json")
        cmd = [sys.executable, "-m", "refsoftmax", "certify", library, "--quiet", "--json", out,
               "--seed", str(seed), "--max-examples", str(max_examples), "--backend", backend]
        env = {**os.environ, _ISOLATED: "1"}
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        if os.path.exists(out):
            with open(out) as fh:
                report = Report.from_dict(json.load(fh))
            report.seconds = time.perf_counter() - start
            report.notes.append(f"certified in a separate process ({report.seconds:.1f} s)")
            return report
    report = Report(library, "", backend, seed=seed, max_examples=max_examples)
    tail = (proc.stderr or proc.stdout or "").strip()[-500:]
    report.results.append(CaseResult(library, "*", "*", "error",
                                     f"the certification process exited with {proc.returncode}: {tail}"))
    return report

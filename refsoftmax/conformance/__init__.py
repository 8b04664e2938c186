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
['label-negative', 'leading-dims', 'leading-dims-mean', 'leading-dims-sum', 'random-2']

Two defects of ``my_loss`` are caught: ``labels[:, None]`` breaks leading
batch dims (in every reduction, and in a random case with batch dims), and
``take_along_axis`` silently wraps the label -1 around to the last class.  Without a ``grad_fn`` only values are checked for NumPy.

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
from refsoftmax.conformance import specs_registry as _specs_registry  # noqa: F401  (every other loss)
from refsoftmax.conformance.cases import DTYPES, Case, generate
from refsoftmax.conformance.cases import register as register_cases
from refsoftmax.conformance.engine import PRECONDITIONS, RETURNS, TOLERANCES, CaseResult, run_case
from refsoftmax.conformance.frameworks import Framework, get_framework, register_framework
from refsoftmax.conformance.report import Report
from refsoftmax.conformance.targets import (
    SPECS,
    Drawn,
    LossSpec,
    Target,
    Unsupported,
    register_spec,
)

__all__ = [
    "DTYPES",
    "PRECONDITIONS",
    "RETURNS",
    "SPECS",
    "TOLERANCES",
    "Case",
    "CaseResult",
    "Drawn",
    "Framework",
    "LossSpec",
    "Report",
    "Target",
    "Unsupported",
    "certify",
    "certify_library",
    "certify_targets",
    "generate",
    "register_cases",
    "register_framework",
    "register_spec",
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
    fn: Callable[..., Any] | str,
    loss: str = "sparse_softmax_cross_entropy",
    framework: str = "numpy",
    grad_fn: Callable[..., dict[str, Any]] | None = None,
    *,
    options: Iterable[str] = ("reduction",),
    conventions: dict[str, Any] | None = None,
    wrt: tuple[str, ...] | None = None,
    library: str | None = None,
    library_version: str | None = None,
    function: str | None = None,
    returns: str = "none",
    preconditions: Iterable[str] = (),
    compute_dtype: str | None = None,
    dtypes: tuple[str, ...] = DTYPES,
    backend: str = "numpy",
    seed: int = 0,
    max_examples: int = 20,
    progress: Progress | None = None,
    world_size: int | None = None,
    layout: str | Callable[..., Any] = "even",
    empty_blocks: bool = True,
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
        The reference options ``fn`` accepts (keyword arguments of the
        reference loss, e.g. ``("reduction", "ignore_index")``); cases using
        others are skipped.  An option the reference does not have is a
        ``ValueError``.
    conventions : dict, optional
        Reference options reproducing ``fn``'s documented conventions, e.g.
        ``{"label_smoothing_mode": "others"}``; a disagreement they explain
        is reported as ``"convention"``.  Unknown keys, and values the
        reference refuses, are a ``ValueError``.
    wrt : tuple of str, optional
        The array arguments whose gradients are compared (names of the
        reference's positional arguments, e.g. ``("features", "weights")``
        for ``am_softmax_loss``); default: the reference's differentiable
        arguments when gradients can be taken, else none.
    library, library_version : str, optional
        The name and version the report carries (default: the function's
        name and the framework's version).
    returns : {"none", "mean", "sum"}
        What ``fn`` returns: per-example values (``"none"``, the reference's
        default) or only their mean or sum.  A function that returns only a
        reduced value is still certified on every case: where a case needs
        another reduction, ``fn`` and the reference are both evaluated one
        example at a time (a batch of one, reduced with ``returns``) and the
        results stacked.  ``reduction`` is passed to ``fn`` only if it is in
        ``options``.
    preconditions : iterable of str
        What ``fn`` states it needs; cases outside are ``"skipped"`` with the
        reason.  ``"finite_inputs"`` (no NaN/±inf in the float inputs),
        ``"min_two_classes"``, ``"smoothing_below_one"``,
        ``"unvalidated_inputs"`` (``fn`` does not promise to refuse invalid
        input: the invalid-input cases are skipped).
    compute_dtype : {"float32", "float16", "bfloat16"}, optional
        ``fn`` computes in this dtype whatever its input dtype (e.g. it
        upcasts to float32, or downcasts float64): values and gradients that
        miss the input dtype's tolerance but meet this one's are reported as
        ``"convention"``.
    dtypes, backend, seed, max_examples, progress
        What to run, on which reference backend, how many random cases.
    world_size : int, optional
        Certify a **vocab-parallel** function (``framework="torch"``, ``loss=
        "sparse_softmax_cross_entropy"``): ``fn(local_logits, labels, **options)`` runs on
        every rank of a gloo group of ``world_size`` processes on 127.0.0.1 (started once for
        the certification), rank ``k`` getting the ``k``-th block of the classes; the ranks'
        gradient blocks are concatenated and compared with the dense reference as above, and
        ranks returning different losses are a ``"fail"`` naming them.  ``fn`` must be
        importable by the ranks: ``"module:function"`` or a module-level function.  See
        :mod:`refsoftmax.conformance.sharded`.
    layout : {"even", "chunk", "uneven"} or callable
        With ``world_size``: the blocks' sizes (C/N each; ``ceil(C/N)`` each as a
        ``Shard(-1)`` DTensor has them; proportional to 1..N), or ``layout(C, N) -> sizes``
        (``None``: cannot hold C).  A case the layout cannot hold is widened
        (:func:`refsoftmax.conformance.sharded.widen`).
    empty_blocks : bool
        With ``world_size``: whether a rank's block may hold no class (``False``: such cases
        are widened too).

    Examples
    --------
    >>> import refsoftmax
    >>> from refsoftmax import conformance
    >>> report = conformance.certify(refsoftmax.am_softmax_loss, loss="am_softmax_loss",
    ...                              options=("scale", "margin", "reduction"), max_examples=2,
    ...                              library="mine", library_version="1.0")
    >>> report.ok, report.library, report.version
    (True, 'mine', '1.0')
    >>> conformance.certify(refsoftmax.am_softmax_loss, loss="am_softmax_loss", wrt=("logits",))
    Traceback (most recent call last):
    ...
    ValueError: wrt names 'logits', which is not an array argument of am_softmax_loss: ('features', 'weights', 'labels')
    """
    if loss not in SPECS:
        msg = f"loss={loss!r} has no conformance spec; known: {sorted(SPECS)}"
        raise ValueError(msg)
    fw = get_framework(framework)
    spec = SPECS[loss]
    known = _reference_options(spec)
    options = tuple(options)
    unknown = [o for o in options if o not in known]
    if unknown:
        msg = f"options {unknown} are not options of {loss}; its options: {sorted(known)}"
        raise ValueError(msg)
    bad_keys = [k for k in (conventions or {}) if k not in known]
    if bad_keys:
        msg = f"conventions {bad_keys} are not options of {loss}; its options: {sorted(known)}"
        raise ValueError(msg)
    bad_dtypes = [d for d in dtypes if d not in DTYPES]
    if bad_dtypes:
        msg = f"dtypes {bad_dtypes} are not among {list(DTYPES)}"
        raise ValueError(msg)
    if wrt is not None:
        wrt = tuple(wrt)
        for name in wrt:
            if name not in spec.positional:
                msg = f"wrt names {name!r}, which is not an array argument of {loss}: {spec.positional}"
                raise ValueError(msg)
    if conventions:
        _check_convention_values(loss, dict(conventions))
    if returns not in RETURNS:
        msg = f"returns must be one of {list(RETURNS)}, got {returns!r}"
        raise ValueError(msg)
    preconditions = tuple(preconditions)
    bad_pre = [p for p in preconditions if p not in PRECONDITIONS]
    if bad_pre:
        msg = f"preconditions {bad_pre} are not known; known: {sorted(PRECONDITIONS)}"
        raise ValueError(msg)
    if compute_dtype is not None and compute_dtype not in DTYPES[1:]:
        msg = f"compute_dtype must be one of {list(DTYPES[1:])} or None, got {compute_dtype!r}"
        raise ValueError(msg)
    accepted = set(options)
    # a vocab-parallel fn runs on the ranks of a process group (sharded.py); `runner` stands
    # in for it here, with the same signature, and the rest of this function is unchanged
    runner: Any = fn
    if world_size is not None:
        from refsoftmax.conformance import sharded

        sharding = sharded.Sharding(world_size, layout, empty_blocks)
        if framework != "torch" or loss != sharded.LOSS or grad_fn is not None:
            msg = (f"world_size certifies a torch function of {sharded.LOSS} with torch's autograd "
                   f"(framework='torch', loss={sharded.LOSS!r}, no grad_fn); got framework={framework!r}, "
                   f"loss={loss!r}" + (", a grad_fn" if grad_fn is not None else ""))
            raise ValueError(msg)
        runner = sharded.Remote(fn, sharding)

    def call(inputs: dict[str, Any], opts: dict[str, Any]) -> Any:
        if returns != "none" and "reduction" not in accepted:
            # the engine asks for reduction=returns only; fn takes no reduction argument
            opts = {k: v for k, v in opts.items() if k != "reduction"}
        extra = set(opts) - accepted
        if "class_weights" in inputs and "class_weights" not in accepted:
            extra.add("class_weights")
        if extra:
            raise Unsupported(f"{sorted(extra)} not among the options fn accepts")
        kwargs = dict(opts)
        if "class_weights" in inputs:
            kwargs["class_weights"] = inputs["class_weights"]
        return runner(*(inputs[n] for n in spec.positional), **kwargs)

    name = str(function or (fn if isinstance(fn, str) else getattr(fn, "__name__", repr(fn))))
    has_grads = grad_fn is not None or framework != "numpy"
    if wrt is None:
        differentiable = getattr(spec.function, "differentiable", ("logits",))
        wrt = tuple(n for n in spec.positional if n in differentiable) if has_grads else ()
    elif wrt and not has_grads:
        msg = (f"wrt={wrt} needs gradients, but framework={framework!r} has no autodiff: "
               "pass grad_fn, or certify values only (wrt=())")
        raise ValueError(msg)
    target = Target(
        str(library or name), name, loss, framework, call,
        wrt=wrt, dtypes=dtypes, conventions=dict(conventions or {}),
        grad_fn=None if grad_fn is None else (lambda a, o, c: grad_fn(a, o, c)),
        returns=returns, preconditions=preconditions, compute_dtype=compute_dtype,
        source=_source_line(fn) if world_size is None else "", accepted=tuple(options),
    )
    version = library_version if library_version is not None else (fw.version() if fw.available() else "")
    if world_size is not None:  # the same target, its arrays handed to the ranks
        target.framework = sharded.FRAMEWORK
        target.expression = runner.expression()
        target.imports = "from refsoftmax.conformance import sharded"
        return sharded.certify_targets([target], sharding, library=target.library, version=version,
                                       backend=backend, seed=seed, max_examples=max_examples,
                                       progress=progress)
    return certify_targets([target], library=target.library, version=version,
                           backend=backend, seed=seed, max_examples=max_examples, progress=progress)


def _source_line(fn: Any) -> str:
    """The import that binds ``fn`` in a reproducer, or a comment saying where it came from."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module and module != "__main__" and qualname and "<" not in qualname:
        head, _, rest = qualname.partition(".")
        if not rest:
            return f"from {module} import {head} as fn"
        return f"from {module} import {head}; fn = {qualname}"
    return f"fn = ...  # the function passed to certify() ({qualname or fn!r} is not importable)"


def _reference_options(spec: Any) -> set[str]:
    """The keyword options of a spec's reference function (its non-array parameters)."""
    import inspect

    target = spec.function.forward if hasattr(spec.function, "forward") else spec.function
    params = inspect.signature(target).parameters
    return {n for n, p in params.items()
            if n not in spec.positional and n != "self"
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} | set(spec.array_options)


def _check_convention_values(loss: str, conventions: dict[str, Any]) -> None:
    """Run the reference once on the loss's first case with ``conventions``: a value it refuses
    is a ``ValueError`` naming the convention."""
    from refsoftmax.conformance.engine import _reference

    first = next((c for c in generate(loss, max_examples=0, dtypes=("float64",)) if c.valid), None)
    if first is None:  # pragma: no cover - every loss has a valid edge case
        return
    options = {**{k: v for k, v in first.rounded_options().items()}, **conventions}
    options = {k: v for k, v in options.items() if k not in SPECS[loss].array_options}
    try:
        _reference(SPECS[loss], first.rounded(), options, None, "numpy")
    except (ValueError, TypeError) as exc:
        msg = f"conventions {conventions} are not valid for {loss}: {exc}"
        raise ValueError(msg) from None


def certify_library(library: str, *, backend: str = "numpy", seed: int = 0, max_examples: int = 20,
                    progress: Progress | None = None, world_sizes: tuple[int, ...] | None = None) -> Report:
    """Certify every target of an installed library's adapter (``refsoftmax certify LIBRARY``).

    ``world_sizes`` (sharded adapters only: ``megatron_core``, ``fairscale``,
    ``torch_loss_parallel``) replaces the adapter's world sizes (``WORLD_SIZES``).
    """
    from refsoftmax.conformance import adapters

    module = adapters.load(library)
    if world_sizes is not None and not hasattr(module, "WORLD_SIZES"):
        msg = f"{library} is not a sharded adapter: world sizes do not apply to it"
        raise ValueError(msg)
    if not module.available():
        report = Report(library, "", backend, seed=seed, max_examples=max_examples)
        report.notes.append(f"{library} is not installed: skipped")
        report.results.append(CaseResult(library, "*", "*", "skipped", f"{library} is not installed"))
        return report
    if getattr(module, "ISOLATE", False) and not os.environ.get(_ISOLATED):
        return certify_in_subprocess(library, backend=backend, seed=seed, max_examples=max_examples)
    if hasattr(module, "certify"):  # an adapter that runs its own processes (Keras: one per backend)
        # (sharded adapters: a gloo group per world size, refsoftmax.conformance.sharded)
        extra = {} if world_sizes is None else {"world_sizes": tuple(world_sizes)}
        merged: Report = module.certify(backend=backend, seed=seed, max_examples=max_examples, progress=progress,
                                        **extra)
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

"""Running conformance cases: the candidate against the reference and finite differences.

For every valid case:

1. **value**: the candidate's value against the reference evaluated in
   float64 on the same (rounded) inputs, within the dtype's tolerance; a
   NaN/inf where the true value is finite is a failure;
2. **gradient vs reference**: the candidate's gradient (its framework's own
   autodiff, or a user ``grad_fn``) against the reference backward, for the
   same random cotangent;
3. **gradient vs its own loss** (float64 cases): a central finite difference
   of the *candidate's* forward along a random direction against its
   gradient — a gradient that disagrees with its own loss is a defect
   whatever convention the library follows;
4. **reference self-check**: the reference backward against the same kind of
   finite difference, so the certificate shows the reference was checked on
   the case too.

A value or gradient that differs from the reference default but matches the
reference run with the target's declared ``conventions`` is reported as
``"convention"``.  An invalid case passes when the candidate refuses it
(raises) and fails when it returns a result.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refsoftmax.conformance.cases import DTYPES, Case, round_to_dtype
from refsoftmax.conformance.frameworks import Framework, get_framework
from refsoftmax.conformance.targets import SPECS, Drawn, LossSpec, Target, Unsupported

__all__ = ["PRECONDITIONS", "RETURNS", "TOLERANCES", "CaseResult", "run_case"]

#: Relative tolerance per dtype: a value ``a`` passes against the reference
#: ``r`` when ``|a - r| <= tol * (|r| + 1)``; a gradient entry when
#: ``|a - r| <= tol * (|r| + max|r|)``; the finite-difference checks use
#: ``FD_TOLERANCE``.
TOLERANCES = {"float64": 1e-9, "float32": 2e-5, "float16": 4e-3, "bfloat16": 3e-2}
FD_TOLERANCE = 1e-5


@dataclass
class CaseResult:
    """The outcome of one case for one target."""

    library: str
    function: str
    case: str
    status: str  # "pass" | "fail" | "convention" | "error" | "skipped"
    message: str = ""
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    dtype: str = "float64"
    tags: tuple[str, ...] = ()
    reproducer: str = ""
    checks: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "library": self.library, "function": self.function, "case": self.case,
            "status": self.status, "message": self.message,
            "max_abs_error": _finite_or_none(self.max_abs_error),
            "max_rel_error": _finite_or_none(self.max_rel_error),
            "dtype": self.dtype, "checks": self.checks,
        }
        if self.reproducer:
            out["reproducer"] = self.reproducer
        return out


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class _Mismatch(Exception):
    def __init__(self, message: str, what: str = "value", abs_err: float = math.inf,
                 rel_err: float = math.inf) -> None:
        super().__init__(message, what)
        self.message, self.what = message, what
        self.abs_err, self.rel_err = abs_err, rel_err

    def __str__(self) -> str:
        return self.message


# ------------------------------------------------------------------ comparisons

def compare_values(candidate: np.ndarray, reference: np.ndarray, dtype: str, what: str,
                   floor: float = 0.0, tolerance: str | None = None) -> tuple[float, float]:
    """Raise :class:`_Mismatch` unless ``candidate`` equals ``reference`` within the dtype's tolerance.

    Values: ``|a - r| <= tol (|r| + 1)``.  Gradients: ``|a - r| <= tol (|r| + s)`` with
    ``s = max(max|r|, floor)``, ``floor`` being the gradient's natural size (the cotangent's
    size over the number of rows), so that uniformly tiny gradients are not compared to
    the last bit.  ``tolerance`` names the dtype whose tolerance applies (default ``dtype``:
    a function that declares it computes in float32 is compared at float32's).
    """
    cand = np.asarray(candidate, np.float64)
    ref = np.asarray(reference, np.float64)
    if cand.shape != ref.shape:
        msg = f"{what} has shape {cand.shape}, expected {ref.shape}"
        raise _Mismatch(msg, what)
    best = round_to_dtype(ref, dtype)  # the nearest representable answer (inf if it does not fit)
    tol = TOLERANCES[tolerance or dtype]
    nonfinite = ~np.isfinite(best)
    same_nonfinite = (cand == best) | (np.isnan(cand) & np.isnan(best))
    bad_nonfinite = nonfinite & ~same_nonfinite
    if bad_nonfinite.any():
        i = np.flatnonzero(bad_nonfinite)[0]
        msg = f"{what}[{_index(ref.shape, i)}] is {float(cand.flat[i])!r}, expected {float(best.flat[i])!r}"
        raise _Mismatch(msg, what)
    fin = ~nonfinite
    spurious = fin & ~np.isfinite(cand)
    if spurious.any():
        i = np.flatnonzero(spurious)[0]
        msg = (f"{what}[{_index(ref.shape, i)}] is {float(cand.flat[i])!r} where the true value is finite "
               f"({ref.flat[i]:.17g})")
        raise _Mismatch(msg, what)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(fin, np.abs(cand - ref), 0.0)
    abs_err = float(diff.max(initial=0.0))
    rel = np.where(fin, diff / np.maximum(np.abs(ref), np.finfo(np.float64).tiny), 0.0)
    rel_err = float(rel.max(initial=0.0))
    if what == "value":
        scale = np.abs(ref) + 1.0
    else:
        scale = np.abs(ref) + max(float(np.max(np.abs(np.where(fin, ref, 0.0)), initial=0.0)), floor)
    bad = fin & (diff > tol * scale)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        msg = (f"{what}[{_index(ref.shape, i)}] is {cand.flat[i]:.17g}, expected {ref.flat[i]:.17g} "
               f"(|error| {diff.flat[i]:.3g} > tolerance {tol:g} x {scale.flat[i]:.3g})")
        raise _Mismatch(msg, what, abs_err, rel_err)
    return abs_err, rel_err


def _index(shape: tuple[int, ...], flat: int) -> str:
    return ", ".join(str(int(i)) for i in np.unravel_index(flat, shape)) if shape else ""


# ------------------------------------------------------------------ the two sides

def _reference(spec: LossSpec, inputs: dict[str, np.ndarray], options: dict[str, Any],
               cotangent: np.ndarray | None, backend: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    import refsoftmax
    from refsoftmax import backends

    module = backends.load(backend)
    with refsoftmax.use_backend(backend):
        args = [inputs[n] for n in spec.positional]
        kwargs = dict(options)
        for name in spec.array_options:
            if name in inputs:
                kwargs[name] = inputs[name]
        if cotangent is None:
            return np.asarray(module.to_numpy(spec.function(*args, **kwargs)), np.float64), {}
        value, grads = spec.function.value_and_grad(*args, cotangent=cotangent, **kwargs)
        out = {}
        for k, g in grads.items():
            g = g.to_dense() if hasattr(g, "to_dense") else g
            out[k] = np.asarray(module.to_numpy(g), np.float64)
        return np.asarray(module.to_numpy(value), np.float64), out


class _CandidateRaised(Exception):
    """An exception raised by the candidate itself (not by the driver around it)."""


class _WrongShape(Exception):
    """The candidate returned a value of the wrong shape."""


@dataclass(frozen=True)
class _Plan:
    """How a case is evaluated: directly, or one example at a time (a target's ``returns``).

    ``lead`` is the per-example shape (the reference's ``reduction="none"`` value) when the
    case needs a reduction the candidate does not return; each example is then a batch of
    one, evaluated with ``reduction=returns`` by the reference and the candidate alike.
    """

    lead: tuple[int, ...] | None = None
    reduction: str = "none"


def _plan(spec: LossSpec, target: Target, inputs: dict[str, np.ndarray], options: dict[str, Any],
          backend: str) -> _Plan:
    if target.returns == "none" or options.get("reduction", "none") == target.returns:
        return _Plan()
    per_example = {**options, "reduction": "none"}
    lead = tuple(np.shape(_reference(spec, inputs, per_example, None, backend)[0]))
    return _Plan(lead, target.returns)


def _examples(spec: LossSpec, inputs: dict[str, np.ndarray], options: dict[str, Any],
              lead: tuple[int, ...]) -> tuple[set[str], list[tuple[Any, dict[str, np.ndarray], dict[str, Any]]]]:
    """Split a case into batches of one example: ``(sliced input names, [(index, inputs, options)])``.

    An input (or array option) is per-example when its leading dims are ``lead`` and the
    spec does not declare it shared (an output embedding, class weights).
    """
    k = len(lead)

    def per_example(name: str, x: Any) -> bool:
        return (isinstance(x, np.ndarray) and name not in spec.shared
                and name not in spec.array_options and x.shape[:k] == lead)

    sliced = {n for n, x in inputs.items() if per_example(n, x)}
    out = []
    for idx in np.ndindex(*lead):
        ins = {n: (x[idx][None] if n in sliced else x) for n, x in inputs.items()}
        opts = {n: (v[idx][None] if per_example(n, v) else v) for n, v in options.items()}
        out.append((idx, ins, {**opts}))
    return sliced, out


def _evaluate(side: Any, spec: LossSpec, inputs: dict[str, np.ndarray], options: dict[str, Any],
              cotangent: np.ndarray | None, plan: _Plan) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``side(inputs, options, cotangent) -> (value, grads)`` under ``plan``: per example, stacked."""
    if plan.lead is None:
        return side(inputs, options, cotangent)
    sliced, examples = _examples(spec, inputs, options, plan.lead)
    value = np.empty(plan.lead)
    grads: dict[str, np.ndarray] = {}
    for idx, ins, opts in examples:
        ct = None if cotangent is None else np.asarray(cotangent[idx], np.float64)
        v, g = side(ins, {**opts, "reduction": plan.reduction}, ct)
        value[idx] = np.asarray(v, np.float64).reshape(())
        for name, gk in g.items():
            gk = np.asarray(gk, np.float64)
            if name not in grads:
                grads[name] = np.zeros(np.shape(inputs[name]))
            if name in sliced:
                grads[name][idx] = gk.reshape(np.shape(inputs[name])[len(plan.lead):])
            else:
                grads[name] += gk  # a shared input: the gradients of all examples add up
    return value, grads


def _candidate(target: Target, fw: Framework, inputs: dict[str, np.ndarray], options: dict[str, Any],
               dtype: str, cotangent: np.ndarray | None, given: dict[str, Any] | None = None,
               expected: tuple[int, ...] | None = None,
               changed: list[str] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The candidate's value and gradients on one (batch of) input(s).

    What a randomised target's draw fixed goes to ``given``; the names of inputs the
    candidate modified go to ``changed``.  Raises :class:`_CandidateRaised` for an
    exception of the candidate and :class:`_WrongShape` for a value not of shape
    ``expected``.
    """
    arrays = {}
    for k, v in inputs.items():
        arrays[k] = fw.to_array(v, dtype if np.issubdtype(v.dtype, np.floating) else None)
    before = {k: np.array(fw.to_numpy(a), copy=True) for k, a in arrays.items()}
    out = _call_candidate(target, fw, arrays, options, dtype, cotangent, given, expected)
    modified = _modified(fw, arrays, before)
    if changed is not None:
        changed += [k for k in modified if k not in changed]
    return out


def _modified(fw: Framework, arrays: dict[str, Any], before: dict[str, np.ndarray]) -> list[str]:
    """The input arrays the candidate changed in place."""
    changed = []
    for k, a in arrays.items():
        try:
            now = np.asarray(fw.to_numpy(a))
        except Exception:  # e.g. a torch leaf the candidate resized: count it as modified
            changed.append(k)
            continue
        old = before[k]
        same = now.shape == old.shape and bool(np.array_equal(
            now, old, equal_nan=bool(np.issubdtype(old.dtype, np.floating))))
        if not same:
            changed.append(k)
    return changed


def _call_candidate(target: Target, fw: Framework, arrays: dict[str, Any], options: dict[str, Any],
                    dtype: str, cotangent: np.ndarray | None, given: dict[str, Any] | None,
                    expected: tuple[int, ...] | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:

    def fn(**kw: Any) -> Any:
        try:
            out = target.call(kw, options)
        except Unsupported:
            raise
        except Exception as exc:
            raise _CandidateRaised(f"{type(exc).__name__}: {_first_line(exc)}") from exc
        if isinstance(out, Drawn):
            if given is not None:
                given.update(out.given)
            out = out.value
        shape = tuple(int(n) for n in getattr(out, "shape", np.shape(out)))
        if expected is not None and shape != tuple(expected):
            msg = f"returned a value of shape {shape}, expected {tuple(expected)}"
            raise _WrongShape(msg)
        return out

    if cotangent is None or not target.wrt:
        return fw.to_numpy(fn(**arrays)), {}
    if target.grad_fn is not None:
        value = fw.to_numpy(fn(**arrays))
        grads = target.grad_fn(arrays, options, fw.to_array(cotangent, dtype))
        return value, {k: fw.to_numpy(v) for k, v in grads.items()}
    return fw.vjp(fn, arrays, target.wrt, cotangent)


def _fd_check(f: Any, inputs: dict[str, np.ndarray], grads: dict[str, np.ndarray], wrt: tuple[str, ...],
              cotangent: np.ndarray, rng: np.random.Generator, positive: tuple[str, ...] = (),
              noise: float = 0.0) -> tuple[bool, float, float, bool]:
    """Central difference of ``f`` along a random direction against ``<grads, direction>``.

    The step is per input and per magnitude: entry :math:`x` moves by :math:`t\\,d\\,\\max(1, |x|)`
    with :math:`t = 10^{-6}` (relatively above 1, absolutely below), so features around 1e20
    next to weights around 1 are each perturbed on their own scale; inputs named in
    ``positive`` move by :math:`t\\,d\\,|x|` (they must stay > 0).  ``noise`` bounds the error
    of :math:`\\langle c, f\\rangle` at any point (rounding, or the candidate's measured
    deviation from the reference); the check cannot resolve less than ``noise / t``, which
    is added to the tolerance.  Returns ``(ok, error, tolerance, noise_limited)``, the last
    true when that floor exceeds the gradient's own tolerance (the check cannot resolve it).
    """
    t = 1e-6
    directions = {}
    for k in wrt:
        x = np.asarray(inputs[k], np.float64)
        d = rng.standard_normal(x.shape)
        directions[k] = d * (np.abs(x) if k in positive else np.maximum(1.0, np.abs(x)))
    if "labels" in directions:  # soft labels must stay >= 0: leave entries near 0 alone
        directions["labels"] = directions["labels"] * (inputs["labels"] > 10 * t)

    def shifted(sign: float) -> np.ndarray:
        return np.asarray(f({**inputs, **{k: inputs[k] + sign * t * directions[k] for k in wrt}}), np.float64)

    numeric = float(np.sum(cotangent * (shifted(1.0) - shifted(-1.0)) / (2 * t)))
    analytic = float(sum(np.sum(grads[k] * directions[k]) for k in wrt))
    bound = float(sum(np.sum(np.abs(grads[k] * directions[k])) for k in wrt))
    err = abs(numeric - analytic)
    tol = FD_TOLERANCE * (abs(numeric) + bound)
    if err > tol + noise / t:
        # before blaming the gradient, measure the value's own noise: two steps 1e-7 of the one
        # above change the true value by ~1e-7 of the derivative, a value computed in a lower
        # precision by its rounding (a float32 value in float64 clothing: ~1e-7 relative)
        base = float(np.sum(cotangent * np.asarray(f(inputs), np.float64)))
        probes = [abs(float(np.sum(cotangent * shifted(sign * 1e-7))) - base) for sign in (1.0, -1.0)]
        noise = max(noise, 4 * max(probes)) if all(math.isfinite(p) for p in probes) else noise
    floor = noise / t
    # ok, the error, the tolerance, and whether noise rather than the gradient sets the tolerance
    return bool(err <= tol + floor), err, tol + floor, bool(floor > tol)


def _noise(cotangent: np.ndarray, value: np.ndarray) -> float:
    """A bound on the rounding error of ``<c, f>`` for a float64 value ``f`` (64 ulps of each term)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return float(64 * np.finfo(np.float64).eps * np.sum(np.abs(cotangent) * (np.abs(value) + 1.0)))


def _match(spec: LossSpec, target: Target, inputs: dict[str, np.ndarray], options: dict[str, Any],
           dtype: str, tolerance: str, cand_value: np.ndarray, cand_grads: dict[str, np.ndarray],
           cotangent: np.ndarray, backend: str, plan: _Plan) -> tuple[dict[str, Any], list[_Mismatch]]:
    """Compare value and gradients with the reference run with ``options``: every mismatch."""
    ref_cotangent = cotangent if target.wrt else None  # value-only targets: no reference backward

    def reference_side(ins: dict[str, np.ndarray], opts: dict[str, Any],
                       ct: np.ndarray | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return _reference(spec, ins, opts, ct, backend)

    ref_value, ref_grads = _evaluate(reference_side, spec, inputs, options, ref_cotangent, plan)
    if spec.canonical is not None:
        cand_value = np.asarray(spec.canonical(cand_value, dtype), np.float64)
    misses: list[_Mismatch] = []
    abs_err = rel_err = 0.0
    try:
        abs_err, rel_err = compare_values(cand_value, ref_value, dtype, "value", tolerance=tolerance)
    except _Mismatch as miss:
        misses.append(_Mismatch(str(miss), "value", miss.abs_err, miss.rel_err))
    rows = max(1, math.prod(np.shape(inputs[spec.positional[0]])[:-1]))
    floor = float(np.max(np.abs(cotangent), initial=0.0)) / rows
    for name in target.wrt:
        if name not in ref_grads or name not in cand_grads:
            continue
        try:
            a, r = compare_values(cand_grads[name], ref_grads[name], dtype, f"d/d{name}", floor,
                                  tolerance=tolerance)
        except _Mismatch as miss:
            misses.append(_Mismatch(str(miss), f"gradient w.r.t. {name}", miss.abs_err, miss.rel_err))
            continue
        abs_err, rel_err = max(abs_err, a), max(rel_err, r)
    return {"abs": abs_err, "rel": rel_err, "grads": ref_grads, "value": ref_value}, misses


def _finite_inputs(inputs: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(v).all() for v in inputs.values() if np.issubdtype(v.dtype, np.floating))


# ------------------------------------------------------------------ declared preconditions

#: The preconditions a target may declare (``certify(preconditions=...)``): a case outside
#: one is skipped with the reason instead of being charged to the function.
PRECONDITIONS: dict[str, str] = {
    "finite_inputs": "no NaN or ±inf in the float inputs",
    "min_two_classes": "at least two classes",
    "smoothing_below_one": "label_smoothing below 1",
    "unvalidated_inputs": "the function does not promise to refuse invalid input",
}

#: What a target's function may return (``certify(returns=...)``).
RETURNS = ("none", "mean", "sum")


def _classes(inputs: dict[str, np.ndarray]) -> int | None:
    if "logits" in inputs:
        return int(np.shape(inputs["logits"])[-1]) if np.ndim(inputs["logits"]) else None
    if "weights" in inputs and np.ndim(inputs["weights"]):
        return int(np.shape(inputs["weights"])[0])
    return None


def _outside(target: Target, case: Case) -> str | None:
    """The first declared precondition ``case`` violates, as a reason; ``None`` if none."""
    for name in target.preconditions:
        if name == "finite_inputs" and not _finite_inputs(case.rounded()):
            bad = True
        elif name == "min_two_classes":
            c = _classes(case.inputs)
            bad = c is not None and c < 2
        elif name == "smoothing_below_one":
            bad = float(case.options.get("label_smoothing", 0.0) or 0.0) >= 1.0
        elif name == "unvalidated_inputs":
            bad = not case.valid
        else:  # pragma: no cover - certify() validates the names
            bad = False
        if bad:
            return f"outside the declared precondition {name} ({PRECONDITIONS[name]})"
    return None


# ------------------------------------------------------------------ one case

def _lowest(dtypes: tuple[str, ...], fw: Framework) -> str | None:
    """The least precise dtype both the target and its framework take (``DTYPES`` order)."""
    usable = [d for d in DTYPES if d in dtypes and d in fw.dtypes]
    return usable[-1] if usable else None


def run_case(target: Target, case: Case, *, backend: str = "numpy", seed: int = 0) -> CaseResult:
    """Certify ``target`` on ``case``: every check that fails is reported."""
    fw = get_framework(target.framework)
    spec = SPECS[target.loss]
    if case.dtype not in target.dtypes or case.dtype not in fw.dtypes:
        lowest = _lowest(target.dtypes, fw)
        if case.valid or lowest is None:
            return CaseResult(target.library, target.function, case.name, "skipped",
                              f"{target.library} does not take {case.dtype} here", dtype=case.dtype,
                              tags=case.tags)
        # invalid inputs come in float64 only: run them in the lowest dtype the target takes
        case = Case(case.name.replace(f"[{case.dtype}]", f"[{lowest}]"), case.loss, case.inputs,
                    case.options, lowest, case.valid, case.tags)
    result = CaseResult(target.library, target.function, case.name, "pass", dtype=case.dtype, tags=case.tags)
    reason = _outside(target, case)
    if reason is not None:
        result.status, result.message = "skipped", reason
        return result
    inputs = case.rounded()
    options = {k: v for k, v in case.rounded_options().items() if k not in spec.array_options}
    rng = np.random.default_rng(seed)
    if not case.valid:
        return _run_invalid(target, fw, case, inputs, options, result)

    try:
        plan = _plan(spec, target, inputs, options, backend)
        ref_value, _ = _evaluate(lambda i, o, c: _reference(spec, i, o, c, backend), spec, inputs,
                                 options, None, plan)
    except Exception as exc:
        if case.dtype != "float64":  # the rounding, not the candidate, made the case invalid
            result.status = "skipped"
            result.message = (f"rounding the inputs to {case.dtype} makes this case invalid "
                              f"(the reference refuses it: {type(exc).__name__}: {_first_line(exc)})")
            return result
        result.status, result.message = "error", f"reference failed: {exc!r}"  # pragma: no cover
        return result
    cotangent = rng.standard_normal(ref_value.shape) if ref_value.shape else np.asarray(rng.standard_normal())
    given: dict[str, Any] = {}  # reference options fixed by a randomised target's own draw
    changed: list[str] = []
    expected = () if plan.lead is not None else tuple(ref_value.shape)

    def candidate_side(ins: dict[str, np.ndarray], opts: dict[str, Any],
                       ct: np.ndarray | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return _candidate(target, fw, ins, opts, case.dtype, ct, given, expected, changed)

    try:
        cand_value, cand_grads = _evaluate(candidate_side, spec, inputs, options, cotangent, plan)
    except Unsupported as exc:
        result.status, result.message = "skipped", str(exc)
        return result
    except _WrongShape as exc:
        result.checks["shape"] = "FAIL"
        return _fail(result, target, case, inputs, options, [f"shape: {exc}"], plan)
    except _CandidateRaised as exc:
        result.status = "error"
        result.message = f"raised on a valid input: {exc}"
        result.reproducer = reproducer(target, case, inputs, options, plan)
        result.checks["trace"] = "".join(traceback.format_exception(exc.__cause__ or exc, limit=4))[-800:]
        return result
    except Exception as exc:  # the driver failed on what the candidate returned
        result.checks["gradient"] = "FAIL"
        return _fail(result, target, case, inputs, options,
                     [f"gradient: {fw.name} could not differentiate the value it returned "
                      f"({type(exc).__name__}: {_first_line(exc)})"], plan)
    failures: list[str] = []
    if changed:
        result.checks["purity"] = "FAIL"
        failures.append(f"modified its input {', '.join(changed)} (a loss must leave its arguments unchanged)")
        inputs = case.rounded()  # fresh copies: the candidate may have written into the old ones

    # 1.-2. value and gradient: the default reference, else the declared conventions and/or
    # compute dtype; every comparison that fails is reported
    if given:
        options = {**options, **given}
    conv = {**options, **target.conventions}
    attempts = [("default", options, case.dtype)]
    if target.conventions and not _same(conv, options):
        attempts.append(("conventions", conv, case.dtype))
    computes = target.compute_dtype
    if computes is not None and DTYPES.index(computes) > DTYPES.index(case.dtype):
        attempts += [(f"compute_dtype={computes}", options, computes)]
        if len(attempts) == 3:
            attempts.append((f"conventions and compute_dtype={computes}", conv, computes))
    tried: list[tuple[str, list[_Mismatch]]] = []
    passed: tuple[str, dict[str, Any], dict[str, Any]] | None = None
    default: dict[str, Any] = {}  # the default comparison's reference results
    for kind, opts, tolerance in attempts:
        errors, misses = _match(spec, target, inputs, opts, case.dtype, tolerance, cand_value, cand_grads,
                                cotangent, backend, plan)
        default = default or errors
        if not misses:
            passed = (kind, opts, errors)
            break
        tried.append((kind, misses))
    if passed is not None:
        kind, used_options, errors = passed
        result.max_abs_error, result.max_rel_error = errors["abs"], errors["rel"]
        result.checks["value"] = result.checks["gradient"] = "pass" if kind == "default" else "convention"
        if kind != "default":
            result.status, result.message = "convention", _convention_message(target, options, kind, tried)
    else:
        used_options, errors = options, default
        for kind, misses in tried:
            for miss in misses:
                result.checks[miss.what] = "FAIL"
                if math.isfinite(miss.abs_err):
                    result.max_abs_error = max(result.max_abs_error, miss.abs_err)
                    result.max_rel_error = max(result.max_rel_error, miss.rel_err)
                else:
                    result.max_abs_error = result.max_rel_error = math.inf
            where = "" if kind == "default" else f"with {_describe(target, options, kind)}: "
            failures.append(where + "; ".join(f"{m.what}: {m}" for m in misses))

    # 3./4. finite differences: the reference against itself, the candidate against its own loss
    wrt = tuple(n for n in target.wrt if n in cand_grads)
    if not wrt:
        result.checks["self-consistency"] = "skipped (no gradient)"
    elif case.dtype == "float64" and _finite_inputs(inputs) and np.isfinite(ref_value).all() \
            and np.isfinite(cand_value).all():
        failures += _fd_checks(target, spec, fw, inputs, options, used_options, cand_value, cand_grads,
                               errors["value"], errors["grads"], wrt, cotangent, rng, backend, plan, result)
    else:
        result.checks["self-consistency"] = "skipped (needs float64 and finite values)"
    if failures:
        return _fail(result, target, case, inputs, used_options, failures, plan)
    return result


def _run_invalid(target: Target, fw: Framework, case: Case, inputs: dict[str, np.ndarray],
                 options: dict[str, Any], result: CaseResult) -> CaseResult:
    """An invalid input passes when the candidate refuses it (raises), fails when it returns a value."""
    if target.returns != "none":
        options = {**options, "reduction": target.returns}
    changed: list[str] = []
    try:
        value, _ = _candidate(target, fw, inputs, options, case.dtype, None, changed=changed)
    except Unsupported as exc:
        result.status, result.message = "skipped", str(exc)
        return result
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, _CandidateRaised) and exc.__cause__ else exc
        result.message = f"refused invalid input: {type(cause).__name__}: {_first_line(cause)}"
        return result
    failures = [f"returned a result for invalid input ({', '.join(case.tags)}): "
                f"{np.array2string(np.asarray(value), precision=6)}"]
    if changed:
        failures.append(f"modified its input {', '.join(changed)} (a loss must leave its arguments unchanged)")
    return _fail(result, target, case, case.rounded(), options, failures, _Plan())


def _fd_checks(target: Target, spec: LossSpec, fw: Framework, inputs: dict[str, np.ndarray],
               options: dict[str, Any], ref_options: dict[str, Any], cand_value: np.ndarray,
               cand_grads: dict[str, np.ndarray], ref_value: np.ndarray,
               ref_grads: dict[str, np.ndarray], wrt: tuple[str, ...], cotangent: np.ndarray,
               rng: np.random.Generator, backend: str, plan: _Plan, result: CaseResult) -> list[str]:
    """The finite-difference checks; a failure only when the reference passes the same check.

    ``options`` are the candidate's (the case's), ``ref_options`` those of the reference
    comparison that passed (its declared conventions included), ``ref_value`` and
    ``ref_grads`` that comparison's reference value and VJP for ``cotangent``.

    A check the reference itself fails on the case (a kink, an ill-conditioned input) cannot
    condemn the candidate: it is reported as inconclusive.
    """
    seed = int(rng.integers(2**32))

    def reference_side(ins: dict[str, np.ndarray], opts: dict[str, Any],
                       ct: np.ndarray | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return _reference(spec, ins, opts, ct, backend)

    def ref_f(values: dict[str, np.ndarray]) -> np.ndarray:
        return _evaluate(reference_side, spec, values, ref_options, None, plan)[0]

    def cand_f(values: dict[str, np.ndarray]) -> np.ndarray:
        def side(ins: dict[str, np.ndarray], opts: dict[str, Any],
                 ct: np.ndarray | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            return _candidate(target, fw, ins, opts, "float64", None)
        return _evaluate(side, spec, values, options, None, plan)[0]

    noise = _noise(cotangent, ref_value)
    ref_ok, ref_err, ref_tol, _ = _fd_check(ref_f, inputs, ref_grads, wrt, cotangent,
                                            np.random.default_rng(seed), spec.positive, noise)
    result.checks["reference-fd"] = "pass" if ref_ok else f"FAIL ({ref_err:.3g} > {ref_tol:.3g})"
    if target.compute_dtype is not None:
        result.checks["self-consistency"] = (f"skipped (computes in {target.compute_dtype}: a finite "
                                             f"difference cannot resolve its float64 gradient)")
        return []
    # the candidate's value may deviate from the reference (within its tolerance, or not):
    # that deviation is noise the finite difference cannot see through
    with np.errstate(invalid="ignore", over="ignore"):
        deviation = float(np.sum(np.abs(cotangent) * np.abs(np.asarray(cand_value, np.float64) - ref_value)))
    ok, err, tol, limited = _fd_check(cand_f, inputs, cand_grads, wrt, cotangent, np.random.default_rng(seed),
                                      spec.positive, noise + (deviation if math.isfinite(deviation) else 0.0))
    if ok:
        result.checks["self-consistency"] = "pass" + (" (noise-limited)" if limited else "")
        return []
    if limited:
        result.checks["self-consistency"] = (f"inconclusive ({err:.3g} > {tol:.3g}: the value is too noisy "
                                             "for a finite difference to resolve its gradient)")
        return []
    if not ref_ok:
        result.checks["self-consistency"] = (f"inconclusive ({err:.3g} > {tol:.3g}, but the reference "
                                             "fails the same check on this case)")
        return []
    result.checks["self-consistency"] = "FAIL"
    return [f"self-consistency: gradient disagrees with its own loss: finite-difference error "
            f"{err:.3g} > tolerance {tol:.3g} ({FD_TOLERANCE:g} x the directional derivative's "
            f"size, plus the value's noise floor)"]


def _describe(target: Target, options: dict[str, Any], kind: str) -> str:
    parts = []
    if "conventions" in kind:
        differing = {k: v for k, v in target.conventions.items() if options.get(k, _DEFAULTS.get(k)) != v}
        parts.append("the declared conventions " + ", ".join(f"{k}={v!r}" for k, v in differing.items()))
    if "compute_dtype" in kind:
        parts.append(f"{target.compute_dtype} tolerance (compute_dtype={target.compute_dtype!r})")
    return " and ".join(parts)


def _convention_message(target: Target, options: dict[str, Any], kind: str,
                        tried: list[tuple[str, list[_Mismatch]]]) -> str:
    text = "follows " + _describe(target, options, kind)
    if "conventions" in kind and target.convention_doc:
        text += f" ({target.convention_doc})"
    default = next((m for k, m in tried if k == "default"), None)
    if default:
        text += "; against the default reference: " + "; ".join(f"{m.what}: {m}" for m in default)
    return text

_DEFAULTS = {"label_smoothing_mode": "uniform", "class_weighting": "per_class",
             "mean_denominator": "weights", "empty_mean": "nan"}


def _same(a: Any, b: Any) -> bool:
    """Equality of option values that may hold NumPy arrays (inside tuples and dicts)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    return bool(a == b)


def _fail(result: CaseResult, target: Target, case: Case, inputs: dict[str, np.ndarray],
          options: dict[str, Any], failures: list[str], plan: _Plan) -> CaseResult:
    """Mark ``result`` failed with every failing check in its message, and attach a reproducer."""
    result.status = "fail"
    result.message = " | ".join(failures)
    result.reproducer = reproducer(target, case, inputs, options, plan)
    return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""



# ------------------------------------------------------------------ reproducers

def _literal(x: np.ndarray) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(fmt(u) for u in v) + "]"
        if isinstance(v, float):
            if math.isnan(v):
                return "np.nan"
            if math.isinf(v):
                return "np.inf" if v > 0 else "-np.inf"
            return repr(v)
        return repr(v)

    kind = "np.float64" if np.issubdtype(x.dtype, np.floating) else "np.int64"
    return f"np.array({fmt(x.tolist())}, dtype={kind})"


def _option_literal(v: Any) -> str:
    """``v`` as Python source: arrays as ``np.array(...)``, tuples and dicts recursively."""
    if isinstance(v, np.ndarray):
        return _literal(v)
    if isinstance(v, tuple):
        return "(" + "".join(f"{_option_literal(u)}, " for u in v).rstrip(" ") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(_option_literal(u) for u in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {_option_literal(u)}" for k, u in v.items()) + "}"
    if isinstance(v, float) and not math.isfinite(v):
        return "np.nan" if math.isnan(v) else ("np.inf" if v > 0 else "-np.inf")
    return repr(v)


def reproducer(target: Target, case: Case, inputs: dict[str, np.ndarray], options: dict[str, Any],
               plan: _Plan | None = None) -> str:
    """A self-contained snippet: the exact input, the library call, and the reference.

    ``options`` are the reference options the comparison used; the library
    call gets the case's own options (``library_options``).  A spec with its
    own ``reference`` is called through ``SPECS`` (registered by the adapter,
    which ``target.imports`` should import).  A user's function (``certify``) is
    bound to ``fn`` by ``target.source`` and fed the framework's arrays.  Under a
    per-example ``plan`` both calls run one example at a time.
    """
    spec = SPECS[target.loss]
    plan = plan or _Plan()
    library_options = {k: v for k, v in case.rounded_options().items()
                       if k not in spec.array_options}
    if plan.lead is not None or (target.returns != "none" and not case.valid):
        library_options = {**library_options, "reduction": target.returns}
        options = {**options, "reduction": target.returns}
    fw = get_framework(target.framework)
    lines = ["import numpy as np", "import refsoftmax"]
    source = target.source if not target.source.startswith("fn = ...") else ""
    for extra_import in (target.imports, source and fw.import_line, target.source):
        if extra_import and extra_import not in lines:
            lines.append(extra_import)
    if spec.reference is not None:
        lines.append("from refsoftmax.conformance.targets import SPECS")
    lines.append(f"# case {case.name!r}; the library is fed {case.dtype}")
    for k, v in inputs.items():
        lines.append(f"{k} = {_literal(v)}")
    lines.append(f"options = {_option_literal(library_options)}")
    sliced: set[str] = set()
    if plan.lead is not None:
        sliced, _ = _examples(spec, inputs, options, plan.lead)
        lines.append(f"# {target.function} returns only a {plan.reduction}: one example at a time")
        lines.append(f"examples = list(np.ndindex(*{plan.lead!r}))")

    def arg(name: str, source: bool) -> str:
        x = f"{name}[i][None]" if name in sliced else name
        if not source:
            return x
        floating = np.issubdtype(inputs[name].dtype, np.floating)
        return fw.source(x, case.dtype if floating else None)

    def each(expr: str) -> str:
        return f"[{expr} for i in examples]" if plan.lead is not None else expr

    fn_kwargs = "**options"
    if target.accepted is not None and "reduction" not in target.accepted:
        fn_kwargs = "**{k: v for k, v in options.items() if k != 'reduction'}"
    if target.expression:
        w = "class_weights" if "class_weights" in inputs else "None"
        lines.append(f"value = {each(target.expression.format(dtype=case.dtype, w=w))}")
    elif target.source:
        weights = ", class_weights=" + arg("class_weights", True) if "class_weights" in inputs else ""
        args = ", ".join(arg(n, True) for n in spec.positional)
        call = f"value = {each(f'fn({args}, {fn_kwargs}{weights})')}"
        # a function that cannot be imported (a closure, __main__): the call, for the reader
        lines.append(("# " + call) if target.source.startswith("fn = ...") else call)
    extra = ", ".join(f"{n}={n}" for n in spec.array_options if n in inputs)
    args = ", ".join(arg(n, False) for n in spec.positional)
    reference_options = "options" if _same(options, library_options) else _option_literal(options)
    function = (f"refsoftmax.{spec.name}" if spec.reference is None
                else f"SPECS[{spec.name!r}].function")
    extra = ", " + extra if extra else ""
    lines.append(f"expected = {each(f'{function}({args}, **{reference_options}{extra})')}")
    calls = target.expression or (target.source and not target.source.startswith("fn = ..."))
    lines.append("print(value, expected)" if calls else "print(expected)")
    return "\n".join(lines)

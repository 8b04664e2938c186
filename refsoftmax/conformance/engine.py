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

from refsoftmax.conformance.cases import Case, round_to_dtype
from refsoftmax.conformance.frameworks import Framework, get_framework
from refsoftmax.conformance.targets import SPECS, Drawn, LossSpec, Target, Unsupported

__all__ = ["TOLERANCES", "CaseResult", "run_case"]

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
                   floor: float = 0.0) -> tuple[float, float]:
    """Raise :class:`_Mismatch` unless ``candidate`` equals ``reference`` within the dtype's tolerance.

    Values: ``|a - r| <= tol (|r| + 1)``.  Gradients: ``|a - r| <= tol (|r| + s)`` with
    ``s = max(max|r|, floor)``, ``floor`` being the gradient's natural size (the cotangent's
    size over the number of rows), so that uniformly tiny gradients are not compared to
    the last bit.
    """
    cand = np.asarray(candidate, np.float64)
    ref = np.asarray(reference, np.float64)
    if cand.shape != ref.shape:
        msg = f"{what} has shape {cand.shape}, expected {ref.shape}"
        raise _Mismatch(msg)
    best = round_to_dtype(ref, dtype)  # the nearest representable answer (inf if it does not fit)
    tol = TOLERANCES[dtype]
    nonfinite = ~np.isfinite(best)
    same_nonfinite = (cand == best) | (np.isnan(cand) & np.isnan(best))
    bad_nonfinite = nonfinite & ~same_nonfinite
    if bad_nonfinite.any():
        i = np.flatnonzero(bad_nonfinite)[0]
        msg = f"{what}[{_index(ref.shape, i)}] is {float(cand.flat[i])!r}, expected {float(best.flat[i])!r}"
        raise _Mismatch(msg)
    fin = ~nonfinite
    spurious = fin & ~np.isfinite(cand)
    if spurious.any():
        i = np.flatnonzero(spurious)[0]
        msg = (f"{what}[{_index(ref.shape, i)}] is {float(cand.flat[i])!r} where the true value is finite "
               f"({ref.flat[i]:.17g})")
        raise _Mismatch(msg)
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


def _candidate(target: Target, fw: Framework, inputs: dict[str, np.ndarray], options: dict[str, Any],
               dtype: str, cotangent: np.ndarray | None,
               given: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The candidate's value and gradients; what a randomised target's draw fixed goes to
    ``given``."""
    arrays = {}
    for k, v in inputs.items():
        arrays[k] = fw.to_array(v, dtype if np.issubdtype(v.dtype, np.floating) else None)
    before = {k: np.array(fw.to_numpy(a), copy=True) for k, a in arrays.items()}
    out = _call_candidate(target, fw, arrays, options, dtype, cotangent, given)
    _check_unmodified(fw, arrays, before)
    return out


class _Modified(Exception):
    """The candidate wrote into one of its input arrays."""


def _check_unmodified(fw: Framework, arrays: dict[str, Any], before: dict[str, np.ndarray]) -> None:
    """Raise :class:`_Modified` naming every input array the candidate changed in place."""
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
    if changed:
        msg = f"modified its input {', '.join(changed)} (a loss must leave its arguments unchanged)"
        raise _Modified(msg)


def _call_candidate(target: Target, fw: Framework, arrays: dict[str, Any], options: dict[str, Any],
                    dtype: str, cotangent: np.ndarray | None,
                    given: dict[str, Any] | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:

    def fn(**kw: Any) -> Any:
        out = target.call(kw, options)
        if isinstance(out, Drawn):
            if given is not None:
                given.update(out.given)
            return out.value
        return out

    if cotangent is None or not target.wrt:
        return fw.to_numpy(fn(**arrays)), {}
    if target.grad_fn is not None:
        value = fw.to_numpy(fn(**arrays))
        grads = target.grad_fn(arrays, options, fw.to_array(cotangent, dtype))
        return value, {k: fw.to_numpy(v) for k, v in grads.items()}
    return fw.vjp(fn, arrays, target.wrt, cotangent)


def _fd_check(f: Any, inputs: dict[str, np.ndarray], grads: dict[str, np.ndarray], wrt: tuple[str, ...],
              cotangent: np.ndarray, rng: np.random.Generator,
              positive: tuple[str, ...] = ()) -> tuple[bool, float]:
    """Central difference of ``f`` along a random direction against ``<grads, direction>``.

    Inputs named in ``positive`` are perturbed relatively: by ``1e-6 |x| d``.
    """
    directions = {k: rng.standard_normal(inputs[k].shape) for k in wrt}
    scale = max(1.0, *(float(np.max(np.abs(inputs[k]), initial=0.0)) for k in wrt))
    h = 1e-6 * scale
    for k in positive:
        if k in directions:
            directions[k] = directions[k] * np.abs(inputs[k]) / scale
    if "labels" in directions:  # soft labels must stay >= 0: leave entries near 0 alone
        directions["labels"] = directions["labels"] * (inputs["labels"] > 10 * h)

    def shifted(sign: float) -> np.ndarray:
        return np.asarray(f({**inputs, **{k: inputs[k] + sign * h * directions[k] for k in wrt}}), np.float64)

    numeric = float(np.sum(cotangent * (shifted(1.0) - shifted(-1.0)) / (2 * h)))
    analytic = float(sum(np.sum(grads[k] * directions[k]) for k in wrt))
    bound = float(sum(np.sum(np.abs(grads[k] * directions[k])) for k in wrt))
    err = abs(numeric - analytic)
    return bool(err <= FD_TOLERANCE * (abs(numeric) + bound) + 1e-12), err


def _match(spec: LossSpec, target: Target, inputs: dict[str, np.ndarray], options: dict[str, Any],
           dtype: str, cand_value: np.ndarray, cand_grads: dict[str, np.ndarray],
           cotangent: np.ndarray, backend: str) -> dict[str, Any]:
    """Compare value and gradients with the reference run with ``options``; raise on a mismatch."""
    ref_cotangent = cotangent if target.wrt else None  # value-only targets: no reference backward
    ref_value, ref_grads = _reference(spec, inputs, options, ref_cotangent, backend)
    if spec.canonical is not None:
        cand_value = np.asarray(spec.canonical(cand_value, dtype), np.float64)
    try:
        abs_err, rel_err = compare_values(cand_value, ref_value, dtype, "value")
    except _Mismatch as miss:
        raise _Mismatch(str(miss), "value", miss.abs_err, miss.rel_err) from None
    rows = max(1, math.prod(np.shape(inputs[spec.positional[0]])[:-1]))
    floor = float(np.max(np.abs(cotangent), initial=0.0)) / rows
    for name in target.wrt:
        if name not in ref_grads or name not in cand_grads:
            continue
        try:
            a, r = compare_values(cand_grads[name], ref_grads[name], dtype, f"d/d{name}", floor)
        except _Mismatch as miss:
            raise _Mismatch(str(miss), f"gradient w.r.t. {name}", miss.abs_err, miss.rel_err) from None
        abs_err, rel_err = max(abs_err, a), max(rel_err, r)
    return {"abs": abs_err, "rel": rel_err, "grads": ref_grads}


def _finite_inputs(inputs: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(v).all() for v in inputs.values() if np.issubdtype(v.dtype, np.floating))


# ------------------------------------------------------------------ one case

def run_case(target: Target, case: Case, *, backend: str = "numpy", seed: int = 0) -> CaseResult:
    """Certify ``target`` on ``case``."""
    fw = get_framework(target.framework)
    spec = SPECS[target.loss]
    result = CaseResult(target.library, target.function, case.name, "pass", dtype=case.dtype, tags=case.tags)
    if case.dtype not in target.dtypes or case.dtype not in fw.dtypes:
        result.status, result.message = "skipped", f"{target.library} does not take {case.dtype} here"
        return result
    inputs = case.rounded()
    options = {k: v for k, v in case.rounded_options().items() if k not in spec.array_options}
    rng = np.random.default_rng(seed)

    if not case.valid:
        try:
            value, _ = _candidate(target, fw, inputs, options, case.dtype, None)
        except Unsupported as exc:
            result.status, result.message = "skipped", str(exc)
            return result
        except _Modified as exc:
            result.status, result.message = "fail", str(exc)
            result.reproducer = reproducer(target, case, inputs, options)
            return result
        except Exception as exc:
            result.message = f"refused invalid input: {type(exc).__name__}: {_first_line(exc)}"
            return result
        result.status = "fail"
        result.message = f"returned a result for invalid input ({', '.join(case.tags)}): {np.array2string(value, precision=6)}"
        result.reproducer = reproducer(target, case, inputs, options)
        return result

    try:
        ref_value, _ = _reference(spec, inputs, options, None, backend)
    except Exception as exc:  # pragma: no cover - the reference rejecting a valid case is a bug
        result.status, result.message = "error", f"reference failed: {exc!r}"
        return result
    cotangent = rng.standard_normal(ref_value.shape) if ref_value.shape else np.asarray(rng.standard_normal())
    given: dict[str, Any] = {}  # reference options fixed by a randomised target's own draw
    try:
        cand_value, cand_grads = _candidate(target, fw, inputs, options, case.dtype, cotangent,
                                            given)
    except Unsupported as exc:
        result.status, result.message = "skipped", str(exc)
        return result
    except _Modified as exc:
        result.status, result.message = "fail", str(exc)
        result.checks["purity"] = "fail"
        result.reproducer = reproducer(target, case, inputs, options)
        return result
    except Exception as exc:
        result.status = "error"
        result.message = f"raised on a valid input: {type(exc).__name__}: {_first_line(exc)}"
        result.reproducer = reproducer(target, case, inputs, options)
        result.checks["trace"] = traceback.format_exc(limit=3)[-600:]
        return result

    # 1.-2. value and gradient, against the default reference, else the declared conventions
    if given:
        options = {**options, **given}
    attempts = [("default", options)]
    conv = {**options, **target.conventions}
    if target.conventions and not _same(conv, options):
        attempts.append(("convention", conv))
    first_miss: tuple[str, _Mismatch] | None = None
    used_options: dict[str, Any] | None = None
    for kind, opts in attempts:
        try:
            errors = _match(spec, target, inputs, opts, case.dtype, cand_value, cand_grads, cotangent, backend)
        except _Mismatch as miss:
            if first_miss is None:
                first_miss = (miss.what, miss)
            continue
        used_options, ref_grads = opts, errors.pop("grads")
        result.max_abs_error, result.max_rel_error = errors["abs"], errors["rel"]
        result.checks["value"] = result.checks["gradient"] = "pass" if kind == "default" else "convention"
        if kind == "convention":
            differing = {k: v for k, v in target.conventions.items() if options.get(k, _DEFAULTS.get(k)) != v}
            result.status = "convention"
            result.message = "follows " + ", ".join(f"{k}={v!r}" for k, v in differing.items()) + (
                f" ({target.convention_doc})" if target.convention_doc else "")
        break
    if used_options is None:
        what, first = first_miss if first_miss is not None else ("value", _Mismatch("no comparison ran"))
        return _fail(result, target, case, inputs, options, what, first)

    # 3./4. finite differences: the candidate against its own loss, the reference against itself
    wrt = tuple(n for n in target.wrt if n in cand_grads)
    if not wrt:
        result.checks["self-consistency"] = "skipped (no gradient)"
    elif case.dtype == "float64" and _finite_inputs(inputs) and np.isfinite(ref_value).all():

        def cand_f(values: dict[str, np.ndarray]) -> np.ndarray:
            return _candidate(target, fw, values, options, "float64", None)[0]

        ok, err = _fd_check(cand_f, inputs, cand_grads, wrt, cotangent, rng, spec.positive)
        result.checks["self-consistency"] = "pass" if ok else f"FAIL ({err:.3g})"
        if not ok:
            inconsistent = _Mismatch(
                f"gradient disagrees with its own loss: finite-difference error {err:.3g}", "self-consistency")
            return _fail(result, target, case, inputs, used_options, "self-consistency", inconsistent)

        def ref_f(values: dict[str, np.ndarray]) -> np.ndarray:
            return _reference(spec, values, used_options, None, backend)[0]

        ok, err = _fd_check(ref_f, inputs, ref_grads, wrt, cotangent, rng, spec.positive)
        result.checks["reference-fd"] = "pass" if ok else f"FAIL ({err:.3g})"
    else:
        result.checks["self-consistency"] = "skipped (needs float64 and finite values)"
    return result


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
          options: dict[str, Any], what: str, miss: _Mismatch) -> CaseResult:
    result.status = "fail"
    result.message = f"{what}: {miss}"
    result.checks[what] = "FAIL"
    if math.isfinite(miss.abs_err):
        result.max_abs_error = max(result.max_abs_error, miss.abs_err)
        result.max_rel_error = max(result.max_rel_error, miss.rel_err)
    else:
        result.max_abs_error = result.max_rel_error = math.inf
    result.reproducer = reproducer(target, case, inputs, options)
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


def reproducer(target: Target, case: Case, inputs: dict[str, np.ndarray], options: dict[str, Any]) -> str:
    """A self-contained snippet: the exact input, the library call, and the reference.

    ``options`` are the reference options the comparison used; the library
    call gets the case's own options (``library_options``).  A spec with its
    own ``reference`` is called through ``SPECS`` (registered by the adapter,
    which ``target.imports`` should import).
    """
    spec = SPECS[target.loss]
    library_options = {k: v for k, v in case.rounded_options().items()
                       if k not in spec.array_options}
    lines = ["import numpy as np", "import refsoftmax"]
    if target.imports:
        lines.append(target.imports)
    if spec.reference is not None:
        lines.append("from refsoftmax.conformance.targets import SPECS")
    lines.append(f"# case {case.name!r}; the library is fed {case.dtype}")
    for k, v in inputs.items():
        lines.append(f"{k} = {_literal(v)}")
    lines.append(f"options = {_option_literal(library_options)}")
    if target.expression:
        w = "class_weights" if "class_weights" in inputs else "None"
        lines.append(f"value = {target.expression.format(dtype=case.dtype, w=w)}")
    extra = ", ".join(f"{n}={n}" for n in spec.array_options if n in inputs)
    args = ", ".join(spec.positional)
    reference_options = "options" if _same(options, library_options) else _option_literal(options)
    function = (f"refsoftmax.{spec.name}" if spec.reference is None
                else f"SPECS[{spec.name!r}].function")
    extra = ", " + extra if extra else ""
    lines.append(f"expected = {function}({args}, **{reference_options}{extra})")
    lines.append("print(value, expected)" if target.expression else "print(expected)")
    return "\n".join(lines)

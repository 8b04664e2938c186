r"""Finite-difference gradient checking for any refsoftmax-protocol function, on any backend.

Two modes, both with central differences in float64:

* ``"full"``: the whole Jacobian.  Column :math:`j` numerically, from
  :math:`f(x \pm h e_j)`; row :math:`i` analytically, as ``backward`` with the
  cotangent :math:`c_i e_i` divided by :math:`c_i`, for a random real
  :math:`c_i` with :math:`0.5 \le |c_i| \le 2` and :math:`|c_i| \notin (0.9, 1/0.9)`.
  On top, one dense random cotangent :math:`u`: ``backward(u)`` against
  :math:`u^{\mathsf T} J` of the numerical Jacobian.  For small inputs.
* ``"vjp"``: random directions.  For a random cotangent :math:`u` (entries
  drawn like :math:`c_i`) and a random direction :math:`v`, the dot-product
  test :math:`\langle u, (f(x+hv) - f(x-hv))/2h\rangle \approx
  \langle \mathrm{backward}(u), v\rangle`, repeated ``num_directions`` times
  per argument.  Cost independent of the input size.

A cotangent is never 1, so a ``backward`` that ignores, squares or mis-signs
it fails (at a cotangent of 1, ``g * grad``, ``g**2 * grad`` and ``grad``
agree).  ``"auto"`` picks ``"full"`` when every checked argument has at most
64 elements.

The step is chosen per argument from the function's local behaviour, not from
:math:`\|x\|_\infty` alone.  A central difference
:math:`D(h) = (f(x+hd) - f(x-hd))/2h` has the error

.. math::

    D(h) - J d \approx \frac{h^2}{6} f'''_d + \frac{\delta}{h},

truncation plus rounding, where :math:`\delta` is the absolute rounding error
of one evaluation of :math:`f`.  For a backward-stable evaluation
:math:`\delta \approx \epsilon\,(|f| + \sum_j |x_j|\,|\partial_j f|)`: it grows
with the function's value *and* with the size of the perturbed entries, while
:math:`f'''` depends on the function's length scale, :math:`O(1)` for
softmax-type losses at any shift of the logits (they are shift- but not
scale-invariant), zero where the loss is saturated (linear).  The sum is
smallest at :math:`h^* = (3\delta/|f'''|)^{1/3}`, which is neither
:math:`\epsilon^{1/3}` nor :math:`\epsilon^{1/3}\|x\|_\infty` in general
(at logits :math:`10^5 + O(1)` the latter, 0.6, leaves the quadratic regime).
Neither term is known in advance, so both are measured.  On the ladder
:math:`h_k = \epsilon^{1/3} 2^k`, :math:`k = 0, 1, \dots,
\lceil\log_2\max(1, \|x\|_\infty)\rceil + 2`, along two random probe
directions, the central difference :math:`D(h_k)` and its Richardson
extrapolation :math:`R(h_k) = (4D(h_k/2) - D(h_k))/3` (error
:math:`O(h^4) + O(\delta/h)`) are each compared with the same formula at
:math:`2h_k`.  An estimate's error is taken as that gap (it bounds the
truncation error, which is 4 or 16 times larger at :math:`2h_k`), but at least
the rounding floor :math:`\delta/h_k` (:math:`3\delta/h_k` for :math:`R`) with
:math:`\delta = 2\epsilon\,(|f(x)| + \max(1, \|x\|_\infty)\,|D(h_k)|)`,
since quantised rounding noise can make two estimates agree by chance.  The
first rung whose error is at most 0.1 of the tolerance ``atol + rtol * |n|``
is used, with :math:`D` when that qualifies, else :math:`R`; when none
qualifies (rungs :math:`k = -1, -2` are added), the rung and formula with the
smallest error.  So the step stays at :math:`\epsilon^{1/3}` for order-1
inputs and grows only as far as the rounding error of the actual evaluations
requires.  The perturbation is exact: the difference is divided by
``(x + h) - (x - h)`` as represented, not by :math:`2h`.  ``step=`` overrides
the rule (a plain central difference at that step).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import numpy as np

from refsoftmax import backends
from refsoftmax._arrays import resolve
from refsoftmax._validation import check_choice

__all__ = ["ArgumentReport", "GradcheckError", "GradcheckReport", "gradcheck"]

MODES = ("auto", "full", "vjp")

_EPS = float(np.finfo(np.float64).eps)
#: The optimal central-difference step for a function with value, and length scale, of order 1.
_BASE_STEP = _EPS ** (1.0 / 3.0)
#: A rung is accepted when its estimated error is at most this fraction of the tolerance.
_ACCEPT = 0.1
#: Rounding error of one evaluation, in ulps of the value and of |x| * |df| (backward stability).
_NOISE_ULPS = 2.0
#: Random probe directions per argument for the step choice.
_NUM_PROBES = 2
#: Rungs above ``log2(max(1, |x|_inf))``; the old rule ``eps**(1/3) * |x|_inf`` lies below them.
_LADDER_HEADROOM = 2
#: Cotangent magnitudes are ``2**e`` with ``_COTANGENT_GAP <= |e| <= 1``: outside (0.9, 1/0.9).
_COTANGENT_GAP = math.log2(10.0 / 9.0)


class GradcheckError(Exception):
    """Raised by :func:`gradcheck` in strict mode when a gradient disagrees; carries the report."""

    def __init__(self, report: GradcheckReport) -> None:
        super().__init__(str(report))
        self.report = report


@dataclass
class ArgumentReport:
    """Agreement between the analytic and numerical gradient of one argument.

    Attributes
    ----------
    name : str
        The argument's name.
    max_abs_error : float
        The largest ``|a - n|``.
    max_rel_error : float
        The largest ``|a - n| / |n|``, over the entries that differ.
    passed : bool
        Whether every compared quantity is within ``atol + rtol * |n|``.
    checked : int
        Compared quantities: Jacobian entries in ``"full"`` mode (the random-cotangent
        product compared on top is not counted), directions in ``"vjp"`` mode.
    step : float
        The finite-difference step :math:`h` used for this argument.
    order : int
        2: central differences at ``step``; 4: their Richardson extrapolation from
        ``step`` and ``step / 2``.
    """

    name: str
    max_abs_error: float
    max_rel_error: float
    passed: bool
    checked: int  # number of compared quantities (Jacobian entries or directions)
    step: float = math.nan
    order: int = 2


@dataclass
class GradcheckReport:
    """What :func:`gradcheck` measured, per argument.

    ``step`` is the largest step used over the arguments; each
    :class:`ArgumentReport` has its own.
    """

    function: str
    mode: str
    step: float
    rtol: float
    atol: float
    arguments: dict[str, ArgumentReport] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.arguments.values())

    def __str__(self) -> str:
        lines = [
            f"gradcheck {self.function} ({self.mode} mode, h={self.step:.3g}, "
            f"rtol={self.rtol:g}, atol={self.atol:g}): {'passed' if self.passed else 'FAILED'}"
        ]
        for a in self.arguments.values():
            how = " extrapolated" if a.order == 4 else ""
            lines.append(
                f"  {a.name}: h={a.step:.3g}{how}, max abs error {a.max_abs_error:.3e}, max rel error "
                f"{a.max_rel_error:.3e} over {a.checked} checks -> {'ok' if a.passed else 'MISMATCH'}"
            )
        return "\n".join(lines)


def _arg_names(fn: Any) -> list[str]:
    target = fn.forward if hasattr(fn, "forward") else fn
    params = inspect.signature(target).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _compare(analytic: np.ndarray, numeric: np.ndarray, rtol: float, atol: float) -> tuple[float, float, bool]:
    both_equal = (analytic == numeric) | (np.isnan(analytic) & np.isnan(numeric))
    diff = np.where(both_equal, 0.0, np.abs(analytic - numeric))
    diff = np.where(np.isnan(diff), np.inf, diff)
    rel = diff / np.maximum(np.abs(numeric), np.finfo(np.float64).tiny)
    with np.errstate(invalid="ignore"):
        ok = bool(np.all(both_equal | (diff <= atol + rtol * np.abs(numeric))))
    return float(np.max(diff, initial=0.0)), float(np.max(np.where(diff == 0, 0.0, rel), initial=0.0)), ok


def _error(
    estimate: np.ndarray, coarser: np.ndarray, floor: np.ndarray, rtol: float, atol: float
) -> float:
    """The estimated error of ``estimate`` in units of its tolerance, the largest over its entries.

    The error is the gap to the same formula at twice the step, but not less
    than ``floor``, the rounding error expected at this step: quantised
    rounding noise can make two estimates agree by chance.  Equal non-finite
    values (equal infinities, NaN against NaN) count as error 0, any other
    non-finite value as an infinite one.
    """
    same = ((estimate == coarser) & ~np.isfinite(estimate)) | (np.isnan(estimate) & np.isnan(coarser))
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.maximum(np.abs(estimate - coarser), floor)
        scaled = error / (atol + rtol * np.abs(estimate))
    scaled = np.where(same, 0.0, scaled)
    scaled = np.where(np.isnan(scaled), np.inf, scaled)  # inf - inf, or NaN on one side only
    return float(np.max(scaled, initial=0.0))


def _choose_step(
    difference: Callable[[float], np.ndarray],
    value: np.ndarray,
    scale: float,
    rtol: float,
    atol: float,
) -> tuple[float, int]:
    """``(h, order)`` for the argument whose probe central differences are ``difference(h)``.

    ``value`` is the function's value at ``x``, one entry per entry of
    ``difference(h)``; ``scale`` is ``max(1, |x|_inf)``.  See the module
    docstring for the rule.
    """
    top = math.ceil(math.log2(scale)) + _LADDER_HEADROOM  # scale < 2**1024: every rung is finite

    def rung(k: int) -> float:
        return math.ldexp(_BASE_STEP, k)  # powers of 2 apart: h/2 is exact

    cache: dict[int, np.ndarray] = {}

    def central(k: int) -> np.ndarray:
        if k not in cache:
            cache[k] = difference(rung(k))
        return cache[k]

    def richardson(k: int) -> np.ndarray:
        return (4.0 * central(k - 1) - central(k)) / 3.0  # the h**2 error terms cancel

    candidates: list[tuple[float, int, int]] = []

    def error(k: int, order: int) -> float:
        h = rung(k)
        # rounding error of one evaluation, if f is backward stable: a few ulps of
        # the value plus |x| * |df| (the value at inputs perturbed by a few ulps)
        with np.errstate(invalid="ignore", over="ignore"):
            delta = _NOISE_ULPS * _EPS * (np.abs(value) + scale * np.abs(central(k)))
        # each estimate against the same formula at twice the step: the larger
        # step's truncation error is 4x (16x) larger, so the gap bounds it; the
        # rounding floors: (f+ - f-) / 2h carries ~delta / h, and
        # R = (4 D(h/2) - D(h)) / 3 carries (4 * 2 delta/h + delta/h) / 3 = 3 delta / h
        if order == 2:
            e = _error(central(k), central(k + 1), delta / h, rtol, atol)
        else:
            e = _error(richardson(k), richardson(k + 1), 3.0 * delta / h, rtol, atol)
        candidates.append((e, k, order))
        return e

    for k in range(top + 1):
        for order in (2, 4):  # the plain difference first: it needs no evaluation at h/2
            if error(k, order) <= _ACCEPT:
                return rung(k), order
    for k in (-1, -2):  # a length scale below 1: smaller steps too
        error(k, 2)
        error(k, 4)
    best, k, order = min(candidates)  # smallest error; ties: smaller step, then order 2
    if not math.isfinite(best):
        return _BASE_STEP, 2  # the function is non-finite near x at every step: no basis to choose
    return rung(k), order


def _direction(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A random direction: standard normal entries, scaled to ``max |v| = 1``.

    So the largest perturbation of an entry is the step itself, as along a basis
    vector, whatever the number of entries (the step choice relies on it).
    """
    v = rng.standard_normal(shape)
    largest = float(np.max(np.abs(v), initial=0.0))
    return v / largest if largest > 0 else v  # an empty shape has no entry to scale


def _cotangent(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random cotangent entries: random sign, magnitude ``2**e`` with ``log2(10/9) <= |e| <= 1``.

    So ``0.5 <= |u| <= 2`` and ``|u|`` is outside ``(0.9, 1.11)``: never 1,
    never near 0.  ``u * g``, ``u**2 * g`` and ``g`` then differ by at least
    5% (10% between the first two), whatever the sign of ``u``.
    """
    # a magnitude bounded away from 1 (and from 0): a mishandled cotangent cannot agree by chance
    exponent = rng.uniform(_COTANGENT_GAP, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
    return rng.choice([-1.0, 1.0], shape) * 2.0**exponent


def gradcheck(
    fn: Any,
    args: Sequence[Any],
    wrt: str | Sequence[str] | None = None,
    *,
    mode: str = "auto",
    step: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    num_directions: int = 8,
    seed: int = 0,
    strict: bool = True,
    grad_fn: Callable[..., dict[str, Any]] | None = None,
    **kwargs: Any,
) -> GradcheckReport:
    """Compare ``fn``'s gradients with central finite differences in float64.

    Parameters
    ----------
    fn : refsoftmax Function, or any callable ``fn(*args, **kwargs) -> array``
        The function under test.  Its analytic gradient comes from
        ``fn.value_and_grad`` (the refsoftmax protocol) or, for other
        callables, from ``grad_fn(*args, cotangent=u, **kwargs) -> {name: grad}``.
    args : sequence
        Positional arguments; the checked ones are cast to float64 in
        their own namespace (the check runs on the arrays' backend and device).
        The others, ``None`` and Python numbers included, are passed through
        unchanged.
    wrt : str or sequence of str, optional
        Argument names to check; default ``fn.differentiable``.  Naming an
        argument that is ``None`` is a ``ValueError``.
    mode : {"auto", "full", "vjp"}
    step : float, optional
        Finite-difference step, the same for every checked argument (a plain
        central difference).  Default: chosen per argument from the function's
        behaviour near ``args``, see the module docstring.
    rtol : float
        Relative tolerance: an analytic value ``a`` passes against the
        numerical ``n`` when ``|a - n| <= atol + rtol * |n|`` (or both are
        the same non-finite value).
    atol : float
        Absolute tolerance, see ``rtol``.
    num_directions : int
        Random directions per argument in ``"vjp"`` mode.
    seed : int
        Seeds the random cotangents, directions and step probes.
    strict : bool
        Raise :class:`GradcheckError` on a mismatch (else only report it).
    grad_fn : callable, optional
        For callables outside refsoftmax: ``grad_fn(*args, cotangent=u, **kwargs)
        -> {name: gradient}``.
    **kwargs
        Passed to ``fn``.

    Returns
    -------
    GradcheckReport

    Raises
    ------
    ValueError
        For an unknown ``mode``, a ``wrt`` that names no positional argument
        or a ``None`` one, or a checked argument with non-finite entries.
    TypeError
        When ``fn`` has no ``value_and_grad`` and no ``grad_fn`` is given.
    GradcheckError
        With ``strict=True``, when a gradient disagrees.

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> report = refsoftmax.gradcheck(
    ...     refsoftmax.sparse_softmax_cross_entropy,
    ...     (np.array([[1.0, 2.0, 0.5]]), np.array([2])),
    ... )
    >>> report.passed
    True
    >>> logits = np.array([[1e5, 1e5 + 1.0, 1e5 - 0.5]])   # large, but O(1) apart
    >>> report = refsoftmax.gradcheck(refsoftmax.sparse_softmax_cross_entropy, (logits, np.array([2])))
    >>> report.passed, report.arguments["logits"].step > 1e-3
    (True, True)
    """
    check_choice("mode", mode, MODES)
    names = _arg_names(fn)[: len(args)]
    if wrt is None:
        wrt_names = list(getattr(fn, "differentiable", ()))
    else:
        wrt_names = [wrt] if isinstance(wrt, str) else list(wrt)
    wrt_names = list(dict.fromkeys(wrt_names))  # each argument once, in the given order
    if not wrt_names:
        msg = "wrt must name at least one argument to check"
        raise ValueError(msg)
    for name in wrt_names:
        if name not in names:
            msg = f"wrt names {name!r}, which is not one of the positional arguments {names}"
            raise ValueError(msg)
        if args[names.index(name)] is None:
            msg = f"wrt names {name!r}, which is None here; leave it out of wrt to pass it through"
            raise ValueError(msg)
    if grad_fn is None and not hasattr(fn, "value_and_grad"):
        msg = "fn has no value_and_grad; pass grad_fn(*args, cotangent=u, **kwargs) -> dict"
        raise TypeError(msg)

    position = {name: names.index(name) for name in wrt_names}
    xp, wrt_arrays = resolve(**{n: args[position[n]] for n in wrt_names})
    backend = backends.for_namespace(xp)
    device = array_api_compat.device(wrt_arrays[wrt_names[0]])
    host = {n: np.asarray(backend.to_numpy(wrt_arrays[n]), dtype=np.float64) for n in wrt_names}
    for name, x in host.items():
        if not np.all(np.isfinite(x)):
            msg = f"{name} has non-finite entries; gradcheck needs finite inputs (mask with where=)"
            raise ValueError(msg)

    def call(values: dict[str, np.ndarray], cotangent: np.ndarray | None = None) -> Any:
        call_args = list(args)  # None and non-array arguments pass through unchanged
        for name, i in position.items():
            call_args[i] = backend.from_host(values[name], device)
        if cotangent is None:
            return fn(*call_args, **kwargs)
        ct = backend.from_host(cotangent, device)
        if grad_fn is not None:
            return fn(*call_args, **kwargs), grad_fn(*call_args, cotangent=ct, **kwargs)
        return fn.value_and_grad(*call_args, cotangent=ct, **kwargs)

    def value(values: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(backend.to_numpy(call(values)), dtype=np.float64)

    def dense(grad: Any) -> np.ndarray:
        if hasattr(grad, "to_dense"):  # a RowSparse gradient
            grad = grad.to_dense()
        return np.asarray(backend.to_numpy(grad), dtype=np.float64)

    f0 = value(host)
    out_shape = tuple(f0.shape)
    out_size = f0.size
    if mode == "auto":
        mode = "full" if all(host[n].size <= 64 for n in wrt_names) else "vjp"
    rng = np.random.default_rng(seed)
    probe_rng = np.random.default_rng([seed, 1])  # its own stream: the checks do not depend on step=
    report = GradcheckReport(getattr(fn, "name", getattr(fn, "__name__", repr(fn))), mode, 0.0, rtol, atol)

    for name in wrt_names:
        x = host[name]

        def at(point: np.ndarray, name: str = name) -> np.ndarray:
            return value({**host, name: point})

        if step is not None:
            h, order = float(step), 2
        else:
            probes = [_direction(probe_rng, x.shape) for _ in range(_NUM_PROBES)]

            def probe_differences(h: float, x: np.ndarray = x, probes: list[np.ndarray] = probes) -> np.ndarray:
                parts = [((at(x + h * p) - at(x - h * p)) / (2 * h)).reshape(-1) for p in probes]
                return np.concatenate(parts)

            scale = max(1.0, float(np.max(np.abs(x), initial=0.0)))
            values = np.tile(f0.reshape(-1), _NUM_PROBES)  # the value, for each probe's differences
            h, order = _choose_step(probe_differences, values, scale, rtol, atol)

        def column(j: int, h: float, x: np.ndarray = x) -> np.ndarray:
            plus, minus = x.reshape(-1).copy(), x.reshape(-1).copy()
            plus[j] += h
            minus[j] -= h
            # x_j +- h are rounded; their difference is exact (Sterbenz) or within eps*h
            width = plus[j] - minus[j]
            return ((at(plus.reshape(x.shape)) - at(minus.reshape(x.shape))) / width).reshape(-1)

        def directional(v: np.ndarray, h: float, x: np.ndarray = x) -> tuple[np.ndarray, np.ndarray]:
            plus, minus = x + h * v, x - h * v
            # the direction actually taken, x +- h v being rounded
            taken = (plus - minus) / (2 * h)
            return (at(plus) - at(minus)) / (2 * h), taken

        numeric: np.ndarray[Any, np.dtype[np.float64]]
        analytic: np.ndarray[Any, np.dtype[np.float64]]
        if mode == "full":
            numeric_jac = np.empty((out_size, x.size))
            for j in range(x.size):
                if order == 4:
                    # Richardson: the h**2 terms of the two central differences cancel
                    numeric_jac[:, j] = (4.0 * column(j, h / 2) - column(j, h)) / 3.0
                else:
                    numeric_jac[:, j] = column(j, h)
            analytic_jac = np.empty((out_size, x.size))
            scales = _cotangent(rng, (out_size,))
            for i in range(out_size):
                basis = np.zeros(out_size)
                basis[i] = scales[i]
                _, grads = call(host, basis.reshape(out_shape))
                analytic_jac[i, :] = dense(grads[name]).reshape(-1) / scales[i]
            u = _cotangent(rng, out_shape)
            _, grads = call(host, u)
            analytic = np.concatenate([analytic_jac.reshape(-1), dense(grads[name]).reshape(-1)])
            numeric = np.concatenate([numeric_jac.reshape(-1), u.reshape(-1) @ numeric_jac])
            checked = numeric_jac.size
        else:
            numeric = np.empty(num_directions)
            analytic = np.empty(num_directions)
            for k in range(num_directions):
                u = _cotangent(rng, out_shape)
                v = _direction(rng, x.shape)
                fd, taken = directional(v, h)
                if order == 4:
                    fd_half, taken_half = directional(v, h / 2)
                    fd = (4.0 * fd_half - fd) / 3.0  # Richardson, as in "full" mode
                    taken = (4.0 * taken_half - taken) / 3.0  # the same combination of directions
                numeric[k] = float(np.sum(u * fd))
                _, grads = call(host, u)
                analytic[k] = float(np.sum(dense(grads[name]) * taken))
            checked = num_directions
        max_abs, max_rel, ok = _compare(analytic, numeric, rtol, atol)
        report.arguments[name] = ArgumentReport(name, max_abs, max_rel, ok, checked, h, order)
        report.step = max(report.step, h)
    if strict and not report.passed:
        raise GradcheckError(report)
    return report

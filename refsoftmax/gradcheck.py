r"""Finite-difference gradient checking for any refsoftmax-protocol function, on any backend.

Two modes, both with central differences in float64:

* ``"full"``: the whole Jacobian.  Column :math:`j` numerically,
  :math:`(f(x + h e_j) - f(x - h e_j)) / 2h`; row :math:`i` analytically, as
  ``backward`` with the cotangent :math:`e_i`.  For small inputs.
* ``"vjp"``: random directions.  For a random cotangent :math:`u` and a
  random direction :math:`v`, the dot-product test
  :math:`\langle u, (f(x+hv) - f(x-hv))/2h\rangle \approx
  \langle \mathrm{backward}(u), v\rangle`, repeated ``num_directions``
  times per argument.  Cost independent of the input size.

``"auto"`` picks ``"full"`` when every checked argument has at most 64
elements.  The step is :math:`h = \epsilon^{1/3}\max(1, |x|_\infty)` with
:math:`\epsilon` the float64 machine epsilon, which balances the
:math:`O(h^2)` truncation error against the :math:`O(\epsilon/h)` rounding
error of central differences.
"""

from __future__ import annotations

import inspect
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


class GradcheckError(Exception):
    """Raised by :func:`gradcheck` in strict mode when a gradient disagrees; carries the report."""

    def __init__(self, report: GradcheckReport) -> None:
        super().__init__(str(report))
        self.report = report


@dataclass
class ArgumentReport:
    """Agreement between the analytic and numerical gradient of one argument."""

    name: str
    max_abs_error: float
    max_rel_error: float
    passed: bool
    checked: int  # number of compared quantities (Jacobian entries or directions)


@dataclass
class GradcheckReport:
    """What :func:`gradcheck` measured, per argument."""

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
            lines.append(
                f"  {a.name}: max abs error {a.max_abs_error:.3e}, max rel error "
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
        Positional arguments; the differentiable ones are cast to float64 in
        their own namespace (the check runs on the arrays' backend and device).
    wrt : str or sequence of str, optional
        Argument names to check; default ``fn.differentiable``.
    mode : {"auto", "full", "vjp"}
    step : float, optional
        Finite-difference step; default :math:`\\epsilon^{1/3}\\max(1, |x|_\\infty)`.
    rtol : float
        Relative tolerance: an analytic value ``a`` passes against the
        numerical ``n`` when ``|a - n| <= atol + rtol * |n|`` (or both are
        the same non-finite value).
    atol : float
        Absolute tolerance, see ``rtol``.
    num_directions : int
        Random directions per argument in ``"vjp"`` mode.
    seed : int
        Seeds the random cotangents and directions.
    strict : bool
        Raise :class:`GradcheckError` on a mismatch (else only report it).
    **kwargs
        Passed to ``fn``.

    Returns
    -------
    GradcheckReport

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> report = refsoftmax.gradcheck(
    ...     refsoftmax.sparse_softmax_cross_entropy,
    ...     (np.array([[1.0, 2.0, 0.5]]), np.array([2])),
    ... )
    >>> report.passed
    True
    """
    check_choice("mode", mode, MODES)
    names = _arg_names(fn)
    if wrt is None:
        wrt_names = list(getattr(fn, "differentiable", ()))
    else:
        wrt_names = [wrt] if isinstance(wrt, str) else list(wrt)
    if not wrt_names:
        msg = "wrt must name at least one argument to check"
        raise ValueError(msg)
    for name in wrt_names:
        if name not in names[: len(args)]:
            msg = f"wrt names {name!r}, which is not one of the positional arguments {names[: len(args)]}"
            raise ValueError(msg)
    if grad_fn is None and not hasattr(fn, "value_and_grad"):
        msg = "fn has no value_and_grad; pass grad_fn(*args, cotangent=u, **kwargs) -> dict"
        raise TypeError(msg)

    positional = {names[i]: a for i, a in enumerate(args)}
    xp, wrt_arrays = resolve(**{n: positional[n] for n in wrt_names})
    arrays = {**positional, **wrt_arrays}  # other arguments are passed through unchanged
    first = wrt_arrays[wrt_names[0]]
    backend = backends.for_namespace(xp)
    device = array_api_compat.device(first)
    host = {n: np.asarray(backend.to_numpy(arrays[n]), dtype=np.float64) for n in wrt_names}

    def call(values: dict[str, np.ndarray], cotangent: Any = None) -> Any:
        call_args = []
        for i, _ in enumerate(args):
            name = names[i]
            if name in values:
                call_args.append(backend.from_host(values[name], device))
            else:
                call_args.append(arrays[name])
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
    out_size = f0.size
    if mode == "auto":
        mode = "full" if all(host[n].size <= 64 for n in wrt_names) else "vjp"
    eps_cbrt = float(np.finfo(np.float64).eps) ** (1.0 / 3.0)
    rng = np.random.default_rng(seed)
    h_used = 0.0
    report = GradcheckReport(getattr(fn, "name", getattr(fn, "__name__", repr(fn))), mode, 0.0, rtol, atol)

    for name in wrt_names:
        x = host[name]
        h = step if step is not None else eps_cbrt * max(1.0, float(np.max(np.abs(x), initial=0.0)))
        h_used = max(h_used, h)

        def shifted(delta: np.ndarray, name: str = name, x: np.ndarray = x) -> dict[str, np.ndarray]:
            return {**host, name: x + delta}

        numeric: np.ndarray[Any, np.dtype[np.float64]]
        analytic: np.ndarray[Any, np.dtype[np.float64]]
        if mode == "full":
            numeric = np.empty((out_size, x.size))
            for j in range(x.size):
                d = np.zeros(x.size)
                d[j] = h
                delta = d.reshape(x.shape)
                numeric[:, j] = ((value(shifted(delta)) - value(shifted(-delta))) / (2 * h)).reshape(-1)
            analytic = np.empty((out_size, x.size))
            for i in range(out_size):
                basis = np.zeros(out_size)
                basis[i] = 1.0
                _, grads = call(host, basis.reshape(f0.shape))
                analytic[i, :] = dense(grads[name]).reshape(-1)
            checked = numeric.size
        else:
            numeric = np.empty(num_directions)
            analytic = np.empty(num_directions)
            for k in range(num_directions):
                u = rng.standard_normal(f0.shape)
                v = rng.standard_normal(x.shape)
                fd = (value(shifted(h * v)) - value(shifted(-h * v))) / (2 * h)
                numeric[k] = float(np.sum(u * fd))
                _, grads = call(host, u)
                g = dense(grads[name])
                analytic[k] = float(np.sum(g * v))
            checked = num_directions
        max_abs, max_rel, ok = _compare(analytic, numeric, rtol, atol)
        report.arguments[name] = ArgumentReport(name, max_abs, max_rel, ok, checked)
    report.step = h_used
    if strict and not report.passed:
        raise GradcheckError(report)
    return report

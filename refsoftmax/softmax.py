r"""Building blocks: ``logsumexp``, ``log_softmax`` and ``softmax`` with their backward passes.

All three start from the max-shifted row :math:`\hat z = z - \max_c z_c`
(so :math:`e^{\hat z} \le 1` never overflows and at least one term equals 1):

.. math::

    \operatorname{lse}(z) = m + \log s,\quad s = \sum_c e^{\hat z_c},\qquad
    \log\operatorname{softmax}(z)_c = \hat z_c - \log s,\qquad
    \operatorname{softmax}(z)_c = e^{\hat z_c} / s .

A row whose entries are all :math:`-\infty` has ``logsumexp = -inf`` and an
undefined (NaN) ``softmax``/``log_softmax``, as in ``scipy.special``.  A
:math:`+\infty` entry gives ``logsumexp = +inf`` (with a NaN gradient) and a
NaN ``softmax``/``log_softmax`` row; a NaN entry makes the row NaN.  NumPy
may warn (invalid value / overflow) on such rows: the values are still the
documented ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refsoftmax._along_axis import check_along_axis
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._shifted import backend_kernel, shift_rows

__all__ = ["log_softmax", "logsumexp", "shifted_exp", "softmax"]


def shifted_exp(z: Any, allowed: Any | None, *, xp: Any) -> tuple[Any, Any, Any, Any]:
    r"""``(m, zhat, e, s)`` of :func:`refsoftmax._shifted.shift_rows` (kept for existing callers).

    :math:`\hat z = \tilde z - m` (``keepdims``), :math:`e = \exp(\tilde z - m)`
    (with the shift's rounding error folded in) and :math:`s = \sum_c e_c`,
    where :math:`\tilde z` is ``z`` with the classes where ``allowed`` is false
    set to :math:`-\infty`.  A row with no finite entry is shifted by 0 and has
    ``s = 0``.
    """
    rows = shift_rows(z, allowed, xp=xp)
    return rows.m, rows.zhat, rows.e, rows.s


@dataclass(kw_only=True)
class _SoftmaxResiduals(Residuals):
    """What the three backward passes need: the softmax ``p``, saved by the forward pass.

    Memory: ``p`` is the one ``[..., C]`` residual (1× the input in the compute dtype).  It
    is kept rather than recomputed from a reference to the input in the backward pass,
    because (1) a NumPy array has no version counter, so an input modified in place between
    ``forward`` and ``backward`` would silently give a wrong gradient; (2) the backward pass
    then reads one array instead of redoing max, exp and sum; (3) every backend saves the same
    residual.  ``softmax`` saves a copy of its output, not the output itself, for reason (1).
    Calling the function (``logsumexp(x)``) saves nothing.  With the NumPy kernels no other
    ``[..., C]`` array is held (``benchmarks/bench_memory.py``).
    """

    p: Any  # softmax along the last axis (classes moved last)
    axis: int
    dtype: Any  # the input's dtype (results are returned in it)


def _classes_last(xp: Any, x: Any, axis: int, dtype: Any) -> Any:
    """``x`` in the compute dtype with ``axis`` last (a view where no conversion is needed)."""
    return xp.moveaxis(xp.astype(x, dtype, copy=False), axis, -1)


def _kernel_forward(xp: Any, x: Any, axis: int, dtype: Any, keep: bool,
                    **outputs: bool) -> dict[str, Any] | None:
    """The backend's blocked forward kernel on ``x`` (``"p"`` kept when ``keep``), or ``None``."""
    kernel = backend_kernel(xp, "fused_softmax")
    if kernel is None:
        return None
    result: dict[str, Any] | None = kernel(x, axis, residual_dtype=dtype if keep else None,
                                           **outputs)
    return result


def _kernel_backward(kind: str, r: _SoftmaxResiduals, g: Any) -> Any:
    """The backend's blocked backward kernel (``g`` in the input's layout), or ``None``."""
    kernel = backend_kernel(r.xp, "fused_softmax_backward")
    return None if kernel is None else kernel(kind, r.p, g, r.axis, r.dtype)


class LogSumExp(Function):
    r"""``logsumexp(x, *, axis=-1, keepdims=False)``: :math:`\log\sum_c e^{x_c}` along ``axis``.

    Notes
    -----
    Forward: :math:`\operatorname{lse}(x) = m + \log\sum_c e^{x_c - m}` with
    :math:`m = \max_c x_c`; every exponent is :math:`\le 0` and one equals 0,
    so nothing overflows and the sum is in :math:`[1, C]`.

    Backward: :math:`\partial\operatorname{lse}/\partial x_c = e^{x_c}/\sum_j e^{x_j}
    = \operatorname{softmax}(x)_c`, so the vector-Jacobian product with a
    cotangent :math:`g` (one number per row) is :math:`g\,p_c`.  A row of
    all :math:`-\infty` has value :math:`-\infty` and gradient 0.

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> lse = float(refsoftmax.logsumexp(np.array([0.0, np.log(3.0)])))  # log(1 + 3)
    >>> bool(abs(lse - np.log(4.0)) <= np.spacing(np.log(4.0)))          # within 1 ulp
    True
    """

    name = "logsumexp"
    differentiable = ("x",)

    def _value(self, x: Any, *, axis: int = -1, keepdims: bool = False) -> Any:
        return self._forward(x, axis, keepdims, keep=False)[0]

    def forward(self, x: Any, *, axis: int = -1, keepdims: bool = False) -> tuple[Any, Any]:
        return self._forward(x, axis, keepdims, keep=True)

    def _forward(self, x: Any, axis: int, keepdims: bool, keep: bool) -> tuple[Any, Any]:
        xp, x, axis, cdtype = check_along_axis(x, axis)
        fast = _kernel_forward(xp, x, axis, cdtype, keep, lse=True)
        if fast is not None:
            value, p = fast["lse"], fast.get("p")  # float64, rounded once below
        else:
            z = _classes_last(xp, x, axis, cdtype)
            rows = shift_rows(z, xp=xp)
            m = rows.m[..., 0]
            value = m + rows.log_s[..., 0]  # log1p(r): exact to rounding when r = s - 1 is tiny
            value = xp.where(rows.empty[..., 0], xp.full_like(value, -xp.inf), value)
            value = xp.where(xp.max(z, axis=-1) == xp.inf, xp.full_like(value, xp.inf), value)  # lse = +inf
            p = rows.probabilities() if keep else None
        if keepdims:
            value = xp.expand_dims(value, axis=axis)
        res = None if not keep else _SoftmaxResiduals(
            xp=xp, value_shape=tuple(value.shape), compute_dtype=cdtype, p=p, axis=axis,
            dtype=x.dtype,
        )
        return xp.astype(value, x.dtype, copy=False), res

    def backward(self, residuals: _SoftmaxResiduals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.p)
        if g.ndim == r.p.ndim:  # keepdims: drop the kept axis
            g = xp.moveaxis(g, r.axis, -1)
        else:
            g = xp.expand_dims(g, axis=-1)
        grad = g * r.p
        return {"x": xp.astype(xp.moveaxis(grad, -1, r.axis), r.dtype, copy=False)}


class LogSoftmax(Function):
    r"""``log_softmax(x, *, axis=-1)``: :math:`x_c - \operatorname{lse}(x)` along ``axis``.

    Notes
    -----
    Forward: :math:`\log p_c = \hat x_c - \log s` with :math:`\hat x = x - \max x`
    and :math:`s = \sum_j e^{\hat x_j}`; this is exact to rounding even when
    :math:`\operatorname{lse}(x)` is huge, because :math:`\hat x_c` and
    :math:`\log s \in [0, \log C]` carry no cancellation.

    Backward: :math:`\partial \log p_c / \partial x_j = \delta_{cj} - p_j`, so
    for a cotangent :math:`g` (same shape as ``x``)

    .. math:: \bar x_j = \sum_c g_c(\delta_{cj} - p_j) = g_j - p_j \sum_c g_c .

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> refsoftmax.log_softmax(np.array([0.0, 0.0])).tolist() == [-np.log(2.0)] * 2
    True
    """

    name = "log_softmax"
    differentiable = ("x",)

    def _value(self, x: Any, *, axis: int = -1) -> Any:
        return self._forward(x, axis, keep=False)[0]

    def forward(self, x: Any, *, axis: int = -1) -> tuple[Any, Any]:
        return self._forward(x, axis, keep=True)

    def _forward(self, x: Any, axis: int, keep: bool) -> tuple[Any, Any]:
        xp, x, axis, cdtype = check_along_axis(x, axis)
        fast = _kernel_forward(xp, x, axis, cdtype, keep, log_probs=True)
        if fast is not None:
            value, p = fast["log_probs"], fast.get("p")  # in x's layout and dtype
        else:
            z = _classes_last(xp, x, axis, cdtype)
            rows = shift_rows(z, xp=xp)
            # ẑ + δ - log1p(r): two non-positive terms; an empty row is NaN (undefined)
            value = xp.where(rows.empty, xp.full_like(z, xp.nan), -rows.neg_log_probs())
            value = xp.astype(xp.moveaxis(value, -1, axis), x.dtype, copy=False)
            p = xp.where(rows.empty, xp.full_like(z, xp.nan), rows.probabilities()) if keep else None
        res = None if not keep else _SoftmaxResiduals(
            xp=xp, value_shape=tuple(x.shape), compute_dtype=cdtype, p=p, axis=axis,
            dtype=x.dtype,
        )
        return value, res

    def backward(self, residuals: _SoftmaxResiduals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.p)
        fast = _kernel_backward("log_softmax", r, g)
        if fast is not None:
            return {"x": fast}
        g = xp.moveaxis(g, r.axis, -1)
        grad = g - r.p * xp.sum(g, axis=-1, keepdims=True)
        return {"x": xp.astype(xp.moveaxis(grad, -1, r.axis), r.dtype, copy=False)}


class Softmax(Function):
    r"""``softmax(x, *, axis=-1)``: :math:`e^{x_c} / \sum_j e^{x_j}` along ``axis``.

    Notes
    -----
    Forward: :math:`p_c = e^{\hat x_c} / s` with the max-shifted
    :math:`\hat x` (no overflow; :math:`s \ge 1`).

    Backward: :math:`\partial p_c / \partial x_j = p_c(\delta_{cj} - p_j)`, so
    for a cotangent :math:`g`

    .. math:: \bar x_j = \sum_c g_c p_c(\delta_{cj} - p_j) = p_j\,(g_j - \textstyle\sum_c g_c p_c).

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> refsoftmax.softmax(np.array([0.0, np.log(3.0)])).round(12).tolist()
    [0.25, 0.75]
    """

    name = "softmax"
    differentiable = ("x",)

    def _value(self, x: Any, *, axis: int = -1) -> Any:
        return self._forward(x, axis, keep=False)[0]

    def forward(self, x: Any, *, axis: int = -1) -> tuple[Any, Any]:
        return self._forward(x, axis, keep=True)

    def _forward(self, x: Any, axis: int, keep: bool) -> tuple[Any, Any]:
        xp, x, axis, cdtype = check_along_axis(x, axis)
        fast = _kernel_forward(xp, x, axis, cdtype, keep, probs=True)
        if fast is not None:
            value, p = fast["probs"], fast.get("p")  # the residual is a copy (see the residuals)
        else:
            z = _classes_last(xp, x, axis, cdtype)
            rows = shift_rows(z, xp=xp)
            p = xp.where(rows.empty, xp.full_like(z, xp.nan), rows.probabilities())  # 0/0 if empty
            value = xp.astype(xp.moveaxis(p, -1, axis), x.dtype, copy=keep)  # p is the residual
        res = None if not keep else _SoftmaxResiduals(
            xp=xp, value_shape=tuple(x.shape), compute_dtype=cdtype, p=p, axis=axis,
            dtype=x.dtype,
        )
        return value, res

    def backward(self, residuals: _SoftmaxResiduals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.p)
        fast = _kernel_backward("softmax", r, g)
        if fast is not None:
            return {"x": fast}
        g = xp.moveaxis(g, r.axis, -1)
        grad = r.p * (g - xp.sum(g * r.p, axis=-1, keepdims=True))
        return {"x": xp.astype(xp.moveaxis(grad, -1, r.axis), r.dtype, copy=False)}


logsumexp = LogSumExp()
log_softmax = LogSoftmax()
softmax = Softmax()

r"""``logsumexp``, ``log_softmax`` and ``softmax`` of rows sharded along the classes.

Each rank passes its block ``local_x`` ``[..., C_k]`` of the last axis (layout:
:mod:`refsoftmax._sharded`).  The forward is :func:`refsoftmax._sharded.shard_rows` — the
whole row's maximum and :math:`r = s - 1` from two all-reduces — followed by the dense
formulas on the local block:

* :math:`\operatorname{lse} = m + \operatorname{log1p}(r)` (the same on every rank);
* :math:`\log p_c = (\hat x_c + \delta_c) - \operatorname{log1p}(r)`, this rank's block;
* :math:`p_c = e_c / s`, this rank's block.

**Backward.**  :math:`\partial\operatorname{lse}/\partial x_j = p_j`: local.  The other two
contract the cotangent over the *whole* row, which is sharded with the output, so each takes
one all-reduce of a number per row: :math:`\bar x_j = g_j - p_j\sum_c g_c` (``log_softmax``)
and :math:`\bar x_j = p_j\,(g_j - \sum_c g_c p_c)` (``softmax``).  The class axis is the
last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refsoftmax._arrays import resolve
from refsoftmax._dtypes import compute_dtype
from refsoftmax._logit_transforms import log_partition
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._sharded import Layout, layout, shard_rows

__all__ = ["ShardedLogSoftmax", "ShardedLogSumExp", "ShardedSoftmax"]


@dataclass(kw_only=True)
class _Residuals(Residuals):
    p: Any  # this rank's block of the softmax (NaN in an empty row for log_softmax/softmax)
    dtype: Any
    lay: Any = None  # the Layout (group), for the backward's all-reduce
    keepdims: bool = False


def _rows(local_x: Any, group: Any) -> tuple[Any, Any, Any, Any, Any, Layout]:
    xp, arrays = resolve(local_x=local_x)
    x = arrays["local_x"]
    dtype = compute_dtype(xp, x, "local_x")
    if x.ndim == 0:
        msg = "local_x must have at least one dimension (the classes, last)"
        raise ValueError(msg)
    lay = layout(xp, x, group, "local_x")
    rows, limit = shard_rows(xp.astype(x, dtype, copy=False), None, lay, xp=xp)
    return xp, x, dtype, rows, limit, lay


class ShardedLogSumExp(Function):
    r"""``logsumexp(local_x, *, group=None, keepdims=False)`` over a class axis sharded across ranks.

    Returns the log-sum-exp of the whole rows (``local_x.shape`` without the last axis, or
    with it kept as 1), identical on every rank; ``backward`` returns this rank's block
    :math:`g\,p` of the gradient.  :math:`+\infty` in a row gives :math:`+\infty`, a row of
    :math:`-\infty` gives :math:`-\infty`, NaN gives NaN.
    """

    name = "distributed.logsumexp"
    differentiable = ("local_x",)

    def forward(self, local_x: Any, *, group: Any = None, keepdims: bool = False) -> tuple[Any, Any]:
        xp, x, dtype, rows, limit, _ = _rows(local_x, group)
        value = log_partition(rows.m, rows.log_s, rows.empty, limit, xp=xp)  # [..., 1]
        if not keepdims:
            value = value[..., 0]
        res = _Residuals(xp=xp, value_shape=tuple(value.shape), compute_dtype=dtype,
                         p=rows.probabilities(), dtype=x.dtype, keepdims=keepdims)
        return xp.astype(value, x.dtype), res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.p)
        g = g if r.keepdims else xp.expand_dims(g, axis=-1)
        return {"local_x": xp.astype(g * r.p, r.dtype, copy=False)}


class ShardedLogSoftmax(Function):
    r"""``log_softmax(local_x, *, group=None)``: this rank's block of :math:`x_c - \operatorname{lse}(x)`.

    An empty row (all :math:`-\infty`) is NaN, as in :func:`refsoftmax.log_softmax`.  The
    backward needs :math:`\sum_c g_c` over the whole row: one all-reduce.
    """

    name = "distributed.log_softmax"
    differentiable = ("local_x",)

    def forward(self, local_x: Any, *, group: Any = None) -> tuple[Any, Any]:
        xp, x, dtype, rows, _, lay = _rows(local_x, group)
        nan = xp.full_like(rows.e, xp.nan)
        value = xp.where(rows.empty, nan, -rows.neg_log_probs())  # (ẑ + δ) - log1p(r)
        res = _Residuals(xp=xp, value_shape=tuple(x.shape), compute_dtype=dtype,
                         p=xp.where(rows.empty, nan, rows.probabilities()), dtype=x.dtype, lay=lay)
        return xp.astype(value, x.dtype), res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = xp.astype(prepare_cotangent(r, cotangent, r.p), r.compute_dtype, copy=False)
        total = r.lay.all_sum(xp.sum(g, axis=-1, keepdims=True))  # Σ_c g_c over the whole row
        return {"local_x": xp.astype(g - r.p * total, r.dtype, copy=False)}


class ShardedSoftmax(Function):
    r"""``softmax(local_x, *, group=None)``: this rank's block of :math:`e^{x_c}/\sum_j e^{x_j}`.

    An empty row is NaN (0/0).  The backward needs :math:`\sum_c g_c p_c` over the whole row:
    one all-reduce.
    """

    name = "distributed.softmax"
    differentiable = ("local_x",)

    def forward(self, local_x: Any, *, group: Any = None) -> tuple[Any, Any]:
        xp, x, dtype, rows, _, lay = _rows(local_x, group)
        p = xp.where(rows.empty, xp.full_like(rows.e, xp.nan), rows.probabilities())
        res = _Residuals(xp=xp, value_shape=tuple(x.shape), compute_dtype=dtype, p=p,
                         dtype=x.dtype, lay=lay)
        return xp.astype(p, x.dtype), res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = xp.astype(prepare_cotangent(r, cotangent, r.p), r.compute_dtype, copy=False)
        inner = r.lay.all_sum(xp.sum(g * r.p, axis=-1, keepdims=True))  # Σ_c g_c p_c
        return {"local_x": xp.astype(r.p * (g - inner), r.dtype, copy=False)}

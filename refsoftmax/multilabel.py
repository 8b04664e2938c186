r"""Multi-label categorical cross-entropy and its AS-Softmax form."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from refsoftmax._arrays import resolve
from refsoftmax._dtypes import compute_dtype
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._validation import check_axis, check_choice, first_offender
from refsoftmax.as_softmax import ZeroLossStats, check_delta
from refsoftmax.softmax import shifted_exp

__all__ = [
    "MultilabelASSoftmaxLoss",
    "MultilabelCategoricalCrossEntropy",
    "multilabel_as_softmax_loss",
    "multilabel_categorical_cross_entropy",
]


def log1p_sum_exp(v: Any, mask: Any, *, xp: Any) -> tuple[Any, Any]:
    r""":math:`\log(1 + \sum_{i\in M} e^{v_i})` over the last axis, and its gradient w.r.t. ``v``.

    It is a log-sum-exp over :math:`\{0\} \cup \{v_i\}_{i\in M}`, shifted by
    :math:`m = \max(0, \max_M v)`:
    :math:`m + \log(e^{-m} + \sum_M e^{v_i - m})`; the gradient is
    :math:`e^{v_i - m} / (e^{-m} + \sum_M e^{v_j - m})` on :math:`M`, 0 elsewhere.
    """
    masked = xp.where(mask, v, xp.full_like(v, -xp.inf))
    m = xp.max(masked, axis=-1, keepdims=True)
    m = xp.maximum(m, xp.zeros_like(m))
    e = xp.exp(masked - m)
    s = xp.exp(-m) + xp.sum(e, axis=-1, keepdims=True)
    return (m + xp.log(s))[..., 0], e / s


@dataclass
class _Residuals(Residuals):
    axis: int
    logits_dtype: Any
    reduction: str
    grad: Any  # ∂ℓ/∂z per example (classes last)
    losses: Any
    denominator: Any
    stats: ZeroLossStats | None = None
    kept_neg: Any = None
    kept_pos: Any = None


def _prepare(logits: Any, targets: Any, axis: int, reduction: str) -> tuple[Any, Any, Any, int, Any]:
    """Validate; return ``(xp, z, y, axis, logits dtype)`` with classes last, in the compute dtype."""
    check_choice("reduction", reduction, ("none", "sum", "mean"))
    xp, a = resolve(logits=logits, targets=targets)
    z, y = a["logits"], a["targets"]
    dtype = compute_dtype(xp, z, "logits")
    if z.ndim == 0:
        msg = "logits must have at least one dimension (the classes)"
        raise ValueError(msg)
    if tuple(y.shape) != tuple(z.shape):
        msg = f"targets must have the logits' shape {tuple(z.shape)}, got {tuple(y.shape)}"
        raise ValueError(msg)
    axis = check_axis(axis, z.ndim)
    y = xp.astype(y, dtype)
    bad = (y != 0) & (y != 1)
    if bool(xp.any(bad)):
        msg = f"targets must be multi-hot (0 or 1), got {first_offender(xp, y, bad)}"
        raise ValueError(msg)
    out_dtype = z.dtype
    z = xp.moveaxis(xp.astype(z, dtype), axis, -1)
    y = xp.moveaxis(y, axis, -1)
    return xp, z, y, axis, out_dtype


def _finish(xp: Any, z: Any, pos: Any, kept_neg: Any, kept_pos: Any, axis: int, dtype: Any,
            reduction: str) -> tuple[Any, _Residuals]:
    neg = ~pos
    a, grad_neg = log1p_sum_exp(z, neg & kept_neg, xp=xp)
    b, grad_pos = log1p_sum_exp(-z, pos & kept_pos, xp=xp)
    losses = a + b
    grad = grad_neg - grad_pos  # ∂b/∂z = -∂b/∂(-z)
    denominator = xp.asarray(float(math.prod(losses.shape)), dtype=z.dtype, device=z.device)
    value = reduce(losses, denominator, reduction, "nan", xp=xp)
    res = _Residuals(xp, tuple(value.shape), z.dtype, axis, dtype, reduction, grad, losses, denominator)
    return xp.astype(value, dtype), res


def _backward(r: _Residuals, cotangent: Any) -> dict[str, Any]:
    xp = r.xp
    g = prepare_cotangent(r, cotangent, r.grad)
    g_loss, _ = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
    d = xp.expand_dims(g_loss, axis=-1) * r.grad
    return {"logits": xp.astype(xp.moveaxis(d, -1, r.axis), r.logits_dtype, copy=False)}


class MultilabelCategoricalCrossEntropy(Function):
    r"""Multi-label categorical cross-entropy (Su, 2020), per example.

    ``multilabel_categorical_cross_entropy(logits, targets, *, axis=-1, reduction="none")``

    Parameters
    ----------
    logits : real floating array
    targets : multi-hot array (0/1, any dtype), same shape
    axis : int
        The class axis.
    reduction : {"none", "sum", "mean"}

    Notes
    -----
    **Forward.**  With positives :math:`P = \{t: y_t = 1\}` and negatives
    :math:`N`, a threshold logit 0 separates them:

    .. math:: \ell = \log\Bigl(1 + \sum_{i\in N} e^{z_i}\Bigr) + \log\Bigl(1 + \sum_{t\in P} e^{-z_t}\Bigr),

    each term a log-sum-exp over :math:`\{0\}` and the class scores, shifted by
    :math:`\max(0, \cdot)` so nothing overflows.  An empty :math:`P` or
    :math:`N` makes its term :math:`\log 1 = 0`.

    **Gradient.**

    .. math::

        \frac{\partial\ell}{\partial z_i} = \frac{e^{z_i}}{1 + \sum_{j\in N} e^{z_j}}\ (i\in N),\qquad
        \frac{\partial\ell}{\partial z_t} = -\frac{e^{-z_t}}{1 + \sum_{u\in P} e^{-z_u}}\ (t\in P).

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> z, y = np.array([[2.0, -1.0, 0.0]]), np.array([[1, 0, 0]])
    >>> value = refsoftmax.multilabel_categorical_cross_entropy(z, y)
    >>> bool(np.isclose(value[0], np.log(1 + np.exp(-1.0) + 1.0) + np.log(1 + np.exp(-2.0))))
    True
    """

    name = "multilabel_categorical_cross_entropy"
    differentiable = ("logits",)

    def forward(self, logits: Any, targets: Any, *, axis: int = -1,
                reduction: str = "none") -> tuple[Any, _Residuals]:
        xp, z, y, axis, out_dtype = _prepare(logits, targets, axis, reduction)
        everything = xp.ones(z.shape, dtype=xp.bool, device=z.device)
        return _finish(xp, z, y == 1, everything, everything, axis, out_dtype, reduction)

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        return _backward(residuals, cotangent)


class MultilabelASSoftmaxLoss(Function):
    r"""AS-Softmax for multi-label classification, per example.

    ``multilabel_as_softmax_loss(logits, targets, *, delta=0.1, axis=-1, reduction="none")``

    Notes
    -----
    With :math:`p = \operatorname{softmax}(z)` over all classes,
    :math:`p_{\min} = \min_{t\in P} p_t` (the weakest positive) and
    :math:`p_{\max} = \max_{i\in N} p_i` (the strongest negative):

    * a negative :math:`i` is kept when :math:`p_{\min} - p_i \le \delta`;
    * a positive :math:`t` is kept when :math:`p_t - p_{\max} \le \delta`;

    and only kept terms enter the two log-sums of
    :func:`multilabel_categorical_cross_entropy`.  Following the authors'
    reference code, an example with **no positive** has :math:`p_{\min} = +\infty`
    (no negative is kept) and one with **no negative** has
    :math:`p_{\max} = -\infty` (no positive is kept): in both cases the loss
    is exactly 0 and so is the gradient — unlike the plain multi-label loss,
    which still pushes an all-negative example's scores below 0.  The masks
    are constants for differentiation; the gradient is the plain loss's on
    the kept terms and 0 on the others.  ``forward``'s residuals carry
    ``stats`` (examples with loss exactly 0).

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> z, y = np.array([[4.0, -3.0, 1.0]]), np.array([[1, 0, 0]])  # p ≈ [0.95, 0.00, 0.05]
    >>> loss, res = refsoftmax.multilabel_as_softmax_loss.forward(z, y, delta=0.1)
    >>> res.kept_neg.tolist(), res.kept_pos.tolist()    # every class is beyond the margin
    ([[False, False, False]], [[False, False, False]])
    >>> float(loss[0])
    0.0
    """

    name = "multilabel_as_softmax_loss"
    differentiable = ("logits",)

    def forward(self, logits: Any, targets: Any, *, delta: float = 0.1, axis: int = -1,
                reduction: str = "none") -> tuple[Any, _Residuals]:
        delta = check_delta(delta)
        xp, z, y, axis, out_dtype = _prepare(logits, targets, axis, reduction)
        pos = y == 1
        _, _, e, s = shifted_exp(z, None, xp=xp)
        p = e / s
        inf = xp.full_like(p, xp.inf)
        p_min = xp.min(xp.where(pos, p, inf), axis=-1, keepdims=True)
        p_max = xp.max(xp.where(pos, -inf, p), axis=-1, keepdims=True)
        kept_neg = (p_min - p) <= delta
        kept_pos = (p - p_max) <= delta
        value, res = _finish(xp, z, pos, kept_neg, kept_pos, axis, out_dtype, reduction)
        zero = res.losses == 0
        res.stats = ZeroLossStats(math.prod(res.losses.shape), int(xp.sum(xp.astype(zero, xp.int32))))
        res.kept_neg = kept_neg & ~pos
        res.kept_pos = kept_pos & pos
        return value, res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        return _backward(residuals, cotangent)


multilabel_categorical_cross_entropy = MultilabelCategoricalCrossEntropy()
multilabel_as_softmax_loss = MultilabelASSoftmaxLoss()

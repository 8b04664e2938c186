r"""Multi-label categorical cross-entropy and its AS-Softmax form.

Both losses are sums of two terms of the form
:math:`\log(1 + \sum_{i\in M} e^{v_i})`, computed by :func:`log1p_sum_exp` to
a few ulps (also for confident examples, whose loss is far below 1), with the
limits at :math:`\pm\infty` and NaN rows handled as described there and in
the classes' docstrings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._arrays import resolve
from refsoftmax._concrete import count, flagged
from refsoftmax._dtypes import compute_dtype
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._shifted import shift_rows
from refsoftmax._validation import check_axis, check_choice, first_offender
from refsoftmax._zero_loss import ZeroLossStats, check_delta

__all__ = [
    "MultilabelASSoftmaxLoss",
    "MultilabelCategoricalCrossEntropy",
    "multilabel_as_softmax_loss",
    "multilabel_categorical_cross_entropy",
]


def log1p_sum_exp(v: Any, mask: Any, *, xp: Any) -> tuple[Any, Any]:
    r""":math:`L = \log(1 + \sum_{i\in M} e^{v_i})` over the last axis, and :math:`\partial L/\partial v`.

    Parameters
    ----------
    v : real floating array ``[..., C]``, without NaN (the callers turn NaN
        rows into NaN results themselves)
    mask : boolean array ``[..., C]``, the terms :math:`M`

    Returns
    -------
    L : array ``[...]``
        The value.
    g : array ``[..., C]``
        Its gradient with respect to ``v``, 0 off :math:`M`.

    Notes
    -----
    **Value.**  :math:`L` is a log-sum-exp over :math:`\{0\}\cup\{v_i\}_{i\in M}`.
    With the shift :math:`m = \max(0, \max_M v) \ge 0`, write

    .. math:: 1 + \sum_M e^{v_i} = e^{m}\,s,\qquad s = e^{-m} + \sum_M e^{v_i - m} = 1 + r,

    where one of the terms of :math:`s` is exactly 1 (the threshold's
    :math:`e^{-m}` when :math:`m = 0`, the maximum's :math:`e^{v_i - m}`
    otherwise) and :math:`r` is the sum of all the others, summed directly
    (never as :math:`s - 1`).  Then

    .. math:: L = m + \operatorname{log1p}(r),

    two non-negative terms.  When :math:`m = 0` this is
    :math:`\operatorname{log1p}(\sum_M e^{v_i})`, which keeps its relative
    accuracy however small the sum: a confident example (every negative at
    -40) has :math:`L \approx 4\times10^{-18}`, where
    :math:`\log(1 + \sum_M e^{v_i})` gives 0.  When :math:`m > 0`,
    :math:`L \ge \log 2` and :math:`r \ge e^{-m}`; no subtraction anywhere.

    **The shift's rounding error.**  :math:`\hat v_i = \mathrm{fl}(v_i - m)` is
    off by up to half an ulp of :math:`\hat v_i`, which :math:`e^{\hat v_i}`
    turns into a *relative* error of :math:`|\hat v_i|\,\epsilon/2` (350 ulps
    at :math:`\hat v = -700`).  The error :math:`\delta_i = (v_i - m) - \hat v_i`
    is recovered exactly with Knuth's TwoSum and folded back in:
    :math:`e^{v_i - m} = e^{\hat v_i}(1 + \delta_i)` to first order
    (:math:`|\delta_i| \le \mathrm{ulp}(\hat v_i)/2`).  When :math:`m = 0`,
    :math:`\delta_i = 0`.

    **Gradient.**

    .. math:: \frac{\partial L}{\partial v_i} = \frac{e^{v_i}}{1 + \sum_{j\in M} e^{v_j}} = \frac{e^{v_i - m}}{1 + r}\quad (i\in M),

    a correctly computed numerator over an accurate :math:`s \ge 1`: a few ulps.

    **Infinities.**  A :math:`v_i = -\infty` (in :math:`M`) is a term
    :math:`e^{v_i} = 0`: it drops out of :math:`L` and its gradient is 0 (the
    limit, no convention needed).  If :math:`k \ge 1` entries of :math:`M`
    are :math:`+\infty`, :math:`L = +\infty` and the gradient is the limit
    along :math:`v_i = c + t` (:math:`t \to \infty`, the same :math:`c` for
    the :math:`k` entries: *equal infinities share equally*):

    .. math:: \frac{e^{c+t}}{1 + k e^{c+t} + \sum_{j\,\mathrm{finite}} e^{v_j}} \to \frac1k
              \ \text{on the infinite entries},\qquad
              \frac{e^{v_j}}{1 + k e^{c+t} + \cdots} \to 0\ \text{on the finite ones}.

    That is what the formula gives at a large finite stand-in (all
    :math:`k` entries at ``1e300``: :math:`m = 10^{300}`,
    :math:`r = k - 1`, :math:`s = k`).
    """
    neg_inf = xp.asarray(-xp.inf, dtype=v.dtype, device=device_of(v))
    zero = xp.zeros_like(v)
    w = xp.where(mask, v, neg_inf)  # terms off M are e^{-inf} = 0
    at_inf = w == xp.inf
    k = xp.sum(xp.astype(at_inf, v.dtype), axis=-1, keepdims=True)
    infinite = k > 0
    # +inf terms are replaced by their limit at the end; dropping them here forms no inf - inf
    w = xp.where(at_inf, neg_inf, w)
    if w.shape[-1] == 0:
        m = xp.zeros((*w.shape[:-1], 1), dtype=v.dtype, device=device_of(v))
    else:
        m = xp.max(w, axis=-1, keepdims=True)
    m = xp.maximum(m, xp.zeros_like(m))  # the threshold's e^0 is a term: m >= 0, finite
    vhat = w - m  # <= 0; -inf off M
    # TwoSum (Knuth): err = (w - m) - vhat exactly; on finite stand-ins so -inf entries
    # (whose e is 0 anyway) form no inf - inf
    finite = xp.isfinite(vhat)
    a = xp.where(finite, w, zero)
    b = xp.where(finite, -m, zero)
    total = xp.where(finite, vhat, zero)
    b_virtual = total - a
    a_virtual = total - b_virtual
    err = (a - a_virtual) + (b - b_virtual)
    e0 = xp.exp(vhat)
    # e^{vhat + err} = e^{vhat}(1 + err) to first order: no |vhat| eps/2 error.  Not e0 + e0 * err:
    # below e^-678 the product e0 * err is subnormal, which backends that flush subnormals to
    # zero (XLA on CPU) drop, losing the correction (365 ulps at a margin of 680)
    e = e0 * (1.0 + err)
    at_max = vhat == 0  # v == m exactly: e is exactly 1 (a float difference is 0 only for equal floats)
    ties = xp.sum(xp.astype(at_max, v.dtype), axis=-1, keepdims=True)
    # r = s - 1, every term of s except one exact 1, summed directly (no s - 1 cancellation):
    # m = 0: the threshold's 1 is the one left out, the ties' 1s stay in;
    # m > 0: one tie's 1 is left out, the threshold contributes e^{-m}
    extra = xp.where(m > 0, (ties - 1.0) + xp.exp(-m), ties)
    rest = xp.sum(xp.where(at_max, zero, e), axis=-1, keepdims=True) + extra
    value = m + xp.log1p(rest)  # log1p keeps r's relative accuracy when r << 1
    grad = e / (1.0 + rest)  # s = 1 + r >= 1, accurate to 1 ulp
    # k entries at +inf: L = +inf, gradient 1/k on them and 0 elsewhere (the limit above)
    share = xp.astype(at_inf, v.dtype) / xp.where(infinite, k, xp.ones_like(k))
    value = xp.where(infinite, xp.full_like(value, xp.inf), value)
    grad = xp.where(infinite, share, grad)
    return value[..., 0], grad


@dataclass(kw_only=True)
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
    bad = (y != 0) & (y != 1)  # NaN targets are bad too
    if flagged(xp, bad):
        msg = f"targets must be multi-hot (0 or 1), got {first_offender(xp, y, bad)}"
        raise ValueError(msg)
    out_dtype = z.dtype
    z = xp.moveaxis(xp.astype(z, dtype), axis, -1)
    y = xp.moveaxis(y, axis, -1)
    return xp, z, y, axis, out_dtype


def _split_nan_rows(xp: Any, z: Any) -> tuple[Any, Any]:
    """``(nan_row [..., 1], z with those rows zeroed)``: NaN rows are computed on zeros, then overwritten."""
    nan_row = xp.any(xp.isnan(z), axis=-1, keepdims=True)
    return nan_row, xp.where(nan_row, xp.zeros_like(z), z)


def _finish(xp: Any, z: Any, nan_row: Any, pos: Any, kept_neg: Any, kept_pos: Any, axis: int,
            dtype: Any, reduction: str) -> tuple[Any, _Residuals]:
    """Loss and gradient from the (NaN-free) logits ``z`` and the kept terms; NaN rows made NaN."""
    neg = ~pos
    a, grad_neg = log1p_sum_exp(z, neg & kept_neg, xp=xp)
    b, grad_pos = log1p_sum_exp(-z, pos & kept_pos, xp=xp)
    losses = a + b  # two terms in [0, +inf]: no cancellation, no inf - inf
    grad = grad_neg - grad_pos  # ∂b/∂z = -∂b/∂(-z); disjoint supports, so exact
    # NaN policy: a row with a NaN logit has a NaN loss and a NaN gradient on every class
    losses = xp.where(nan_row[..., 0], xp.full_like(losses, xp.nan), losses)
    grad = xp.where(nan_row, xp.full_like(grad, xp.nan), grad)
    denominator = xp.asarray(float(math.prod(losses.shape)), dtype=z.dtype, device=device_of(z))
    value = reduce(losses, denominator, reduction, "nan", xp=xp)
    res = _Residuals(
        xp=xp, value_shape=tuple(value.shape), compute_dtype=z.dtype, axis=axis,
        logits_dtype=dtype, reduction=reduction, grad=grad, losses=losses,
        denominator=denominator,
    )
    return xp.astype(value, dtype), res


def _backward(r: _Residuals, cotangent: Any) -> dict[str, Any]:
    xp = r.xp
    g = prepare_cotangent(r, cotangent, r.grad)
    g_loss, _ = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
    d = xp.expand_dims(g_loss, axis=-1) * r.grad
    return {"logits": xp.astype(xp.moveaxis(d, -1, r.axis), r.logits_dtype, copy=False)}


def _limit_softmax(z: Any, *, xp: Any) -> Any:
    r"""Softmax over the last axis of NaN-free ``z``, extended to :math:`\pm\infty` by its limits.

    * :math:`k \ge 1` entries at :math:`+\infty`: :math:`1/k` on them, 0
      elsewhere (equal infinities share equally: the limit along
      :math:`z_i = c + t`, :math:`t\to\infty`, for those entries);
    * every entry :math:`-\infty` (and none :math:`+\infty`): :math:`1/C`
      (softmax is shift-invariant, so :math:`z = -t\,\mathbf 1` gives
      :math:`1/C` for every :math:`t`);
    * otherwise the max-shifted softmax, with :math:`p_i = 0` where
      :math:`z_i = -\infty`.
    """
    at_inf = z == xp.inf
    k = xp.sum(xp.astype(at_inf, z.dtype), axis=-1, keepdims=True)
    neg_inf = xp.asarray(-xp.inf, dtype=z.dtype, device=device_of(z))
    # +inf entries are replaced by their limit below; dropping them here forms no inf - inf
    rows = shift_rows(xp.where(at_inf, neg_inf, z), None, xp=xp)
    e, s = rows.e, rows.s
    empty = s == 0  # nothing finite left: the row was all +-inf (one of the limits below)
    p = e / xp.where(empty, xp.ones_like(s), s)  # no 0/0 in such rows
    all_neg_inf = xp.all(z == -xp.inf, axis=-1, keepdims=True)
    uniform = xp.full_like(p, 1.0 / z.shape[-1])
    p = xp.where(all_neg_inf, uniform, p)
    share = xp.astype(at_inf, z.dtype) / xp.where(k > 0, k, xp.ones_like(k))
    return xp.where(k > 0, share, p)


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
    :math:`m = \max(0, \cdot)` so nothing overflows and computed as
    :math:`m + \operatorname{log1p}(r)` so that a confident example's small
    loss keeps its relative accuracy (:func:`log1p_sum_exp`).  An empty
    :math:`P` or :math:`N` makes its term :math:`\log 1 = 0`.

    **Gradient.**

    .. math::

        \frac{\partial\ell}{\partial z_i} = \frac{e^{z_i}}{1 + \sum_{j\in N} e^{z_j}}\ (i\in N),\qquad
        \frac{\partial\ell}{\partial z_t} = -\frac{e^{-z_t}}{1 + \sum_{u\in P} e^{-z_u}}\ (t\in P).

    Value and gradient are within a few ulps of the exact values.

    **Non-finite logits.**  Each of the two terms takes its limit on its own:

    * a negative at :math:`-\infty` or a positive at :math:`+\infty` is a
      term :math:`e^{-\infty} = 0`: it contributes 0 to the loss and gets
      gradient 0;
    * :math:`k` negatives at :math:`+\infty` make the first term
      :math:`+\infty`, with gradient :math:`1/k` on each of them and 0 on
      the other negatives (equal infinities share equally; the limit of the
      gradient along :math:`z_i = c + t`, :math:`t\to\infty`); likewise
      :math:`k` positives at :math:`-\infty` give :math:`+\infty` and
      :math:`-1/k` on each;
    * so the loss is :math:`+\infty` with a finite gradient as soon as one
      class is infinitely wrong, the other term keeping its ordinary value
      and gradient;
    * a NaN logit makes the example's loss NaN and its gradient NaN on every
      class (never 0); other examples are unaffected (``reduction="sum"``
      and ``"mean"`` are then NaN).

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> z, y = np.array([[2.0, -1.0, 0.0]]), np.array([[1, 0, 0]])
    >>> value = refsoftmax.multilabel_categorical_cross_entropy(z, y)
    >>> bool(np.isclose(value[0], np.log(1 + np.exp(-1.0) + 1.0) + np.log(1 + np.exp(-2.0))))
    True
    >>> z, y = np.array([[40.0, -40.0, -40.0]]), np.array([[1, 0, 0]])   # confident: not 0
    >>> value = refsoftmax.multilabel_categorical_cross_entropy(z, y)
    >>> print(f"{value[0]:.6e}")
    1.274506e-17
    >>> loss, g = refsoftmax.multilabel_categorical_cross_entropy.value_and_grad(
    ...     np.array([[1.0, np.inf, 0.0]]), np.array([[1, 0, 0]]))
    >>> float(loss[0]), g["logits"].tolist()
    (inf, [[-0.2689414213699951, 1.0, 0.0]])
    """

    name = "multilabel_categorical_cross_entropy"
    differentiable = ("logits",)

    def forward(self, logits: Any, targets: Any, *, axis: int = -1,
                reduction: str = "none") -> tuple[Any, _Residuals]:
        xp, z, y, axis, out_dtype = _prepare(logits, targets, axis, reduction)
        nan_row, z = _split_nan_rows(xp, z)
        everything = xp.ones(z.shape, dtype=xp.bool, device=device_of(z))
        return _finish(xp, z, nan_row, y == 1, everything, everything, axis, out_dtype, reduction)

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        return _backward(residuals, cotangent)


class MultilabelASSoftmaxLoss(Function):
    r"""AS-Softmax for multi-label classification, per example.

    ``multilabel_as_softmax_loss(logits, targets, *, delta=0.1, axis=-1, reduction="none")``

    Parameters
    ----------
    logits : real floating array
    targets : multi-hot array (0/1, any dtype), same shape
    delta : float ≥ 0
        Margin δ in probability.
    axis : int
        The class axis.
    reduction : {"none", "sum", "mean"}

    Notes
    -----
    With :math:`p = \operatorname{softmax}(z)` over all classes,
    :math:`p_{\min} = \min_{t\in P} p_t` (the weakest positive) and
    :math:`p_{\max} = \max_{i\in N} p_i` (the strongest negative):

    * a negative :math:`i` is kept when :math:`p_{\min} - p_i \le \delta`;
    * a positive :math:`t` is kept when :math:`p_t - p_{\max} \le \delta`;

    and only kept terms enter the two log-sums of
    :func:`multilabel_categorical_cross_entropy` (computed the same way, to a
    few ulps).  Following the authors'
    reference code, an example with **no positive** has :math:`p_{\min} = +\infty`
    (no negative is kept) and one with **no negative** has
    :math:`p_{\max} = -\infty` (no positive is kept): in both cases the loss
    is exactly 0 and so is the gradient — unlike the plain multi-label loss,
    which still pushes an all-negative example's scores below 0.  The masks
    are constants for differentiation; the gradient is the plain loss's on
    the kept terms and 0 on the others.  ``forward``'s residuals carry
    ``stats`` (examples with loss exactly 0) and the masks ``kept_neg`` and
    ``kept_pos``.

    **Non-finite logits.**  The mask is computed on the limit of
    :math:`p`: :math:`k` logits at :math:`+\infty` have :math:`p = 1/k` and
    every other class :math:`p = 0`; a row of :math:`-\infty` only has
    :math:`p = 1/C`; a :math:`-\infty` logit among others has :math:`p = 0`.
    So a negative at :math:`+\infty` (:math:`p_i = p_{\max}`, and every
    :math:`p_t - p_{\max} \le 0`) and a positive at :math:`-\infty`
    (:math:`p_t = p_{\min} = 0`) are always kept in an example that has both
    positives and negatives: its loss is :math:`+\infty`, with the plain
    loss's finite limit gradient (:math:`\pm 1/k` on the :math:`k` infinite
    entries of the term, 0 on that term's other entries).  A positive at
    :math:`+\infty` or a negative at :math:`-\infty` contributes 0.  An
    example with no positive or no negative still has loss exactly 0.  A
    NaN logit makes the example's loss NaN and its gradient NaN on every
    class; it keeps every term (``kept_neg``/``kept_pos``), and ``stats``
    does not count it as zero-loss (NaN is not 0).

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> z, y = np.array([[4.0, -3.0, 1.0]]), np.array([[1, 0, 0]])  # p ≈ [0.95, 0.00, 0.05]
    >>> loss, res = refsoftmax.multilabel_as_softmax_loss.forward(z, y, delta=0.1)
    >>> res.kept_neg.tolist(), res.kept_pos.tolist()    # every class is beyond the margin
    ([[False, False, False]], [[False, False, False]])
    >>> float(loss[0])
    0.0
    >>> loss, res = refsoftmax.multilabel_as_softmax_loss.forward(np.array([[4.0, np.nan, 1.0]]), y)
    >>> float(loss[0]), res.stats
    (nan, ZeroLossStats(num_examples=1, num_zero_loss=0))
    """

    name = "multilabel_as_softmax_loss"
    differentiable = ("logits",)

    def forward(self, logits: Any, targets: Any, *, delta: float = 0.1, axis: int = -1,
                reduction: str = "none") -> tuple[Any, _Residuals]:
        delta = check_delta(delta)
        xp, z, y, axis, out_dtype = _prepare(logits, targets, axis, reduction)
        nan_row, z = _split_nan_rows(xp, z)
        pos = y == 1
        if z.shape[-1] == 0:  # no class: no term, and nothing to take a min/max over
            kept_neg = kept_pos = xp.zeros(z.shape, dtype=xp.bool, device=device_of(z))
        else:
            p = _limit_softmax(z, xp=xp)  # finite at +-inf: a meaningful mask there too
            inf = xp.full_like(p, xp.inf)
            p_min = xp.min(xp.where(pos, p, inf), axis=-1, keepdims=True)  # +inf: no positive
            p_max = xp.max(xp.where(pos, -inf, p), axis=-1, keepdims=True)  # -inf: no negative
            # a NaN row keeps every term (its results are NaN whatever the mask)
            kept_neg = ((p_min - p) <= delta) | nan_row
            kept_pos = ((p - p_max) <= delta) | nan_row
        value, res = _finish(xp, z, nan_row, pos, kept_neg, kept_pos, axis, out_dtype, reduction)
        zero = res.losses == 0  # False for NaN: a NaN example is never counted as zero-loss
        res.stats = ZeroLossStats(
            num_examples=math.prod(res.losses.shape),
            num_zero_loss=count(xp, zero),
        )
        res.kept_neg = kept_neg & ~pos
        res.kept_pos = kept_pos & pos
        return value, res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        return _backward(residuals, cotangent)


multilabel_categorical_cross_entropy = MultilabelCategoricalCrossEntropy()
multilabel_as_softmax_loss = MultilabelASSoftmaxLoss()

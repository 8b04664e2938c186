r"""Softmax cross-entropy with a distribution of labels per example (soft labels)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._arrays import resolve
from refsoftmax._concrete import flagged
from refsoftmax._cross_entropy import (
    check_common_options,
    onehot,
    safe_mul,
    smoothing_weights,
    soft_label_logit_grad,
)
from refsoftmax._dtypes import compute_dtype
from refsoftmax._logit_transforms import check_logit_softcap, check_z_loss, log_partition, soft_cap
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._shifted import shift_rows
from refsoftmax._validation import check_axis, check_class_weights, check_where, first_offender

__all__ = ["SoftmaxCrossEntropy", "softmax_cross_entropy"]


@dataclass(kw_only=True)
class _Residuals(Residuals):
    axis: int
    logits_dtype: Any
    labels_dtype: Any
    reduction: str
    mode: str
    p: Any  # softmax over the allowed classes, 0 in empty rows      [..., C]
    top: Any  # index of the (first) most probable class               [...]
    complement: Any  # 1 - p_top, accurate when p_top -> 1             [...]
    neg_log_p: Any  # -log p, +inf on masked classes and empty rows   [..., C]
    coef: Any  # w_c q_c                                               [..., C]
    class_weights: Any  # [C] or None
    eps_row: Any  # ε per row (0 where smoothing is impossible)        [..., 1]
    spread: Any  # where the smoothing mass goes                       [..., C]
    grad_mask: Any  # classes whose logit receives a gradient           [..., C]
    losses: Any  # per-example losses                                  [...]
    denominator: Any  # Ω of the mean (scalar) or None
    denominator_uses_labels: bool
    z_factor: Any = None  # 2 λ log Z per example with a z-loss, else None   [..., 1]
    slope: Any = None  # d(capped z)/dz with a logit soft-cap, else None     [..., C]


class SoftmaxCrossEntropy(Function):
    r"""Softmax cross-entropy between logits and a label distribution, per example.

    ``softmax_cross_entropy(logits, labels, *, axis=-1, where=None,
    class_weights=None, label_smoothing=0.0, reduction="none",
    label_smoothing_mode="uniform", mean_denominator="weights",
    empty_mean="nan", z_loss=0.0, logit_softcap=None)``

    Parameters
    ----------
    logits : array, real floating
        Unnormalised log-probabilities; the classes lie along ``axis``.
    labels : array, real floating, same shape as ``logits``
        Non-negative label mass per class (a distribution for normalised
        labels; any non-negative numbers are accepted).  NaN propagates.
    axis : int
        The class axis.
    where : bool array broadcastable to ``logits``, optional
        Classes where ``where`` is false are left out of the softmax exactly
        as if their logit were :math:`-\infty` (and get gradient 0).
    class_weights : array ``[C]``, optional
        Non-negative weight per class: :math:`\ell = \sum_c w_c q_c (-\log p_c)`.
    label_smoothing : float in [0, 1]
        :math:`q = (1-\varepsilon)\,y + \varepsilon\,u`.
    label_smoothing_mode : {"uniform", "others"}
        ``"uniform"``: :math:`u_c = 1/K` over the K allowed classes (TF,
        PyTorch, optax, Keras).  ``"others"``: each class receives
        :math:`\varepsilon/(K-1)` of the label mass *not* on it,
        :math:`q_c = (1-\varepsilon) y_c + \varepsilon (m - y_c)/(K-1)` with
        :math:`m = \sum_j y_j`; for one-hot labels the target keeps
        :math:`1-\varepsilon` and every other class gets
        :math:`\varepsilon/(K-1)`.  No smoothing where K ≤ 1.
    reduction : {"none", "sum", "mean"}
        ``"none"`` returns one loss per example (``logits.shape`` without
        ``axis``).
    mean_denominator : {"weights", "count", "all"}
        Denominator Ω of ``"mean"``: ``"weights"`` is the total example
        weight :math:`\sum_i \sum_c w_c y_{ic}` (the number of examples for
        normalised labels without class weights); ``"count"`` and ``"all"``
        are the number of examples (PyTorch's convention for probability
        targets).
    empty_mean : {"nan", "zero"}
        The mean when Ω = 0.  The gradient is 0 in both cases.
    z_loss : float >= 0
        λ of the z-loss: every example adds :math:`\lambda(\log Z)^2`,
        :math:`\log Z` the log-sum-exp of its allowed (soft-capped) logits
        (not weighted by its label mass or the class weights).
    logit_softcap : float > 0, optional
        c of the soft-cap: the logits become :math:`c\tanh(z/c)` first.

    Returns
    -------
    array
        Per-example losses (``reduction="none"``) or a scalar, in the dtype
        of ``logits`` (float16/bfloat16 are computed in float32).

    Raises
    ------
    TypeError
        Integer/boolean logits or labels; mixed namespaces or devices.
    ValueError
        Shape mismatch, negative labels, ``label_smoothing`` outside [0, 1],
        unknown option values, ``class_weights`` of the wrong shape, negative
        or not finite.

    Notes
    -----
    **Forward.**  With the allowed logits :math:`\tilde z` (``where``-false
    classes set to :math:`-\infty`), :math:`m = \max_c \tilde z_c`,
    :math:`\hat z = \tilde z - m` and :math:`s = \sum_c e^{\hat z_c}`,

    .. math::

        -\log p_c = \log s - \hat z_c \;\ge 0,\qquad
        \ell = \sum_c c_c\,(-\log p_c),\qquad c_c = w_c\,q_c .

    Each term is a product of non-negative numbers, so the sum has no
    cancellation, and a term with :math:`c_c = 0` is 0 even where
    :math:`-\log p_c = +\infty` (a masked class without label mass).  Label
    mass on a masked class makes the loss :math:`+\infty`, which is its true
    value.  A row with no allowed class has :math:`s = 0`: its loss is
    :math:`+\infty` if it carries label mass, else 0, and its gradient is 0.

    **Gradient w.r.t. the logits.**  Since
    :math:`\partial(-\log p_c)/\partial z_j = p_j - \delta_{cj}`,

    .. math::

        \frac{\partial \ell}{\partial z_j} = \sum_c c_c (p_j - \delta_{cj})
        = W p_j - c_j,\qquad W = \sum_c c_c .

    For normalised labels without weights :math:`W = 1` and this is the
    familiar :math:`p - q`, whose entries sum to zero.  Masked classes get
    exactly 0.  The z-loss adds :math:`2\lambda\log Z\,p_j`; a soft-cap multiplies
    the result by :math:`\operatorname{sech}^2(z_j/c)` (see
    :mod:`refsoftmax._logit_transforms`).  Neither depends on the labels.

    **Gradient w.r.t. the labels.**  :math:`\ell` is linear in :math:`q`,
    and :math:`q` is affine in :math:`y`:

    * uniform: :math:`\partial\ell/\partial y_c = (1-\varepsilon)\,w_c(-\log p_c)`;
    * others: :math:`\partial q_j/\partial y_c = (1-\varepsilon)\delta_{jc} +
      \varepsilon(1-\delta_{jc})u_j` with :math:`u_j = a_j/(K-1)`, so
      :math:`\partial\ell/\partial y_c = (1-\varepsilon)\,w_c(-\log p_c) +
      \varepsilon\sum_{j\ne c} u_j w_j (-\log p_j)`.

    These are :math:`+\infty` for a class whose probability is 0 (raising its
    label mass makes the loss infinite).

    **Reduction.**  ``"sum"`` passes the cotangent to every example;
    ``"mean"`` = :math:`S/\Omega` passes :math:`g/\Omega` to every example
    and, when :math:`\Omega = \sum_i\sum_c w_c y_{ic}` depends on the labels
    (``mean_denominator="weights"``), adds
    :math:`\partial(S/\Omega)/\partial y_{ic} = -S w_c/\Omega^2`.

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> logits = np.array([[0.0, np.log(3.0)]])       # p = [1/4, 3/4]
    >>> labels = np.array([[0.5, 0.5]])
    >>> loss, grads = refsoftmax.softmax_cross_entropy.value_and_grad(logits, labels)
    >>> bool(np.isclose(loss[0], 0.5 * np.log(4) + 0.5 * np.log(4 / 3)))
    True
    >>> grads["logits"].round(12).tolist()             # p - y
    [[-0.25, 0.25]]
    """

    name = "softmax_cross_entropy"
    differentiable = ("logits", "labels")

    def forward(
        self,
        logits: Any,
        labels: Any,
        *,
        axis: int = -1,
        where: Any = None,
        class_weights: Any = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
        label_smoothing_mode: str = "uniform",
        mean_denominator: str = "weights",
        empty_mean: str = "nan",
        z_loss: float = 0.0,
        logit_softcap: float | None = None,
    ) -> tuple[Any, _Residuals]:
        eps = check_common_options(
            reduction, label_smoothing, label_smoothing_mode, mean_denominator, empty_mean
        )
        z_loss = check_z_loss(z_loss)
        cap = check_logit_softcap(logit_softcap)
        xp, arrays = resolve(
            logits=logits, labels=labels, where=where, class_weights=class_weights
        )
        z, y = arrays["logits"], arrays["labels"]
        dtype = compute_dtype(xp, z, "logits")
        if not xp.isdtype(y.dtype, "real floating") and "bfloat16" not in str(y.dtype):
            msg = (
                f"labels must have a real floating dtype (a distribution per example), got "
                f"{y.dtype}; for integer class indices use sparse_softmax_cross_entropy"
            )
            raise TypeError(msg)
        if z.ndim == 0:
            msg = "logits must have at least one dimension (the classes)"
            raise ValueError(msg)
        if tuple(y.shape) != tuple(z.shape):
            msg = f"labels must have the logits' shape {tuple(z.shape)}, got {tuple(y.shape)}"
            raise ValueError(msg)
        axis = check_axis(axis, z.ndim)
        if z.shape[axis] == 0:
            msg = f"logits must have at least one class along axis {axis}, got shape {tuple(z.shape)}"
            raise ValueError(msg)
        allowed = None
        if arrays["where"] is not None:
            allowed = xp.moveaxis(check_where(xp, arrays["where"], tuple(z.shape)), axis, -1)
        z = xp.moveaxis(xp.astype(z, dtype), axis, -1)
        slope = None
        if cap is not None:
            z, slope = soft_cap(z, cap, xp=xp)
        y = xp.moveaxis(xp.astype(y, dtype), axis, -1)
        negative = y < 0
        if flagged(xp, negative):
            msg = f"labels must be >= 0, got {first_offender(xp, y, negative)}"
            raise ValueError(msg)
        w = None
        if arrays["class_weights"] is not None:
            w = check_class_weights(xp, arrays["class_weights"], z.shape[-1], dtype)

        rows = shift_rows(z, allowed, xp=xp)
        neg_log_p = rows.neg_log_probs()
        eps_row, spread = smoothing_weights(
            allowed, z.shape[-1], eps, label_smoothing_mode, xp=xp, like=z
        )
        if label_smoothing_mode == "uniform":
            base = xp.ones_like(y)
        else:
            base = _sum_over_others(y, xp=xp)  # label mass not on the class
        q = safe_mul(1.0 - eps_row, y, xp=xp) + eps_row * spread * base
        coef = q if w is None else w * q
        losses = xp.sum(safe_mul(coef, neg_log_p, xp=xp), axis=-1)
        z_factor = None
        if z_loss > 0:  # λ (log Z)² per example
            za = z if allowed is None else xp.where(allowed, z, xp.full_like(z, -xp.inf))
            limit = xp.any(za == xp.inf, axis=-1, keepdims=True)
            log_z = log_partition(rows.m, rows.log_s, rows.empty, limit, xp=xp)
            losses = losses + z_loss * (log_z * log_z)[..., 0]
            z_factor = 2.0 * z_loss * log_z

        denominator = None
        if reduction == "mean":
            if mean_denominator == "weights":
                denominator = xp.sum(y if w is None else w * y)
            else:
                denominator = xp.asarray(math.prod(losses.shape), dtype=dtype, device=device_of(z))
        value = reduce(losses, denominator, reduction, empty_mean, xp=xp)

        grad_mask = ~rows.empty if allowed is None else (~rows.empty) & allowed
        top = xp.argmax(rows.zhat, axis=-1)  # the (first) most probable class: p_top may be ~1
        res = _Residuals(
            xp=xp, value_shape=tuple(value.shape), compute_dtype=dtype, axis=axis,
            logits_dtype=arrays["logits"].dtype, labels_dtype=arrays["labels"].dtype,
            reduction=reduction, mode=label_smoothing_mode, p=rows.probabilities(), top=top,
            complement=rows.complement_at(top), neg_log_p=neg_log_p, coef=coef,
            class_weights=w, eps_row=eps_row, spread=spread, grad_mask=grad_mask,
            losses=losses, denominator=denominator,
            denominator_uses_labels=reduction == "mean" and mean_denominator == "weights",
            z_factor=z_factor, slope=slope,
        )
        return xp.astype(value, arrays["logits"].dtype), res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.p)
        g_loss, g_denominator = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
        g_loss = xp.expand_dims(g_loss, axis=-1)

        # ∂ℓ/∂z_j = W p_j - c_j.  Only the most probable class can have p_j ≈ 1, where
        # W p_j - c_j would cancel (p_t - 1 for a one-hot label): there it is taken as
        # (Σ_{c≠j} c_c) p_j - c_j (1 - p_j), each factor computed without cancellation.
        total = xp.sum(r.coef, axis=-1, keepdims=True)
        is_top = onehot(r.top, r.p.shape[-1], xp=xp)
        others = xp.sum(xp.where(is_top, xp.zeros_like(r.coef), r.coef), axis=-1, keepdims=True)
        complement = xp.expand_dims(r.complement, axis=-1)
        d_logits = soft_label_logit_grad(r.p, r.coef, is_top, total, others, complement, r.z_factor,
                                         g_loss, r.slope, r.grad_mask, xp=xp)

        # dℓ/dy_c = (1-ε) w_c (-log p_c) + [others] ε Σ_{j≠c} u_j w_j (-log p_j)
        wl = r.neg_log_p if r.class_weights is None else safe_mul(r.class_weights, r.neg_log_p, xp=xp)
        d_labels = safe_mul(1.0 - r.eps_row, wl, xp=xp)
        if r.mode == "others":
            d_labels = d_labels + safe_mul(r.eps_row, _sum_over_others(safe_mul(r.spread, wl, xp=xp), xp=xp), xp=xp)
        d_labels = safe_mul(g_loss, d_labels, xp=xp)
        if r.denominator_uses_labels:
            ones = xp.ones_like(r.p)
            d_labels = d_labels + g_denominator * (ones if r.class_weights is None else r.class_weights * ones)
        return {
            "logits": xp.astype(xp.moveaxis(d_logits, -1, r.axis), r.logits_dtype, copy=False),
            "labels": xp.astype(xp.moveaxis(d_labels, -1, r.axis), r.labels_dtype, copy=False),
        }


def _sum_over_others(t: Any, *, xp: Any) -> Any:
    """``Σ_{j≠c} t_j`` for every c along the last axis, for ``t ≥ 0`` (NaN propagates).

    Formed as (sum before c) + (sum after c) from two cumulative sums, never as
    "row sum minus own term": that difference loses every digit when ``t_c``
    dominates the row (−log p of a class next to a −1e9 masking logit), and is
    NaN when ``t_c = +∞``.  Here a +∞ elsewhere in the row gives +∞, and
    ``t_c`` itself never enters.
    """
    before = xp.cumulative_sum(t, axis=-1, include_initial=True)[..., :-1]
    after = xp.flip(xp.cumulative_sum(xp.flip(t, axis=-1), axis=-1, include_initial=True), axis=-1)[..., 1:]
    return before + after



softmax_cross_entropy = SoftmaxCrossEntropy()

r"""Softmax cross-entropy with soft labels, logits and labels sharded along the classes.

Rank :math:`k` passes its blocks ``local_logits`` and ``local_labels`` ``[..., C_k]`` (and,
optionally, its block of ``where``); ``class_weights`` are those of all C classes, the same
on every rank.  The loss is :func:`refsoftmax.softmax_cross_entropy`'s,

.. math:: \ell = \sum_c w_c q_c\,(-\log p_c) + \lambda(\log Z)^2,

with :math:`q = (1-\varepsilon)\,y + \varepsilon\,u` (``"uniform"``: :math:`u_c = 1/K`
over the K allowed classes; ``"others"``: :math:`q_c = (1-\varepsilon)y_c +
\varepsilon(\sum_{j\ne c} y_j)/(K-1)`).

**Forward** (all-reduces only, nothing of size C crosses the group): the rows of
:func:`refsoftmax._sharded.shard_rows`; K; for ``"others"`` the label mass outside each
class (:func:`refsoftmax._sharded.sum_over_others`, block totals per rank); the loss as a sum
of non-negative local terms :math:`w_c q_c (-\log p_c)`; and, for the backward, the row
totals :math:`W = \sum_c w_c q_c` and :math:`W - w_{c^*} q_{c^*}` at the row's first most
probable class :math:`c^*` (:func:`refsoftmax._sharded.first_at_max`).

**Backward: local, no communication.**  As the dense loss:
:math:`\partial\ell/\partial z_j = W p_j - w_j q_j` (+ :math:`2\lambda\log Z\,p_j`), except at
:math:`c^*`, where :math:`p_{c^*}` may be ~1 and the gradient is taken as
:math:`(W - w_{c^*}q_{c^*})\,p_{c^*} - w_{c^*}q_{c^*}(1 - p_{c^*})` with
:math:`1 - p_{c^*} = r/s` — no cancellation.  The label gradient
:math:`(1-\varepsilon)w_c(-\log p_c)` (+ for ``"others"``
:math:`\varepsilon\sum_{j\ne c}u_j w_j(-\log p_j)`, its sum over the other classes taken in
the forward) is local too.  The concatenated blocks are the dense gradients
(``tests/test_distributed.py``: ≤ 1e-12 relative in float64, world sizes 1–4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._arrays import resolve
from refsoftmax._concrete import flagged
from refsoftmax._cross_entropy import (
    check_common_options,
    safe_mul,
    smoothing_weights,
    soft_label_logit_grad,
)
from refsoftmax._dtypes import compute_dtype
from refsoftmax._logit_transforms import check_logit_softcap, check_z_loss, log_partition, soft_cap
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._sharded import allowed_count, first_at_max, layout, shard_rows, sum_over_others
from refsoftmax._validation import check_class_weights, check_where, first_offender

__all__ = ["ShardedSoftmaxCrossEntropy"]


@dataclass(kw_only=True)
class _Residuals(Residuals):
    logits_dtype: Any
    labels_dtype: Any
    reduction: str
    p: Any  # this rank's block of the softmax                          [..., C_k]
    is_top: Any  # the row's first most probable class, if on this rank   [..., C_k]
    complement: Any  # 1 - p at that class (r / s)                        [..., 1]
    coef: Any  # w_c q_c                                                 [..., C_k]
    total: Any  # W = Σ_c w_c q_c over the whole row                      [..., 1]
    others_top: Any  # W - w_c* q_c*                                       [..., 1]
    d_labels: Any  # dℓ/dy_c before the cotangent                          [..., C_k]
    class_weights: Any  # this rank's block of the weights, or None       [C_k]
    grad_mask: Any  # classes whose logit receives a gradient              [..., C_k]
    z_factor: Any  # 2 λ log Z, or None                                    [..., 1]
    slope: Any  # sech²(z/c) with a soft-cap, or None                     [..., C_k]
    losses: Any
    denominator: Any
    denominator_uses_labels: bool


class ShardedSoftmaxCrossEntropy(Function):
    r"""Soft-label softmax cross-entropy of logits sharded along the classes (see the module docstring).

    ``softmax_cross_entropy(local_logits, local_labels, *, group=None, where=None,
    class_weights=None, label_smoothing=0.0, reduction="none", label_smoothing_mode="uniform",
    mean_denominator="weights", empty_mean="nan", z_loss=0.0, logit_softcap=None)``

    Parameters
    ----------
    local_logits, local_labels : torch tensors ``[..., C_k]``
        This rank's blocks of the logits and of the (non-negative) label mass, classes last.
    group : torch.distributed ProcessGroup, optional
        Default: the default group.
    where : bool tensor broadcastable to ``local_logits``, optional
        This rank's block of the allowed classes.
    class_weights : tensor ``[C]``, optional
        The weights of *all* classes (the same on every rank).
    label_smoothing, label_smoothing_mode, reduction, mean_denominator, empty_mean, z_loss, logit_softcap : optional
        As :func:`refsoftmax.softmax_cross_entropy`.

    Returns
    -------
    tensor
        The loss (per example, or reduced), identical on every rank.  ``backward`` returns
        this rank's blocks ``{"local_logits": ..., "local_labels": ...}``.
    """

    name = "distributed.softmax_cross_entropy"
    differentiable = ("local_logits", "local_labels")

    def forward(
        self,
        local_logits: Any,
        local_labels: Any,
        *,
        group: Any = None,
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
        eps = check_common_options(reduction, label_smoothing, label_smoothing_mode, mean_denominator,
                                   empty_mean)
        lam = check_z_loss(z_loss)
        cap = check_logit_softcap(logit_softcap)
        xp, arrays = resolve(local_logits=local_logits, local_labels=local_labels, where=where,
                             class_weights=class_weights)
        z, y = arrays["local_logits"], arrays["local_labels"]
        dtype = compute_dtype(xp, z, "local_logits")
        if not xp.isdtype(y.dtype, "real floating") and "bfloat16" not in str(y.dtype):
            msg = (f"local_labels must have a real floating dtype (a block of a distribution per "
                   f"example), got {y.dtype}; for class indices use sparse_softmax_cross_entropy")
            raise TypeError(msg)
        if z.ndim == 0 or tuple(y.shape) != tuple(z.shape):
            msg = (f"local_labels must have local_logits' shape {tuple(z.shape)} (at least one "
                   f"dimension), got {tuple(y.shape)}")
            raise ValueError(msg)
        lay = layout(xp, z, group, "local_logits")
        lo, hi = lay.offset, lay.offset + lay.size
        allowed = None if arrays["where"] is None else check_where(xp, arrays["where"], tuple(z.shape))
        z = xp.astype(z, dtype, copy=False)
        slope = None
        if cap is not None:
            z, slope = soft_cap(z, cap, xp=xp)
        y = xp.astype(y, dtype, copy=False)
        negative = y < 0
        if flagged(xp, negative):
            msg = f"local_labels must be >= 0, got {first_offender(xp, y, negative)}"
            raise ValueError(msg)
        w = None
        if arrays["class_weights"] is not None:
            w = check_class_weights(xp, arrays["class_weights"], lay.num_classes, dtype)[lo:hi]

        rows, limit = shard_rows(z, allowed, lay, xp=xp)
        neg_log_p = rows.neg_log_probs()  # ≥ 0, +inf on masked classes and empty rows
        # label smoothing over the K allowed classes of the whole row
        eps_row, spread = smoothing_weights(allowed, lay.size, eps, label_smoothing_mode, xp=xp, like=z,
                                            count=allowed_count(z, allowed, lay, xp=xp))
        base = xp.ones_like(y) if label_smoothing_mode == "uniform" else sum_over_others(y, lay, xp=xp)
        q = safe_mul(1.0 - eps_row, y, xp=xp) + eps_row * spread * base
        coef = q if w is None else w * q
        # Σ_c w_c q_c (-log p_c): non-negative local terms, one all-reduce
        losses = lay.all_sum(xp.sum(safe_mul(coef, neg_log_p, xp=xp), axis=-1, keepdims=True))
        z_factor = None
        if lam > 0:  # λ (log Z)² per example
            log_z = log_partition(rows.m, rows.log_s, rows.empty, limit, xp=xp)
            losses = losses + lam * (log_z * log_z)
            z_factor = 2.0 * lam * log_z
        losses = losses[..., 0]

        denominator = None
        uses_labels = reduction == "mean" and mean_denominator == "weights"
        if reduction == "mean":
            if uses_labels:
                local = xp.reshape(xp.sum(y if w is None else w * y), (1,))
                denominator = lay.all_sum(local)[0]
            else:
                denominator = xp.asarray(math.prod(losses.shape), dtype=dtype, device=device_of(z))
        value = reduce(losses, denominator, reduction, empty_mean, xp=xp)

        # what the backward needs of the whole row, gathered here so that it stays local
        owner, top_local = first_at_max(rows, lay, xp=xp)
        columns = xp.arange(lay.size, device=device_of(z), dtype=top_local.dtype)
        is_top = (xp.expand_dims(top_local, axis=-1) == columns) & xp.expand_dims(owner, axis=-1)
        sums = lay.all_sum(xp.concat([
            xp.sum(coef, axis=-1, keepdims=True),
            xp.sum(xp.where(is_top, xp.zeros_like(coef), coef), axis=-1, keepdims=True)], axis=-1))
        safe_s = xp.where(rows.empty, xp.ones_like(rows.s), rows.s)
        complement = xp.where(rows.empty, xp.ones_like(rows.s), rows.rest / safe_s)  # 1 - p at c*
        wl = neg_log_p if w is None else safe_mul(w, neg_log_p, xp=xp)
        d_labels = safe_mul(1.0 - eps_row, wl, xp=xp)
        if label_smoothing_mode == "others":
            d_labels = d_labels + safe_mul(eps_row, sum_over_others(safe_mul(spread, wl, xp=xp), lay, xp=xp),
                                           xp=xp)
        grad_mask = ~rows.empty if allowed is None else (~rows.empty) & allowed
        res = _Residuals(
            xp=xp, value_shape=tuple(value.shape), compute_dtype=dtype,
            logits_dtype=arrays["local_logits"].dtype, labels_dtype=arrays["local_labels"].dtype,
            reduction=reduction, p=rows.probabilities(), is_top=is_top, complement=complement,
            coef=coef, total=sums[..., :1], others_top=sums[..., 1:], d_labels=d_labels,
            class_weights=w, grad_mask=grad_mask, z_factor=z_factor, slope=slope, losses=losses,
            denominator=denominator, denominator_uses_labels=uses_labels,
        )
        return xp.astype(value, arrays["local_logits"].dtype), res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.p)
        g_loss, g_denominator = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
        g_loss = xp.expand_dims(g_loss, axis=-1)
        d_logits = soft_label_logit_grad(r.p, r.coef, r.is_top, r.total, r.others_top, r.complement,
                                         r.z_factor, g_loss, r.slope, r.grad_mask, xp=xp)
        d_labels = safe_mul(g_loss, r.d_labels, xp=xp)
        if r.denominator_uses_labels:
            ones = xp.ones_like(r.p)
            d_labels = d_labels + g_denominator * (ones if r.class_weights is None else r.class_weights * ones)
        return {"local_logits": xp.astype(d_logits, r.logits_dtype, copy=False),
                "local_labels": xp.astype(d_labels, r.labels_dtype, copy=False)}

r"""The engine of softmax cross-entropy with integer labels: weights, smoothing, masks.

The forward and backward passes of
:class:`~refsoftmax.sparse_softmax_cross_entropy.SparseSoftmaxCrossEntropy`
(whose docstring derives them) on a :class:`~refsoftmax._sparse_call.SparseCall`;
AS-Softmax runs the same engine on a call whose ``allowed`` mask it computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._cross_entropy import onehot, safe_mul, smoothing_weights, sparse_logit_grad
from refsoftmax._logit_transforms import log_partition
from refsoftmax._protocol import Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._shifted import backend_kernel, shift_rows
from refsoftmax._sparse_call import SparseCall

__all__ = ["SparseCEResiduals", "sparse_ce_backward", "sparse_ce_forward"]


@dataclass(kw_only=True)
class SparseCEResiduals(Residuals):
    """What the backward of the sparse softmax cross-entropy needs."""

    axis: int
    logits_dtype: Any
    reduction: str
    p: Any  # softmax over the allowed classes, 0 in empty rows    [..., C]
    complement: Any  # 1 - p_t, accurate when p_t -> 1                [...]
    target: Any  # class index, 0 where ignored                     [...]
    kappa: Any  # coefficient of the target class                    [...]
    smooth: Any  # smoothing coefficients, or None without smoothing [..., C]
    grad_mask: Any  # classes whose logit receives a gradient         [..., C]
    losses: Any
    denominator: Any
    z_factor: Any = None  # 2 λ log Z per example with a z-loss, else None  [...]
    slope: Any = None  # d(capped z)/dz with a logit soft-cap, else None    [..., C]


def sparse_ce_forward(c: SparseCall, *, keep: bool = True) -> tuple[Any, Any]:
    """The definition: the array-API forward pass, saving what the backward needs.

    Returns the value (reduced, in the logits' dtype) and the residuals (``None`` when
    ``keep`` is false: a plain call of the loss).

    Memory: where the backend has a blocked kernel (NumPy: ``fused_softmax`` in
    :mod:`refsoftmax.backends.numpy_kernels`; it applies without ``where`` and label
    smoothing, and declines rows whose maximum is infinite), the one ``[..., C]`` array made
    is the residual ``p`` (1× the logits in the compute dtype), and none without ``keep``.
    ``p`` is kept rather than recomputed in the backward pass from a reference to the logits,
    which could have been modified in place in between (NumPy arrays have no version
    counter); the backward pass then reads one array.
    """
    xp, z, o = c.xp, c.z, c.options
    num_classes = z.shape[-1]
    fast: Any = None
    if c.allowed is None and o.label_smoothing == 0 and o.z_loss == 0:
        kernel = backend_kernel(xp, "fused_softmax")
        if kernel is not None:
            fast = kernel(z, -1, target=c.target, residual_dtype=z.dtype if keep else None)
    rows = None
    if fast is not None:  # float64 per-row results, rounded once to the compute dtype
        neg_log_p_t = xp.astype(fast["neg_log_p_t"], z.dtype)
    else:
        rows = shift_rows(z, c.allowed, xp=xp)
        neg_log_p_t = rows.neg_log_prob_at(c.target)

    smooth = None
    kappa = c.w_t
    if o.label_smoothing > 0:
        eps_row, spread = smoothing_weights(
            c.allowed, num_classes, o.label_smoothing, o.label_smoothing_mode, xp=xp, like=z
        )
        if o.label_smoothing_mode == "others":
            spread = xp.where(onehot(c.target, num_classes, xp=xp), xp.zeros_like(spread), spread)
        per_class = c.w if (c.w is not None and o.class_weighting == "per_class") else 1.0
        per_example = c.w_t if o.class_weighting == "target" else c.valid_f
        smooth = eps_row * spread * per_class * xp.expand_dims(per_example, axis=-1)
        kappa = (1.0 - eps_row[..., 0]) * c.w_t
    losses = safe_mul(kappa, neg_log_p_t, xp=xp)
    if smooth is not None and rows is not None:
        losses = losses + xp.sum(safe_mul(smooth, rows.neg_log_probs(), xp=xp), axis=-1)
    z_factor = None
    if o.z_loss > 0 and rows is not None:  # λ (log Z)² per non-ignored example (unweighted)
        z = c.z if c.allowed is None else xp.where(c.allowed, c.z, xp.full_like(c.z, -xp.inf))
        limit = xp.any(z == xp.inf, axis=-1, keepdims=True)
        log_z = log_partition(rows.m, rows.log_s, rows.empty, limit, xp=xp)[..., 0]
        lam = o.z_loss * c.valid_f
        losses = losses + safe_mul(lam, log_z * log_z, xp=xp)
        z_factor = safe_mul(2.0 * lam, log_z, xp=xp)
    value = reduce(losses, c.denominator, o.reduction, o.empty_mean, xp=xp)
    if not keep:
        return xp.astype(value, c.logits_dtype), None

    if rows is None:  # the kernel ran; it declines empty rows, so every row has mass
        p, complement = fast["p"], xp.astype(fast["complement"], z.dtype)
        grad_mask = xp.ones((*c.target.shape, 1), dtype=xp.bool, device=device_of(z))
    else:
        p, complement = rows.probabilities(), rows.complement_at(c.target)
        grad_mask = ~rows.empty if c.allowed is None else (~rows.empty) & c.allowed
    res = SparseCEResiduals(
        xp=xp, value_shape=tuple(value.shape), compute_dtype=z.dtype, axis=c.axis,
        logits_dtype=c.logits_dtype, reduction=o.reduction, p=p,
        complement=complement, target=c.target, kappa=kappa, smooth=smooth,
        grad_mask=grad_mask, losses=losses, denominator=c.denominator, z_factor=z_factor,
        slope=c.slope,
    )
    return xp.astype(value, c.logits_dtype), res


def sparse_ce_backward(r: SparseCEResiduals, cotangent: Any) -> Any:
    r"""The logits' vector-Jacobian product, in the logits' layout and dtype.

    :math:`g\,\bigl((\kappa + \sum_c\sigma_c + 2\lambda\log Z)\,p - \kappa\,e_t - \sigma\bigr)`
    (times :math:`\operatorname{sech}^2(z/c)` with a soft-cap), exactly 0 on masked
    classes and for ignored examples.
    """
    xp = r.xp
    g = prepare_cotangent(r, cotangent, r.p)
    g_loss, _ = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
    plain = r.z_factor is None and r.slope is None
    if plain and r.smooth is None and r.grad_mask.shape[-1] == 1:  # a mask per row, not per class
        kernel = backend_kernel(xp, "fused_sparse_ce_backward")
        if kernel is not None:
            grad = kernel(r.p, r.complement, r.target, r.kappa, g_loss, r.grad_mask[..., 0],
                          r.axis, r.logits_dtype)
            if grad is not None:
                return grad
    g_loss = xp.expand_dims(g_loss, axis=-1)
    sigma = None if r.smooth is None else xp.sum(r.smooth, axis=-1, keepdims=True)
    z_factor = None if r.z_factor is None else xp.expand_dims(r.z_factor, axis=-1)
    d_logits = sparse_logit_grad(
        r.p, onehot(r.target, r.p.shape[-1], xp=xp), xp.expand_dims(r.kappa, axis=-1),
        xp.expand_dims(r.complement, axis=-1), sigma, r.smooth, z_factor, g_loss, r.slope,
        r.grad_mask, xp=xp)
    return xp.astype(xp.moveaxis(d_logits, -1, r.axis), r.logits_dtype, copy=False)

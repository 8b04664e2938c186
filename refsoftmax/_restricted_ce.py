r"""Softmax cross-entropy over a subset of the classes, with a constant logit scale.

The engine of the temperature-scaled and the top-k cross-entropies: per
example :math:`-\log\operatorname{softmax}_K(z)_t` over the kept classes
:math:`K` of transformed logits :math:`z`, and its backward
:math:`\text{scale}\cdot g\,(p - e_t)` on :math:`K` (exactly 0 elsewhere),
on a :class:`~refsoftmax._sparse_call.SparseCall` without weights or
smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refsoftmax._cross_entropy import onehot, safe_mul
from refsoftmax._protocol import Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._shifted import shift_rows
from refsoftmax._sparse_call import SparseCall

__all__ = ["CEResiduals", "restricted_ce_backward", "restricted_ce_forward"]


@dataclass(kw_only=True)
class CEResiduals(Residuals):
    """What the backward of a (restricted) softmax cross-entropy needs."""

    axis: int
    logits_dtype: Any
    reduction: str
    p: Any  # softmax over the kept classes, 0 elsewhere and in empty rows  [..., C]
    complement: Any  # 1 - p_t, accurate when p_t -> 1                       [...]
    target: Any  # class index, 0 where ignored                              [...]
    weight: Any  # 1, or 0 where ignored                                     [...]
    grad_mask: Any  # classes whose logit receives a gradient                [..., C]
    scale: float  # d(transformed logits)/d(logits): 1/T, or 1
    losses: Any
    denominator: Any


def restricted_ce_forward(
    c: SparseCall, z: Any, allowed: Any | None, scale: float, *, temperature: float = 1.0
) -> tuple[Any, CEResiduals]:
    r"""Per-example :math:`-\log\operatorname{softmax}_K(z)_t` over the classes ``allowed``.

    ``z`` is the transformed logits (classes last, compute dtype), divided
    by ``temperature`` after the max-shift; ``scale`` is the constant
    :math:`\partial z/\partial\,\text{logits}` the backward applies.
    Returns the reduced value (in the logits' dtype) and residuals.
    """
    xp, o = c.xp, c.options
    rows = shift_rows(z, allowed, xp=xp, temperature=temperature)
    losses = safe_mul(c.valid_f, rows.neg_log_prob_at(c.target), xp=xp)
    value = reduce(losses, c.denominator, o.reduction, o.empty_mean, xp=xp)
    grad_mask = ~rows.empty if allowed is None else (~rows.empty) & allowed
    res = CEResiduals(
        xp=xp, value_shape=tuple(value.shape), compute_dtype=z.dtype, axis=c.axis,
        logits_dtype=c.logits_dtype, reduction=o.reduction, p=rows.probabilities(),
        complement=rows.complement_at(c.target), target=c.target, weight=c.valid_f,
        grad_mask=grad_mask, scale=scale, losses=losses, denominator=c.denominator,
    )
    return xp.astype(value, c.logits_dtype), res


def restricted_ce_backward(r: CEResiduals, cotangent: Any) -> Any:
    r"""``scale * g * (p - e_t)`` on the kept classes, exactly 0 elsewhere (logits' layout)."""
    xp = r.xp
    g = prepare_cotangent(r, cotangent, r.p)
    g_loss, _ = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
    coef = xp.expand_dims(g_loss * r.weight * r.scale, axis=-1)
    at_target = onehot(r.target, r.p.shape[-1], xp=xp)
    # p - e_t, with the target's p_t - 1 = -(1 - p_t) from the accurate complement
    spike = xp.expand_dims(-r.complement, axis=-1)
    d_logits = safe_mul(coef, xp.where(at_target, spike, r.p), xp=xp)
    d_logits = xp.where(r.grad_mask, d_logits, xp.zeros_like(d_logits))
    return xp.astype(xp.moveaxis(d_logits, -1, r.axis), r.logits_dtype, copy=False)

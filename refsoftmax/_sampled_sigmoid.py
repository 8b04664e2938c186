r"""The binary (sigmoid) loss over sampled columns, shared by NCE and negative sampling.

Each column :math:`o_c` of a sampled call (the true classes, then the
sampled ones) is a binary decision with a label :math:`y_c`; per example

.. math:: \ell = \sum_{c\in A} \bigl[y_c\,\operatorname{softplus}(-o_c) + (1 - y_c)\,\operatorname{softplus}(o_c)\bigr],
          \qquad \frac{\partial\ell}{\partial o_c} = \sigma(o_c) - y_c\ (c\in A),

over the kept columns :math:`A`, with the elementwise terms of
:mod:`refsoftmax._sigmoid`; the backward continues through the sampled
logits (:func:`refsoftmax._sampled_logits.logits_backward`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._cross_entropy import safe_mul
from refsoftmax._protocol import Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._sampled_logits import SampledCall, logits_backward
from refsoftmax._sigmoid import sigmoid, sigmoid_cross_entropy

__all__ = ["SigmoidResiduals", "sigmoid_backward", "sigmoid_forward"]


@dataclass(kw_only=True)
class SigmoidResiduals(Residuals):
    """What the backward of the sampled sigmoid loss needs."""

    call: SampledCall
    reduction: str
    logits: Any  # corrected logits           [B, T + S]
    labels: Any  # 1/T (NCE) or 1 on true columns, 0 on sampled ones
    kept: Any  # columns that count            [B, T + S]
    losses: Any


def sigmoid_forward(
    call: SampledCall, o: Any, *, true_label: float, remove_accidental_hits: bool, reduction: str
) -> tuple[Any, SigmoidResiduals]:
    """Σ over the kept columns of the sigmoid cross-entropy, per example, then reduced.

    The true columns get label ``true_label`` (NCE: 1/T, negative sampling: 1), the
    sampled ones 0; with ``remove_accidental_hits`` the sampled columns equal to one of
    the row's labels are left out.
    """
    xp = call.xp
    batch, t = o.shape[0], call.num_true
    labels = xp.concat(
        [xp.full((batch, t), true_label, dtype=call.dtype, device=device_of(o)),
         xp.zeros((batch, o.shape[1] - t), dtype=call.dtype, device=device_of(o))], axis=1,
    )
    kept_sampled = ~call.hits if remove_accidental_hits else xp.ones_like(call.hits)
    kept = xp.concat([xp.ones((batch, t), dtype=xp.bool, device=device_of(o)), kept_sampled], axis=1)
    terms = sigmoid_cross_entropy(o, labels, xp=xp)
    losses = xp.sum(xp.where(kept, terms, xp.zeros_like(terms)), axis=1)
    denominator = xp.asarray(float(o.shape[0]), dtype=call.dtype, device=device_of(o))
    value = reduce(losses, denominator, reduction, "nan", xp=xp)
    res = SigmoidResiduals(
        xp=xp, value_shape=tuple(value.shape), compute_dtype=call.dtype, call=call,
        reduction=reduction, logits=o, labels=labels, kept=kept, losses=losses,
    )
    return xp.astype(value, call.out_dtypes["weights"]), res


def sigmoid_backward(r: SigmoidResiduals, cotangent: Any) -> dict[str, Any]:
    """∂/∂o = g (σ(o) − label) on kept columns, then through the sampled logits."""
    xp = r.xp
    g = prepare_cotangent(r, cotangent, r.logits)
    denominator = xp.asarray(float(r.logits.shape[0]), dtype=r.compute_dtype, device=device_of(r.logits))
    g_loss, _ = reduce_backward(g, r.losses, denominator, r.reduction, xp=xp)
    # σ(o) - y = (1 - y) σ(o) - y σ(-o) (as σ(o) + σ(-o) = 1): two terms of known sign, so
    # the true columns' σ(o) - 1 = -σ(-o) keeps its relative accuracy when σ(o) -> 1
    y = r.labels
    diff = safe_mul(1.0 - y, sigmoid(r.logits, xp=xp), xp=xp) - safe_mul(y, sigmoid(-r.logits, xp=xp), xp=xp)
    grad = xp.expand_dims(g_loss, axis=-1) * diff
    grad = xp.where(r.kept, grad, xp.zeros_like(grad))
    t = r.call.num_true
    return logits_backward(r.call, grad[:, :t], grad[:, t:])

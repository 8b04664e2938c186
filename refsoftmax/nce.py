r"""Noise-contrastive estimation loss (TensorFlow's ``nce_loss``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._sampled_logits import (
    SampledCall,
    corrected_logits,
    log_expected_counts,
    logits_backward,
    prepare_sampled_call,
)
from refsoftmax._sigmoid import sigmoid, sigmoid_cross_entropy
from refsoftmax._validation import check_choice

__all__ = ["NCELoss", "nce_loss"]


@dataclass
class SigmoidResiduals(Residuals):
    call: SampledCall
    reduction: str
    logits: Any  # corrected logits           [B, T + S]
    labels: Any  # 1/T (NCE) or 1 on true columns, 0 on sampled ones
    kept: Any  # columns that count            [B, T + S]
    losses: Any


def sigmoid_forward(call: SampledCall, o: Any, true_label: float, remove_accidental_hits: bool,
                    reduction: str) -> tuple[Any, SigmoidResiduals]:
    """Σ over the kept columns of the sigmoid cross-entropy, per example, then reduced.

    The true columns get label ``true_label`` (NCE: 1/T, negative sampling: 1), the
    sampled ones 0; with ``remove_accidental_hits`` the sampled columns equal to one of
    the row's labels are left out.
    """
    xp = call.xp
    batch, t = o.shape[0], call.num_true
    labels = xp.concat(
        [xp.full((batch, t), true_label, dtype=call.dtype, device=o.device),
         xp.zeros((batch, o.shape[1] - t), dtype=call.dtype, device=o.device)], axis=1,
    )
    kept_sampled = ~call.hits if remove_accidental_hits else xp.ones_like(call.hits)
    kept = xp.concat([xp.ones((batch, t), dtype=xp.bool, device=o.device), kept_sampled], axis=1)
    terms = sigmoid_cross_entropy(o, labels, xp=xp)
    losses = xp.sum(xp.where(kept, terms, xp.zeros_like(terms)), axis=1)
    denominator = xp.asarray(float(o.shape[0]), dtype=call.dtype, device=o.device)
    value = reduce(losses, denominator, reduction, "nan", xp=xp)
    res = SigmoidResiduals(xp, tuple(value.shape), call.dtype, call, reduction, o, labels, kept, losses)
    return xp.astype(value, call.out_dtypes["weights"]), res


def sigmoid_backward(r: SigmoidResiduals, cotangent: Any) -> dict[str, Any]:
    """∂/∂o = g (σ(o) − label) on kept columns, then through the sampled logits."""
    xp = r.xp
    g = prepare_cotangent(r, cotangent, r.logits)
    denominator = xp.asarray(float(r.logits.shape[0]), dtype=r.compute_dtype, device=r.logits.device)
    g_loss, _ = reduce_backward(g, r.losses, denominator, r.reduction, xp=xp)
    grad = xp.expand_dims(g_loss, axis=-1) * (sigmoid(r.logits, xp=xp) - r.labels)
    grad = xp.where(r.kept, grad, xp.zeros_like(grad))
    t = r.call.num_true
    return logits_backward(r.call, grad[:, :t], grad[:, t:])


class NCELoss(Function):
    r"""Noise-contrastive estimation loss, per example (TensorFlow's semantics).

    ``nce_loss(weights, biases, labels, inputs, num_sampled, num_classes,
    num_true=1, sampled_values=None, remove_accidental_hits=False,
    seed=None, *, sampler=None, reduction="none")``

    Arguments as :func:`~refsoftmax.sampled_softmax_loss`; the default
    sample is log-uniform, unique, seeded by ``seed``.

    Notes
    -----
    **Forward.**  The columns :math:`o = [o_{1..T}, o_{T+1..T+S}]` are the
    sampled logits with :math:`\log(\text{expected count})` subtracted (as in
    TF's ``_compute_sampled_logits``).  Each column is a binary decision
    "data or noise" with label :math:`1/T` on the true columns (TF's choice
    for several true labels) and 0 on the sampled ones:

    .. math:: \ell = \sum_{c\in A} \bigl[\max(o_c, 0) - o_c y_c + \log(1 + e^{-|o_c|})\bigr],

    where :math:`A` leaves out accidental hits when
    ``remove_accidental_hits=True`` (TF adds :math:`-\mathrm{FLT\_MAX}` to
    those logits, which makes their term 0; a mask gives the same 0 without
    overflowing half precision).  With the subtraction, :math:`\sigma(o_c)`
    models :math:`P(\text{data}\mid c) = p(c)/(p(c) + k\,q(c))` for
    self-normalised :math:`e^{z_c} \approx p(c)`.

    **Gradient.**  :math:`\partial\ell/\partial o_c = \sigma(o_c) - y_c` on
    kept columns, 0 elsewhere; then through
    :math:`o = \langle x, W_r\rangle + b_r - \log E_r` to the inputs, weights
    and biases (:mod:`refsoftmax._sampled_logits`).

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> from refsoftmax.samplers import SampledValues
    >>> w, b = np.eye(2), np.zeros(2)
    >>> sv = SampledValues(np.array([1]), np.ones((1, 1)), np.ones(1))
    >>> loss = refsoftmax.nce_loss(w, b, np.array([[0]]), np.array([[1.0, 0.0]]), 1, 2, sampled_values=sv)
    >>> bool(np.isclose(loss[0], np.log1p(np.exp(-1.0)) + np.log(2.0)))
    True
    """

    name = "nce_loss"
    differentiable = ("weights", "biases", "inputs")

    def forward(
        self,
        weights: Any,
        biases: Any,
        labels: Any,
        inputs: Any,
        num_sampled: int,
        num_classes: int,
        num_true: int = 1,
        sampled_values: Any = None,
        remove_accidental_hits: bool = False,
        seed: int | None = None,
        *,
        sampler: Any = None,
        reduction: str = "none",
    ) -> tuple[Any, SigmoidResiduals]:
        from refsoftmax.sampled_softmax import draw

        check_choice("reduction", reduction, ("none", "sum", "mean"))
        if sampled_values is None:
            sampled_values, _ = draw(labels, num_sampled, num_classes, sampler=sampler,
                                     unique=True, seed=seed)
        call = prepare_sampled_call(
            weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampled_values
        )
        o = corrected_logits(call, *log_expected_counts(call))
        return sigmoid_forward(call, o, 1.0 / call.num_true, remove_accidental_hits, reduction)

    def backward(self, residuals: SigmoidResiduals, cotangent: Any) -> dict[str, Any]:
        return sigmoid_backward(residuals, cotangent)


nce_loss = NCELoss()

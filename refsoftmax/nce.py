r"""Noise-contrastive estimation loss (TensorFlow's ``nce_loss``)."""

from __future__ import annotations

from typing import Any

from refsoftmax._protocol import Function
from refsoftmax._sampled_logits import (
    corrected_logits,
    draw,
    log_expected_counts,
    prepare_sampled_call,
)
from refsoftmax._sampled_sigmoid import SigmoidResiduals, sigmoid_backward, sigmoid_forward
from refsoftmax._validation import check_choice

__all__ = ["NCELoss", "nce_loss"]


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
    overflowing half precision; every copy of a true class in the sample is
    left out, where TF leaves out only the last copy of a repeated candidate).  With the subtraction, :math:`\sigma(o_c)`
    models :math:`P(\text{data}\mid c) = p(c)/(p(c) + k\,q(c))` for
    self-normalised :math:`e^{z_c} \approx p(c)`.

    **Gradient.**  :math:`\partial\ell/\partial o_c = \sigma(o_c) - y_c` on
    kept columns, 0 elsewhere, computed as :math:`(1 - y_c)\sigma(o_c) - y_c\sigma(-o_c)`
    (:math:`\sigma(o) + \sigma(-o) = 1`): a true column's :math:`\sigma(o) - 1 =
    -\sigma(-o)` keeps its relative accuracy for a confident example; then through
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
        check_choice("reduction", reduction, ("none", "sum", "mean"))
        if sampled_values is None:
            sampled_values, _ = draw(labels, num_sampled, num_classes, sampler=sampler,
                                     unique=True, seed=seed)
        call = prepare_sampled_call(
            weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampled_values
        )
        o = corrected_logits(call, *log_expected_counts(call))
        return sigmoid_forward(
            call, o, true_label=1.0 / call.num_true,
            remove_accidental_hits=remove_accidental_hits, reduction=reduction,
        )

    def backward(self, residuals: SigmoidResiduals, cotangent: Any) -> dict[str, Any]:
        return sigmoid_backward(residuals, cotangent)


nce_loss = NCELoss()

r"""Skip-gram negative sampling (word2vec, Mikolov et al. 2013)."""

from __future__ import annotations

from typing import Any

from refsoftmax._protocol import Function
from refsoftmax._sampled_logits import prepare_sampled_call
from refsoftmax._sampled_sigmoid import SigmoidResiduals, sigmoid_backward, sigmoid_forward
from refsoftmax._validation import check_choice

__all__ = ["NegativeSamplingLoss", "negative_sampling_loss"]


class NegativeSamplingLoss(Function):
    r"""Negative-sampling loss, per example: no log-Q correction, unigram^0.75 noise.

    ``negative_sampling_loss(weights, biases, labels, inputs, num_sampled,
    num_classes, num_true=1, sampled_values=None,
    remove_accidental_hits=False, seed=None, *, unigrams=None,
    distortion=0.75, sampler=None, reduction="none")``

    Parameters
    ----------
    weights : ``[num_classes, D]`` float array
        Output ("context") embeddings.
    biases : ``[num_classes]`` float array or None
        word2vec has none.
    labels : ``[B, num_true]`` int array
    inputs : ``[B, D]`` float array
    num_sampled : int
    num_classes : int
    num_true : int
    sampled_values : ``SampledValues`` or triple, optional
        The sample; ``None`` draws ``num_sampled`` negatives with
        replacement from the unigram distribution raised to ``distortion``
        (word2vec's :math:`U(c)^{3/4}/Z`), which needs ``unigrams`` (a count
        per class), or from ``sampler``.
    remove_accidental_hits : bool
        Drop negatives equal to one of the row's labels (word2vec does not).
    seed : int, optional
    unigrams : array ``[num_classes]``, optional
    distortion : float
    sampler : CandidateSampler, optional
    reduction : {"none", "sum", "mean"}

    Notes
    -----
    **Forward.**  With raw scores :math:`o = \langle x, W_r\rangle + b_r`
    (no correction: negative sampling does not estimate the softmax, it
    trains a classifier of "true pair" vs "noise pair"):

    .. math:: \ell = -\sum_{j=1}^{T} \log\sigma(o_j) - \sum_{k=1}^{S} \log\sigma(-o_{T+k}),

    each true label counting fully (label 1), the negatives with label 0,
    using :math:`-\log\sigma(o) = \max(-o, 0) + \log(1 + e^{-|o|})`.

    **Gradient.**  :math:`\partial\ell/\partial o_j = \sigma(o_j) - 1` for a
    true column, :math:`\sigma(o_{T+k})` for a negative; then to the inputs,
    weights and biases through the sampled logits.

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> from refsoftmax.samplers import SampledValues
    >>> w = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> sv = SampledValues(np.array([1]), np.ones((1, 1)), np.ones(1))
    >>> loss = refsoftmax.negative_sampling_loss(w, None, np.array([[0]]), np.array([[2.0, 0.0]]), 1, 2, sampled_values=sv)
    >>> bool(np.isclose(loss[0], np.log1p(np.exp(-2.0)) + np.log(2.0)))
    True
    """

    name = "negative_sampling_loss"
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
        unigrams: Any = None,
        distortion: float = 0.75,
        sampler: Any = None,
        reduction: str = "none",
    ) -> tuple[Any, SigmoidResiduals]:
        check_choice("reduction", reduction, ("none", "sum", "mean"))
        if sampled_values is None:
            if sampler is None and unigrams is None:
                msg = (
                    "negative_sampling_loss draws from unigram counts ** distortion by "
                    "default: pass unigrams (one count per class), a sampler, or sampled_values"
                )
                raise ValueError(msg)
            from refsoftmax import samplers

            if sampler is None:
                sampler = samplers.FixedUnigramSampler(
                    num_classes, unigrams=unigrams, distortion=distortion
                )
            sampled_values = sampler.sample(labels, num_sampled, unique=False, seed=seed)
        call = prepare_sampled_call(
            weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampled_values
        )
        return sigmoid_forward(
            call, call.logits, true_label=1.0,
            remove_accidental_hits=remove_accidental_hits, reduction=reduction,
        )

    def backward(self, residuals: SigmoidResiduals, cotangent: Any) -> dict[str, Any]:
        return sigmoid_backward(residuals, cotangent)


negative_sampling_loss = NegativeSamplingLoss()

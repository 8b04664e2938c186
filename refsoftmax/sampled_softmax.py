r"""Sampled softmax: TensorFlow's log-Q estimator and the target-excluded estimator."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._concrete import may_hold
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._sampled_logits import (
    SampledCall,
    check_expected_counts,
    draw,
    log_expected_counts,
    logits_backward,
    prepare_sampled_call,
    sampled_logits,
)
from refsoftmax._shifted import shift_rows
from refsoftmax._validation import check_choice
from refsoftmax.backends import inplace

__all__ = ["ESTIMATORS", "SampledSoftmaxLoss", "sampled_softmax_loss"]

ESTIMATORS = ("logq", "target_excluded")


@dataclass(kw_only=True)
class _Residuals(Residuals):
    call: SampledCall
    reduction: str
    e_true: Any  # exp of the max-shifted true columns         [B, T]
    e_sampled: Any  # ... of the sampled columns, 0 where removed [B, S]
    s: Any  # row normaliser: sum of both                       [B, 1]
    complement: Any  # 1 - p of the true column when T = 1, else None [B]
    losses: Any


class SampledSoftmaxLoss(Function):
    r"""Sampled softmax loss from hidden states (TF argument order), per example.

    ``sampled_softmax_loss(weights, biases, labels, inputs, num_sampled,
    num_classes, num_true=1, sampled_values=None, remove_accidental_hits=True,
    seed=None, *, subtract_log_q=True, estimator="logq", sampler=None,
    reduction="none")``

    An *approximation* of full softmax cross-entropy for very many classes:
    each example's true class is compared with a few sampled classes instead
    of all ``num_classes``.  Use :func:`~refsoftmax.linear_softmax_cross_entropy`
    to evaluate the exact full-softmax loss of the same model.

    Parameters
    ----------
    weights : ``[num_classes, D]`` float array
        Output embeddings.
    biases : ``[num_classes]`` float array or None
    labels : ``[B, num_true]`` int array
    inputs : ``[B, D]`` float array
        Hidden states.
    num_sampled, num_classes, num_true : int
    sampled_values : ``SampledValues`` or (candidates, true_expected_count, sampled_expected_count)
        The sample, e.g. from :mod:`refsoftmax.samplers` or TF's samplers.
        ``None``: drawn with ``sampler`` (default log-uniform), unique for
        ``"logq"``, with replacement for ``"target_excluded"``, seeded by
        ``seed``.  Candidates ``[S]`` are shared by the batch, ``[B, S]`` are
        per example.
    remove_accidental_hits : bool
        Leave out of a row every sampled column whose candidate equals one of
        the row's labels.
    estimator : {"logq", "target_excluded"}
        ``"logq"`` (TensorFlow's, Jean et al. 2015): the true columns and the
        sampled columns all have the log of their expected count subtracted;
        the label puts :math:`1/T` on each true column.  ``"target_excluded"``
        (the other common form): one true class, always in the normaliser
        exactly once and never as a sample; each kept sampled column is
        corrected by :math:`\log(k_\mathrm{eff}\,q_c/(1-q_t))`, with
        :math:`k_\mathrm{eff}` the samples left after rejecting the target.
        The sampling probabilities :math:`q` come from ``sampler.probability``
        when a sampler is known, else from ``expected_count / num_sampled``,
        which is exact only for samples drawn *with replacement*: pass
        ``sampler=`` with sampled values drawn without replacement.
    subtract_log_q : bool
        Apply the estimator's correction (``False`` gives the uncorrected,
        biased variant).
    reduction : {"none", "sum", "mean"}

    Returns
    -------
    array ``[B]`` or scalar
        Per-example losses or a scalar.  ``backward`` returns ``"inputs"`` dense and
        ``"weights"``/``"biases"`` as :class:`~refsoftmax.row_sparse.RowSparse`.

    Notes
    -----
    **Why it works.**  Full softmax needs :math:`Z = \sum_{c=1}^{C} e^{z_c}`.
    Drawing :math:`S` classes from :math:`q` and weighting each by
    :math:`1/(S q_c)` gives the importance-sampling estimate
    :math:`\hat Z = \sum_k e^{z_{s_k}}/(S q_{s_k}) = \sum_k e^{z_{s_k} - \log(S q_{s_k})}`,
    unbiased for :math:`Z`.  Subtracting :math:`\log(\text{expected count})`
    from a logit is exactly that weighting; :math:`\log\hat Z` is biased for
    :math:`\log Z` (Jensen), so the loss and its gradient are biased, with
    the bias shrinking as :math:`S` grows.

    **Forward.**  The columns are :math:`o = [o_{1..T}, o_{T+1..T+S}]` (see
    :mod:`refsoftmax._sampled_logits`) minus the correction :math:`\gamma`;
    with the label distribution :math:`q` over the columns and the kept
    columns :math:`A`,

    .. math:: \ell = \sum_{c} q_c\,\bigl(\log\textstyle\sum_{j\in A} e^{o_j} - o_c\bigr),

    computed from the max-shifted columns like full softmax cross-entropy.

    **Gradient.**  Exactly as for softmax cross-entropy, w.r.t. the columns
    :math:`\partial\ell/\partial o_c = p_c - q_c` on kept columns
    (:math:`p` = softmax over :math:`A`) and 0 on removed ones; the
    corrections are constants.  The chain rule through
    :math:`o = \langle x, W_r\rangle + b_r` then gives the input, weight and
    bias gradients (:mod:`refsoftmax._sampled_logits`).

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> from refsoftmax.samplers import SampledValues
    >>> w, b = np.eye(3), np.zeros(3)
    >>> x, y = np.array([[2.0, 0.0, 0.0]]), np.array([[0]])
    >>> every_class = SampledValues(np.arange(3), np.ones((1, 1)), np.ones(3))
    >>> loss = refsoftmax.sampled_softmax_loss(w, b, y, x, 3, 3, sampled_values=every_class)
    >>> bool(np.isclose(loss[0], np.log(np.exp(2) + 2) - 2))   # = full softmax CE
    True
    """

    name = "sampled_softmax_loss"
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
        remove_accidental_hits: bool = True,
        seed: int | None = None,
        *,
        subtract_log_q: bool = True,
        estimator: str = "logq",
        sampler: Any = None,
        reduction: str = "none",
    ) -> tuple[Any, _Residuals]:
        check_choice("estimator", estimator, ESTIMATORS)
        check_choice("reduction", reduction, ("none", "sum", "mean"))
        if estimator == "target_excluded":
            if num_true != 1:
                msg = f"estimator='target_excluded' needs num_true=1, got num_true={num_true}"
                raise ValueError(msg)
            if not remove_accidental_hits:
                msg = (
                    "estimator='target_excluded' always rejects samples equal to the target; "
                    "remove_accidental_hits=False contradicts it"
                )
                raise ValueError(msg)
        if sampled_values is None:
            sampled_values, sampler = draw(
                labels, num_sampled, num_classes, sampler=sampler,
                unique=estimator == "logq", seed=seed,
            )
        call = prepare_sampled_call(
            weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampled_values
        )
        xp, dtype = call.xp, call.dtype
        # The columns o, as a true block [B, T] and a sampled block [B, S].  The sampled
        # block is a new array owned here: the steps below update it in place where the
        # backend allows (refsoftmax.backends.inplace), the same numbers either way.
        o_true, correction = call.true_logits, None
        if subtract_log_q and estimator == "logq":
            log_true, correction = log_expected_counts(call)
            o_true = o_true - log_true
        elif subtract_log_q:
            correction = _target_excluded_correction(call, sampler)
        o_sampled = sampled_logits(call, correction)
        if remove_accidental_hits:  # a removed column is a -inf logit: exp gives exactly 0
            o_sampled = inplace.fill_where_(o_sampled, call.hits, -math.inf)
        # both blocks shifted together; a row with no finite column has s = 0
        num_true = o_true.shape[1]
        rows = shift_rows(xp.concat([o_true, o_sampled], axis=1), xp=xp)
        e_true, e_sampled = rows.e[:, :num_true], rows.e[:, num_true:]
        s = rows.s
        # the label puts 1/T on each true column and 0 on every sampled one
        losses = xp.sum(rows.neg_log_probs()[:, :num_true], axis=1) / call.num_true
        # with one true column, its gradient p_t - 1 is taken as -(1 - p_t) (accurate as p_t -> 1)
        first = xp.zeros((o_true.shape[0],), dtype=xp.int64, device=device_of(s))
        complement = rows.complement_at(first) if num_true == 1 else None
        denominator = xp.asarray(float(call.inputs.shape[0]), dtype=dtype, device=device_of(s))
        value = reduce(losses, denominator, reduction, "nan", xp=xp)
        res = _Residuals(
            xp=xp, value_shape=tuple(value.shape), compute_dtype=dtype, call=call,
            reduction=reduction, e_true=e_true, e_sampled=e_sampled, s=s, complement=complement,
            losses=losses,
        )
        return xp.astype(value, call.out_dtypes["weights"]), res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.s)
        denominator = xp.asarray(float(r.s.shape[0]), dtype=r.compute_dtype, device=device_of(r.s))
        g_loss, _ = reduce_backward(g, r.losses, denominator, r.reduction, xp=xp)
        # ∂ℓ/∂o = g (p − q) with p = e / s: g/s scales e, and −g/T lands on the true columns.
        # A row with s = 0 (no finite column; its loss is +inf) gets gradient 0.
        live = r.s != 0
        g_row = xp.where(live, xp.expand_dims(g_loss, axis=1), xp.zeros_like(r.s))
        coef = g_row / xp.where(live, r.s, xp.ones_like(r.s))
        if r.complement is None:
            g_true = r.e_true * coef - g_row / r.call.num_true
        else:  # one true column: g (p_t - 1) = -g (1 - p_t)
            g_true = -g_row * xp.expand_dims(r.complement, axis=1)
        g_sampled = r.e_sampled * coef
        silent = (g_row == 0) & xp.isnan(r.s)  # 0 · NaN: a NaN row whose cotangent is 0
        if may_hold(xp, silent):  # gives exactly 0, so it cannot pollute the weight gradients
            g_true = xp.where(silent, xp.zeros_like(g_true), g_true)
            g_sampled = xp.where(silent, xp.zeros_like(g_sampled), g_sampled)
        return logits_backward(r.call, g_true, g_sampled)


def _target_excluded_correction(call: SampledCall, sampler: Any) -> Any:
    r"""``[B, S]``: :math:`\log(k_\mathrm{eff}\,q_c / (1 - q_t))` for the sampled columns.

    Computed as :math:`\log q_c + \log k_\mathrm{eff} - \log(1 - q_t)`: a
    column term plus a row term.
    """
    xp = call.xp
    num_sampled = call.candidates.shape[-1]
    if sampler is not None:
        q_sampled = xp.astype(sampler.probability(call.candidates), call.dtype)
        q_true = xp.astype(sampler.probability(call.labels), call.dtype)
    else:
        check_expected_counts(call)
        q_sampled = call.sampled_expected_count / num_sampled
        q_true = call.true_expected_count / num_sampled
    kept = ~call.hits
    k_eff = xp.sum(xp.astype(kept, call.dtype), axis=1, keepdims=True)
    k_safe = xp.where(k_eff > 0, k_eff, xp.ones_like(k_eff))  # rows with no sample left: all masked
    row = xp.log(k_safe) - xp.log(1.0 - q_true)  # [B, 1]
    return xp.log(q_sampled) + row


sampled_softmax_loss = SampledSoftmaxLoss()

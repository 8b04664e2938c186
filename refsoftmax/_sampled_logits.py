r"""The logits of sampled losses, and their backward pass.

This is TensorFlow's ``_compute_sampled_logits`` written against the array
API.  For an example :math:`i` with hidden state :math:`x_i \in \mathbb R^D`,
true labels :math:`y_{i1..T}` and sampled candidates :math:`s_{1..S}`
(shared across the batch, or drawn per example):

.. math::

    o_{ij} = \langle x_i, W_{y_{ij}}\rangle + b_{y_{ij}} - \gamma_{ij},\qquad
    o_{i,T+k} = \langle x_i, W_{s_k}\rangle + b_{s_k} - \gamma_{i,T+k},

where :math:`\gamma` is the estimator's correction (``log`` of the expected
count for TF's estimator, 0 for negative sampling).  A sampled column whose
candidate equals one of the row's true labels is an *accidental hit*; when
hits are removed that column is left out of the row (a mask, not TF's
``-FLT_MAX``, so no dtype can overflow).

**Backward.**  Given :math:`G = \partial L/\partial o` (``[B, T + S]``), with
the corrections constant:

.. math::

    \frac{\partial L}{\partial x_i} = \sum_j G_{ij} W_{y_{ij}} + \sum_k G_{i,T+k} W_{s_k},\quad
    \frac{\partial L}{\partial W_r} = \sum_{(i,c):\ \mathrm{row}(c)=r} G_{ic}\,x_i,\quad
    \frac{\partial L}{\partial b_r} = \sum_{(i,c):\ \mathrm{row}(c)=r} G_{ic} .

The weight and bias gradients are returned as :class:`~refsoftmax.row_sparse.RowSparse`
with one entry per true label and per (shared) candidate, summed on
``to_dense()``; with shared candidates the candidate rows are first reduced
over the batch, :math:`\sum_i G_{i,T+k} x_i = (G_{:,T:}^\top X)_k`.

:func:`draw` is the losses' default sample when the caller passes no
``sampled_values``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from refsoftmax._arrays import resolve
from refsoftmax._concrete import flagged
from refsoftmax._dtypes import check_integer, compute_dtype
from refsoftmax._labels import class_indices
from refsoftmax._validation import first_offender
from refsoftmax.row_sparse import RowSparse

__all__ = ["SampledCall", "draw", "logits_backward", "prepare_sampled_call", "sampled_logits"]


@dataclass(kw_only=True)
class SampledCall:
    """A validated sampled-loss call with the gathered rows and the logits."""

    xp: Any
    dtype: Any  # compute dtype
    out_dtypes: dict[str, Any]  # dtype of each differentiable argument
    num_classes: int
    num_true: int
    per_example: bool
    inputs: Any  # [B, D]
    labels: Any  # [B, T] int64
    candidates: Any  # [S] or [B, S] int64
    true_w: Any  # [B, T, D]
    sampled_w: Any  # [S, D] or [B, S, D]
    true_logits: Any  # [B, T]: <x_i, W_y> + b_y, before the correction
    sampled_dot: Any  # [B, S]: <x_i, W_s> (no bias: see sampled_logits)
    sampled_bias: Any  # [S] or [B, S]: b_s (None without biases)
    hits: Any  # [B, S] bool: candidate equals one of the row's labels
    has_biases: bool
    true_expected_count: Any  # [B, T]
    sampled_expected_count: Any  # [S] or [B, S]

    @property
    def logits(self) -> Any:
        """``[B, T + S]``: the true and the sampled columns side by side, before the correction."""
        return corrected_logits(self, None, None)


def draw(labels: Any, num_sampled: int, num_classes: int, *, sampler: Any, unique: bool,
         seed: int | None) -> tuple[Any, Any]:
    """Sample with ``sampler`` (default: log-uniform over ``num_classes``); return (values, sampler)."""
    from refsoftmax import samplers

    if sampler is None:
        sampler = samplers.LogUniformSampler(num_classes)
    return sampler.sample(labels, num_sampled, unique=unique, seed=seed), sampler


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"{name} must be an integer, got {value!r}"
        raise TypeError(msg)
    if int(value) < minimum:
        msg = f"{name} must be >= {minimum}, got {value}"
        raise ValueError(msg)
    return int(value)


def prepare_sampled_call(
    weights: Any,
    biases: Any,
    labels: Any,
    inputs: Any,
    num_sampled: int,
    num_classes: int,
    num_true: int,
    sampled_values: Any,
) -> SampledCall:
    """Validate the TF-style arguments, gather the needed rows and compute the raw logits."""
    num_sampled = _check_int("num_sampled", num_sampled, 1)
    num_classes = _check_int("num_classes", num_classes, 1)
    num_true = _check_int("num_true", num_true, 1)
    if sampled_values is None or len(sampled_values) != 3:
        msg = (
            "sampled_values must be a (candidates, true_expected_count, sampled_expected_count) "
            f"triple, got {type(sampled_values).__name__}"
        )
        raise ValueError(msg)
    candidates, true_ec, sampled_ec = sampled_values
    xp, a = resolve(
        weights=weights, biases=biases, labels=labels, inputs=inputs, candidates=candidates,
        true_expected_count=true_ec, sampled_expected_count=sampled_ec,
    )
    w, b, y, x = a["weights"], a["biases"], a["labels"], a["inputs"]
    cand, true_ec, sampled_ec = a["candidates"], a["true_expected_count"], a["sampled_expected_count"]
    wdt = compute_dtype(xp, w, "weights")
    xdt = compute_dtype(xp, x, "inputs")
    dtype = xp.result_type(wdt, xdt)
    out_dtypes = {"weights": w.dtype, "inputs": x.dtype}
    if w.ndim != 2 or w.shape[0] != num_classes:
        msg = f"weights must have shape (num_classes={num_classes}, dim), got {tuple(w.shape)}"
        raise ValueError(msg)
    dim = w.shape[1]
    if x.ndim != 2 or x.shape[1] != dim:
        msg = f"inputs must have shape (batch, {dim}) to match weights, got {tuple(x.shape)}"
        raise ValueError(msg)
    batch = x.shape[0]
    if b is not None:
        compute_dtype(xp, b, "biases")
        out_dtypes["biases"] = b.dtype
        if tuple(b.shape) != (num_classes,):
            msg = f"biases must have shape ({num_classes},), got {tuple(b.shape)}"
            raise ValueError(msg)
    check_integer(xp, y, "labels")
    if tuple(y.shape) != (batch, num_true):
        msg = f"labels must have shape (batch={batch}, num_true={num_true}), got {tuple(y.shape)}"
        raise ValueError(msg)
    y, _ = class_indices(xp, y, num_classes, name="labels")
    check_integer(xp, cand, "sampled_values.candidates")
    per_example = cand.ndim == 2
    expected = (batch, num_sampled) if per_example else (num_sampled,)
    if tuple(cand.shape) != expected:
        msg = (
            f"sampled candidates must have shape ({num_sampled},) or ({batch}, {num_sampled}), "
            f"got {tuple(cand.shape)}"
        )
        raise ValueError(msg)
    cand, _ = class_indices(xp, cand, num_classes, name="sampled candidates")
    for name, arr, shape in (
        ("true_expected_count", true_ec, (batch, num_true)),
        ("sampled_expected_count", sampled_ec, expected),
    ):
        if tuple(arr.shape) != shape:
            msg = f"{name} must have shape {shape}, got {tuple(arr.shape)}"
            raise ValueError(msg)

    w = xp.astype(w, dtype, copy=False)
    x = xp.astype(x, dtype, copy=False)
    true_w = xp.reshape(xp.take(w, xp.reshape(y, (-1,)), axis=0), (batch, num_true, dim))
    true_logits = xp.sum(xp.expand_dims(x, axis=1) * true_w, axis=-1)
    if per_example:
        sampled_w = xp.reshape(xp.take(w, xp.reshape(cand, (-1,)), axis=0), (batch, num_sampled, dim))
        sampled_logits = xp.sum(xp.expand_dims(x, axis=1) * sampled_w, axis=-1)
        hits = xp.any(xp.expand_dims(cand, axis=2) == xp.expand_dims(y, axis=1), axis=2)
    else:
        sampled_w = xp.take(w, cand, axis=0)
        sampled_logits = xp.matmul(x, xp.matrix_transpose(sampled_w))
        hits = xp.any(
            xp.reshape(cand, (1, num_sampled, 1)) == xp.expand_dims(y, axis=1), axis=2
        )
    sampled_b = None
    if b is not None:
        b = xp.astype(b, dtype, copy=False)
        true_logits = true_logits + xp.reshape(xp.take(b, xp.reshape(y, (-1,))), (batch, num_true))
        sampled_b = xp.reshape(xp.take(b, xp.reshape(cand, (-1,))), tuple(cand.shape))
    return SampledCall(
        xp=xp, dtype=dtype, out_dtypes=out_dtypes, num_classes=num_classes, num_true=num_true,
        per_example=per_example, inputs=x, labels=y, candidates=cand, true_w=true_w,
        sampled_w=sampled_w, true_logits=true_logits, sampled_dot=sampled_logits,
        sampled_bias=sampled_b, hits=hits, has_biases=b is not None,
        true_expected_count=xp.astype(true_ec, dtype),
        sampled_expected_count=xp.astype(sampled_ec, dtype),
    )


def check_expected_counts(call: SampledCall) -> None:
    """``ValueError`` unless every expected count is > 0 (NaN passes and propagates)."""
    xp = call.xp
    for counts in (call.true_expected_count, call.sampled_expected_count):
        bad = ~(counts > 0) & ~xp.isnan(counts)
        if flagged(xp, bad):
            msg = (
                "expected counts must be > 0 to subtract their log (a class the sampler can never "
                f"draw cannot be corrected for), got {first_offender(xp, counts, bad)}"
            )
            raise ValueError(msg)


def log_expected_counts(call: SampledCall) -> tuple[Any, Any]:
    """``log`` of the true and the sampled expected counts; ``ValueError`` if any is ≤ 0.

    Returned separately (``[B, T]`` and ``[S]`` or ``[B, S]``) so that subtracting them
    broadcasts instead of building a ``[B, T + S]`` matrix.
    """
    check_expected_counts(call)
    xp = call.xp
    return xp.log(call.true_expected_count), xp.log(call.sampled_expected_count)


def sampled_logits(call: SampledCall, correction: Any = None) -> Any:
    r"""``[B, S]``: :math:`\langle x_i, W_{s_k}\rangle + b_{s_k} - \gamma_{ik}`.

    ``correction`` (:math:`\gamma`, ``None`` for none) is ``[S]``, ``[B, S]``
    or broadcastable to it.  With shared candidates the bias and the
    correction are combined on the ``[S]`` vector first, so the ``[B, S]``
    block is touched once.  The result is always a new array, which the
    caller may update in place.
    """
    offset = call.sampled_bias
    if correction is not None:
        offset = -correction if offset is None else offset - correction
    if offset is None:
        return call.xp.asarray(call.sampled_dot, copy=True)
    return call.sampled_dot + offset


def corrected_logits(call: SampledCall, true_correction: Any, sampled_correction: Any) -> Any:
    """The ``[B, T + S]`` columns minus a correction given for the true and the sampled columns.

    ``None`` for a correction means none.
    """
    xp = call.xp
    true = call.true_logits if true_correction is None else call.true_logits - true_correction
    sampled = xp.broadcast_to(sampled_logits(call, sampled_correction), tuple(call.hits.shape))
    return xp.concat([true, sampled], axis=1)


def logits_backward(call: SampledCall, g_true: Any, g_sampled: Any) -> dict[str, Any]:
    """Chain ``∂L/∂o`` for the true (``[B, T]``) and the sampled (``[B, S]``) columns
    to the inputs, weights and biases."""
    xp = call.xp
    _batch, dim = call.inputs.shape
    d_inputs = xp.sum(xp.expand_dims(g_true, axis=-1) * call.true_w, axis=1)
    if call.per_example:
        d_inputs = d_inputs + xp.sum(xp.expand_dims(g_sampled, axis=-1) * call.sampled_w, axis=1)
        sampled_rows = xp.reshape(
            xp.expand_dims(g_sampled, axis=-1) * xp.expand_dims(call.inputs, axis=1), (-1, dim)
        )
        sampled_bias = xp.reshape(g_sampled, (-1,))
    else:
        d_inputs = d_inputs + xp.matmul(g_sampled, call.sampled_w)
        sampled_rows = xp.matmul(xp.matrix_transpose(g_sampled), call.inputs)
        sampled_bias = xp.sum(g_sampled, axis=0)
    true_rows = xp.reshape(xp.expand_dims(g_true, axis=-1) * xp.expand_dims(call.inputs, axis=1), (-1, dim))
    indices = xp.concat([xp.reshape(call.labels, (-1,)), xp.reshape(call.candidates, (-1,))])
    out: dict[str, Any] = {
        "weights": RowSparse(
            indices=indices,
            values=xp.astype(
                xp.concat([true_rows, sampled_rows], axis=0), call.out_dtypes["weights"], copy=False
            ),
            num_rows=call.num_classes,
        ),
        "inputs": xp.astype(d_inputs, call.out_dtypes["inputs"], copy=False),
    }
    if call.has_biases:
        out["biases"] = RowSparse(
            indices=indices,
            values=xp.astype(
                xp.concat([xp.reshape(g_true, (-1,)), sampled_bias]), call.out_dtypes["biases"], copy=False
            ),
            num_rows=call.num_classes,
        )
    return out

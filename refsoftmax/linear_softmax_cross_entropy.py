r"""Exact full-softmax cross-entropy from hidden states, over class chunks (never B × C)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import array_api_compat
from array_api_compat import device as device_of

from refsoftmax._arrays import resolve
from refsoftmax._concrete import may_hold
from refsoftmax._dtypes import check_integer, compute_dtype
from refsoftmax._labels import check_ignore_index, class_indices
from refsoftmax._logit_transforms import check_logit_softcap, check_z_loss, soft_cap
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._shifted import exp_minus
from refsoftmax._validation import check_choice
from refsoftmax.backends import inplace

__all__ = ["LinearSoftmaxCrossEntropy", "linear_softmax_cross_entropy"]

_CHUNK_BYTES = 1 << 24  # default chunk: 16 MiB of logits (under glibc's 32 MiB mmap threshold)


@dataclass(kw_only=True)
class _Residuals(Residuals):
    weights: Any
    biases: Any
    inputs: Any
    target: Any  # [B] int64, 0 where ignored
    rows: Any  # [B] bool: rows with a gradient (not ignored, not empty)
    m: Any  # [B] row maximum of the logits (0 in empty rows)
    s: Any  # [B] Σ_c e^{z_c - m} (1 + r)
    neg_log_p: Any  # [B] -log p_t, for p_t - 1 = expm1(-(-log p_t)) without cancellation
    z_factor: Any  # [B] 2 λ log Z with a z-loss (0 where ignored), else None
    cap: float | None  # the logit soft-cap c, or None
    chunk: int
    reduction: str
    losses: Any
    denominator: Any
    out_dtypes: dict[str, Any]


def _chunk_logits(xp: Any, x: Any, w: Any, b: Any, start: int, stop: int) -> Any:
    """``[B, stop - start]``: a new array of the chunk's logits (callers update it in place)."""
    logits = xp.matmul(x, xp.matrix_transpose(w[start:stop, :]))
    if b is not None:
        logits += b[start:stop]
    return logits


class LinearSoftmaxCrossEntropy(Function):
    r"""Exact softmax cross-entropy of ``inputs @ weights.T + biases``, computed in class chunks.

    ``linear_softmax_cross_entropy(weights, biases, labels, inputs, *,
    chunk_size=None, ignore_index=None, reduction="none", z_loss=0.0,
    logit_softcap=None)``

    The same value and gradients as
    ``sparse_softmax_cross_entropy(inputs @ weights.T + biases, labels)``,
    but the ``[B, C]`` logits are never held in memory: the forward pass
    keeps only a running maximum and sum per row, the backward pass
    recomputes one ``[B, chunk_size]`` block of logits at a time.  This is
    how to evaluate a sampled-softmax model exactly, or train full softmax
    over a vocabulary too large for ``[B, C]``.

    Parameters
    ----------
    weights : ``[C, D]`` float array
    biases : ``[C]`` float array or None
    labels : ``[B]`` int array, in ``[0, C)`` or ``ignore_index``
    inputs : ``[B, D]`` float array
    chunk_size : int, optional
        Classes per block; default: 16 MiB of logits per block.
    ignore_index : int, optional
    reduction : {"none", "sum", "mean"}
        ``"mean"`` divides by the number of non-ignored examples.
    z_loss : float >= 0
        λ of the z-loss: every non-ignored example adds :math:`\lambda(\log Z)^2`
        (``sparse_softmax_cross_entropy``'s option, computed from the streaming
        :math:`\log Z = m + \log s`).
    logit_softcap : float > 0, optional
        c of the soft-cap: each chunk's logits become :math:`c\tanh(z/c)` first.

    Returns
    -------
    array ``[B]`` or scalar
        Per-example losses ``[B]`` or a scalar.  ``backward`` returns dense
        gradients for ``"weights"``, ``"biases"`` and ``"inputs"``.

    Notes
    -----
    **Forward (online log-sum-exp).**  Over chunks :math:`K` of classes, with
    :math:`z_K = x W_K^\top + b_K`, keep per row :math:`m` (max so far) and
    :math:`s` (sum of :math:`e^{z - m}` so far):

    .. math::

        m' = \max(m, \max_{c\in K} z_c),\qquad
        s' = s\,e^{m - m'} + \sum_{c\in K} e^{z_c - m'} ,

    and pick up :math:`z_t` in the chunk that holds the label.  Then
    :math:`\ell = (m - z_t) + \log s` (no cancellation through the size of
    :math:`m`).  Memory: :math:`O(B \cdot \text{chunk})`.

    **Backward.**  With :math:`\mathrm{lse} = m + \log s` saved,
    :math:`\partial\ell/\partial z_c = p_c - \delta_{ct}` where
    :math:`p_c = e^{z_c - \mathrm{lse}}` is recomputed chunk by chunk; for a
    cotangent :math:`g`, :math:`G_K = g\,(p_K - e_{t,K})` and

    .. math::

        \frac{\partial L}{\partial x} = \sum_K G_K W_K,\qquad
        \frac{\partial L}{\partial W_K} = G_K^\top x,\qquad
        \frac{\partial L}{\partial b_K} = \textstyle\sum_i G_{K,i} .

    The loop computes :math:`g\,p_K` in the recomputed logits' own buffer and
    replaces the target's entry by :math:`g\,(p_t - 1) = g\operatorname{expm1}(\log
    p_t)` (accurate as :math:`p_t \to 1`).  One extra matrix product per chunk (the
    recomputed logits) is the price for never storing them.

    **z-loss and soft-cap.**  The z-loss makes :math:`\partial\ell/\partial z_c =
    (1 + 2\lambda\log Z)\,p_c - \delta_{ct}` (its target entry :math:`g(\operatorname{expm1}
    (\log p_t) + 2\lambda\log Z\,p_t)`); with a soft-cap each chunk's
    :math:`G_K` is multiplied by :math:`\operatorname{sech}^2(z_K/c)` before the
    products above (:mod:`refsoftmax._logit_transforms`).

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> rng = np.random.default_rng(0)
    >>> w, b, x = rng.normal(size=(10, 4)), rng.normal(size=10), rng.normal(size=(3, 4))
    >>> y = np.array([1, 7, 3])
    >>> exact = refsoftmax.sparse_softmax_cross_entropy(x @ w.T + b, y)
    >>> chunked = refsoftmax.linear_softmax_cross_entropy(w, b, y, x, chunk_size=3)
    >>> bool(np.allclose(chunked, exact, rtol=1e-14))
    True
    """

    name = "linear_softmax_cross_entropy"
    differentiable = ("weights", "biases", "inputs")

    def forward(
        self,
        weights: Any,
        biases: Any,
        labels: Any,
        inputs: Any,
        *,
        chunk_size: int | None = None,
        ignore_index: int | None = None,
        reduction: str = "none",
        z_loss: float = 0.0,
        logit_softcap: float | None = None,
    ) -> tuple[Any, _Residuals]:
        check_choice("reduction", reduction, ("none", "sum", "mean"))
        z_loss = check_z_loss(z_loss)
        cap = check_logit_softcap(logit_softcap)
        xp, a = resolve(weights=weights, biases=biases, labels=labels, inputs=inputs)
        w, b, t, x = a["weights"], a["biases"], a["labels"], a["inputs"]
        dtype = xp.result_type(compute_dtype(xp, w, "weights"), compute_dtype(xp, x, "inputs"))
        out_dtypes = {"weights": w.dtype, "inputs": x.dtype}
        if w.ndim != 2:
            msg = f"weights must have shape (num_classes, dim), got {tuple(w.shape)}"
            raise ValueError(msg)
        num_classes, dim = w.shape
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
            b = xp.astype(b, dtype, copy=False)
        check_integer(xp, t, "labels")
        if tuple(t.shape) != (batch,):
            msg = f"labels must have shape ({batch},), got {tuple(t.shape)}"
            raise ValueError(msg)
        ignore_index = check_ignore_index(ignore_index)
        target, valid_b = class_indices(xp, t, num_classes, name="labels", ignore_index=ignore_index)
        itemsize = 8 if dtype == xp.float64 else 4
        if chunk_size is None:
            chunk = max(1, min(num_classes, _CHUNK_BYTES // max(1, batch * itemsize)))
        elif isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
            msg = f"chunk_size must be a positive integer, got {chunk_size!r}"
            raise ValueError(msg)
        else:
            chunk = int(chunk_size)
        w = xp.astype(w, dtype, copy=False)
        x = xp.astype(x, dtype, copy=False)
        valid = xp.astype(valid_b, dtype)

        # a streaming log-sum-exp: per row the running maximum m and r = s - 1, the sum of
        # e^{z - m} over every class seen except one copy of the maximum (see _shifted.py)
        m = xp.full((batch,), -xp.inf, dtype=dtype, device=device_of(x))
        r = xp.zeros((batch,), dtype=dtype, device=device_of(x))
        z_t = xp.zeros((batch,), dtype=dtype, device=device_of(x))
        for start in range(0, num_classes, chunk):
            stop = min(start + chunk, num_classes)
            logits = _chunk_logits(xp, x, w, b, start, stop)
            if cap is not None:
                logits, _ = soft_cap(logits, cap, xp=xp)
            here = (target >= start) & (target < stop)
            local = xp.clip(target - start, 0, stop - start - 1)
            picked = xp.take_along_axis(logits, xp.expand_dims(local, axis=1), axis=1)[:, 0]
            z_t = xp.where(here, picked, z_t)
            m_chunk = xp.max(logits, axis=1)
            m_new = xp.maximum(m, m_chunk)
            m_safe = xp.where(m_new == -xp.inf, xp.zeros_like(m_new), m_new)
            at_max = logits == xp.expand_dims(m_new, axis=1)
            ties = xp.sum(xp.astype(at_max, dtype), axis=1)
            e = exp_minus(logits, xp.expand_dims(m_safe, axis=1), xp=xp)
            chunk_rest = xp.sum(xp.where(at_max, xp.zeros_like(e), e), axis=1)
            # the maximum moved into this chunk: the old terms (r and the old maximum's 1)
            # rescale by e^{m - m_new}, and one of the chunk's maxima is the new excluded 1
            moved = m_chunk > m
            scale = exp_minus(xp.where(moved, m, m_safe), m_safe, xp=xp)
            r = xp.where(moved, (1.0 + r) * scale + chunk_rest + (ties - 1.0), r + chunk_rest + ties)
            r = xp.where(m_new == -xp.inf, xp.zeros_like(r), r)  # nothing finite yet
            m = m_new
        empty = m == -xp.inf  # every logit of the row is -inf: no class to normalise over
        safe_m = xp.where(empty, xp.zeros_like(m), m)
        # -log p_t = (m - z_t) + log1p(r): two non-negative terms, exact to rounding
        neg_log_p = (safe_m - z_t) + xp.log1p(r)
        neg_log_p = xp.where(empty, xp.full_like(neg_log_p, xp.inf), neg_log_p)
        losses = xp.where(valid_b, neg_log_p, xp.zeros_like(neg_log_p))
        z_factor = None
        if z_loss > 0:  # λ (log Z)² per non-ignored example
            log_z = xp.where(empty, xp.full_like(m, -xp.inf), safe_m + xp.log1p(r))
            losses = losses + xp.where(valid_b, z_loss * log_z * log_z, xp.zeros_like(log_z))
            z_factor = xp.where(valid_b & ~empty, 2.0 * z_loss * log_z, xp.zeros_like(log_z))
        rows = valid_b & ~empty  # rows that receive a gradient
        denominator = xp.sum(valid) if reduction == "mean" else None
        value = reduce(losses, denominator, reduction, "nan", xp=xp)
        res = _Residuals(
            xp=xp, value_shape=tuple(value.shape), compute_dtype=dtype, weights=w, biases=b,
            inputs=x, target=target, rows=rows, m=safe_m, s=1.0 + r, neg_log_p=neg_log_p,
            z_factor=z_factor, cap=cap, chunk=chunk, reduction=reduction, losses=losses, denominator=denominator,
            out_dtypes=out_dtypes,
        )
        return xp.astype(value, out_dtypes["weights"]), res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.inputs)
        g_loss, _ = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
        g_rows = xp.where(r.rows, g_loss, xp.zeros_like(g_loss))  # [B]
        # rows without a gradient (ignored, empty) must not leak NaN/inf into dW through 0 * x
        all_rows = not may_hold(xp, ~r.rows)
        no_gradient = xp.expand_dims(~r.rows, axis=1)
        inputs = r.inputs if all_rows else xp.where(~no_gradient, r.inputs, xp.zeros_like(r.inputs))
        m = xp.expand_dims(r.m, axis=1)
        g_over_s = xp.expand_dims(g_rows / r.s, axis=1)
        # the target's g (p_t - 1) = g expm1(log p_t): accurate as p_t -> 1
        spike = g_rows * xp.expm1(-r.neg_log_p)
        if r.z_factor is not None:  # the z-loss: (1 + 2 λ log Z) p, and its share of the target
            spike = spike + g_rows * r.z_factor * xp.exp(-r.neg_log_p)
            g_over_s = g_over_s * xp.expand_dims(1.0 + r.z_factor, axis=1)
        num_classes, _dim = r.weights.shape
        d_inputs = xp.zeros(r.inputs.shape, dtype=r.compute_dtype, device=device_of(r.inputs))
        writable = array_api_compat.is_writeable_array(r.weights)
        d_w_parts, d_b_parts = [], []
        if writable:
            d_w = xp.empty(r.weights.shape, dtype=r.compute_dtype, device=device_of(r.inputs))
            d_b = xp.empty((num_classes,), dtype=r.compute_dtype, device=device_of(r.inputs))
        # the softmax part g p, chunk by chunk, in the recomputed logits' own buffer
        for start in range(0, num_classes, r.chunk):
            stop = min(start + r.chunk, num_classes)
            logits = _chunk_logits(xp, r.inputs, r.weights, r.biases, start, stop)
            slope = None
            if r.cap is not None:
                logits, slope = soft_cap(logits, r.cap, xp=xp)
            grad = exp_minus(logits, m, xp=xp)  # e^{z - m} to ~1 ulp
            grad *= g_over_s  # g p
            here = (r.target >= start) & (r.target < stop)
            if may_hold(xp, here):  # the label part: p_t - 1 replaces p_t in the target's column
                local = xp.clip(r.target - start, 0, stop - start - 1)
                column = xp.arange(stop - start, device=device_of(grad), dtype=local.dtype)
                is_t = (xp.expand_dims(local, axis=1) == column) & xp.expand_dims(here, axis=1)
                grad = xp.where(is_t, xp.expand_dims(spike, axis=1), grad)
            if slope is not None:  # through the soft-cap
                grad = grad * slope
            if not all_rows:
                grad = inplace.fill_where_(grad, no_gradient, 0.0)
            d_inputs += xp.matmul(grad, r.weights[start:stop, :])
            chunk_w = xp.matmul(xp.matrix_transpose(grad), inputs)
            chunk_b = xp.sum(grad, axis=0)
            if writable:
                d_w[start:stop, :] = chunk_w
                d_b[start:stop] = chunk_b
            else:
                d_w_parts.append(chunk_w)
                d_b_parts.append(chunk_b)
        if not writable:
            d_w = xp.concat(d_w_parts, axis=0)
            d_b = xp.concat(d_b_parts, axis=0)
        out = {
            "weights": xp.astype(d_w, r.out_dtypes["weights"], copy=False),
            "inputs": xp.astype(d_inputs, r.out_dtypes["inputs"], copy=False),
        }
        if r.biases is not None:
            out["biases"] = xp.astype(d_b, r.out_dtypes["biases"], copy=False)
        return out


linear_softmax_cross_entropy = LinearSoftmaxCrossEntropy()

r"""Cross-entropy of a linear layer whose weight rows (the classes) are sharded across ranks.

Rank :math:`k` holds the rows :math:`[o_k, o_k + C_k)` of the output embedding
:math:`W` ``[C, D]`` (and of the biases), in rank order — Megatron's vocab-parallel output
layer.  Every rank passes the same ``inputs`` ``[B, D]`` and ``labels`` ``[B]``.

**Forward:** the local logits :math:`Z_k = X W_k^\top + b_k` ``[B, C_k]``, then
:func:`refsoftmax.distributed.sparse_softmax_cross_entropy` of the sharded logits (its
all-reduces, nothing of size C).

**Backward:** with :math:`G_k = \partial\ell/\partial Z_k` from the sharded loss (local),
:math:`\bar W_k = G_k^\top X` and :math:`\bar b_k = \sum_i G_{k,i}` are local, and
:math:`\bar X = \sum_k G_k W_k` — every rank's share of the inputs' gradient — is one
all-reduce of ``[B, D]`` (the inputs are replicated, so their gradient is a sum over the
shards; Megatron's "copy to tensor-parallel region" does the same all-reduce).  The
local logits are kept for the backward (``[B, C_k]`` per rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refsoftmax._arrays import resolve
from refsoftmax._dtypes import compute_dtype
from refsoftmax._protocol import Function, Residuals
from refsoftmax._sharded import layout
from refsoftmax._sharded_sparse import sparse_softmax_cross_entropy as _sharded_sparse

__all__ = ["ShardedLinearSoftmaxCrossEntropy"]


@dataclass(kw_only=True)
class _Residuals(Residuals):
    loss: Any  # the sharded sparse loss's residuals
    weights: Any
    inputs: Any
    has_biases: bool
    out_dtypes: dict[str, Any]
    lay: Any


class ShardedLinearSoftmaxCrossEntropy(Function):
    r"""Sparse softmax cross-entropy of ``inputs @ weights.T + biases`` with the weight rows sharded.

    ``linear_softmax_cross_entropy(local_weights, local_biases, labels, inputs, *, group=None,
    ignore_index=None, class_weights=None, label_smoothing=0.0, reduction="none",
    mean_denominator="weights", empty_mean="nan", z_loss=0.0, logit_softcap=None)``

    Parameters
    ----------
    local_weights : torch tensor ``[C_k, D]``
        This rank's rows of the output embedding.
    local_biases : torch tensor ``[C_k]`` or None
    labels : integer tensor ``[B]``
        Global class indices (or ``ignore_index``), the same on every rank.
    inputs : torch tensor ``[B, D]``
        The hidden states, the same on every rank.
    group, ignore_index, class_weights, label_smoothing, reduction, mean_denominator, empty_mean, z_loss, logit_softcap : optional
        As :func:`refsoftmax.distributed.sparse_softmax_cross_entropy`.

    Returns
    -------
    tensor
        The loss, identical on every rank.  ``backward`` returns this rank's blocks of
        ``local_weights`` and ``local_biases`` and the *whole* gradient of ``inputs`` (the
        same on every rank).
    """

    name = "distributed.linear_softmax_cross_entropy"
    differentiable = ("local_weights", "local_biases", "inputs")

    def forward(
        self,
        local_weights: Any,
        local_biases: Any,
        labels: Any,
        inputs: Any,
        *,
        group: Any = None,
        **options: Any,
    ) -> tuple[Any, _Residuals]:
        xp, a = resolve(local_weights=local_weights, local_biases=local_biases, inputs=inputs)
        w, b, x = a["local_weights"], a["local_biases"], a["inputs"]
        dtype = xp.result_type(compute_dtype(xp, w, "local_weights"), compute_dtype(xp, x, "inputs"))
        out_dtypes = {"local_weights": w.dtype, "inputs": x.dtype}
        if w.ndim != 2:
            msg = f"local_weights must have shape (local_classes, dim), got {tuple(w.shape)}"
            raise ValueError(msg)
        if x.ndim != 2 or x.shape[1] != w.shape[1]:
            msg = f"inputs must have shape (batch, {w.shape[1]}) to match local_weights, got {tuple(x.shape)}"
            raise ValueError(msg)
        if b is not None:
            compute_dtype(xp, b, "local_biases")
            out_dtypes["local_biases"] = b.dtype
            if tuple(b.shape) != (w.shape[0],):
                msg = f"local_biases must have shape ({w.shape[0]},), got {tuple(b.shape)}"
                raise ValueError(msg)
        lay = layout(xp, w, group, "local_weights")  # checked here so the message names the weights
        w = xp.astype(w, dtype, copy=False)
        x = xp.astype(x, dtype, copy=False)
        logits = x @ xp.matrix_transpose(w)  # [B, C_k]
        if b is not None:
            logits = logits + xp.astype(b, dtype)
        value, loss_res = _sharded_sparse.forward(logits, labels, group=group, **options)
        res = _Residuals(xp=xp, value_shape=loss_res.value_shape, compute_dtype=dtype, loss=loss_res,
                         weights=w, inputs=x, has_biases=b is not None, out_dtypes=out_dtypes, lay=lay)
        return value, res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = _sharded_sparse.backward(r.loss, cotangent)["local_logits"]  # [B, C_k]
        g = xp.astype(g, r.compute_dtype, copy=False)
        # ignored rows have no gradient: their inputs (possibly NaN/inf) must not leak into dW as 0 * x
        inputs = xp.where(xp.expand_dims(r.loss.valid, axis=1), r.inputs, xp.zeros_like(r.inputs))
        d_inputs = r.lay.all_sum(g @ r.weights)  # Σ_k G_k W_k: the inputs are replicated
        out = {
            "local_weights": xp.astype(xp.matrix_transpose(g) @ inputs, r.out_dtypes["local_weights"]),
            "local_biases": (xp.astype(xp.sum(g, axis=0), r.out_dtypes["local_biases"])
                             if r.has_biases else None),
            "inputs": xp.astype(d_inputs, r.out_dtypes["inputs"]),
        }
        return out

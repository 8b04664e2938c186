"""Independent float64 oracles for the tests: NumPy + scipy.special, written without refsoftmax.

They build the smoothed, weighted label distribution explicitly and use
``scipy.special.log_softmax``; the package builds coefficients row by row and
shifts by hand.  Both agreeing is evidence, not tautology.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def dense_losses(z, y, *, where=None, class_weights=None, eps=0.0, mode="uniform"):
    """Per-example softmax cross-entropy over the last axis."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    allowed = np.ones(z.shape, bool) if where is None else np.broadcast_to(where, z.shape)
    zt = np.where(allowed, z, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        logp = special.log_softmax(zt, axis=-1)
    empty = ~np.any(np.isfinite(zt), axis=-1, keepdims=True)
    logp = np.where(empty, -np.inf, logp)
    a = allowed.astype(np.float64)
    k = a.sum(-1, keepdims=True)
    if mode == "uniform":
        spread = np.where(k > 0, a / np.maximum(k, 1), 0.0)
        q = (1 - eps) * y + eps * spread if eps else y
    else:
        ok = k > 1
        e = np.where(ok, eps, 0.0)
        m = y.sum(-1, keepdims=True)
        q = (1 - e) * y + e * (m - y) * a / np.where(ok, k - 1, 1)
    c = q if class_weights is None else np.asarray(class_weights, np.float64) * q
    with np.errstate(invalid="ignore"):
        terms = np.where(c == 0, 0.0, -c * logp)
    return terms.sum(-1)


def sparse_losses(z, t, *, where=None, ignore_index=None, class_weights=None, eps=0.0,
                  mode="uniform", weighting="per_class"):
    """Per-example sparse softmax cross-entropy over the last axis."""
    z = np.asarray(z, dtype=np.float64)
    t = np.asarray(t)
    valid = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    onehot = (np.where(valid, t, -1)[..., None] == np.arange(z.shape[-1])).astype(np.float64)
    if weighting == "per_class" or class_weights is None:
        losses = dense_losses(z, onehot, where=where, class_weights=class_weights, eps=eps, mode=mode)
    else:
        w_t = np.asarray(class_weights, np.float64)[np.where(valid, t, 0)]
        base = dense_losses(z, onehot, where=where, eps=eps, mode=mode)
        losses = np.where(w_t == 0, 0.0, w_t * base)
    return np.where(valid, losses, 0.0)


def sparse_denominator(t, *, ignore_index=None, class_weights=None, kind="weights"):
    t = np.asarray(t)
    valid = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    if kind == "all":
        return float(t.size)
    if kind == "count" or class_weights is None:
        return float(valid.sum())
    return float(np.asarray(class_weights, np.float64)[np.where(valid, t, 0)][valid].sum())

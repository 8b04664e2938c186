"""The library's loss: sparse softmax cross-entropy of NumPy logits and class indices."""

from __future__ import annotations

from typing import Any

import numpy as np


def sparse_cross_entropy(logits: Any, labels: Any, reduction: str = "none") -> Any:
    """``logsumexp(logits) - logits[label]`` along the last axis; labels outside ``[0, C)`` raise."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if np.any((labels < 0) | (labels >= logits.shape[-1])):
        msg = "labels must be class indices in [0, n_classes)"
        raise ValueError(msg)
    shift = logits.max(axis=-1, keepdims=True)
    z = logits - np.where(np.isfinite(shift), shift, 0)
    lse = np.log(np.exp(z).sum(axis=-1))
    loss = lse - np.take_along_axis(z, labels[..., None], axis=-1)[..., 0]
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss

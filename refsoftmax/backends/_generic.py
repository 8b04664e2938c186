"""Array-API-only fallbacks shared by the backend modules."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np


def scatter_add_onehot(x: Any, indices: Any, values: Any, *, xp: Any) -> Any:
    """``x`` plus ``values`` summed into rows ``indices`` (axis 0), using only the standard.

    Builds the ``[len(indices), x.shape[0]]`` one-hot matrix and contracts it
    with ``values``: exact accumulation of duplicates, O(k · n · d) work.  It
    is what the array-API-strict backend uses to prove the standard suffices;
    the other backends use their native scatter.
    """
    rows = x.shape[0]
    onehot = xp.astype(
        xp.reshape(indices, (-1, 1)) == xp.reshape(xp.arange(rows, device=array_api_compat.device(x)), (1, -1)),
        x.dtype,
    )
    flat = xp.reshape(values, (indices.shape[0], -1))
    added = xp.matmul(xp.matrix_transpose(onehot), flat)
    return x + xp.reshape(added, x.shape)


def check_scatter_args(x: Any, indices: Any, values: Any) -> None:
    """Validate the shapes of a scatter-add: one index per row of ``values``."""
    if len(indices.shape) != 1:
        msg = f"indices must be 1-D, got shape {tuple(indices.shape)}"
        raise ValueError(msg)
    if tuple(values.shape) != (indices.shape[0], *tuple(x.shape[1:])):
        msg = (
            f"values must have shape {(indices.shape[0], *tuple(x.shape[1:]))} "
            f"(one row per index), got {tuple(values.shape)}"
        )
        raise ValueError(msg)


class NumpyDrawsMixin:
    """Random draws made with NumPy's PCG64 and handed to another namespace.

    Used by backends without a generator of their own (array-api-strict), so
    that those backends draw exactly the same numbers as the NumPy backend.
    """

    def __init__(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)

    def _uniform_np(self, shape: tuple[int, ...]) -> np.ndarray:
        return self._rng.random(shape)

    def _integers_np(self, low: int, high: int, shape: tuple[int, ...]) -> np.ndarray:
        return self._rng.integers(low, high, size=shape)

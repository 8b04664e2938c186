"""Row-sparse gradients: the weight and bias gradients of the sampled losses.

A sampled loss touches only the rows of the ``[C, D]`` output embedding that
belong to the true labels and the sampled candidates.  Its gradient is kept
as those rows: ``indices[k]`` is a row number and ``values[k]`` what is added
to that row.  Indices may repeat (a label shared by several examples, a
candidate drawn twice); :meth:`RowSparse.to_dense` **sums** repeated rows —
it never overwrites — using the backend's accumulating scatter-add.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

__all__ = ["RowSparse"]


@dataclass(frozen=True)
class RowSparse:
    """A ``[num_rows, ...]`` gradient stored as (row index, row value) pairs.

    Parameters
    ----------
    indices : int array ``[k]``
        Row of each value; may repeat.
    values : array ``[k, ...]``
        The contributions; rows with equal indices add up.
    num_rows : int
        Number of rows of the dense gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from refsoftmax.row_sparse import RowSparse
    >>> g = RowSparse(np.array([2, 0, 2]), np.array([[1.0], [5.0], [10.0]]), 3)
    >>> g.to_dense().tolist()
    [[5.0], [0.0], [11.0]]
    """

    indices: Any
    values: Any
    num_rows: int

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the dense gradient."""
        return (self.num_rows, *tuple(self.values.shape[1:]))

    @property
    def dtype(self) -> Any:
        return self.values.dtype

    def to_dense(self) -> Any:
        """The dense gradient: zeros with every ``values[k]`` added to row ``indices[k]``."""
        from refsoftmax import backends

        xp = array_api_compat.array_namespace(self.values)
        device = array_api_compat.device(self.values)
        zeros = xp.zeros(self.shape, dtype=self.values.dtype, device=device)
        return backends.for_namespace(xp).scatter_add(zeros, self.indices, self.values)

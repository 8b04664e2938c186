"""Dask backend (CPU): lazy, chunked NumPy arrays, on one machine or a ``dask.distributed`` cluster.

Every loss runs on ``dask.array`` arrays (namespace ``array_api_compat.dask.array``)
chunked along any axis; results are Dask arrays, nothing is computed until
``.compute()`` (or ``dask.compute``) is called.  What this module adds to the
namespace:

* ``take_along_axis``: not in ``dask.array``; :func:`take_along_axis` gathers
  block by block (``loss_namespace`` hands loss code the namespace with it);
* ``scatter_add``: block-wise ``np.add.at`` per row block of ``x``, so the
  result stays chunked like ``x`` and repeated indices accumulate;
* ``Generator``: NumPy's PCG64 draws wrapped as one-chunk Dask arrays, the
  same numbers as the NumPy backend (refsoftmax draws only small arrays:
  sampled candidates);
* the device is ``"cpu"`` (chunks are NumPy arrays).

Not in the backend registry's ``NAMES`` (see :data:`refsoftmax.backends.EXTRA_NAMES`):
the test suite parametrises every test over ``NAMES``, which would be far too
slow on Dask; ``tests/test_dask.py`` runs every registered loss on it instead.

What computes before ``.compute()``
-----------------------------------
Only validation that depends on values.  Loss code asks those questions through
:mod:`refsoftmax._concrete`: ``may_hold`` (may a fast path be skipped?) answers
"maybe" for a Dask array and ``count`` stays a lazy 0-d array, so neither
computes; ``flagged`` (is an input invalid?) computes its mask, so every check
the other backends make is made here too, when the loss is called.  The graph of
such a mask holds the validated input only:

* labels in ``[0, C)`` (or ``ignore_index``), sampled candidates in range:
  every sparse-label loss, the linear and sampled losses (reads ``labels``);
* dense labels ``>= 0`` (``softmax_cross_entropy``), multi-hot targets in
  ``{0, 1}`` (the multilabel losses), ``class_weights`` finite and ``>= 0``,
  sampled expected counts ``> 0`` (read those arrays only);
* nonzero norms of ``features`` and ``weights`` (``am_softmax_loss``): a full pass
  over both, the one check that reads a large float input.

Drawing a sample inside a sampled loss (no ``sampled_values`` given) also
computes the labels (the sampler checks them and records them) and, for
``unique=True``, the draws (host draws wrapped by :class:`Generator`).  Apart
from these, no loss reads its logits (or ``inputs``/``weights``) before
``.compute()``.  NumPy's fused kernels (``fused_softmax`` & co.) are
NumPy-only; Dask takes the array-API path, block by block.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

import numpy as np

from refsoftmax.backends._generic import NumpyDrawsMixin, check_scatter_args

NAME = "dask"


def is_available() -> bool:
    return importlib.util.find_spec("dask") is not None


def namespace() -> ModuleType:
    """``array_api_compat.dask.array`` with ``take_along_axis`` (:func:`loss_namespace`)."""
    import array_api_compat.dask.array as xp

    return loss_namespace(xp)


def owns(xp: ModuleType) -> bool:
    import array_api_compat

    return array_api_compat.is_dask_namespace(xp)


def default_device() -> str:
    return "cpu"


def parse_device(device: Any) -> str:
    if device is None or str(device) == "cpu":
        return "cpu"
    msg = f"device={device!r} is not a Dask device; Dask arrays (NumPy chunks) live on 'cpu'"
    raise ValueError(msg)


def from_host(obj: Any, device: Any = None) -> Any:
    """A NumPy array (or a list) as a Dask array (``chunks="auto"``)."""
    import dask.array as da

    parse_device(device)
    return da.from_array(np.asarray(obj))


def to_numpy(x: Any) -> np.ndarray:
    """Compute ``x`` (if lazy) and return it as a NumPy array."""
    compute = getattr(x, "compute", None)
    return np.asarray(compute() if compute is not None else x)


_LOSS_NAMESPACE: ModuleType | None = None


def loss_namespace(xp: ModuleType) -> ModuleType:
    """``xp`` (``array_api_compat.dask.array``) with :func:`take_along_axis` added.

    :func:`refsoftmax._arrays.resolve` hands loss code this namespace instead
    of ``xp``.  It is a copy of ``xp``'s names under ``xp``'s own ``__name__``
    (so ``array_api_compat.is_dask_namespace`` and :func:`owns` recognise it);
    ``array_api_compat`` itself is not modified.
    """
    global _LOSS_NAMESPACE
    if hasattr(xp, "take_along_axis"):  # a Dask/array-api-compat release that has it
        return xp
    if _LOSS_NAMESPACE is None:
        extended = ModuleType(xp.__name__, xp.__doc__)
        extended.__dict__.update({k: v for k, v in vars(xp).items() if k not in ("__dir__",)})
        extended.take_along_axis = take_along_axis  # type: ignore[attr-defined]
        _LOSS_NAMESPACE = extended
    return _LOSS_NAMESPACE


def _gather_block(x: Any, offsets: Any, idx: Any) -> Any:
    """One class block's share of ``take_along_axis`` (last axis), shape ``[..., 1, K]``.

    ``offsets`` are the block's class numbers.  Entries of ``idx`` outside the
    block get ``-0.0``: ``v + (-0.0) == v`` exactly for every ``v`` (signed
    zeros, infinities and NaN included), so summing the shares over the
    blocks selects the one value in its block.
    """
    fill = np.asarray(-0.0 if np.issubdtype(x.dtype, np.floating) else 0, x.dtype)
    if x.shape[-1] == 0:  # no class in this block (an empty class axis)
        return np.full((*idx.shape[:-1], 1, idx.shape[-1]), fill)
    local = idx - int(offsets[0])
    inside = (local >= 0) & (local < x.shape[-1])
    picked = np.take_along_axis(x, np.where(inside, local, 0), axis=-1)
    return np.expand_dims(np.where(inside, picked, fill), -2)


def take_along_axis(x: Any, indices: Any, /, *, axis: int = -1) -> Any:
    """``x``'s entries at ``indices`` along ``axis`` (NumPy's ``take_along_axis``), lazily.

    Each class block of ``x`` gathers the indices that fall inside it (one
    task per block; no block is concatenated with another) and the shares are
    summed over the blocks, which selects exactly.  Negative indices count
    from the end, as in NumPy; an index outside ``[-C, C)`` gives ``-0.0`` (``0``
    for integer ``x``) instead of an error (the loss code validates labels
    before it gathers).
    """
    import dask.array as da

    x, indices = da.asarray(x), da.asarray(indices)
    if x.ndim != indices.ndim:
        msg = f"x and indices must have the same number of dimensions, got {x.ndim} and {indices.ndim}"
        raise ValueError(msg)
    axis = axis % x.ndim
    x = da.moveaxis(x, axis, -1)
    indices = da.moveaxis(indices, axis, -1)
    lead = np.broadcast_shapes(tuple(x.shape[:-1]), tuple(indices.shape[:-1]))
    x = da.broadcast_to(x, (*lead, x.shape[-1]))
    classes = x.shape[-1]
    indices = da.broadcast_to(indices, (*lead, indices.shape[-1]))
    indices = da.where(indices < 0, indices + classes, indices)  # NumPy: -1 is the last class
    offsets = da.arange(classes, chunks=(x.chunks[-1],))
    letters = "abcdefghijklmnopqrstuvwxy"[: len(lead)]
    shares = da.blockwise(
        _gather_block, f"{letters}cz",
        x, f"{letters}c", offsets, "c", indices, f"{letters}z",
        adjust_chunks={"c": 1}, dtype=x.dtype, meta=np.empty((0,) * (len(lead) + 2), x.dtype),
    )
    out = da.sum(shares, axis=-2, dtype=x.dtype)
    return da.moveaxis(out, -1, axis)


def _scatter_block(x: Any, rows: Any, indices: Any, values: Any) -> Any:
    """One row block of ``x`` plus the ``values`` whose index falls in it (``np.add.at``)."""
    out = np.array(x, copy=True)
    if rows.size:
        local = indices - int(rows[0])
        inside = (local >= 0) & (local < out.shape[0])
        np.add.at(out, local[inside], values[inside].astype(out.dtype, copy=False))
    return out


def scatter_add(x: Any, indices: Any, values: Any) -> Any:
    """``x`` with ``values[k]`` added to row ``indices[k]``; duplicates accumulate.

    Lazy and chunked like ``x``: each row block of ``x`` is one task that
    receives all of ``indices`` and the matching columns of ``values``
    (``np.add.at`` into a copy of the block).
    """
    import dask.array as da

    check_scatter_args(x, indices, values)
    indices, values = da.asarray(indices), da.asarray(values)
    rows = da.arange(x.shape[0], chunks=(x.chunks[0],))
    rest = "abcdefghijklmnopqrstuvwxy"[: x.ndim - 1]
    return da.blockwise(
        _scatter_block, f"i{rest}",
        x, f"i{rest}", rows, "i", indices, "k", values, f"k{rest}",
        concatenate=True, dtype=x.dtype, meta=np.empty((0,) * x.ndim, x.dtype),
    )


class Generator(NumpyDrawsMixin):
    """NumPy's PCG64 draws as (one-chunk) Dask arrays: the same numbers as the NumPy backend."""

    def __init__(self, seed: int | None, device: Any = None) -> None:
        super().__init__(seed)
        parse_device(device)

    def uniform(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        """Draws from U[0, 1)."""
        import dask.array as da

        out = self._uniform_np(shape)
        return da.from_array(out if dtype is None else out.astype(dtype, copy=False), chunks=-1)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> Any:
        """Draws from the integers in [low, high), as int64."""
        import dask.array as da

        return da.from_array(self._integers_np(low, high, shape).astype(np.int64, copy=False), chunks=-1)

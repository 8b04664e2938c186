"""The input of a map along one axis (softmax, log-softmax, logsumexp, sparsemax, entmax).

:func:`prepare_along_axis` validates the one array such a map takes and
brings it to the layout the maps compute in: the compute dtype, with the
mapped axis last.
"""

from __future__ import annotations

from typing import Any

from refsoftmax._arrays import resolve
from refsoftmax._dtypes import compute_dtype
from refsoftmax._validation import check_axis

__all__ = ["check_along_axis", "prepare_along_axis"]


def check_along_axis(x: Any, axis: int) -> tuple[Any, Any, int, Any]:
    """``(xp, x, axis, compute dtype)``: ``x`` validated (as an array of its namespace, not
    converted or moved, so nothing is copied) and ``axis`` normalised.

    Raises
    ------
    TypeError
        Integer or boolean ``x``; a non-integer ``axis``.
    ValueError
        A 0-d ``x`` or an ``axis`` out of range.
    """
    xp, arrays = resolve(x=x)
    x = arrays["x"]
    dtype = compute_dtype(xp, x, "x")
    if x.ndim == 0:
        msg = "x must have at least one dimension"
        raise ValueError(msg)
    return xp, x, check_axis(axis, x.ndim), dtype


def prepare_along_axis(x: Any, axis: int) -> tuple[Any, Any, int, Any]:
    """``(xp, z, axis, dtype)``: ``x`` in the compute dtype with ``axis`` last (a view where
    no conversion is needed: callers never write into it), the normalised ``axis`` and
    ``x``'s own dtype (results are returned in it).  Raises as :func:`check_along_axis`.
    """
    xp, x, axis, cdtype = check_along_axis(x, axis)
    z = xp.moveaxis(xp.astype(x, cdtype, copy=False), axis, -1)
    return xp, z, axis, x.dtype

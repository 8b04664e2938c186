"""In-place element-wise updates of a temporary the caller owns.

The array API standard has in-place operators (``x -= m``: NumPy, CuPy and
PyTorch write into ``x``; JAX rebinds ``x`` to a new array) but no in-place
``exp`` and no masked fill.  For the ``[B, S]`` blocks of the sampled losses
a fresh array per step costs more than the arithmetic (a 32 MiB NumPy
temporary is a new ``mmap`` whose pages the kernel zeroes on first touch), so
the loss code calls these helpers on arrays it has just created itself:

* ``exp_(x)``: ``exp(x)``, written into ``x`` where the library allows it;
* ``fill_where_(x, mask, value)``: ``where(mask, value, x)``, likewise;
* ``scatter_add_(x, indices, values)``: the backend's ``scatter_add`` (rows
  repeated in ``indices`` accumulate), likewise.

Each returns the result; callers must use it (``x = exp_(x)``) and must not
pass an array anyone else holds.  Other namespaces (array-api-strict, JAX),
read-only NumPy arrays and torch tensors that require grad get the plain
out-of-place standard call, so the numbers are the same on every backend.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

__all__ = ["exp_", "fill_where_", "scatter_add_"]


def _numpy_like_module(x: Any) -> Any:
    """``numpy`` or ``cupy`` for a writable array of theirs, else ``None``."""
    if array_api_compat.is_numpy_array(x) and x.flags.writeable:
        import numpy

        return numpy
    if array_api_compat.is_cupy_array(x):
        import cupy

        return cupy
    return None


def _writable_torch(x: Any) -> bool:
    return array_api_compat.is_torch_array(x) and not x.requires_grad


def exp_(x: Any) -> Any:
    """``exp(x)``, in ``x``'s own buffer where the backend allows it."""
    module = _numpy_like_module(x)
    if module is not None:
        return module.exp(x, out=x)
    if _writable_torch(x):
        return x.exp_()
    return array_api_compat.array_namespace(x).exp(x)


def fill_where_(x: Any, mask: Any, value: float) -> Any:
    """``where(mask, value, x)`` (``mask`` broadcasts to ``x``), in ``x``'s buffer where allowed."""
    module = _numpy_like_module(x)
    if module is not None:
        module.copyto(x, value, where=mask)
        return x
    if _writable_torch(x):
        return x.masked_fill_(mask, value)
    xp = array_api_compat.array_namespace(x)
    return xp.where(mask, xp.asarray(value, dtype=x.dtype, device=array_api_compat.device(x)), x)


def scatter_add_(x: Any, indices: Any, values: Any) -> Any:
    """``x`` with ``values[k]`` added to row ``indices[k]`` (accumulating), in ``x``'s buffer where allowed."""
    from refsoftmax import backends
    from refsoftmax.backends._generic import check_scatter_args

    check_scatter_args(x, indices, values)
    module = _numpy_like_module(x)
    if module is not None and module.__name__ == "numpy":
        module.add.at(x, indices, values)
        return x
    if module is not None:  # CuPy
        import cupyx

        cupyx.scatter_add(x, indices, values)
        return x
    if _writable_torch(x):
        return x.index_add_(0, indices, values)
    return backends.for_namespace(array_api_compat.array_namespace(x)).scatter_add(x, indices, values)

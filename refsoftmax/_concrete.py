"""Questions about an array's *values*, asked only when the values exist.

Under ``jax.jit`` (and ``jax.grad``, ``jax.vmap``) a loss runs on tracers: arrays with a
shape and a dtype but no values yet, so ``bool(xp.any(mask))`` cannot be answered.  The
loss code asks its value questions through the two helpers here, which say what to do
when there are no values:

* :func:`flagged` — "is any entry bad?" for **validation**: a traced array cannot be
  checked, so the check is skipped (the call is traced once for all values; refsoftmax
  cannot raise on values it never sees).  The docs' NaN/∞ policy page states this:
  validate outside ``jit``, or use :func:`refsoftmax.bridges.jax_custom_vjp`, whose host
  callback runs every check on concrete values.
* :func:`may_hold` — "is any entry such that the special path is needed?" for **fast
  paths** that skip work when nothing needs it: traced, the answer is "maybe", so the
  general path always runs (same numbers, a little more work).

Neither imports JAX: an array can only be a tracer if JAX is already imported.

A Dask array (:func:`is_lazy`) has values, but only once computed: :func:`may_hold`
says "maybe" and :func:`count` stays lazy, so no compute is forced; :func:`flagged`
computes the (usually small: labels) mask, so Dask keeps every validation.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["count", "flagged", "is_lazy", "is_traced", "may_hold"]


def is_traced(x: Any) -> bool:
    """True for a JAX tracer (an abstract array inside ``jit``/``grad``/``vmap``)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return False
    return isinstance(x, jax.core.Tracer)


def is_lazy(x: Any) -> bool:
    """True for a Dask array (its values exist once it is computed)."""
    dask_array = sys.modules.get("dask.array")
    if dask_array is None:
        return False
    return isinstance(x, dask_array.Array)


def flagged(xp: Any, mask: Any) -> bool:
    """``bool(xp.any(mask))``; ``False`` (check skipped) when ``mask`` has no values."""
    if is_traced(mask):
        return False
    return bool(xp.any(mask))


def may_hold(xp: Any, mask: Any) -> bool:
    """``bool(xp.any(mask))``; ``True`` (take the general path) when ``mask`` has no values."""
    if is_traced(mask) or is_lazy(mask):
        return True
    return bool(xp.any(mask))


def count(xp: Any, mask: Any) -> Any:
    """The number of true entries: a Python ``int``, or a 0-d integer array when traced or lazy."""
    total = xp.sum(xp.astype(mask, xp.int32))
    return total if is_traced(total) or is_lazy(total) else int(total)

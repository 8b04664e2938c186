"""Integer class indices of any integer dtype, checked and widened without wrapping.

Labels, candidates and sampled ids may come in any integer dtype (``int8`` …
``int64``, ``uint8`` … ``uint64``).  Comparing them directly with Python
integers is not safe on every backend: PyTorch and JAX convert the Python
integer to the array's dtype, so ``uint8_labels != -100`` compares with 156
and ``uint8_labels >= 300`` with 44; array-api-strict raises
``OverflowError``; PyTorch implements no comparison at all for
``uint16``/``uint32``/``uint64``.

So every index array is first widened to the backend's widest signed integer
(``int64``; ``int32`` on JAX without x64), which every backend can compare,
and every comparison happens there with Python integers that fit:

* a value that the widening wrapped (an unsigned value above the signed
  maximum, e.g. ``uint64`` ≥ 2⁶³) becomes negative, so ``< 0`` still flags it
  as out of range, and it is reported with its true value;
* an ``ignore_index`` that the label dtype cannot hold (``-100`` for
  ``uint8``) matches no label, since no label can equal it.
"""

from __future__ import annotations

import numbers
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._concrete import flagged
from refsoftmax._dtypes import check_integer

__all__ = ["check_ignore_index", "class_indices", "first_out_of_range", "widen"]


def check_ignore_index(ignore_index: Any) -> int | None:
    """``ignore_index`` as a Python ``int`` or ``None`` (``TypeError`` for anything else)."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        msg = f"ignore_index must be an integer or None, got {ignore_index!r}"
        raise TypeError(msg)
    return int(ignore_index)


def widen(xp: Any, t: Any) -> tuple[Any, int]:
    """``(t as the widest signed integer dtype, modulus)``.

    ``modulus`` is ``2**bits`` when the widening can wrap (an unsigned dtype as
    wide as the signed one): a wrapped value ``v`` then reads ``v - modulus``
    (negative).  It is 0 when every value is represented exactly.
    """
    wide = xp.astype(t, xp.int64)
    src, dst = xp.iinfo(t.dtype), xp.iinfo(wide.dtype)
    modulus = 2 * (dst.max + 1) if src.max > dst.max else 0
    return wide, modulus


def _as_wide(value: int, info: Any, modulus: int) -> int | None:
    """A label value as it reads after widening (``None``: no label can hold it)."""
    if not info.min <= value <= info.max:
        return None
    return value - modulus if modulus and value >= modulus // 2 else value


def first_out_of_range(xp: Any, wide: Any, bad: Any, modulus: int) -> int:
    """The first flagged label with its true (unwrapped) value."""
    flat_bad = xp.reshape(bad, (-1,))
    index = int(xp.argmax(xp.astype(flat_bad, xp.int8)))
    value = int(xp.reshape(wide, (-1,))[index])
    return value + modulus if value < 0 and modulus else value


def class_indices(
    xp: Any, t: Any, num_classes: int, *, name: str, ignore_index: int | None = None,
    range_text: str | None = None,
) -> tuple[Any, Any]:
    """Check integer class indices; return ``(index, valid)``.

    ``index`` is ``t`` widened to the largest signed integer dtype with the
    ignored entries set to 0, ``valid`` a boolean array, false where ``t``
    equals ``ignore_index``.  Every other entry must lie in
    ``[0, num_classes)`` (``ValueError`` naming ``name`` and the value);
    ``TypeError`` for a non-integer dtype.  ``range_text`` replaces
    ``"be in [0, num_classes)"`` in the error message.
    """
    check_integer(xp, t, name)
    ignore_index = check_ignore_index(ignore_index)
    wide, modulus = widen(xp, t)
    valid = xp.ones(t.shape, dtype=xp.bool, device=device_of(wide))
    if ignore_index is not None:
        ignored = _as_wide(ignore_index, xp.iinfo(t.dtype), modulus)
        if ignored is not None:  # a value the dtype cannot hold matches nothing
            valid = wide != ignored
    bad = valid & ((wide < 0) | (wide >= num_classes))
    if flagged(xp, bad):
        value = first_out_of_range(xp, wide, bad, modulus)
        allowed = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
        bounds = f"be in [0, {num_classes})" if range_text is None else range_text
        msg = f"{name} must {bounds}{allowed}, got {value}"
        raise ValueError(msg)
    index = xp.where(valid, wide, xp.zeros_like(wide))
    return index, valid

"""Argument checks shared by the losses: explicit, and naming the argument and value."""

from __future__ import annotations

import math
import numbers
from typing import Any

from refsoftmax._concrete import flagged

__all__ = [
    "check_axis",
    "check_choice",
    "check_class_weights",
    "check_positive",
    "check_probability",
    "check_where",
    "first_offender",
]


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError``."""
    if not isinstance(value, str) or value not in choices:
        msg = f"{name} must be one of {choices}, got {value!r}"
        raise ValueError(msg)
    return value


def check_probability(name: str, value: Any) -> float:
    """A Python real number in [0, 1] (``TypeError`` for non-numbers, ``ValueError`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"{name} must be a real number in [0, 1], got {value!r}"
        raise TypeError(msg)
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        msg = f"{name} must be in [0, 1], got {value!r}"
        raise ValueError(msg)
    return value


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A finite Python real number ``> 0`` (``>= 0`` with ``allow_zero``), as a float.

    ``TypeError`` for anything that is not a real number (booleans included),
    ``ValueError`` for a non-finite or out-of-range value; both name ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"{name} must be a real number, got {value!r}"
        raise TypeError(msg)
    value = float(value)
    ok = value >= 0.0 if allow_zero else value > 0.0
    if not (math.isfinite(value) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be finite and {bound}, got {value!r}"
        raise ValueError(msg)
    return value


def check_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    """``axis`` normalised to [0, ndim)."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        msg = f"{name} must be an integer, got {axis!r}"
        raise TypeError(msg)
    if not -ndim <= int(axis) < ndim:
        msg = f"{name}={axis} is out of range for an array of {ndim} dimension(s)"
        raise ValueError(msg)
    return int(axis) % ndim


def first_offender(xp: Any, values: Any, bad: Any) -> Any:
    """The first element of ``values`` where ``bad`` is true, as a Python number."""
    flat_bad = xp.reshape(bad, (-1,))
    flat_values = xp.reshape(values, (-1,))
    index = int(xp.argmax(xp.astype(flat_bad, xp.int8)))
    item = flat_values[index]
    return int(item) if xp.isdtype(item.dtype, "integral") else float(item)


def check_where(xp: Any, where: Any, shape: tuple[int, ...]) -> Any:
    """``where`` as a boolean array broadcast to ``shape``."""
    if where.dtype != xp.bool:
        msg = f"where must be a boolean array, got dtype {where.dtype}"
        raise TypeError(msg)
    try:
        return xp.broadcast_to(where, shape)
    except (ValueError, RuntimeError) as exc:
        msg = f"where with shape {tuple(where.shape)} does not broadcast to logits shape {shape}"
        raise ValueError(msg) from exc


def check_class_weights(xp: Any, class_weights: Any, num_classes: int, dtype: Any) -> Any:
    """``class_weights`` as a ``[num_classes]`` array of ``dtype``, finite and ≥ 0."""
    if tuple(class_weights.shape) != (num_classes,):
        msg = (
            f"class_weights must have shape ({num_classes},) (one weight per class), "
            f"got {tuple(class_weights.shape)}"
        )
        raise ValueError(msg)
    if (class_weights.dtype == xp.bool or not xp.isdtype(
        class_weights.dtype, ("real floating", "integral")
    )) and "bfloat16" not in str(class_weights.dtype):
        msg = f"class_weights must be real numbers, got dtype {class_weights.dtype}"
        raise TypeError(msg)
    weights = xp.astype(class_weights, dtype)
    bad = ~xp.isfinite(weights) | (weights < 0)
    if flagged(xp, bad):
        value = first_offender(xp, weights, bad)
        msg = f"class_weights must be finite and >= 0, got {value}"
        raise ValueError(msg)
    return weights

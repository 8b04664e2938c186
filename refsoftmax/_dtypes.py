"""The dtype policy shared by every loss.

* float64 is computed in float64, float32 in float32;
* float16 and bfloat16 are computed in float32 and the results are cast back
  to the input dtype (so a value that fits in float16 never overflows on the
  way);
* integer, boolean and complex logits are a ``TypeError``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_integer", "compute_dtype", "is_half"]


def is_half(xp: Any, dtype: Any) -> bool:
    """True for float16 and bfloat16 (neither is named by the standard)."""
    if "bfloat16" in str(dtype):
        return True
    return hasattr(xp, "float16") and dtype == xp.float16


def compute_dtype(xp: Any, x: Any, name: str) -> Any:
    """The dtype in which ``x`` (a floating argument called ``name``) is computed."""
    dtype = x.dtype
    if is_half(xp, dtype):
        return xp.float32
    if xp.isdtype(dtype, "real floating"):
        return dtype
    msg = f"{name} must have a real floating dtype, got {dtype}"
    raise TypeError(msg)


def check_integer(xp: Any, x: Any, name: str) -> None:
    """``TypeError`` unless ``x`` has an integer (not boolean) dtype."""
    if not xp.isdtype(x.dtype, "integral"):
        msg = f"{name} must have an integer dtype (class indices), got {x.dtype}"
        raise TypeError(msg)

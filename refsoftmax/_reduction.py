"""Reducing per-example losses, and the backward of that reduction.

``reduction="mean"`` divides the sum by a denominator Ω that the loss
supplies (which examples count, and with what weight, is a convention; see
``docs/conventions.md``).  When Ω = 0 (every example ignored) the mean is
0/0: ``empty_mean="nan"`` returns NaN, ``empty_mean="zero"`` returns 0; in
both cases the gradient is exactly 0, because the value does not depend on
any input.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as device_of

__all__ = ["EMPTY_MEANS", "REDUCTIONS", "reduce", "reduce_backward"]

REDUCTIONS = ("none", "sum", "mean")
EMPTY_MEANS = ("nan", "zero")


def reduce(losses: Any, denominator: Any, reduction: str, empty_mean: str, *, xp: Any) -> Any:
    """Reduce per-example ``losses`` ("none" returns them unchanged)."""
    if reduction == "none":
        return losses
    total = xp.asarray(xp.sum(losses))  # a 0-d array, not a NumPy scalar
    if reduction == "sum":
        return total
    empty = denominator == 0
    fill = xp.nan if empty_mean == "nan" else 0.0
    safe = xp.where(empty, xp.ones_like(denominator), denominator)
    return xp.where(empty, xp.asarray(fill, dtype=total.dtype, device=device_of(total)), total / safe)


def reduce_backward(
    cotangent: Any, losses: Any, denominator: Any, reduction: str, *, xp: Any
) -> tuple[Any, Any]:
    """Cotangents for the per-example losses and for the denominator Ω.

    For the mean ``S / Ω``: ``∂/∂ℓ_i = 1/Ω`` and ``∂/∂Ω = −S/Ω²`` (0 when Ω = 0).
    """
    if reduction == "none":
        return cotangent, None
    ones = xp.ones_like(losses)
    if reduction == "sum":
        return cotangent * ones, None
    empty = denominator == 0
    safe = xp.where(empty, xp.ones_like(denominator), denominator)
    zero = xp.zeros_like(cotangent)
    per_example = xp.where(empty, zero, cotangent / safe) * ones
    d_denominator = xp.where(empty, zero, -cotangent * xp.sum(losses) / (safe * safe))
    return per_example, d_denominator

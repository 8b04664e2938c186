"""What the AS-Softmax losses share: the margin δ and the zero-loss statistics.

AS-Softmax (:mod:`refsoftmax.as_softmax`) and its multi-label form
(:mod:`refsoftmax.multilabel`) drop the classes that are more than δ behind
in probability; an example left with nothing to learn has loss exactly 0.
:class:`ZeroLossStats` counts those examples (what the adaptive accumulation
schedule reads), :func:`check_delta` validates δ.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

__all__ = ["ZeroLossStats", "check_delta"]


class ZeroLossStats(NamedTuple):
    """How many (non-ignored) examples AS-Softmax has already satisfied (loss exactly 0)."""

    num_examples: int
    num_zero_loss: int

    @property
    def ratio(self) -> float:
        """``num_zero_loss / num_examples`` (0 for an empty batch)."""
        return self.num_zero_loss / self.num_examples if self.num_examples else 0.0


def check_delta(delta: Any) -> float:
    """δ as a float: a finite real number ≥ 0."""
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
        msg = f"delta must be a real number >= 0, got {delta!r}"
        raise TypeError(msg)
    if not (math.isfinite(float(delta)) and float(delta) >= 0):
        msg = f"delta must be finite and >= 0, got {delta!r}"
        raise ValueError(msg)
    return float(delta)

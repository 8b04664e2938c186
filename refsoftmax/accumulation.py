r"""AS-Softmax's adaptive gradient accumulation and δ warm-up schedules.

AS-Softmax gives many examples a loss of exactly 0 once they are classified
with margin δ.  Those examples contribute no gradient, so a batch of
:math:`N` examples of which :math:`N_0` have zero loss carries the signal of
only :math:`N - N_0`.  The authors then accumulate gradients over

.. math:: k = \max\Bigl(1, \operatorname{round}\Bigl(\lambda\,\frac{N}{N - N_0}\Bigr)\Bigr)

micro-batches before each optimizer step, so that every step sees about
:math:`\lambda N` useful examples and the number of optimizer steps falls as
training progresses.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AccumulationSchedule", "accumulation_steps", "delta_schedule"]


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        msg = f"{name} must be a non-negative integer, got {value!r}"
        raise ValueError(msg)
    return int(value)


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        math.isfinite(float(value)) and float(value) > 0
    ):
        msg = f"{name} must be a finite number > 0, got {value!r}"
        raise ValueError(msg)
    return float(value)


def accumulation_steps(
    num_examples: int, num_zero_loss: int, lam: float = 1.0, *, max_steps: int | None = None
) -> int:
    r"""Micro-batches to accumulate: :math:`\max(1, \operatorname{round}(\lambda N / (N - N_0)))`.

    Parameters
    ----------
    num_examples : int
        :math:`N`, the examples of the micro-batch (not counting ignored ones).
    num_zero_loss : int
        :math:`N_0 \le N`, those with loss exactly 0.  An example whose loss
        is NaN (a NaN logit) is not one of them: it has not been satisfied,
        and the losses' ``stats`` (:class:`~refsoftmax.as_softmax.ZeroLossStats`)
        never count it.
    lam : float > 0
        :math:`\lambda`.
    max_steps : int, optional
        Cap on the result.  When every example has zero loss the ratio is
        unbounded: the result is ``max_steps``, and without one that is a
        ``ValueError``.

    Notes
    -----
    ``round`` is Python's (halves to even), as in the authors' code.

    Examples
    --------
    >>> from refsoftmax import accumulation_steps
    >>> accumulation_steps(32, 0), accumulation_steps(32, 16), accumulation_steps(32, 24)
    (1, 2, 4)
    """
    n = _check_count("num_examples", num_examples)
    n0 = _check_count("num_zero_loss", num_zero_loss)
    lam = _check_positive("lam", lam)
    if n0 > n:
        msg = f"num_zero_loss={n0} exceeds num_examples={n}"
        raise ValueError(msg)
    cap = None if max_steps is None else int(_check_positive("max_steps", max_steps))
    if n == n0:
        if cap is None:
            msg = "every example has zero loss, so the step count is unbounded: pass max_steps"
            raise ValueError(msg)
        return cap
    steps = max(1, round(lam * n / (n - n0)))
    return steps if cap is None else min(steps, cap)


@dataclass
class AccumulationSchedule:
    r"""When to take an optimizer step, the way the AS-Softmax training loop decides.

    Call :meth:`observe` once per micro-batch with its example and zero-loss
    counts (e.g. ``as_softmax_cross_entropy.forward(...)[1].stats``); it
    returns True when the accumulated gradient should be applied.

    * The step count :math:`k` is recomputed at the **start** of each
      accumulation cycle, from that micro-batch's counts.
    * It never decreases, grows by at most 1 per cycle, and is capped by
      ``max_steps``.

    Examples
    --------
    >>> from refsoftmax import AccumulationSchedule
    >>> sched = AccumulationSchedule(max_steps=4)
    >>> [sched.observe(10, 9) for _ in range(6)]   # wants 10; k grows 2, 3, 4
    [False, True, False, False, True, False]
    >>> sched.steps, sched.optimizer_steps
    (4, 2)
    """

    lam: float = 1.0
    max_steps: int = 8
    steps: int = 1
    optimizer_steps: int = 0
    _in_cycle: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.lam = _check_positive("lam", self.lam)
        self.max_steps = int(_check_positive("max_steps", self.max_steps))

    @property
    def pending(self) -> int:
        """Micro-batches accumulated since the last optimizer step."""
        return self._in_cycle

    def observe(self, num_examples: int, num_zero_loss: int) -> bool:
        """Record one micro-batch; True when the optimizer should step now."""
        if self._in_cycle == 0:
            wanted = accumulation_steps(num_examples, num_zero_loss, self.lam, max_steps=self.max_steps)
            self.steps = min(self.max_steps, max(self.steps, min(wanted, self.steps + 1)))
        self._in_cycle += 1
        if self._in_cycle >= self.steps:
            self._in_cycle = 0
            self.optimizer_steps += 1
            return True
        return False


def delta_schedule(step: int, total_steps: int, *, delta_min: float = 0.1,
                   warmup_fraction: float = 0.1) -> float:
    r"""δ warm-up: linear from 1.0 (plain softmax) down to ``delta_min`` over ``warmup_fraction`` of training.

    .. math:: \delta(s) = 1 - (1 - \delta_{\min})\,\min\bigl(1, s / (r\,S)\bigr)

    Examples
    --------
    >>> from refsoftmax import delta_schedule
    >>> [round(delta_schedule(s, 100, delta_min=0.1, warmup_fraction=0.2), 3) for s in (0, 10, 20, 90)]
    [1.0, 0.55, 0.1, 0.1]
    """
    step = _check_count("step", step)
    total = _check_count("total_steps", total_steps)
    if not (0.0 <= float(delta_min) <= 1.0):
        msg = f"delta_min must be in [0, 1], got {delta_min!r}"
        raise ValueError(msg)
    if not (0.0 <= float(warmup_fraction) <= 1.0):
        msg = f"warmup_fraction must be in [0, 1], got {warmup_fraction!r}"
        raise ValueError(msg)
    warm = warmup_fraction * total
    progress = 1.0 if warm <= 0 else min(1.0, step / warm)
    return 1.0 - (1.0 - float(delta_min)) * progress

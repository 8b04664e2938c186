r"""Elementwise sigmoid cross-entropy and its derivative, exact for any logit.

.. math::

    \ell(x, y) = -y\log\sigma(x) - (1-y)\log(1-\sigma(x))
               = \max(x, 0) - x y + \log(1 + e^{-|x|}),\qquad
    \frac{\partial\ell}{\partial x} = \sigma(x) - y .

The right-hand form never exponentiates a positive number; ``log1p`` keeps
the last term exact when :math:`e^{-|x|}` is tiny.  :math:`\sigma` is
evaluated as :math:`1/(1+e^{-x})` for :math:`x \ge 0` and
:math:`e^{x}/(1+e^{x})` otherwise.
"""

from __future__ import annotations

from typing import Any

__all__ = ["sigmoid", "sigmoid_cross_entropy"]


def sigmoid_cross_entropy(x: Any, y: Any, *, xp: Any) -> Any:
    """Elementwise :math:`\\ell(x, y)` (labels in [0, 1])."""
    zero = xp.zeros_like(x)
    return xp.maximum(x, zero) - x * y + xp.log1p(xp.exp(-xp.abs(x)))


def sigmoid(x: Any, *, xp: Any) -> Any:
    """:math:`\\sigma(x)` without overflow."""
    e = xp.exp(-xp.abs(x))  # in (0, 1]
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

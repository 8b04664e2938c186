r"""Elementwise sigmoid cross-entropy and its derivative, exact for any logit.

.. math::

    \ell(x, y) = -y\log\sigma(x) - (1-y)\log(1-\sigma(x))
               = y\,\operatorname{softplus}(-x) + (1-y)\,\operatorname{softplus}(x),\qquad
    \frac{\partial\ell}{\partial x} = \sigma(x) - y ,

with :math:`\operatorname{softplus}(x) = \max(x, 0) + \log(1 + e^{-|x|})`, which never
exponentiates a positive number (``log1p`` keeps it exact when :math:`e^{-|x|}` is tiny).
A term whose coefficient (:math:`y` or :math:`1-y`) is 0 is exactly 0, so infinite logits give
the true values: 0 for a −∞ logit with label 0 or a +∞ logit with label 1, +∞ for a +∞ logit
with label 0.  (TensorFlow's ``max(x, 0) - x y + log1p(e^{-|x|})`` gives NaN there.)  :math:`\sigma` is
evaluated as :math:`1/(1+e^{-x})` for :math:`x \ge 0` and
:math:`e^{x}/(1+e^{x})` otherwise.
"""

from __future__ import annotations

from typing import Any

from refsoftmax._cross_entropy import safe_mul

__all__ = ["sigmoid", "sigmoid_cross_entropy", "softplus"]


def softplus(x: Any, *, xp: Any) -> Any:
    """:math:`\\log(1 + e^x)` without overflow."""
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


def sigmoid_cross_entropy(x: Any, y: Any, *, xp: Any) -> Any:
    """Elementwise :math:`\\ell(x, y)` (labels in [0, 1]), exact for infinite logits too."""
    return safe_mul(y, softplus(-x, xp=xp), xp=xp) + safe_mul(1.0 - y, softplus(x, xp=xp), xp=xp)


def sigmoid(x: Any, *, xp: Any) -> Any:
    """:math:`\\sigma(x)` without overflow."""
    e = xp.exp(-xp.abs(x))  # in (0, 1]
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

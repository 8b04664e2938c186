r"""Logit soft-capping and the z-loss: the two LLM-training additions to softmax cross-entropy.

Shared by the sparse, dense and linear (chunked) cross-entropies.

**Soft-capping** (Gemma 2): every logit passes through :math:`\tilde z =
c\tanh(z/c)` before anything else, so :math:`|\tilde z| < c`.  Its derivative is

.. math::

    \frac{d\tilde z}{dz} = 1 - \tanh^2(z/c) = \operatorname{sech}^2(z/c)
    = \frac{4w}{(1 + w)^2},\qquad w = e^{-2|z|/c},

the last form free of the cancellation in :math:`1 - \tanh^2` when :math:`|z| \gg c`
(where :math:`\tanh \to \pm 1`) and of overflow (:math:`w \le 1`).  A logit of
:math:`\pm\infty` is capped to :math:`\pm c` with derivative 0; NaN stays NaN.

**z-loss** (PaLM, OLMo): each example adds :math:`\lambda\,(\log Z)^2`, with
:math:`\log Z = \operatorname{logsumexp}` of its (allowed, capped) logits.  Since
:math:`\partial \log Z/\partial \tilde z_j = p_j`,

.. math::

    \frac{\partial}{\partial \tilde z_j}\,\lambda (\log Z)^2 = 2\lambda\,\log Z\; p_j .

It drives :math:`\log Z` towards 0, keeping the softmax normaliser near 1.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_logit_softcap", "check_z_loss", "log_partition", "soft_cap"]


def check_logit_softcap(value: Any) -> float | None:
    """``None`` or a finite real number ``> 0`` (``TypeError``/``ValueError`` naming ``logit_softcap``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"logit_softcap must be None or a real number > 0, got {value!r}"
        raise TypeError(msg)
    cap = float(value)
    if not (math.isfinite(cap) and cap > 0):
        msg = f"logit_softcap must be finite and > 0, got {value!r}"
        raise ValueError(msg)
    return cap


def check_z_loss(value: Any) -> float:
    """A finite real number ``>= 0`` (``TypeError``/``ValueError`` naming ``z_loss``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"z_loss must be a real number >= 0, got {value!r}"
        raise TypeError(msg)
    coef = float(value)
    if not (math.isfinite(coef) and coef >= 0):
        msg = f"z_loss must be finite and >= 0, got {value!r}"
        raise ValueError(msg)
    return coef


def soft_cap(z: Any, cap: float, *, xp: Any) -> tuple[Any, Any]:
    r""":math:`(c\tanh(z/c),\ \operatorname{sech}^2(z/c))`: the capped logits and their slope."""
    u = z / cap
    capped = cap * xp.tanh(u)
    w = xp.exp(-2.0 * xp.abs(u))  # in [0, 1]: no overflow, and 0 at ±inf (slope 0)
    slope = 4.0 * w / ((1.0 + w) * (1.0 + w))  # sech², without 1 - tanh² (cancels at |u| >> 1)
    return capped, slope


def log_partition(m: Any, log_s: Any, empty: Any, limit: Any, *, xp: Any) -> Any:
    r""":math:`\log Z = m + \log s` per row (``[..., 1]`` inputs from :func:`refsoftmax._shifted.shift_rows`).

    ``empty``: rows with no allowed class (:math:`-\infty`); ``limit``: rows with a
    :math:`+\infty` logit (:math:`+\infty`, where ``shift_rows`` shifts by 0).
    """
    out = m + log_s
    out = xp.where(empty, xp.full_like(out, -xp.inf), out)
    return xp.where(limit, xp.full_like(out, xp.inf), out)

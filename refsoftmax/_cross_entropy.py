r"""Pieces shared by the dense and the sparse softmax cross-entropy.

Both losses are the same function of a per-class coefficient
:math:`c_{c} = w_c\,q_c \ge 0` (class weight times smoothed label):

.. math::

    \ell = \sum_c c_c\,(-\log p_c),\qquad
    \frac{\partial \ell}{\partial z_j} = W p_j - c_j,\quad W = \sum_c c_c ,

with :math:`-\log p_c` and :math:`p` computed from the max-shifted logits
(:class:`refsoftmax._shifted.Rows`).  A term with :math:`c_c = 0` is exactly 0 even where
:math:`-\log p_c = +\infty` (a masked class): this module's :func:`safe_mul`
is how every such product is formed, so ``0 * inf`` never happens.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as device_of

from refsoftmax._concrete import may_hold
from refsoftmax._validation import check_choice, check_probability

__all__ = [
    "CLASS_WEIGHTINGS",
    "MEAN_DENOMINATORS",
    "SMOOTHING_MODES",
    "check_common_options",
    "onehot",
    "safe_mul",
]

#: ``"uniform"``: ε spread evenly over the K allowed classes, the target
#: keeps 1 − ε + ε/K (TensorFlow, PyTorch, optax, Keras).
#: ``"others"``: ε spread over the K − 1 other classes, the target keeps 1 − ε.
SMOOTHING_MODES = ("uniform", "others")
#: ``"per_class"``: ℓ = Σ_c w_c q_c (−log p_c) (PyTorch).  ``"target"``: the
#: whole example is weighted by its target's weight, ℓ = w_t Σ_c q_c (−log p_c).
CLASS_WEIGHTINGS = ("per_class", "target")
#: ``"weights"``: Σ of the example weights (w_t of the non-ignored examples);
#: ``"count"``: number of non-ignored examples; ``"all"``: number of examples.
MEAN_DENOMINATORS = ("weights", "count", "all")


def check_common_options(
    reduction: str, label_smoothing: Any, label_smoothing_mode: str, mean_denominator: str,
    empty_mean: str,
) -> float:
    """Validate the options both cross-entropies share; return ``label_smoothing`` as a float."""
    from refsoftmax._reduction import EMPTY_MEANS, REDUCTIONS

    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("label_smoothing_mode", label_smoothing_mode, SMOOTHING_MODES)
    check_choice("mean_denominator", mean_denominator, MEAN_DENOMINATORS)
    check_choice("empty_mean", empty_mean, EMPTY_MEANS)
    return check_probability("label_smoothing", label_smoothing)


def safe_mul(a: Any, b: Any, *, xp: Any) -> Any:
    """``a * b`` with the product taken as exactly 0 wherever ``a == 0`` (so 0 · ∞ = 0).

    ``b`` is replaced by 0 where ``a == 0`` before multiplying, so no NaN is
    ever formed; NaN in ``a`` still propagates (NaN == 0 is false).  When ``a`` has no zero
    (asked of ``a``, usually a per-row factor, not of the product) it is the plain product.
    """
    zero = a == 0
    if not may_hold(xp, zero):  # nothing to protect: skip the [..., C] select
        return a * b
    return a * xp.where(zero, xp.zeros_like(b), b)


def soft_label_logit_grad(
    p: Any, coef: Any, is_top: Any, total: Any, others: Any, complement: Any, z_factor: Any,
    g_loss: Any, slope: Any, grad_mask: Any, *, xp: Any,
) -> Any:
    r""":math:`g\,(W p_j - c_j + 2\lambda\log Z\,p_j)`, the logits' gradient of a soft-label CE.

    ``coef`` :math:`c = w q` ``[..., C]``; the row quantities ``[..., 1]``: ``total``
    :math:`W = \sum_c c_c`, ``others`` :math:`W - c_{c^*}` and ``complement``
    :math:`1 - p_{c^*}` at the row's most probable class :math:`c^*` (``is_top``), where
    :math:`p \approx 1` and :math:`W p - c` would cancel: there it is
    :math:`(W - c_{c^*})\,p - c_{c^*}(1 - p)`, each factor without cancellation.  Then the
    cotangent ``g_loss``, the soft-cap ``slope`` and 0 off ``grad_mask``
    (:func:`finish_logit_grad`).  Shared by the dense and the class-sharded losses.
    """
    at_top = safe_mul(others, p, xp=xp) - safe_mul(coef, complement * xp.ones_like(p), xp=xp)
    d_logits = xp.where(is_top, at_top, safe_mul(total, p, xp=xp) - coef)
    return finish_logit_grad(d_logits, p, z_factor, g_loss, slope, grad_mask, xp=xp)


def finish_logit_grad(d_logits: Any, p: Any, z_factor: Any, g_loss: Any, slope: Any, grad_mask: Any,
                      *, xp: Any) -> Any:
    r"""``d_logits`` plus the z-loss's :math:`2\lambda\log Z\,p`, times the cotangent and the soft-cap slope, 0 off ``grad_mask``."""
    if z_factor is not None:  # the z-loss: 2 λ log Z p
        d_logits = d_logits + safe_mul(z_factor, p, xp=xp)
    d_logits = safe_mul(g_loss, d_logits, xp=xp)
    if slope is not None:  # through the soft-cap: d(capped z)/dz
        d_logits = d_logits * slope
    return xp.where(grad_mask, d_logits, xp.zeros_like(d_logits))


def sparse_logit_grad(
    p: Any, at_target: Any, kappa: Any, complement: Any, sigma: Any, smooth: Any, z_factor: Any,
    g_loss: Any, slope: Any, grad_mask: Any, *, xp: Any,
) -> Any:
    r""":math:`g\,((\kappa + \sum_c\sigma_c + 2\lambda\log Z)\,p - \kappa\,e_t - \sigma)`, the logits' gradient of a sparse CE.

    ``kappa``, ``complement`` (:math:`1 - p_t`), ``sigma`` (:math:`\sum_c\sigma_c`, or
    ``None`` without smoothing) and ``z_factor`` are ``[..., 1]``; the target's
    :math:`\kappa(p_t - 1)` is taken as :math:`-\kappa(1 - p_t)`, accurate when
    :math:`p_t \to 1`.  Shared by the dense and the class-sharded losses.
    """
    spike = -safe_mul(kappa, complement, xp=xp)
    total = kappa
    if sigma is not None:
        total = kappa + sigma
        spike = spike + safe_mul(sigma, p, xp=xp)
    d_logits = xp.where(at_target, spike, safe_mul(total, p, xp=xp))
    if smooth is not None:
        d_logits = d_logits - smooth
    return finish_logit_grad(d_logits, p, z_factor, g_loss, slope, grad_mask, xp=xp)


def onehot(index: Any, num_classes: int, *, xp: Any) -> Any:
    """Boolean ``[..., C]`` with True at each row's ``index`` (``[...]``, integer)."""
    classes = xp.arange(num_classes, device=device_of(index), dtype=index.dtype)
    return xp.expand_dims(index, axis=-1) == classes


def smoothing_weights(
    allowed: Any | None, num_classes: int, label_smoothing: float, mode: str, *, xp: Any,
    like: Any, count: Any | None = None,
) -> tuple[Any, Any]:
    r"""Per-row smoothing: ``(eps_row, spread)`` for ``q = (1 − ε) y + ε · spread`` style labels.

    ``spread`` is the allowed-class indicator divided by the number of classes
    the mass is spread over (K for ``"uniform"``, K − 1 for ``"others"``), with
    shape ``like.shape`` (the logits', classes last).  ``eps_row`` is ε, or 0
    in rows where no smoothing is possible (K = 0; K ≤ 1 for ``"others"``).  ``count``
    replaces K (``[..., 1]``) where ``like`` is a block of the classes (the sharded losses:
    K of the whole row, from an all-reduce).
    """
    a = xp.ones_like(like) if allowed is None else xp.astype(allowed, like.dtype)
    k = xp.sum(a, axis=-1, keepdims=True) if count is None else count
    spread_over = k if mode == "uniform" else k - 1
    possible = spread_over > 0
    eps_row = xp.where(possible, xp.full_like(k, label_smoothing), xp.zeros_like(k))
    spread = a / xp.where(possible, spread_over, xp.ones_like(spread_over))
    return eps_row, spread

r"""Temperature-scaled softmax cross-entropy with integer class labels."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from refsoftmax._cross_entropy import safe_mul
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._shifted import shift_rows
from refsoftmax.sparse_softmax_cross_entropy import _Call, _onehot, _prepare

__all__ = ["TemperatureSoftmaxCrossEntropy", "temperature_softmax_cross_entropy"]


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


def prepare_sparse(
    logits: Any, labels: Any, *, axis: int, ignore_index: int | None, reduction: str
) -> _Call:
    """Validate a sparse-label call (logits, labels, axis, ignore_index, reduction).

    The checks and messages of :func:`~refsoftmax.sparse_softmax_cross_entropy`;
    ``"mean"`` divides by the number of non-ignored examples.  The returned
    call has the logits in the compute dtype with the classes last, ``target``
    (0 where ignored) and ``valid_f`` (1, or 0 where ignored).
    """
    return _prepare(
        logits, labels, axis=axis, ignore_index=ignore_index, reduction=reduction,
        mean_denominator="count",
    )


@dataclass
class CEResiduals(Residuals):
    """What the backward of a (restricted) softmax cross-entropy needs."""

    axis: int
    logits_dtype: Any
    reduction: str
    p: Any  # softmax over the kept classes, 0 elsewhere and in empty rows  [..., C]
    complement: Any  # 1 - p_t, accurate when p_t -> 1                       [...]
    target: Any  # class index, 0 where ignored                              [...]
    weight: Any  # 1, or 0 where ignored                                     [...]
    grad_mask: Any  # classes whose logit receives a gradient                [..., C]
    scale: float  # d(transformed logits)/d(logits): 1/T, or 1
    losses: Any
    denominator: Any


def restricted_ce_forward(
    c: _Call, z: Any, allowed: Any | None, scale: float, *, temperature: float = 1.0
) -> tuple[Any, CEResiduals]:
    r"""Per-example :math:`-\log\operatorname{softmax}_K(z)_t` over the classes ``allowed``.

    ``z`` is the transformed logits (classes last, compute dtype), divided
    by ``temperature`` after the max-shift; ``scale`` is the constant
    :math:`\partial z/\partial\,\text{logits}` the backward applies.
    Returns the reduced value (in the logits' dtype) and residuals.
    """
    xp = c.xp
    rows = shift_rows(z, allowed, xp=xp, temperature=temperature)
    losses = safe_mul(c.valid_f, rows.neg_log_prob_at(c.target), xp=xp)
    value = reduce(losses, c.denominator, c.reduction, c.empty_mean, xp=xp)
    grad_mask = ~rows.empty if allowed is None else (~rows.empty) & allowed
    res = CEResiduals(
        xp, tuple(value.shape), z.dtype, c.axis, c.logits_dtype, c.reduction,
        rows.probabilities(), rows.complement_at(c.target), c.target, c.valid_f, grad_mask,
        scale, losses, c.denominator,
    )
    return xp.astype(value, c.logits_dtype), res


def restricted_ce_backward(r: CEResiduals, cotangent: Any) -> Any:
    r"""``scale * g * (p - e_t)`` on the kept classes, exactly 0 elsewhere (logits' layout)."""
    xp = r.xp
    g = prepare_cotangent(r, cotangent, r.p)
    g_loss, _ = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
    coef = xp.expand_dims(g_loss * r.weight * r.scale, axis=-1)
    onehot = _onehot(r.target, r.p.shape[-1], xp=xp)
    # p - e_t, with the target's p_t - 1 = -(1 - p_t) from the accurate complement
    spike = xp.expand_dims(-r.complement, axis=-1)
    d_logits = safe_mul(coef, xp.where(onehot, spike, r.p), xp=xp)
    d_logits = xp.where(r.grad_mask, d_logits, xp.zeros_like(d_logits))
    return xp.astype(xp.moveaxis(d_logits, -1, r.axis), r.logits_dtype, copy=False)


class TemperatureSoftmaxCrossEntropy(Function):
    r"""Softmax cross-entropy of temperature-scaled logits :math:`z / T`.

    ``temperature_softmax_cross_entropy(logits, labels, *, temperature=1.0,
    axis=-1, ignore_index=None, reduction="none")``

    .. math::

        p^{(T)} = \operatorname{softmax}(z / T),\qquad
        \ell(z; t) = -\log p^{(T)}_t
        = \log\sum_c e^{z_c/T} - z_t / T .

    :math:`T > 1` flattens the distribution, :math:`T < 1` sharpens it,
    :math:`T = 1` is :func:`~refsoftmax.sparse_softmax_cross_entropy`.

    Parameters
    ----------
    logits : array, real floating, shape ``[..., C, ...]``
        Unnormalised log-probabilities; the C classes lie along ``axis``.
    labels : integer array
        ``logits.shape`` without ``axis`` (any leading dims).  Each entry is
        in ``[0, C)`` or equals ``ignore_index``.
    temperature : float
        :math:`T`, finite and :math:`> 0`.
    axis : int
        The class axis of ``logits``.
    ignore_index : int, optional
        Examples with this label contribute 0 to the loss and the gradient
        and are left out of the mean's denominator.
    reduction : {"none", "sum", "mean"}
        ``"mean"`` divides the sum by the number of non-ignored examples (NaN
        if there is none; the gradient is then 0).

    Returns
    -------
    array
        Per-example losses (``labels.shape``) or a scalar, in the logits'
        dtype (float16 and bfloat16 are computed in float32).  ``backward``
        returns ``{"logits": ...}``.

    Raises
    ------
    TypeError
        Integer or boolean logits; non-integer labels; a non-number
        ``temperature`` or ``ignore_index``.
    ValueError
        ``temperature`` not finite and > 0; a label outside ``[0, C)`` that
        is not ``ignore_index``; labels of the wrong shape; a bad ``axis`` or
        ``reduction``.

    Notes
    -----
    **Forward.**  With :math:`u = (z - \max_c z_c) / T` (shifted *before*
    dividing, so a tiny :math:`T` cannot overflow; the loss is shift-invariant),
    :math:`\hat u = u - \max_c u_c` and :math:`s = \sum_c e^{\hat u_c}`,
    :math:`\ell = \log s - \hat u_t`, which is :math:`\ge 0` and never
    overflows (:math:`1 \le s \le C`).

    **Gradient.**  Step by step, by the chain rule through :math:`u = z/T`:

    .. math::

        \frac{\partial \ell}{\partial u_j} = p^{(T)}_j - \delta_{jt},\qquad
        \frac{\partial u_j}{\partial z_k} = \frac{\delta_{jk}}{T}
        \quad\Longrightarrow\quad
        \frac{\partial \ell}{\partial z} = \frac{p^{(T)} - e_t}{T} .

    For a cotangent :math:`g` (one number per example; ``"mean"`` divides
    it by the number of non-ignored examples) the vector-Jacobian product is
    :math:`g\,(p^{(T)} - e_t)/T`; ignored examples get exactly 0.  A
    :math:`-\infty` logit has :math:`p^{(T)} = 0`; a label on it gives
    :math:`\ell = +\infty`.  :math:`z/T` is formed in the compute dtype: a
    temperature so small that it overflows there gives NaN, not a wrong
    finite number.

    References
    ----------
    G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural
    Network", NIPS Deep Learning Workshop, 2015 (arXiv:1503.02531).

    Examples
    --------
    >>> import numpy as np
    >>> from refsoftmax.temperature_softmax import temperature_softmax_cross_entropy
    >>> logits = np.array([[0.0, 2 * np.log(3.0)]])   # z / 2 = [0, log 3]: p = [1/4, 3/4]
    >>> loss, grads = temperature_softmax_cross_entropy.value_and_grad(
    ...     logits, np.array([1]), temperature=2.0)
    >>> bool(np.isclose(loss[0], np.log(4 / 3)))
    True
    >>> grads["logits"].round(12).tolist()            # (p - e_t) / T
    [[0.125, -0.125]]
    """

    name = "temperature_softmax_cross_entropy"
    differentiable = ("logits",)

    def forward(
        self,
        logits: Any,
        labels: Any,
        *,
        temperature: float = 1.0,
        axis: int = -1,
        ignore_index: int | None = None,
        reduction: str = "none",
    ) -> tuple[Any, CEResiduals]:
        t = check_positive("temperature", temperature)
        c = prepare_sparse(logits, labels, axis=axis, ignore_index=ignore_index,
                           reduction=reduction)
        # the rows are (z - max z) / T: shifted before dividing, the shift's error kept
        return restricted_ce_forward(c, c.z, None, 1.0 / t, temperature=t)

    def backward(self, residuals: CEResiduals, cotangent: Any) -> dict[str, Any]:
        return {"logits": restricted_ce_backward(residuals, cotangent)}


temperature_softmax_cross_entropy = TemperatureSoftmaxCrossEntropy()

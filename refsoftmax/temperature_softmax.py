r"""Temperature-scaled softmax cross-entropy with integer class labels."""

from __future__ import annotations

from typing import Any

from refsoftmax._protocol import Function
from refsoftmax._restricted_ce import CEResiduals, restricted_ce_backward, restricted_ce_forward
from refsoftmax._sparse_call import SparseOptions, prepare_sparse
from refsoftmax._validation import check_positive

__all__ = ["TemperatureSoftmaxCrossEntropy", "temperature_softmax_cross_entropy"]


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
        options = SparseOptions(
            axis=axis, ignore_index=ignore_index, reduction=reduction, mean_denominator="count"
        )
        c = prepare_sparse(logits, labels, options)
        # the rows are (z - max z) / T: shifted before dividing, the shift's error kept
        return restricted_ce_forward(c, c.z, None, 1.0 / t, temperature=t)

    def backward(self, residuals: CEResiduals, cotangent: Any) -> dict[str, Any]:
        return {"logits": restricted_ce_backward(residuals, cotangent)}


temperature_softmax_cross_entropy = TemperatureSoftmaxCrossEntropy()

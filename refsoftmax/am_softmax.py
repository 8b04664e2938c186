r"""AM-Softmax (additive margin softmax, Wang et al. 2018) from features and class weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refsoftmax._arrays import resolve
from refsoftmax._concrete import flagged
from refsoftmax._cross_entropy import onehot, safe_mul
from refsoftmax._dtypes import check_integer, compute_dtype
from refsoftmax._labels import check_ignore_index, class_indices
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._shifted import shift_rows
from refsoftmax._validation import check_choice, check_positive

__all__ = ["AMSoftmaxLoss", "am_softmax_loss"]


@dataclass(kw_only=True)
class _Residuals(Residuals):
    reduction: str
    scale: float
    f_hat: Any  # features / ||features||         [N, D]
    f_norm: Any  # ||features||                     [N, 1]
    w_hat: Any  # weights / ||weights|| (rows)      [C, D]
    w_norm: Any  # row norms of the weights         [C, 1]
    cos: Any  # cosines <f_hat, w_hat_j>           [N, C]
    q: Any  # softmax of the margin logits         [N, C]
    complement: Any  # 1 - q_t, accurate as q_t -> 1 [N]
    onehot: Any  # target indicator (bool)          [N, C]
    weight: Any  # 1, or 0 where ignored            [N]
    losses: Any  # per example                      [...]
    denominator: Any
    features_shape: tuple[int, ...]
    out_dtypes: dict[str, Any]


class AMSoftmaxLoss(Function):
    r"""Additive-margin softmax loss (AM-Softmax / CosFace) from features and class weights.

    ``am_softmax_loss(features, weights, labels, *, scale=30.0, margin=0.35,
    ignore_index=None, reduction="none")``

    With :math:`\hat f = f/\|f\|`, :math:`\hat w_j = w_j/\|w_j\|` and the
    cosines :math:`c_j = \langle\hat f, \hat w_j\rangle`, the target's cosine
    is lowered by the margin :math:`m` and all are scaled by :math:`s`:

    .. math::

        \psi_j = s\,(c_j - m\,[j = t]),\qquad
        \ell = -\log\frac{e^{\psi_t}}{\sum_j e^{\psi_j}}
        = \log\sum_j e^{\psi_j} - s\,(c_t - m) .

    ``margin=0`` is the normalised softmax (NormFace) loss.

    Parameters
    ----------
    features : array, real floating, shape ``[..., D]``
        One feature vector per example (any leading dims).
    weights : array, real floating, shape ``[C, D]``
        One weight vector (class centre) per class; no bias.
    labels : integer array, shape ``features.shape[:-1]``
        Entries in ``[0, C)`` or ``ignore_index``.
    scale : float
        :math:`s`, finite and :math:`> 0`.
    margin : float
        :math:`m`, finite and :math:`\ge 0`.
    ignore_index : int, optional
        Examples with this label contribute 0 to the loss and the gradient
        and are left out of the mean's denominator; their features may be 0
        (padding).
    reduction : {"none", "sum", "mean"}
        ``"mean"`` divides by the number of non-ignored examples.

    Returns
    -------
    array
        Per-example losses (``labels.shape``) or a scalar, in the features'
        dtype (computed in the wider of the two inputs' compute dtypes;
        float16/bfloat16 in float32).  ``backward`` returns ``{"features": ...,
        "weights": ...}``, each in its argument's dtype.

    Raises
    ------
    TypeError
        Integer or boolean features or weights; non-integer labels; a
        non-number ``scale``, ``margin`` or ``ignore_index``.
    ValueError
        ``scale`` not finite and > 0; ``margin`` not finite and >= 0;
        ``weights`` not 2-d or with a different D than ``features``;
        ``labels`` of the wrong shape or out of range; a **zero feature
        vector** (in an example that is not ignored) or a **zero weight row**:
        the cosine :math:`\langle f, w\rangle/(\|f\|\|w\|)` is 0/0 there, and
        any value chosen for it would be a silent convention (and its
        gradient :math:`1/\|f\|` is unbounded nearby).

    Notes
    -----
    **Forward.**  Normalise, form :math:`c = \hat F\hat W^\top`, then the
    stable cross-entropy of :math:`\psi`: with
    :math:`\hat\psi = \psi - \max_j\psi_j` and :math:`S = \sum_j e^{\hat\psi_j}`,
    :math:`\ell = \log S - \hat\psi_t`.

    **Gradient**, step by step for one example (then summed over examples
    for the weights).  With :math:`q = \operatorname{softmax}(\psi)`:

    1. Cross-entropy: :math:`\partial\ell/\partial\psi_j = q_j - \delta_{jt}`.
    2. Logits: :math:`\partial\psi_j/\partial c_j = s` (the margin is a
       constant), so :math:`G_j := \partial\ell/\partial c_j = s\,(q_j - \delta_{jt})`.
    3. Cosines: :math:`\partial c_j/\partial\hat f = \hat w_j` and
       :math:`\partial c_j/\partial\hat w_j = \hat f`, so
       :math:`\partial\ell/\partial\hat f = \sum_j G_j\hat w_j` and
       :math:`\partial\ell/\partial\hat w_j = G_j\hat f`.
    4. Normalisation: :math:`\partial(f/\|f\|)/\partial f = (I - \hat f\hat f^\top)/\|f\|`
       (symmetric), so for :math:`a = \partial\ell/\partial\hat f`,
       :math:`\partial\ell/\partial f = (a - \langle a, \hat f\rangle\hat f)/\|f\|`,
       and :math:`\langle a, \hat f\rangle = \sum_j G_j c_j`.  Hence

    .. math::

        \frac{\partial\ell}{\partial f} = \frac{1}{\|f\|}\Bigl(\sum_j G_j\hat w_j
        - \bigl(\textstyle\sum_j G_j c_j\bigr)\hat f\Bigr),\qquad
        \frac{\partial L}{\partial w_j} = \frac{1}{\|w_j\|}\Bigl(\sum_i G_{ij}\hat f_i
        - \bigl(\textstyle\sum_i G_{ij} c_{ij}\bigr)\hat w_j\Bigr).

    Both gradients are orthogonal to their argument (the loss is invariant
    to rescaling :math:`f` or :math:`w_j`).  With a cotangent :math:`g`
    (``"mean"``: divided by the number of non-ignored examples),
    :math:`G_{ij}` is multiplied by :math:`g_i`; ignored examples have
    :math:`G_i = 0`.

    References
    ----------
    F. Wang, J. Cheng, W. Liu, H. Liu, "Additive Margin Softmax for Face
    Verification", IEEE Signal Processing Letters 25(7), 2018.
    H. Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
    Recognition", CVPR 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from refsoftmax.am_softmax import am_softmax_loss
    >>> f = np.array([[3.0, 4.0]])                  # f_hat = [0.6, 0.8]
    >>> w = np.array([[1.0, 0.0], [0.0, 2.0]])      # w_hat = I: c = [0.6, 0.8]
    >>> loss, g = am_softmax_loss.value_and_grad(
    ...     f, w, np.array([1]), scale=2.0, margin=0.1)
    >>> bool(np.isclose(loss[0], np.log1p(np.exp(-0.2))))   # psi = [1.2, 1.4]
    True
    >>> q0 = 1 / (1 + np.exp(0.2))                  # softmax(psi)[0]
    >>> bool(np.allclose(g["features"], q0 * np.array([[0.448, -0.336]])))
    True
    >>> bool(np.allclose(g["weights"], q0 * np.array([[0.0, 1.6], [-0.6, 0.0]])))
    True
    """

    name = "am_softmax_loss"
    differentiable = ("features", "weights")

    def forward(
        self,
        features: Any,
        weights: Any,
        labels: Any,
        *,
        scale: float = 30.0,
        margin: float = 0.35,
        ignore_index: int | None = None,
        reduction: str = "none",
    ) -> tuple[Any, _Residuals]:
        check_choice("reduction", reduction, ("none", "sum", "mean"))
        s = check_positive("scale", scale)
        m = check_positive("margin", margin, allow_zero=True)
        ignore_index = check_ignore_index(ignore_index)
        xp, a = resolve(features=features, weights=weights, labels=labels)
        f, w, t = a["features"], a["weights"], a["labels"]
        dtype = xp.result_type(compute_dtype(xp, f, "features"), compute_dtype(xp, w, "weights"))
        check_integer(xp, t, "labels")
        if f.ndim == 0:
            msg = "features must have at least one dimension (the feature dimension D)"
            raise ValueError(msg)
        dim = f.shape[-1]
        if dim == 0:
            msg = f"features must have a nonzero feature dimension D, got shape {tuple(f.shape)}"
            raise ValueError(msg)
        if w.ndim != 2 or w.shape[1] != dim:
            msg = f"weights must have shape (num_classes, {dim}) to match features, got {tuple(w.shape)}"
            raise ValueError(msg)
        num_classes = w.shape[0]
        if num_classes == 0:
            msg = "weights must have at least one class (row)"
            raise ValueError(msg)
        expected = tuple(f.shape[:-1])
        if tuple(t.shape) != expected:
            msg = f"labels must have shape {expected} (the features' shape without the last axis), got {tuple(t.shape)}"
            raise ValueError(msg)
        target, valid_b = class_indices(xp, t, num_classes, name="labels", ignore_index=ignore_index)

        out_dtypes = {"features": f.dtype, "weights": w.dtype}
        f2 = xp.reshape(xp.astype(f, dtype), (-1, dim))
        w = xp.astype(w, dtype)
        valid = xp.reshape(valid_b, (-1,))
        # ignored examples take no part: zero them so NaN/inf there cannot reach the gradients
        f2 = xp.where(xp.expand_dims(valid, axis=-1), f2, xp.zeros_like(f2))
        f_norm = _norms(f2, xp=xp)
        w_norm = _norms(w, xp=xp)
        zero_f = (f_norm[:, 0] == 0) & valid
        if flagged(xp, zero_f):
            row = int(xp.argmax(xp.astype(zero_f, xp.int8)))
            msg = (f"features must have a nonzero norm in every example that is not ignored "
                   f"(the cosine is undefined); example {row} (flattened) has norm 0")
            raise ValueError(msg)
        if flagged(xp, w_norm == 0):
            row = int(xp.argmax(xp.astype(w_norm[:, 0] == 0, xp.int8)))
            msg = f"weights must have nonzero rows (the cosine is undefined); row {row} has norm 0"
            raise ValueError(msg)
        f_norm = xp.where(f_norm == 0, xp.ones_like(f_norm), f_norm)  # ignored zero rows only
        f_hat = f2 / f_norm
        w_hat = w / w_norm

        target = xp.reshape(target, (-1,))
        weight = xp.astype(valid, dtype)
        cos = xp.matmul(f_hat, xp.matrix_transpose(w_hat))
        at_target = onehot(target, num_classes, xp=xp)
        psi = s * (cos - xp.where(at_target, xp.full_like(cos, m), xp.zeros_like(cos)))
        rows = shift_rows(psi, xp=xp)
        losses = safe_mul(weight, rows.neg_log_prob_at(target), xp=xp)
        losses = xp.reshape(losses, tuple(t.shape))
        denominator = xp.sum(weight) if reduction == "mean" else None
        value = reduce(losses, denominator, reduction, "nan", xp=xp)
        res = _Residuals(
            xp=xp, value_shape=tuple(value.shape), compute_dtype=dtype, reduction=reduction,
            scale=s, f_hat=f_hat, f_norm=f_norm, w_hat=w_hat, w_norm=w_norm, cos=cos,
            q=rows.probabilities(), complement=rows.complement_at(target), onehot=at_target,
            weight=weight, losses=losses, denominator=denominator,
            features_shape=tuple(f.shape), out_dtypes=out_dtypes,
        )
        return xp.astype(value, out_dtypes["features"]), res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.f_hat)
        g_loss, _ = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
        coef = xp.reshape(g_loss * xp.ones_like(r.losses), (-1,)) * r.weight * r.scale
        # dL/dcos = coef (q - e_t), the target's q_t - 1 taken as -(1 - q_t) (accurate as q_t -> 1)
        q_minus_onehot = xp.where(r.onehot, xp.expand_dims(-r.complement, axis=-1), r.q)
        big_g = safe_mul(xp.expand_dims(coef, axis=-1), q_minus_onehot, xp=xp)  # [N, C]
        a = xp.matmul(big_g, r.w_hat)  # dL/df_hat
        d_f = (a - xp.sum(big_g * r.cos, axis=-1, keepdims=True) * r.f_hat) / r.f_norm
        b = xp.matmul(xp.matrix_transpose(big_g), r.f_hat)  # dL/dw_hat [C, D]
        d_w = (b - xp.expand_dims(xp.sum(big_g * r.cos, axis=0), axis=-1) * r.w_hat) / r.w_norm
        return {
            "features": xp.astype(xp.reshape(d_f, r.features_shape), r.out_dtypes["features"], copy=False),
            "weights": xp.astype(d_w, r.out_dtypes["weights"], copy=False),
        }


def _norms(x: Any, *, xp: Any) -> Any:
    """Euclidean norms of the rows of ``x`` (``keepdims``), scaled so that squaring cannot overflow or underflow.

    ``‖x‖ = a · ‖x / a‖`` with ``a = max|x_i|``: the entries of ``x / a`` are in [-1, 1] and
    one of them is ±1, so their sum of squares is in [1, D].
    """
    a = xp.max(xp.abs(x), axis=-1, keepdims=True)
    safe = xp.where((a == 0) | ~xp.isfinite(a), xp.ones_like(a), a)
    y = x / safe
    n = xp.sqrt(xp.sum(y * y, axis=-1, keepdims=True))
    return xp.where(a == 0, xp.zeros_like(a), xp.where(xp.isfinite(a), safe * n, a))


am_softmax_loss = AMSoftmaxLoss()

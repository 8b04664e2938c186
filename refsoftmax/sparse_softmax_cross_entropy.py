r"""Softmax cross-entropy with integer class labels (sparse labels)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from refsoftmax._arrays import resolve
from refsoftmax._cross_entropy import (
    CLASS_WEIGHTINGS,
    check_common_options,
    safe_mul,
    smoothing_weights,
)
from refsoftmax._dtypes import check_integer, compute_dtype
from refsoftmax._labels import check_ignore_index, class_indices
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._shifted import shift_rows
from refsoftmax._validation import (
    check_axis,
    check_choice,
    check_class_weights,
    check_where,
)

__all__ = ["SparseSoftmaxCrossEntropy", "sparse_softmax_cross_entropy"]


@dataclass
class _Residuals(Residuals):
    axis: int
    logits_dtype: Any
    reduction: str
    p: Any  # softmax over the allowed classes, 0 in empty rows    [..., C]
    complement: Any  # 1 - p_t, accurate when p_t -> 1                [...]
    target: Any  # class index, 0 where ignored                     [...]
    kappa: Any  # coefficient of the target class                    [...]
    smooth: Any  # smoothing coefficients, or None without smoothing [..., C]
    grad_mask: Any  # classes whose logit receives a gradient         [..., C]
    losses: Any
    denominator: Any


class SparseSoftmaxCrossEntropy(Function):
    r"""Softmax cross-entropy with an integer class label per example.

    ``sparse_softmax_cross_entropy(logits, labels, *, axis=-1, where=None,
    ignore_index=None, class_weights=None, label_smoothing=0.0,
    reduction="none", label_smoothing_mode="uniform",
    class_weighting="per_class", mean_denominator="weights",
    empty_mean="nan")``

    Parameters
    ----------
    logits : array, real floating, shape ``[..., C, ...]``
        Unnormalised log-probabilities; the C classes lie along ``axis``.
    labels : integer array
        ``logits.shape`` without ``axis`` (any number of leading dims, e.g.
        batch × sequence).  Each entry is in ``[0, C)`` or equals
        ``ignore_index``.
    axis : int
        The class axis of ``logits``.
    where : bool array broadcastable to ``logits``, optional
        Classes where ``where`` is false are excluded exactly like a
        :math:`-\infty` logit (gradient 0).
    ignore_index : int, optional
        Examples with this label contribute 0 to the loss and the gradient
        and are left out of the mean's denominator.
    class_weights : array ``[C]``, optional
        Non-negative weight per class.
    label_smoothing : float in [0, 1]
        Mixes the one-hot label with a spread distribution (see
        ``label_smoothing_mode``).
    label_smoothing_mode : {"uniform", "others"}
        ``"uniform"`` (TF, PyTorch, optax, Keras): :math:`q = (1-\varepsilon)
        e_t + \varepsilon/K` over the K allowed classes.  ``"others"``: the
        target keeps :math:`1-\varepsilon` and each of the other K − 1
        allowed classes gets :math:`\varepsilon/(K-1)`.
    class_weighting : {"per_class", "target"}
        ``"per_class"`` (PyTorch): :math:`\ell = \sum_c w_c q_c(-\log p_c)`,
        so with smoothing each class's term carries its own weight.
        ``"target"``: :math:`\ell = w_t \sum_c q_c(-\log p_c)`, the whole
        example weighted by its label's weight.  Identical without smoothing.
    reduction : {"none", "sum", "mean"}
    mean_denominator : {"weights", "count", "all"}
        Ω for ``"mean"``: ``"weights"`` = :math:`\sum_i w_{t_i}` over the
        non-ignored examples (PyTorch); ``"count"`` = number of non-ignored
        examples; ``"all"`` = number of examples, ignored ones included.  All
        three agree without class weights and ignored labels.
    empty_mean : {"nan", "zero"}
        The mean when Ω = 0 (e.g. every label ignored): NaN (0/0, as
        PyTorch) or 0.  The gradient is 0 either way.

    Returns
    -------
    array
        Per-example losses (``labels.shape``) or a scalar, in the logits' dtype.

    Raises
    ------
    TypeError
        Non-integer labels; integer or boolean logits; a non-integer
        ``ignore_index``; mixed namespaces or devices.
    ValueError
        A label outside ``[0, C)`` that is not ``ignore_index`` (negative ones
        included), shape mismatch, ``label_smoothing`` outside [0, 1], unknown
        option values, invalid ``class_weights``.

    Notes
    -----
    This is :class:`SoftmaxCrossEntropy` with the label distribution
    :math:`q = (1-\varepsilon) e_t + \varepsilon u`; the integer form lets
    the forward gather one log-probability per example instead of summing
    over C.

    **Forward.**  With :math:`\hat z = \tilde z - \max\tilde z` (masked
    classes at :math:`-\infty`) and :math:`s = \sum_c e^{\hat z_c}`,

    .. math::

        \ell = \kappa\,(\log s - \hat z_t) + \sum_c \sigma_c\,(\log s - \hat z_c),

    where :math:`\kappa = (1-\varepsilon) w_t` is the target's coefficient and
    :math:`\sigma_c = \varepsilon\,u_c\,w_c` (``"per_class"``) or
    :math:`\varepsilon\,u_c\,w_t` (``"target"``) the smoothing coefficients.
    Ignored examples have :math:`\kappa = \sigma = 0`; their loss is exactly 0.
    A label on a masked class gives :math:`+\infty`; a row with no allowed
    class has loss :math:`+\infty` (0 if ignored) and gradient 0.

    **Gradient.**  From :math:`\partial(\log s - \hat z_c)/\partial z_j =
    p_j - \delta_{cj}`:

    .. math::

        \frac{\partial\ell}{\partial z_j} = (\kappa + \textstyle\sum_c\sigma_c)\,p_j
        - \kappa\,\delta_{jt} - \sigma_j ,

    i.e. :math:`p - e_t` for a plain unweighted example.  Masked classes and
    ignored examples get exactly 0.  ``"mean"`` scales each example's
    cotangent by :math:`1/\Omega` (Ω does not depend on the logits).

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> logits = np.array([[0.0, np.log(3.0)]])        # p = [1/4, 3/4]
    >>> loss, grads = refsoftmax.sparse_softmax_cross_entropy.value_and_grad(logits, np.array([1]))
    >>> bool(np.isclose(loss[0], np.log(4 / 3)))
    True
    >>> grads["logits"].round(12).tolist()              # p - e_t
    [[0.25, -0.25]]
    """

    name = "sparse_softmax_cross_entropy"
    differentiable = ("logits",)

    def forward(
        self,
        logits: Any,
        labels: Any,
        *,
        axis: int = -1,
        where: Any = None,
        ignore_index: int | None = None,
        class_weights: Any = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
        label_smoothing_mode: str = "uniform",
        class_weighting: str = "per_class",
        mean_denominator: str = "weights",
        empty_mean: str = "nan",
    ) -> tuple[Any, _Residuals]:
        c = _prepare(
            logits, labels, axis=axis, where=where, ignore_index=ignore_index,
            class_weights=class_weights, label_smoothing=label_smoothing, reduction=reduction,
            label_smoothing_mode=label_smoothing_mode, class_weighting=class_weighting,
            mean_denominator=mean_denominator, empty_mean=empty_mean,
        )
        return _forward(c)

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.p)
        g_loss, _ = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
        g_loss = xp.expand_dims(g_loss, axis=-1)
        kappa = xp.expand_dims(r.kappa, axis=-1)
        # the target's κ (p_t - 1) as -κ (1 - p_t): accurate when p_t -> 1 (confident examples)
        spike = -safe_mul(kappa, xp.expand_dims(r.complement, axis=-1), xp=xp)
        total = kappa
        if r.smooth is not None:
            sigma = xp.sum(r.smooth, axis=-1, keepdims=True)
            total = kappa + sigma
            spike = spike + safe_mul(sigma, r.p, xp=xp)
        onehot = _onehot(r.target, r.p.shape[-1], xp=xp)
        d_logits = xp.where(onehot, spike, safe_mul(total, r.p, xp=xp))
        if r.smooth is not None:
            d_logits = d_logits - r.smooth
        d_logits = safe_mul(g_loss, d_logits, xp=xp)
        d_logits = xp.where(r.grad_mask, d_logits, xp.zeros_like(d_logits))
        return {"logits": xp.astype(xp.moveaxis(d_logits, -1, r.axis), r.logits_dtype, copy=False)}

    def value_and_grad(
        self, *args: Any, cotangent: Any = None, **kwargs: Any
    ) -> tuple[Any, dict[str, Any]]:
        """``forward`` then ``backward``, fused into one pass where the backend offers a kernel.

        A backend module may provide ``fused_sparse_softmax_cross_entropy``
        (NumPy: cache-blocked, threaded, in place; PyTorch: in-place torch
        ops, any device).  It is used when it
        applies (no ``where``, no label smoothing, no row whose maximum is
        infinite; any ``axis`` — the classes are moved last, copying if
        needed) and gives the same numbers as the array-API code up to
        floating-point rounding (``tests/test_fused.py`` compares them);
        otherwise this is plain ``forward`` + ``backward``.
        """
        c = _prepare(*args, **kwargs)
        fused = _try_fused(c, cotangent)
        if fused is not None:
            return fused
        value, residuals = _forward(c)
        if cotangent is None:
            cotangent = residuals.xp.ones_like(value)
        return value, self.backward(residuals, cotangent)


@dataclass
class _Call:
    """A validated call: logits with classes last (compute dtype) and per-example label data."""

    xp: Any
    z: Any
    logits_dtype: Any
    axis: int
    allowed: Any
    target: Any
    valid_f: Any
    w: Any
    w_t: Any
    eps: float
    mode: str
    class_weighting: str
    reduction: str
    empty_mean: str
    denominator: Any


def _prepare(
    logits: Any,
    labels: Any,
    *,
    axis: int = -1,
    where: Any = None,
    ignore_index: int | None = None,
    class_weights: Any = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    label_smoothing_mode: str = "uniform",
    class_weighting: str = "per_class",
    mean_denominator: str = "weights",
    empty_mean: str = "nan",
) -> _Call:
    eps = check_common_options(
        reduction, label_smoothing, label_smoothing_mode, mean_denominator, empty_mean
    )
    check_choice("class_weighting", class_weighting, CLASS_WEIGHTINGS)
    ignore_index = check_ignore_index(ignore_index)
    xp, arrays = resolve(logits=logits, labels=labels, where=where, class_weights=class_weights)
    z, t = arrays["logits"], arrays["labels"]
    dtype = compute_dtype(xp, z, "logits")
    check_integer(xp, t, "labels")
    if z.ndim == 0:
        msg = "logits must have at least one dimension (the classes)"
        raise ValueError(msg)
    axis = check_axis(axis, z.ndim)
    if z.shape[axis] == 0:
        msg = f"logits must have at least one class along axis {axis}, got shape {tuple(z.shape)}"
        raise ValueError(msg)
    expected = tuple(z.shape[:axis]) + tuple(z.shape[axis + 1 :])
    if tuple(t.shape) != expected:
        msg = (
            f"labels must have shape {expected} (the logits' shape {tuple(z.shape)} "
            f"without axis {axis}), got {tuple(t.shape)}"
        )
        raise ValueError(msg)
    num_classes = z.shape[axis]
    target, valid = class_indices(xp, t, num_classes, name="labels", ignore_index=ignore_index)
    allowed = None
    if arrays["where"] is not None:
        allowed = xp.moveaxis(check_where(xp, arrays["where"], tuple(z.shape)), axis, -1)
    w = None
    if arrays["class_weights"] is not None:
        w = check_class_weights(xp, arrays["class_weights"], num_classes, dtype)
    z = xp.moveaxis(xp.astype(z, dtype, copy=False), axis, -1)

    valid_f = xp.astype(valid, dtype)
    if w is None:
        w_t = valid_f
    else:
        w_t = xp.reshape(xp.take(w, xp.reshape(target, (-1,))), target.shape) * valid_f

    denominator = None
    if reduction == "mean":
        if mean_denominator == "weights":
            denominator = xp.sum(w_t)
        elif mean_denominator == "count":
            denominator = xp.sum(valid_f)
        else:
            denominator = xp.asarray(math.prod(t.shape), dtype=dtype, device=z.device)
    return _Call(
        xp, z, arrays["logits"].dtype, axis, allowed, target, valid_f, w, w_t, eps,
        label_smoothing_mode, class_weighting, reduction, empty_mean, denominator,
    )


def _forward(c: _Call) -> tuple[Any, _Residuals]:
    """The definition: the array-API forward pass, saving what ``backward`` needs."""
    xp, z = c.xp, c.z
    num_classes = z.shape[-1]
    rows = shift_rows(z, c.allowed, xp=xp)
    neg_log_p_t = rows.neg_log_prob_at(c.target)

    smooth = None
    kappa = c.w_t
    if c.eps > 0:
        eps_row, spread = smoothing_weights(c.allowed, num_classes, c.eps, c.mode, xp=xp, like=z)
        if c.mode == "others":
            spread = xp.where(_onehot(c.target, num_classes, xp=xp), xp.zeros_like(spread), spread)
        per_class = c.w if (c.w is not None and c.class_weighting == "per_class") else 1.0
        per_example = c.w_t if c.class_weighting == "target" else c.valid_f
        smooth = eps_row * spread * per_class * xp.expand_dims(per_example, axis=-1)
        kappa = (1.0 - eps_row[..., 0]) * c.w_t
    losses = safe_mul(kappa, neg_log_p_t, xp=xp)
    if smooth is not None:
        losses = losses + xp.sum(safe_mul(smooth, rows.neg_log_probs(), xp=xp), axis=-1)
    value = reduce(losses, c.denominator, c.reduction, c.empty_mean, xp=xp)

    grad_mask = ~rows.empty if c.allowed is None else (~rows.empty) & c.allowed
    res = _Residuals(
        xp, tuple(value.shape), z.dtype, c.axis, c.logits_dtype, c.reduction,
        rows.probabilities(), rows.complement_at(c.target), c.target, kappa, smooth, grad_mask,
        losses, c.denominator,
    )
    return xp.astype(value, c.logits_dtype), res


def _try_fused(c: _Call, cotangent: Any) -> tuple[Any, dict[str, Any]] | None:
    """Run the backend's fused kernel if it has one that applies to this call, else ``None``."""
    from refsoftmax import backends

    kernel = getattr(backends.for_namespace(c.xp), "fused_sparse_softmax_cross_entropy", None)
    if kernel is None or c.allowed is not None or c.eps > 0 or c.z.ndim == 0:
        return None
    xp = c.xp
    value_shape = tuple(c.target.shape) if c.reduction == "none" else ()
    if cotangent is None:
        g = xp.ones(value_shape, dtype=c.z.dtype, device=c.z.device)
    else:
        ct = prepare_cotangent(
            Residuals(xp, value_shape, c.z.dtype), cotangent, c.z
        )
        g = ct
    if c.reduction == "mean":
        empty = c.denominator == 0
        g = xp.where(empty, xp.zeros_like(g), g / xp.where(empty, xp.ones_like(g), c.denominator))
    g = xp.broadcast_to(g, tuple(c.target.shape))
    result = kernel(c.z, c.target, c.w_t, g)
    if result is None:  # the kernel declined (e.g. a row with an infinite maximum)
        return None
    losses, grad = result
    value = reduce(losses, c.denominator, c.reduction, c.empty_mean, xp=xp)
    grad = xp.astype(xp.moveaxis(grad, -1, c.axis), c.logits_dtype, copy=False)
    return xp.astype(value, c.logits_dtype), {"logits": grad}


def _onehot(target: Any, num_classes: int, *, xp: Any) -> Any:
    """Boolean ``[..., C]`` with True at each example's class."""
    classes = xp.arange(num_classes, device=target.device, dtype=target.dtype)
    return xp.expand_dims(target, axis=-1) == classes


sparse_softmax_cross_entropy = SparseSoftmaxCrossEntropy()

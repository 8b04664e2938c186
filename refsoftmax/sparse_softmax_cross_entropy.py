r"""Softmax cross-entropy with integer class labels (sparse labels)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce
from refsoftmax._sharded_sparse import sparse_softmax_cross_entropy as _sharded_sparse
from refsoftmax._sparse_call import SparseCall, SparseOptions, prepare_sparse
from refsoftmax._sparse_ce import SparseCEResiduals, sparse_ce_backward, sparse_ce_forward

__all__ = ["SparseSoftmaxCrossEntropy", "sparse_softmax_cross_entropy"]


class SparseSoftmaxCrossEntropy(Function):
    r"""Softmax cross-entropy with an integer class label per example.

    ``sparse_softmax_cross_entropy(logits, labels, *, axis=-1, where=None,
    ignore_index=None, class_weights=None, label_smoothing=0.0,
    reduction="none", label_smoothing_mode="uniform",
    class_weighting="per_class", mean_denominator="weights",
    empty_mean="nan", z_loss=0.0, logit_softcap=None)``

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
    z_loss : float >= 0
        λ of the z-loss (PaLM, OLMo): every non-ignored example adds
        :math:`\lambda\,(\log Z)^2`, :math:`\log Z` the log-sum-exp of its
        allowed (soft-capped) logits; not multiplied by class weights, and in
        ``"mean"`` divided by the same Ω as the cross-entropy.
    logit_softcap : float > 0, optional
        c of Gemma 2's soft-capping: the logits become :math:`c\tanh(z/c)`
        before everything else (masking, smoothing, the z-loss).

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

    **z-loss and soft-cap** (:mod:`refsoftmax._logit_transforms`).  The z-loss adds
    :math:`\lambda(\log Z)^2` with :math:`\partial\log Z/\partial\tilde z_j = p_j`, so
    its gradient is :math:`2\lambda\log Z\,p_j`: the coefficient of :math:`p_j` above
    becomes :math:`\kappa + \sum_c\sigma_c + 2\lambda\log Z`.  With a soft-cap every
    term is a function of :math:`\tilde z = c\tanh(z/c)`, and the chain rule multiplies
    each class's gradient by :math:`d\tilde z_j/dz_j = \operatorname{sech}^2(z_j/c)`.

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

    def _value(self, logits: Any, labels: Any, **options: Any) -> Any:
        """The loss alone: ``forward`` without saving residuals (no ``[..., C]`` array kept)."""
        if _has_dtensor(logits, labels, options):
            return self.forward(logits, labels, **options)[0]
        return sparse_ce_forward(_bind(logits, labels, **options), keep=False)[0]

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
        z_loss: float = 0.0,
        logit_softcap: float | None = None,
    ) -> tuple[Any, SparseCEResiduals]:
        if _has_dtensor(logits, labels, {"where": where, "class_weights": class_weights}):
            return _dtensor_forward(logits, labels, dict(
                axis=axis, where=where, ignore_index=ignore_index, class_weights=class_weights,
                label_smoothing=label_smoothing, reduction=reduction,
                label_smoothing_mode=label_smoothing_mode, class_weighting=class_weighting,
                mean_denominator=mean_denominator, empty_mean=empty_mean, z_loss=z_loss,
                logit_softcap=logit_softcap))
        options = SparseOptions(
            axis=axis, where=where, ignore_index=ignore_index, class_weights=class_weights,
            label_smoothing=label_smoothing, reduction=reduction,
            label_smoothing_mode=label_smoothing_mode, class_weighting=class_weighting,
            mean_denominator=mean_denominator, empty_mean=empty_mean, z_loss=z_loss,
            logit_softcap=logit_softcap,
        )
        return sparse_ce_forward(prepare_sparse(logits, labels, options))

    def backward(self, residuals: SparseCEResiduals, cotangent: Any) -> dict[str, Any]:
        if isinstance(residuals, _ShardedResiduals):  # a Shard(-1) DTensor: a DTensor gradient
            from refsoftmax.backends import torch as torch_backend

            g = _sharded_sparse.backward(residuals.inner, torch_backend.full_tensor(cotangent))
            return {"logits": torch_backend.from_class_shards(g["local_logits"], residuals.layout)}
        return {"logits": sparse_ce_backward(residuals, cotangent)}

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
        otherwise this is plain ``forward`` + ``backward`` (on NumPy, blocked kernels too
        where they apply: :func:`refsoftmax._sparse_ce.sparse_ce_forward`).  The fused NumPy
        kernel allocates no ``[..., C]`` array but the gradient.
        """
        if _has_dtensor(*args, kwargs):
            return super().value_and_grad(*args, cotangent=cotangent, **kwargs)
        c = _bind(*args, **kwargs)
        fused = _try_fused(c, cotangent)
        if fused is not None:
            return fused
        value, residuals = sparse_ce_forward(c)
        if cotangent is None:
            cotangent = residuals.xp.ones_like(value)
        return value, self.backward(residuals, cotangent)


@dataclass(kw_only=True)
class _ShardedResiduals(Residuals):
    """The residuals of a call on a ``Shard(-1)`` DTensor: the sharded loss's, and the layout."""

    inner: Any
    layout: Any


#: Options the DTensor route does not pass to the class-sharded loss (a full ``where`` is not
#: this rank's block; the classes are the last axis there).
_DENSE_ONLY = ("axis", "where")


def _has_dtensor(*values: Any) -> bool:
    """True if any argument (or option value) is a ``torch.distributed.tensor.DTensor``."""
    tensor_module = sys.modules.get("torch.distributed.tensor")
    if tensor_module is None:
        return False
    flat = [v for x in values for v in (x.values() if isinstance(x, dict) else (x,))]
    return any(isinstance(v, tensor_module.DTensor) for v in flat)


def _dtensor_forward(logits: Any, labels: Any, options: dict[str, Any]) -> tuple[Any, Any]:
    r"""The loss of DTensor arguments.

    Logits sharded along the classes (``Shard(-1)`` on a 1-D mesh) run the class-sharded loss
    (:data:`refsoftmax.distributed.sparse_softmax_cross_entropy`) on the local blocks, with the
    mesh's process group: the value is an ordinary tensor, the same on every rank, and the
    gradient a DTensor of the logits' layout.  Any other layout, a ``where`` mask or an ``axis``
    other than the last gathers the DTensors (``full_tensor``) and runs the ordinary loss.
    """
    from refsoftmax.backends import torch as torch_backend

    labels = torch_backend.full_tensor(labels)
    options = {k: torch_backend.full_tensor(v) for k, v in options.items()}
    shards = torch_backend.class_shards(logits)
    dense_only = options["where"] is not None or options["axis"] not in (-1, logits.ndim - 1)
    if shards is None or dense_only:
        full = torch_backend.full_tensor(logits)
        return sparse_ce_forward(prepare_sparse(full, labels, SparseOptions(**options)))
    local, group, layout = shards
    sharded_options = {k: v for k, v in options.items() if k not in _DENSE_ONLY}
    value, inner = _sharded_sparse.forward(local, labels, group=group, **sharded_options)
    residuals = _ShardedResiduals(xp=inner.xp, value_shape=inner.value_shape,
                                  compute_dtype=inner.compute_dtype, inner=inner, layout=layout)
    return value, residuals


def _bind(logits: Any, labels: Any, **options: Any) -> SparseCall:
    """The validated call of ``forward(logits, labels, **options)``."""
    return prepare_sparse(logits, labels, SparseOptions(**options))


def _try_fused(c: SparseCall, cotangent: Any) -> tuple[Any, dict[str, Any]] | None:
    """Run the backend's fused kernel if it has one that applies to this call, else ``None``."""
    from refsoftmax import backends

    kernel = getattr(backends.for_namespace(c.xp), "fused_sparse_softmax_cross_entropy", None)
    o = c.options
    if (kernel is None or c.allowed is not None or o.label_smoothing > 0 or c.z.ndim == 0
            or o.z_loss > 0 or o.logit_softcap is not None):
        return None
    xp = c.xp
    reduction = c.options.reduction
    value_shape = tuple(c.target.shape) if reduction == "none" else ()
    if cotangent is None:
        g = xp.ones(value_shape, dtype=c.z.dtype, device=device_of(c.z))
    else:
        g = prepare_cotangent(
            Residuals(xp=xp, value_shape=value_shape, compute_dtype=c.z.dtype), cotangent, c.z
        )
    if reduction == "mean":
        empty = c.denominator == 0
        g = xp.where(empty, xp.zeros_like(g), g / xp.where(empty, xp.ones_like(g), c.denominator))
    g = xp.broadcast_to(g, tuple(c.target.shape))
    result = kernel(c.z, c.target, c.w_t, g)
    if result is None:  # the kernel declined (e.g. a row with an infinite maximum)
        return None
    losses, grad = result
    value = reduce(losses, c.denominator, reduction, c.options.empty_mean, xp=xp)
    grad = xp.astype(xp.moveaxis(grad, -1, c.axis), c.logits_dtype, copy=False)
    return xp.astype(value, c.logits_dtype), {"logits": grad}


sparse_softmax_cross_entropy = SparseSoftmaxCrossEntropy()

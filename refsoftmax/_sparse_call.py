r"""A validated call of a loss with integer class labels (sparse labels).

Every sparse-label loss (softmax cross-entropy, AS-Softmax, temperature,
top-k, the Fenchel–Young losses) starts the same way: check the options,
resolve the namespace, check the labels against the logits, move the classes
last in the compute dtype, and work out each example's weight and the
mean's denominator.  :class:`SparseOptions` holds the keyword arguments of
such a call, :func:`prepare_sparse` does the checks and returns a
:class:`SparseCall`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._arrays import resolve
from refsoftmax._cross_entropy import CLASS_WEIGHTINGS, check_common_options
from refsoftmax._dtypes import check_integer, compute_dtype
from refsoftmax._labels import check_ignore_index, class_indices
from refsoftmax._logit_transforms import check_logit_softcap, check_z_loss, soft_cap
from refsoftmax._validation import check_axis, check_choice, check_class_weights, check_where

__all__ = ["SparseCall", "SparseOptions", "example_weights", "prepare_sparse"]


@dataclass(frozen=True, kw_only=True)
class SparseOptions:
    """The keyword arguments of a sparse-label call, with their defaults.

    The meaning of each is documented on
    :class:`~refsoftmax.sparse_softmax_cross_entropy.SparseSoftmaxCrossEntropy`;
    a loss that takes only some of them leaves the others at their defaults.
    """

    axis: int = -1
    where: Any = None
    ignore_index: int | None = None
    class_weights: Any = None
    label_smoothing: float = 0.0
    reduction: str = "none"
    label_smoothing_mode: str = "uniform"
    class_weighting: str = "per_class"
    mean_denominator: str = "weights"
    empty_mean: str = "nan"
    z_loss: float = 0.0
    logit_softcap: float | None = None

    def validated(self) -> SparseOptions:
        """These options checked, with ``label_smoothing`` a float and ``ignore_index`` an int or None.

        ``axis``, ``where`` and ``class_weights`` are checked against the
        arrays by :func:`prepare_sparse`.

        Raises
        ------
        TypeError
            A non-number ``label_smoothing``, a non-integer ``ignore_index``.
        ValueError
            ``label_smoothing`` outside [0, 1]; an unknown ``reduction``,
            ``label_smoothing_mode``, ``mean_denominator``, ``empty_mean`` or
            ``class_weighting``; a negative ``z_loss``, a ``logit_softcap`` that
            is not > 0.
        """
        eps = check_common_options(
            self.reduction, self.label_smoothing, self.label_smoothing_mode,
            self.mean_denominator, self.empty_mean,
        )
        check_choice("class_weighting", self.class_weighting, CLASS_WEIGHTINGS)
        return replace(
            self, label_smoothing=eps, ignore_index=check_ignore_index(self.ignore_index),
            z_loss=check_z_loss(self.z_loss), logit_softcap=check_logit_softcap(self.logit_softcap),
        )


@dataclass(frozen=True, kw_only=True)
class SparseCall:
    """A validated call: logits with classes last (compute dtype) and per-example label data."""

    xp: Any
    options: SparseOptions  # validated
    z: Any  # the logits, classes last, in the compute dtype (soft-capped)   [..., C]
    slope: Any  # d(capped z)/dz with ``logit_softcap``, else None           [..., C]
    logits_dtype: Any  # the logits' own dtype (results are returned in it)
    axis: int  # the class axis of the logits, in [0, ndim)
    allowed: Any  # ``where`` moved classes last, or None          [..., C]
    target: Any  # class index, 0 where ignored                    [...]
    valid_f: Any  # 1, or 0 where ignored (compute dtype)          [...]
    w: Any  # class weights [C] (compute dtype), or None
    w_t: Any  # the target's weight, 0 where ignored               [...]
    denominator: Any  # Ω of ``reduction="mean"``, else None


def example_weights(xp: Any, w: Any, target: Any, valid_f: Any, reduction: str,
                    mean_denominator: str) -> tuple[Any, Any]:
    """``(w_t, Ω)``: each example's target weight (0 where ignored) and the mean's denominator.

    ``w``: the class weights ``[C]`` or None; ``target``: class indices (0 where ignored);
    ``valid_f``: 1, or 0 where ignored.  Ω (``None`` unless ``reduction == "mean"``) is the
    sum of the weights, the number of non-ignored examples, or the number of examples.
    """
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
            denominator = xp.asarray(math.prod(target.shape), dtype=valid_f.dtype, device=device_of(valid_f))
    return w_t, denominator


def prepare_sparse(logits: Any, labels: Any, options: SparseOptions) -> SparseCall:
    """Validate a sparse-label call and bring it to the layout the engines compute in.

    ``"mean"``'s denominator Ω follows ``options.mean_denominator``: the sum of
    the example weights, the number of non-ignored examples, or the number
    of examples.

    Raises
    ------
    TypeError
        Non-integer labels; integer or boolean logits; bad options (see
        :meth:`SparseOptions.validated`); mixed namespaces or devices.
    ValueError
        0-d logits or no class along ``axis``; labels of the wrong shape or
        out of range; bad options, ``where`` or ``class_weights``.
    """
    o = options.validated()
    xp, arrays = resolve(
        logits=logits, labels=labels, where=o.where, class_weights=o.class_weights
    )
    z, t = arrays["logits"], arrays["labels"]
    dtype = compute_dtype(xp, z, "logits")
    check_integer(xp, t, "labels")
    if z.ndim == 0:
        msg = "logits must have at least one dimension (the classes)"
        raise ValueError(msg)
    axis = check_axis(o.axis, z.ndim)
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
    target, valid = class_indices(
        xp, t, num_classes, name="labels", ignore_index=o.ignore_index
    )
    allowed = None
    if arrays["where"] is not None:
        allowed = xp.moveaxis(check_where(xp, arrays["where"], tuple(z.shape)), axis, -1)
    w = None
    if arrays["class_weights"] is not None:
        w = check_class_weights(xp, arrays["class_weights"], num_classes, dtype)
    z = xp.moveaxis(xp.astype(z, dtype, copy=False), axis, -1)
    slope = None
    if o.logit_softcap is not None:
        z, slope = soft_cap(z, o.logit_softcap, xp=xp)

    valid_f = xp.astype(valid, dtype)
    w_t, denominator = example_weights(xp, w, target, valid_f, o.reduction, o.mean_denominator)
    return SparseCall(
        xp=xp, options=o, z=z, slope=slope, logits_dtype=arrays["logits"].dtype, axis=axis,
        allowed=allowed, target=target, valid_f=valid_f, w=w, w_t=w_t,
        denominator=denominator,
    )

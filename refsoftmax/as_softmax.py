r"""AS-Softmax (Adaptive Sparse Softmax, Lv et al., IEEE TASLP 2025, arXiv 2508.03175)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._concrete import count
from refsoftmax._protocol import Function
from refsoftmax._shifted import shift_rows
from refsoftmax._sparse_call import SparseOptions, prepare_sparse
from refsoftmax._sparse_ce import SparseCEResiduals, sparse_ce_backward, sparse_ce_forward
from refsoftmax._zero_loss import ZeroLossStats, check_delta

__all__ = ["ASSoftmaxCrossEntropy", "ZeroLossStats", "as_softmax_cross_entropy", "check_delta"]


@dataclass(kw_only=True)
class ASResiduals(SparseCEResiduals):
    """Sparse CE residuals plus the batch's zero-loss statistics and the kept-class mask."""

    kept: Any = None
    stats: ZeroLossStats | None = None


class ASSoftmaxCrossEntropy(Function):
    r"""AS-Softmax cross-entropy: classes far behind the target stop receiving signal.

    ``as_softmax_cross_entropy(logits, labels, *, delta=0.1, axis=-1,
    ignore_index=None, class_weights=None, reduction="none")``

    Parameters
    ----------
    logits : real floating array, classes along ``axis`` (any leading dims)
    labels : integer array, ``logits.shape`` without ``axis``
    delta : float ≥ 0
        Margin δ in probability.  δ ≥ 1 keeps every class: plain softmax
        cross-entropy.
    axis : int
        The class axis.
    ignore_index : int, optional
        Examples with this label contribute 0 and are not counted.
    class_weights : array ``[C]``, optional
        As in :func:`~refsoftmax.sparse_softmax_cross_entropy`.
    reduction : {"none", "sum", "mean"}
        ``"mean"`` divides by the total weight of the non-ignored examples.

    Returns
    -------
    array or scalar
        Per-example losses or a scalar.  ``forward``'s residuals carry
        ``stats`` (a :class:`ZeroLossStats`: non-ignored examples and how many
        have loss exactly 0 — what the adaptive accumulation schedule needs) and
        ``kept`` (the mask, classes last).

    Notes
    -----
    **Mask.**  With :math:`p = \operatorname{softmax}(z)` over *all* classes
    and target :math:`t`, class :math:`i \ne t` is excluded when
    :math:`p_t - p_i > \delta`; the target is always kept
    (:math:`p_t - p_t = 0 \le \delta`).  The comparison is on probabilities,
    the exclusion on logits: excluded logits are treated as :math:`-\infty`.

    **Forward.**  With :math:`K` the kept classes,

    .. math:: \ell = \log\sum_{i\in K} e^{z_i} - z_t ,

    computed as sparse softmax cross-entropy with ``where = K``.  When
    :math:`K = \{t\}` the loss is :math:`\log e^{z_t} - z_t = 0` exactly: the
    example is already classified with margin δ and contributes nothing.

    **Gradient.**  The mask is a constant (no gradient flows through the
    comparison, as in the authors' code where the mask comes from a detached
    softmax), so with :math:`p^K` the softmax over :math:`K`,

    .. math::

        \frac{\partial\ell}{\partial z_i} = p^K_i - [i = t]\quad (i \in K),\qquad
        \frac{\partial\ell}{\partial z_i} = 0\quad (i \notin K).

    Excluded classes get exactly zero gradient; a zero-loss example has
    :math:`p^K_t = 1` and a gradient of exactly 0.  The loss is
    discontinuous where some :math:`p_t - p_i = \delta`: when class
    :math:`i` drops out of :math:`K` the loss jumps down by
    :math:`\log(1 + e^{z_i}/\sum_{j\in K\setminus i} e^{z_j})`.

    Examples
    --------
    >>> import numpy as np, refsoftmax
    >>> logits = np.array([[3.0, 0.0, 2.9]])     # p ≈ [0.51, 0.03, 0.46]
    >>> loss, res = refsoftmax.as_softmax_cross_entropy.forward(logits, np.array([0]), delta=0.1)
    >>> res.kept.tolist()                          # class 1 is far behind: dropped
    [[True, False, True]]
    >>> bool(np.isclose(loss[0], np.log(np.exp(3.0) + np.exp(2.9)) - 3.0))
    True
    >>> res.stats
    ZeroLossStats(num_examples=1, num_zero_loss=0)
    """

    name = "as_softmax_cross_entropy"
    differentiable = ("logits",)

    def forward(
        self,
        logits: Any,
        labels: Any,
        *,
        delta: float = 0.1,
        axis: int = -1,
        ignore_index: int | None = None,
        class_weights: Any = None,
        reduction: str = "none",
    ) -> tuple[Any, ASResiduals]:
        delta = check_delta(delta)
        options = SparseOptions(
            axis=axis, ignore_index=ignore_index, class_weights=class_weights, reduction=reduction
        )
        c = prepare_sparse(logits, labels, options)
        xp = c.xp
        if delta >= 1.0:
            kept = xp.ones(c.z.shape, dtype=xp.bool, device=device_of(c.z))
        else:
            rows = shift_rows(c.z, None, xp=xp)
            p = rows.probabilities()  # 0 in a row with no finite logit (no 0/0)
            p_t = xp.take_along_axis(p, xp.expand_dims(c.target, axis=-1), axis=-1)
            # excluded only where p_t - p_i > δ is true: the target (0 > δ is false) and
            # rows with NaN (NaN > δ is false) keep everything, so NaN propagates
            kept = ~((p_t - p) > delta)
            c = replace(c, allowed=kept)
        value, res = sparse_ce_forward(c)
        valid = c.valid_f > 0
        # satisfied: only the target kept, and a loss that is not NaN (NaN is not 0)
        only_target = (xp.sum(xp.astype(kept, xp.int32), axis=-1) == 1) & ~xp.isnan(res.losses)
        stats = ZeroLossStats(
            num_examples=count(xp, valid),
            num_zero_loss=count(xp, valid & only_target),
        )
        ce_fields = {f.name: getattr(res, f.name) for f in fields(res)}
        return value, ASResiduals(**ce_fields, kept=kept, stats=stats)

    def backward(self, residuals: ASResiduals, cotangent: Any) -> dict[str, Any]:
        return {"logits": sparse_ce_backward(residuals, cotangent)}

    def zero_loss_stats(self, logits: Any, labels: Any, **kwargs: Any) -> ZeroLossStats:
        """The batch's :class:`ZeroLossStats` (same arguments as the loss)."""
        _, res = self.forward(logits, labels, **kwargs)
        if res.stats is None:  # pragma: no cover - forward always sets it
            msg = "forward did not record zero-loss statistics"
            raise RuntimeError(msg)
        return res.stats


as_softmax_cross_entropy = ASSoftmaxCrossEntropy()

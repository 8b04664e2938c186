r"""Sparse-softmax (Sun et al., 2021): softmax cross-entropy over each row's top-k logits."""

from __future__ import annotations

import numbers
from typing import Any

from refsoftmax._cross_entropy import onehot
from refsoftmax._protocol import Function
from refsoftmax._restricted_ce import CEResiduals, restricted_ce_backward, restricted_ce_forward
from refsoftmax._sparse_call import SparseOptions, prepare_sparse

__all__ = ["TopkSoftmaxCrossEntropy", "topk_mask", "topk_softmax_cross_entropy"]


def topk_mask(z: Any, k: int, *, xp: Any) -> Any:
    r"""Boolean mask of the ``k`` largest entries of each row of ``z`` (last axis).

    Ties at the k-th largest value :math:`v_k` go to the lowest class
    indices: every entry :math:`> v_k` is kept, and of the entries
    :math:`= v_k` the first :math:`k - \#\{z > v_k\}` in index order.  So
    in a row without NaN exactly ``k`` entries are kept, deterministically,
    whatever the backend's sort does with equal values.  In a row with NaN
    the descending sort may put NaN first, :math:`v_k` may be NaN and fewer
    than ``k`` entries (possibly none) are kept; such a row's loss is NaN
    anyway, and the callers keep NaN entries so that it propagates.
    """
    v_k = xp.sort(z, axis=-1, descending=True)[..., k - 1 : k]
    greater = z > v_k
    n_greater = xp.sum(xp.astype(greater, xp.int64), axis=-1, keepdims=True)
    tie = z == v_k
    tie_rank = xp.cumulative_sum(xp.astype(tie, xp.int64), axis=-1)  # 1, 2, ... along the ties
    return greater | (tie & (tie_rank <= k - n_greater))


class TopkSoftmaxCrossEntropy(Function):
    r"""Sparse-softmax cross-entropy: softmax over the top-k logits of each row and the target.

    ``topk_softmax_cross_entropy(logits, labels, *, k, axis=-1,
    ignore_index=None, reduction="none")``

    The Sparse-softmax of Sun et al. (2021) keeps, in each row, only the
    :math:`k` largest logits :math:`\Omega_k` and normalises over them:

    .. math::

        p_c = \begin{cases} e^{z_c} / \sum_{j\in K} e^{z_j} & c \in K \\
        0 & c \notin K \end{cases},\qquad
        \ell(z; t) = -\log p_t = \log\sum_{j\in K} e^{z_j} - z_t ,

    with the kept set :math:`K = \Omega_k \cup \{t\}`.  **The target is
    always kept**: when it is among the top :math:`k`, :math:`K = \Omega_k`
    (the paper's definition, exactly); when it is not, it is added, so
    :math:`|K| = k + 1`.  Without this, :math:`p_t = 0` and
    :math:`-\log p_t = +\infty`; keeping the target makes :math:`\ell` the
    negative log-probability of the label under a proper distribution over
    :math:`K` (finite, :math:`\ge 0`) whose gradient pushes :math:`z_t` up
    and the top :math:`k` down, which is what training with Sparse-softmax
    needs.  :math:`k = C` gives :func:`~refsoftmax.sparse_softmax_cross_entropy`.

    **Ties.**  When several logits equal the k-th largest value, the ones
    with the lowest class indices are taken, so :math:`\Omega_k` has exactly
    :math:`k` elements and does not depend on the backend's sort
    (see :func:`topk_mask`).

    Parameters
    ----------
    logits : array, real floating, shape ``[..., C, ...]``
        The C classes lie along ``axis``.
    labels : integer array
        ``logits.shape`` without ``axis``; entries in ``[0, C)`` or
        ``ignore_index``.
    k : int
        Number of largest logits kept per row, :math:`1 \le k \le C`.
    axis : int
        The class axis of ``logits``.
    ignore_index : int, optional
        Examples with this label contribute 0 to the loss and the gradient
        and are left out of the mean's denominator.
    reduction : {"none", "sum", "mean"}
        ``"mean"`` divides by the number of non-ignored examples.

    Returns
    -------
    array
        Per-example losses (``labels.shape``) or a scalar, in the logits'
        dtype (float16/bfloat16 computed in float32).  ``backward`` returns
        ``{"logits": ...}``.

    Raises
    ------
    TypeError
        Integer or boolean logits; non-integer labels; a non-integer ``k``
        or ``ignore_index``.
    ValueError
        ``k`` outside ``[1, C]``; labels out of range or of the wrong shape;
        a bad ``axis`` or ``reduction``.

    Notes
    -----
    **Forward.**  :math:`K` is found by a sort (the k-th largest value) and
    a tie count; the classes outside :math:`K` are set to :math:`-\infty`
    and then, with :math:`\hat z = z - \max_{K} z` and
    :math:`s = \sum_{j\in K} e^{\hat z_j}`, :math:`\ell = \log s - \hat z_t`.
    A NaN logit is put in :math:`K`, so it makes its row's loss NaN.

    **Gradient.**  :math:`K` is piecewise constant in :math:`z` (it changes
    only where two logits cross, a set of measure zero), so it is held fixed,
    and :math:`\ell` is an ordinary log-sum-exp over :math:`K`:

    .. math::

        \frac{\partial}{\partial z_j}\log\sum_{i\in K}e^{z_i}
        = [j\in K]\,\frac{e^{z_j}}{\sum_{i\in K}e^{z_i}} = p_j,\qquad
        \frac{\partial z_t}{\partial z_j} = \delta_{jt}
        \quad\Longrightarrow\quad
        \frac{\partial\ell}{\partial z} = p - e_t .

    Classes outside :math:`K` get **exactly** 0 (they are masked, not
    computed as a tiny number).  For a cotangent :math:`g` the
    vector-Jacobian product is :math:`g\,(p - e_t)`; ignored examples get 0.
    The loss jumps where the target enters or leaves the top k; where two
    other classes swap places it is continuous and only the gradient jumps
    (to the side the tie rule picks).

    References
    ----------
    S. Sun, Z. Zhang, B. Huang, P. Lei, J. Su, S. Pan, J. Cao,
    "Sparse-softmax: A Simpler and Faster Alternative Softmax
    Transformation", arXiv:2112.12433, 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from refsoftmax.topk_softmax import topk_softmax_cross_entropy as f
    >>> z = np.log(np.array([[4.0, 2.0, 1.0, 0.5]]))  # e^z = [4, 2, 1, 0.5]
    >>> bool(np.isclose(f(z, np.array([0]), k=2)[0], np.log(6 / 4)))   # K = {0, 1}
    True
    >>> loss, grads = f.value_and_grad(z, np.array([2]), k=2)           # K = {0, 1} + {2}
    >>> bool(np.isclose(loss[0], np.log(7 / 1)))
    True
    >>> (grads["logits"] * 7).round(12).tolist()                        # 7 (p - e_t)
    [[4.0, 2.0, -6.0, 0.0]]
    """

    name = "topk_softmax_cross_entropy"
    differentiable = ("logits",)

    def forward(
        self,
        logits: Any,
        labels: Any,
        *,
        k: int,
        axis: int = -1,
        ignore_index: int | None = None,
        reduction: str = "none",
    ) -> tuple[Any, CEResiduals]:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            msg = f"k must be an integer, got {k!r}"
            raise TypeError(msg)
        options = SparseOptions(
            axis=axis, ignore_index=ignore_index, reduction=reduction, mean_denominator="count"
        )
        c = prepare_sparse(logits, labels, options)
        xp, z = c.xp, c.z
        num_classes = z.shape[-1]
        if not 1 <= int(k) <= num_classes:
            msg = f"k must be in [1, {num_classes}] (the number of classes), got {k}"
            raise ValueError(msg)
        kept = topk_mask(z, int(k), xp=xp) | onehot(c.target, num_classes, xp=xp) | xp.isnan(z)
        return restricted_ce_forward(c, z, kept, 1.0)

    def backward(self, residuals: CEResiduals, cotangent: Any) -> dict[str, Any]:
        return {"logits": restricted_ce_backward(residuals, cotangent)}


topk_softmax_cross_entropy = TopkSoftmaxCrossEntropy()

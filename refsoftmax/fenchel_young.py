r"""Fenchel–Young losses (Blondel et al., 2020) and their prediction maps: sparsemax and 1.5-entmax.

One template, :class:`FenchelYoungLoss`, and one for the maps,
:class:`FenchelYoungProjection`; a variant is a :class:`Regulariser`
(its projection, its :math:`\Omega`, and its Jacobian weights) plugged into
both.  For a regulariser :math:`\Omega` on the simplex :math:`\Delta`,

.. math::

    \hat p_\Omega(z) = \nabla\Omega^*(z) = \operatorname*{arg\,max}_{p\in\Delta}
    \langle z, p\rangle - \Omega(p),\qquad
    L_\Omega(z; y) = \Omega^*(z) + \Omega(y) - \langle z, y\rangle ,

with :math:`y = e_t` the one-hot label.  Every variant shares the gradient
:math:`\nabla_z L_\Omega = \hat p_\Omega(z) - y` and a map Jacobian of the
form :math:`\operatorname{diag}(s) - s s^\top / \sum_i s_i`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

from array_api_compat import device as device_of

from refsoftmax._along_axis import prepare_along_axis
from refsoftmax._cross_entropy import onehot, safe_mul
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._sparse_call import SparseOptions, prepare_sparse

__all__ = [
    "Entmax15",
    "Entmax15Loss",
    "FenchelYoungLoss",
    "FenchelYoungProjection",
    "Regulariser",
    "Sparsemax",
    "SparsemaxLoss",
    "TsallisEntmax15",
    "TsallisSparsemax",
    "entmax15",
    "entmax15_loss",
    "sparsemax",
    "sparsemax_loss",
]


# ---------------------------------------------------------------- regularisers


class Regulariser(abc.ABC):
    r"""A variant of the template: :math:`\Omega` on the simplex and its maximiser.

    Subclasses implement three methods, each along the last axis:

    * :meth:`project`: :math:`\hat p(z) = \arg\max_{p\in\Delta}\langle z,p\rangle - \Omega(p)`;
    * :meth:`omega`: :math:`\Omega(p)` per row;
    * :meth:`jacobian_weights`: the :math:`s` with
      :math:`\partial\hat p/\partial z = \operatorname{diag}(s) - s s^\top/\sum_i s_i`
      (true of every :math:`\Omega = \sum_i \omega(p_i)` with :math:`\omega`
      strictly convex: :math:`s_i = 1/\omega''(p_i)` on the support, 0 off it).
    """

    @abc.abstractmethod
    def project(self, z: Any, *, xp: Any) -> Any:
        r""":math:`\hat p(z)` for max-shifted ``z`` (row maximum 0; −∞ entries allowed)."""

    @abc.abstractmethod
    def omega(self, p: Any, *, xp: Any) -> Any:
        r""":math:`\Omega(p)` of each row of ``p`` (a point of the simplex)."""

    @abc.abstractmethod
    def jacobian_weights(self, p: Any, *, xp: Any) -> Any:
        r"""The weights :math:`s \ge 0` of the map's Jacobian at ``p = project(z)``."""

    def loss(self, z: Any, p: Any, onehot_t: Any, *, xp: Any) -> Any:
        r""":math:`L_\Omega(z; e_t) = \langle p, z\rangle - z_t - \Omega(p) + \Omega(e_t)` per row.

        ``z`` max-shifted, ``p = project(z)``, ``onehot_t`` the boolean target
        indicator.  This generic form subtracts terms of order :math:`|z|` to
        get a loss that may be far smaller (an example near its margin); the
        regularisers below override it with forms that have no cancellation.
        """
        y = xp.astype(onehot_t, z.dtype)
        z_t = xp.sum(xp.where(onehot_t, z, xp.zeros_like(z)), axis=-1)
        return xp.sum(safe_mul(p, z, xp=xp), axis=-1) - z_t - self.omega(p, xp=xp) + self.omega(y, xp=xp)


def _sorted_rows(x: Any, *, xp: Any) -> tuple[Any, Any, Any]:
    """``(u, finite, rho)``: rows sorted descending, −∞ (sorted last) set to 0 and flagged.

    ``finite`` is False where ``u`` was −∞ (those never enter a support);
    ``rho`` is ``1, 2, ..., C`` in ``x``'s dtype.
    """
    u = xp.sort(x, axis=-1, descending=True)
    finite = u > -xp.inf
    u = xp.where(finite, u, xp.zeros_like(u))
    rho = xp.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=device_of(x))
    return u, finite, rho


def _at_support_size(values: Any, support: Any, *, xp: Any) -> tuple[Any, Any]:
    """``(values[k - 1], k)`` per row, ``k`` = number of True in ``support`` (at least 1)."""
    k = xp.sum(xp.astype(support, xp.int64), axis=-1, keepdims=True)
    k = xp.where(k < 1, xp.ones_like(k), k)
    return xp.take_along_axis(values, k - 1, axis=-1), xp.astype(k, values.dtype, copy=False)


class TsallisSparsemax(Regulariser):
    r""":math:`\Omega(p) = \tfrac12\|p\|^2 - \tfrac12` (Tsallis :math:`\alpha = 2`): sparsemax.

    :math:`\hat p(z) = [z - \tau]_+`, the Euclidean projection of :math:`z`
    onto the simplex, with the threshold from the sorted row
    :math:`u_1 \ge \dots \ge u_C` (Martins & Astudillo, 2016, Alg. 1):
    :math:`k^* = \max\{k : 1 + k u_k > \sum_{j\le k} u_j\}` and
    :math:`\tau = (\sum_{j\le k^*} u_j - 1)/k^*`.  Jacobian weights: the
    support indicator :math:`s_i = [\hat p_i > 0]` (:math:`\omega'' = 1`).
    """

    def threshold(self, z: Any, *, xp: Any) -> Any:
        r""":math:`\tau` per row (``keepdims``)."""
        u, finite, rho = _sorted_rows(z, xp=xp)
        cums = xp.cumulative_sum(u, axis=-1)
        support = finite & (1 + rho * u > cums)
        cum_k, k = _at_support_size(cums, support, xp=xp)
        return (cum_k - 1) / k

    def project(self, z: Any, *, xp: Any) -> Any:
        return xp.maximum(z - self.threshold(z, xp=xp), xp.zeros_like(z))

    def omega(self, p: Any, *, xp: Any) -> Any:
        return 0.5 * xp.sum(p * p, axis=-1) - 0.5

    def loss(self, z: Any, p: Any, onehot_t: Any, *, xp: Any) -> Any:
        r"""Cancellation-free: :math:`L = \tfrac12\sum_{j\ne t} p_j^2 + \tfrac12 r^2 + [\tau - z_t]_+`.

        With :math:`p_j = z_j - \tau` on the support,
        :math:`\langle p, z\rangle = \|p\|^2 + \tau`, so
        :math:`L = \tfrac12\|p\|^2 + \tau - z_t + \tfrac12`; and
        :math:`\tau - z_t = [\tau - z_t]_+ - p_t` (:math:`p_t = [z_t - \tau]_+`),
        which gives :math:`L = \tfrac12\|p - e_t\|^2 + [\tau - z_t]_+` with
        :math:`1 - p_t = r = \sum_{j\ne t} p_j`: non-negative terms only, so a
        loss near the margin (:math:`p_t \to 1`) keeps its relative accuracy.
        """
        zero = xp.zeros_like(p)
        others = xp.where(onehot_t, zero, p)
        r = xp.sum(others, axis=-1)
        z_t = xp.sum(xp.where(onehot_t, z, zero), axis=-1)
        outside = xp.maximum(self.threshold(z, xp=xp)[..., 0] - z_t, xp.zeros_like(r))
        return 0.5 * xp.sum(others * others, axis=-1) + 0.5 * (r * r) + outside

    def jacobian_weights(self, p: Any, *, xp: Any) -> Any:
        s = xp.astype(p > 0, p.dtype)
        return xp.where(xp.isnan(p), p, s)  # NaN rows stay NaN in the backward (NaN > 0 is false)


class TsallisEntmax15(Regulariser):
    r""":math:`\Omega(p) = \frac{\sum_i p_i^{3/2} - 1}{\alpha(\alpha-1)}`, :math:`\alpha = 1.5` (Tsallis): 1.5-entmax.

    This is minus the Tsallis 1.5-entropy, normalised so that
    :math:`\Omega(e_t) = 0`, exactly as in the ``entmax`` package
    (:math:`\alpha(\alpha-1) = 0.75`).  :math:`\hat p(z) = [z/2 - \tau]_+^2`;
    the exact sort-based threshold of Peters et al. (2019, Alg. 2): with
    :math:`u` the sorted :math:`z/2`, for each :math:`k` the
    :math:`\tau_k` solving :math:`\sum_{j\le k}(u_j - \tau)^2 = 1` (smaller
    root),

    .. math::

        \tau_k = M_k - \sqrt{\max(0, \delta_k)},\quad
        M_k = \tfrac1k\textstyle\sum_{j\le k} u_j,\quad
        \delta_k = \frac{1 - k\,(\tfrac1k\sum_{j\le k} u_j^2 - M_k^2)}{k},

    :math:`k^* = \#\{k : \tau_k \le u_k\}` and :math:`\tau = \tau_{k^*}`.
    Jacobian weights :math:`s_i = \sqrt{\hat p_i}` (:math:`1/\omega''`
    for :math:`\omega(p) = p^{3/2}/0.75`).
    """

    def threshold(self, z: Any, *, xp: Any) -> Any:
        r""":math:`\tau` per row (``keepdims``), for :math:`\hat p = [z/2 - \tau]_+^2`."""
        x = z / 2
        u, finite, rho = _sorted_rows(x, xp=xp)
        mean = xp.cumulative_sum(u, axis=-1) / rho
        mean_sq = xp.cumulative_sum(u * u, axis=-1) / rho
        delta = (1 - rho * (mean_sq - mean * mean)) / rho
        tau = mean - xp.sqrt(xp.where(delta > 0, delta, xp.zeros_like(delta)))
        support = finite & (tau <= u)
        tau_star, _ = _at_support_size(tau, support, xp=xp)
        # one Newton step on f(τ) = Σ[x - τ]_+^2 - 1: the closed form's variance
        # mean_sq - mean² cancels (~10 ulps of τ); the step brings τ to ~1 ulp
        a = xp.maximum(x - tau_star, xp.zeros_like(x))
        slope = xp.sum(a, axis=-1, keepdims=True)  # -f'(τ)/2 >= the largest a > 0
        residual = xp.sum(a * a, axis=-1, keepdims=True) - 1
        step = residual / (2 * xp.where(slope > 0, slope, xp.ones_like(slope)))
        return tau_star + xp.where(xp.isfinite(step), step, xp.zeros_like(step))

    def project(self, z: Any, *, xp: Any) -> Any:
        shifted = xp.maximum(z / 2 - self.threshold(z, xp=xp), xp.zeros_like(z))
        return shifted * shifted

    def loss(self, z: Any, p: Any, onehot_t: Any, *, xp: Any) -> Any:
        r"""Cancellation-free: :math:`L = \tfrac23\bigl[\sum_{j\ne t} a_j^3 + (1 - a_t)^2 (a_t + 2)\bigr] + 2[\tau - u_t]_+`.

        With :math:`u = z/2` and :math:`a_j = \sqrt{p_j} = [u_j - \tau]_+`,
        :math:`\langle p, z\rangle = 2\sum_j a_j^3 + 2\tau`, so
        :math:`L = \tfrac23\sum_j a_j^3 + 2(\tau - u_t) + \tfrac43`; with
        :math:`\tau - u_t = [\tau - u_t]_+ - a_t` and
        :math:`a^3 - 3a + 2 = (1 - a)^2 (a + 2)` this is the form above, where
        :math:`1 - a_t = (1 - p_t)/(1 + a_t) = \sum_{j\ne t} p_j / (1 + a_t)`:
        non-negative terms only.
        """
        zero = xp.zeros_like(p)
        a = xp.sqrt(p)
        a_t = xp.sum(xp.where(onehot_t, a, zero), axis=-1)
        others = xp.where(onehot_t, zero, a)
        one_minus = xp.sum(xp.where(onehot_t, zero, p), axis=-1) / (1 + a_t)
        u_t = xp.sum(xp.where(onehot_t, z, zero), axis=-1) / 2
        outside = xp.maximum(self.threshold(z, xp=xp)[..., 0] - u_t, xp.zeros_like(a_t))
        cubes = xp.sum(others * others * others, axis=-1)
        return (2.0 / 3.0) * (cubes + one_minus * one_minus * (a_t + 2)) + 2 * outside

    def omega(self, p: Any, *, xp: Any) -> Any:
        return (xp.sum(p * xp.sqrt(p), axis=-1) - 1) / 0.75

    def jacobian_weights(self, p: Any, *, xp: Any) -> Any:
        return xp.sqrt(p)


def _shift(z: Any, *, xp: Any) -> tuple[Any, Any]:
    r"""``(z - max z, empty)`` per row; a row with no finite maximum (all −∞) is left as is.

    A row with :math:`k \ge 1` entries at :math:`+\infty` (and no NaN) is replaced by its
    limit: 0 on those entries, :math:`-\infty` on the others.  Along :math:`z_i = c + t`,
    :math:`t \to \infty` (equal infinities share equally), the map tends to the uniform
    distribution over the infinite entries and the loss to its value there, which is what the
    replaced row gives (instead of the NaN of :math:`\infty - \infty`).
    """
    at_inf = z == xp.inf
    limit = xp.any(at_inf, axis=-1, keepdims=True) & ~xp.any(xp.isnan(z), axis=-1, keepdims=True)
    neg_inf = xp.full_like(z, -xp.inf)
    z = xp.where(limit, xp.where(at_inf, xp.zeros_like(z), neg_inf), z)
    m = xp.max(z, axis=-1, keepdims=True)
    empty = m == -xp.inf
    return z - xp.where(empty, xp.zeros_like(m), m), empty


# ---------------------------------------------------------------- the loss template


@dataclass(kw_only=True)
class _LossResiduals(Residuals):
    axis: int
    logits_dtype: Any
    reduction: str
    p: Any  # the projection p*, classes last   [..., C]
    y: Any  # one-hot label (compute dtype)        [..., C]
    complement: Any  # Σ_{j≠t} p_j = 1 - p_t         [..., 1]
    weight: Any  # 1, or 0 where ignored            [...]
    grad_mask: Any  # rows with a projection        [..., 1]
    losses: Any
    denominator: Any


class FenchelYoungLoss(Function):
    r"""The Fenchel–Young loss template; a subclass sets ``name`` and ``regulariser``.

    ``loss(logits, labels, *, axis=-1, ignore_index=None, reduction="none")``

    .. math::

        L_\Omega(z; e_t) = \Omega^*(z) + \Omega(e_t) - z_t,\qquad
        \Omega^*(z) = \langle z, \hat p\rangle - \Omega(\hat p),\quad
        \hat p = \hat p_\Omega(z) .

    **Forward.**  With :math:`\hat z = z - \max_c z_c` (:math:`L` is
    shift-invariant because :math:`\sum_c\hat p_c = 1`):
    :math:`L = \langle\hat p, \hat z\rangle - \hat z_t - \Omega(\hat p) + \Omega(e_t)`.
    :math:`L \ge 0` (Fenchel–Young inequality), with equality iff
    :math:`\hat p = e_t`; rounding can put an exact 0 a few ulps below 0, so
    the value is clamped at 0.  A term :math:`\hat p_c\hat z_c` with
    :math:`\hat p_c = 0` is 0 even where :math:`z_c = -\infty`; a label on a
    :math:`-\infty` logit gives :math:`+\infty`, and so does a row of all
    :math:`-\infty` (gradient 0 there).

    **Gradient (shared by every variant).**  By Danskin's theorem,
    :math:`\nabla\Omega^*(z) = \hat p` (the maximiser; the derivative of
    :math:`\langle z, p\rangle - \Omega(p)` through :math:`p` vanishes at
    the optimum), :math:`\Omega(e_t)` does not depend on :math:`z` and
    :math:`\nabla_z z_t = e_t`, so

    .. math:: \nabla_z L_\Omega(z; e_t) = \hat p_\Omega(z) - e_t .

    For a cotangent :math:`g` the vector-Jacobian product is
    :math:`g\,(\hat p - e_t)`; ignored examples get 0, and ``"mean"``
    divides by the number of non-ignored examples.

    To add a variant, subclass :class:`Regulariser` and then this class::

        class MyLoss(FenchelYoungLoss):
            name = "my_loss"
            regulariser = MyRegulariser()
    """

    differentiable = ("logits",)
    regulariser: ClassVar[Regulariser]

    def forward(
        self,
        logits: Any,
        labels: Any,
        *,
        axis: int = -1,
        ignore_index: int | None = None,
        reduction: str = "none",
    ) -> tuple[Any, _LossResiduals]:
        options = SparseOptions(
            axis=axis, ignore_index=ignore_index, reduction=reduction, mean_denominator="count"
        )
        c = prepare_sparse(logits, labels, options)
        xp, reg = c.xp, self.regulariser
        zhat, empty = _shift(c.z, xp=xp)
        p = reg.project(zhat, xp=xp)
        is_t = onehot(c.target, zhat.shape[-1], xp=xp)
        y = xp.astype(is_t, zhat.dtype)
        losses = reg.loss(zhat, p, is_t, xp=xp)
        losses = xp.maximum(losses, xp.zeros_like(losses))  # >= 0 (the generic form may round below)
        # the target's gradient p_t - 1 as -Σ_{j≠t} p_j: no cancellation as p_t -> 1
        complement = xp.sum(xp.where(is_t, xp.zeros_like(p), p), axis=-1, keepdims=True)
        losses = xp.where(empty[..., 0], xp.full_like(losses, xp.inf), losses)
        losses = safe_mul(c.valid_f, losses, xp=xp)
        value = reduce(losses, c.denominator, c.options.reduction, c.options.empty_mean, xp=xp)
        res = _LossResiduals(
            xp=xp, value_shape=tuple(value.shape), compute_dtype=zhat.dtype, axis=c.axis,
            logits_dtype=c.logits_dtype, reduction=c.options.reduction, p=p, y=y,
            complement=complement, weight=c.valid_f,
            grad_mask=~empty, losses=losses, denominator=c.denominator,
        )
        return xp.astype(value, c.logits_dtype), res

    def backward(self, residuals: _LossResiduals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.p)
        g_loss, _ = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
        coef = xp.expand_dims(g_loss * r.weight, axis=-1)
        d_logits = safe_mul(coef, xp.where(r.y == 1, -r.complement, r.p), xp=xp)  # p - e_t
        d_logits = xp.where(r.grad_mask, d_logits, xp.zeros_like(d_logits))
        return {"logits": xp.astype(xp.moveaxis(d_logits, -1, r.axis), r.logits_dtype, copy=False)}


# ---------------------------------------------------------------- the map template


@dataclass(kw_only=True)
class _MapResiduals(Residuals):
    axis: int
    dtype: Any
    s: Any  # Jacobian weights, classes last (0 off the support and in empty rows)


class FenchelYoungProjection(Function):
    r"""The prediction map :math:`\hat p_\Omega` of a regulariser; a subclass sets ``name`` and ``regulariser``.

    ``map(x, *, axis=-1)``: a point of the simplex along ``axis``.

    **Backward (shared).**  On the support :math:`S` of :math:`\hat p`,
    :math:`\hat p_i = (\omega')^{-1}(z_i - \tau)` with :math:`\tau(z)` fixed by
    :math:`\sum_{i\in S}\hat p_i = 1`.  Differentiating, with
    :math:`s_i = 1/\omega''(\hat p_i)` on :math:`S` and 0 off it:
    :math:`d\hat p_i = s_i\,(dz_i - d\tau)` and
    :math:`0 = \sum_i d\hat p_i` give
    :math:`d\tau = \sum_j s_j dz_j / \sum_j s_j`, so

    .. math::

        \frac{\partial\hat p}{\partial z} = \operatorname{diag}(s) - \frac{s s^\top}{\sum_j s_j},
        \qquad \bar z = s \odot g - s\,\frac{\langle s, g\rangle}{\sum_j s_j}

    for a cotangent :math:`g` (the Jacobian is symmetric).  A row of all
    :math:`-\infty` maps to NaN (no point of the simplex maximises
    :math:`\langle z, p\rangle - \Omega(p)`), with gradient 0.
    """

    differentiable = ("x",)
    regulariser: ClassVar[Regulariser]

    def forward(self, x: Any, *, axis: int = -1) -> tuple[Any, _MapResiduals]:
        xp, z, axis, dtype = prepare_along_axis(x, axis)
        zhat, empty = _shift(z, xp=xp)
        p = self.regulariser.project(zhat, xp=xp)
        s = self.regulariser.jacobian_weights(p, xp=xp)
        s = xp.where(empty, xp.zeros_like(s), s)
        p = xp.moveaxis(xp.where(empty, xp.full_like(p, xp.nan), p), -1, axis)
        res = _MapResiduals(
            xp=xp, value_shape=tuple(p.shape), compute_dtype=z.dtype, axis=axis, dtype=dtype, s=s
        )
        return xp.astype(p, dtype), res

    def backward(self, residuals: _MapResiduals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = xp.moveaxis(prepare_cotangent(r, cotangent, r.s), r.axis, -1)
        total = xp.sum(r.s, axis=-1, keepdims=True)
        safe_total = xp.where(total == 0, xp.ones_like(total), total)
        grad = r.s * g - r.s * (xp.sum(r.s * g, axis=-1, keepdims=True) / safe_total)
        return {"x": xp.astype(xp.moveaxis(grad, -1, r.axis), r.dtype, copy=False)}


# ---------------------------------------------------------------- the variants


class SparsemaxLoss(FenchelYoungLoss):
    r"""Sparsemax loss (Martins & Astudillo, 2016): the Fenchel–Young loss of sparsemax.

    ``sparsemax_loss(logits, labels, *, axis=-1, ignore_index=None,
    reduction="none")``

    With :math:`\Omega(p) = \tfrac12\|p\|^2 - \tfrac12` on the simplex,
    :math:`\hat p = \operatorname{sparsemax}(z) = [z - \tau]_+` (the
    Euclidean projection onto the simplex) and

    .. math::

        L(z; t) = \langle\hat p - e_t, z\rangle + \tfrac12\bigl(1 - \|\hat p\|^2\bigr)
        = -z_t + \tfrac12\sum_{j\in S}\bigl(z_j^2 - \tau^2\bigr) + \tfrac12 ,

    :math:`S` the support of :math:`\hat p` (the second form is the paper's).
    :math:`L \ge 0`, and :math:`L = 0` exactly when :math:`z_t \ge 1 +
    \max_{c\ne t} z_c` (a margin, unlike cross-entropy).

    Parameters
    ----------
    logits : array, real floating, shape ``[..., C, ...]``
        The C classes lie along ``axis``.
    labels : integer array
        ``logits.shape`` without ``axis``; entries in ``[0, C)`` or
        ``ignore_index``.
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
        Integer or boolean logits; non-integer labels or ``ignore_index``.
    ValueError
        Labels out of range or of the wrong shape; a bad ``axis`` or
        ``reduction``.

    Notes
    -----
    **Projection.**  Sort :math:`\hat z = z - \max z` descending,
    :math:`u_1 \ge \dots \ge u_C`; the support size is
    :math:`k^* = \max\{k : 1 + k u_k > \sum_{j\le k}u_j\}` and
    :math:`\tau = (\sum_{j\le k^*}u_j - 1)/k^*`; :math:`\hat p = [\hat z - \tau]_+`.

    **Value.**  :math:`\Omega^*(z) = \langle z, \hat p\rangle - \tfrac12\|\hat p\|^2 + \tfrac12`
    and :math:`\Omega(e_t) = 0`, so
    :math:`L = \langle\hat p, \hat z\rangle - \hat z_t + \tfrac12(1 - \|\hat p\|^2)`.

    **Gradient**, step by step: :math:`\nabla\Omega^*(z) = \hat p` (Danskin:
    :math:`\hat p` maximises :math:`\langle z, p\rangle - \Omega(p)` over the
    simplex, so the variation of :math:`p` contributes nothing), and
    :math:`\nabla_z(-z_t) = -e_t`:

    .. math:: \nabla_z L = \operatorname{sparsemax}(z) - e_t ,

    continuous in :math:`z` (the loss is :math:`C^1`, piecewise quadratic).
    See :class:`FenchelYoungLoss` for cotangents, reductions and edge values.

    References
    ----------
    A. F. T. Martins, R. F. Astudillo, "From Softmax to Sparsemax: A Sparse
    Model of Attention and Multi-Label Classification", ICML 2016.
    M. Blondel, A. F. T. Martins, V. Niculae, "Learning with Fenchel-Young
    Losses", JMLR 21(35), 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from refsoftmax.fenchel_young import sparsemax_loss
    >>> z = np.array([[1.0, 0.5, -1.0]])            # tau = 0.25, p = [0.75, 0.25, 0]
    >>> loss, grads = sparsemax_loss.value_and_grad(z, np.array([0]))
    >>> loss.round(12).tolist()                     # -0.125 + (1 - 0.625) / 2
    [0.0625]
    >>> grads["logits"].round(12).tolist()          # p - e_t
    [[-0.25, 0.25, 0.0]]
    """

    name = "sparsemax_loss"
    regulariser = TsallisSparsemax()


class Entmax15Loss(FenchelYoungLoss):
    r"""1.5-entmax loss (Peters et al., 2019): the Fenchel–Young loss of 1.5-entmax.

    ``entmax15_loss(logits, labels, *, axis=-1, ignore_index=None,
    reduction="none")``

    With the Tsallis regulariser :math:`\Omega(p) = \frac{\sum_i p_i^{3/2} - 1}{0.75}`
    (:math:`\alpha = 1.5`, :math:`\alpha(\alpha-1) = 0.75`, the ``entmax``
    package's definition), :math:`\hat p = \operatorname{entmax}_{1.5}(z) =
    [z/2 - \tau]_+^2` and

    .. math::

        L(z; t) = \langle\hat p - e_t, z\rangle + \frac{1 - \sum_i \hat p_i^{3/2}}{0.75} .

    Parameters
    ----------
    logits : array, real floating, shape ``[..., C, ...]``
        The C classes lie along ``axis``.
    labels : integer array
        ``logits.shape`` without ``axis``; entries in ``[0, C)`` or
        ``ignore_index``.
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
        Integer or boolean logits; non-integer labels or ``ignore_index``.
    ValueError
        Labels out of range or of the wrong shape; a bad ``axis`` or
        ``reduction``.

    Notes
    -----
    **Projection** (exact, sort-based; Peters et al., 2019, Alg. 2).  The
    maximiser of :math:`\langle z, p\rangle - \Omega(p)` satisfies, on its
    support, :math:`z_i - \tfrac{1.5}{0.75}\hat p_i^{1/2} = \text{const}`, i.e.
    :math:`\hat p_i = (z_i/2 - \tau)^2`.  With :math:`u` the sorted
    :math:`\hat z/2`, for a support of the :math:`k` largest,
    :math:`\sum_{j\le k}(u_j - \tau)^2 = 1` is a quadratic in :math:`\tau`
    whose smaller root is :math:`\tau_k = M_k - \sqrt{\delta_k}` with
    :math:`M_k` the mean of :math:`u_{1..k}` and
    :math:`\delta_k = (1 - \sum_{j\le k}(u_j - M_k)^2)/k`; the support size is
    :math:`k^* = \#\{k : \tau_k \le u_k\}` (see :class:`TsallisEntmax15`).

    **Value.**  :math:`\Omega(e_t) = 0`, so
    :math:`L = \langle\hat p, \hat z\rangle - \hat z_t + (1 - \sum_i\hat p_i^{3/2})/0.75`.

    **Gradient**, step by step: :math:`\nabla\Omega^*(z) = \hat p` (Danskin),
    :math:`\nabla_z(-z_t) = -e_t`, :math:`\Omega(e_t)` is constant:

    .. math:: \nabla_z L = \operatorname{entmax}_{1.5}(z) - e_t .

    See :class:`FenchelYoungLoss` for cotangents, reductions and edge values.

    References
    ----------
    B. Peters, V. Niculae, A. F. T. Martins, "Sparse Sequence-to-Sequence
    Models", ACL 2019.
    M. Blondel, A. F. T. Martins, V. Niculae, "Learning with Fenchel-Young
    Losses", JMLR 21(35), 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from refsoftmax.fenchel_young import entmax15_loss
    >>> z = np.array([[0.0, -0.4, -2.0]])           # tau = -0.8: p = [0.8^2, 0.6^2, 0]
    >>> loss, grads = entmax15_loss.value_and_grad(z, np.array([0]))
    >>> bool(np.isclose(loss[0], -0.144 + (1 - 0.728) / 0.75))   # = 82/375
    True
    >>> grads["logits"].round(12).tolist()          # p - e_t
    [[-0.36, 0.36, 0.0]]
    """

    name = "entmax15_loss"
    regulariser = TsallisEntmax15()


class Sparsemax(FenchelYoungProjection):
    r"""``sparsemax(x, *, axis=-1)``: Euclidean projection onto the simplex along ``axis``.

    .. math::

        \operatorname{sparsemax}(x) = \operatorname*{arg\,min}_{p\in\Delta}\|p - x\|^2
        = [x - \tau(x)]_+ ,

    the prediction map of :class:`SparsemaxLoss`.  Sparse: every class with
    :math:`x_i \le \tau` gets exactly 0.

    Parameters
    ----------
    x : array, real floating
    axis : int
        The axis that is mapped onto the simplex.

    Returns
    -------
    array
        ``x.shape``, in ``x``'s dtype (float16/bfloat16 computed in float32),
        nonnegative, summing to 1 along ``axis``.  ``backward`` returns
        ``{"x": ...}``.

    Raises
    ------
    TypeError
        Integer or boolean ``x``.
    ValueError
        A 0-d ``x`` or a bad ``axis``.

    Notes
    -----
    **Forward**: :math:`\tau` from the sorted row, see :class:`TsallisSparsemax`.

    **Backward.**  On the support :math:`S`, :math:`p_i = x_i - \tau`
    with :math:`\sum_{i\in S}p_i = 1`, so :math:`\partial\tau/\partial x_j
    = [j\in S]/|S|` and :math:`\partial p_i/\partial x_j = [i\in S]
    ([i=j] - [j\in S]/|S|)`; off the support :math:`p_i = 0` locally.  For a
    cotangent :math:`g`:

    .. math:: \bar x_j = [j\in S]\,\Bigl(g_j - \frac{1}{|S|}\sum_{i\in S}g_i\Bigr) ,

    the :class:`FenchelYoungProjection` formula with :math:`s = 1_S`.
    Non-differentiable where a class enters or leaves the support.

    Examples
    --------
    >>> import numpy as np
    >>> from refsoftmax.fenchel_young import sparsemax
    >>> p, grads = sparsemax.value_and_grad(
    ...     np.array([1.0, 0.5, -1.0]), cotangent=np.array([1.0, 0.0, 0.0]))
    >>> p.round(12).tolist()
    [0.75, 0.25, 0.0]
    >>> grads["x"].round(12).tolist()               # g - mean_S(g) on S = {0, 1}
    [0.5, -0.5, 0.0]
    """

    name = "sparsemax"
    regulariser = TsallisSparsemax()


class Entmax15(FenchelYoungProjection):
    r"""``entmax15(x, *, axis=-1)``: 1.5-entmax along ``axis``.

    .. math::

        \operatorname{entmax}_{1.5}(x) = \operatorname*{arg\,max}_{p\in\Delta}
        \langle x, p\rangle - \frac{\sum_i p_i^{3/2} - 1}{0.75}
        = [x/2 - \tau(x)]_+^2 ,

    the prediction map of :class:`Entmax15Loss`: between softmax
    (:math:`\alpha \to 1`) and sparsemax (:math:`\alpha = 2`), sparse.

    Parameters
    ----------
    x : array, real floating
    axis : int
        The axis that is mapped onto the simplex.

    Returns
    -------
    array
        ``x.shape``, in ``x``'s dtype (float16/bfloat16 computed in float32),
        nonnegative, summing to 1 along ``axis``.  ``backward`` returns
        ``{"x": ...}``.

    Raises
    ------
    TypeError
        Integer or boolean ``x``.
    ValueError
        A 0-d ``x`` or a bad ``axis``.

    Notes
    -----
    **Forward**: :math:`\tau` from the sorted row, see :class:`TsallisEntmax15`.

    **Backward.**  Let :math:`s_i = \sqrt{p_i} = [x_i/2 - \tau]_+`.  On the
    support, :math:`dp_i = 2 s_i\,(dx_i/2 - d\tau) = s_i\,(dx_i - 2\,d\tau)`;
    :math:`\sum_i dp_i = 0` gives :math:`2\,d\tau = \sum_j s_j dx_j / \sum_j s_j`,
    and off the support :math:`s_i = 0`.  Hence

    .. math::

        \frac{\partial p}{\partial x} = \operatorname{diag}(s) - \frac{s s^\top}{\sum_j s_j},\qquad
        \bar x = s\odot g - s\,\frac{\sum_j s_j g_j}{\sum_j s_j}

    for a cotangent :math:`g` (symmetric Jacobian).  Non-differentiable
    where a class enters or leaves the support (the Jacobian is continuous
    there, :math:`s_i \to 0`, but not differentiable).

    Examples
    --------
    >>> import numpy as np
    >>> from refsoftmax.fenchel_young import entmax15
    >>> p, grads = entmax15.value_and_grad(
    ...     np.array([0.0, -0.4, -2.0]), cotangent=np.array([1.0, 0.0, 0.0]))
    >>> p.round(12).tolist()                        # s = sqrt(p) = [0.8, 0.6, 0]
    [0.64, 0.36, 0.0]
    >>> (grads["x"] * 35).round(10).tolist()        # s*g - s <s,g>/sum(s) = [12, -12, 0]/35
    [12.0, -12.0, 0.0]
    """

    name = "entmax15"
    regulariser = TsallisEntmax15()


sparsemax_loss = SparsemaxLoss()
entmax15_loss = Entmax15Loss()
sparsemax = Sparsemax()
entmax15 = Entmax15()

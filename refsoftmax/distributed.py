r"""Cross-entropy with the class axis sharded over a ``torch.distributed`` process group.

Large-vocabulary training splits the logits along the classes: rank :math:`k` of a group of
:math:`R` holds the contiguous block :math:`[o_k, o_k + C_k)` of the :math:`C = \sum_k C_k`
classes, in rank order, blocks of any (even zero) size — the layout of Megatron-core's and
fairscale's vocab-parallel cross-entropy and of a ``Shard(-1)`` DTensor.  Every rank passes
its local logits ``[..., C_k]`` and the *same* labels ``[...]`` (global class indices).

**Forward: three numbers per row cross the group**, in two all-reduces (a third with label
smoothing), and nothing of size C:

1. :math:`m = \max_k m_k` (all-reduce max) — the global row maximum of the (capped) logits;
2. with :math:`e_c = e^{\tilde z_c - m}` computed locally to ~1 ulp (the shift's rounding
   error kept, :func:`refsoftmax._shifted.shifted_exp`), one all-reduce sum of
   :math:`(r_k, n_k, \tilde z_t, e_t)`: the local sum of :math:`e_c` over the classes *not*
   at the maximum, the local number of classes at the maximum, and the target's logit and
   exponential from the rank that owns the target (0 elsewhere).  Then
   :math:`r = \sum_k r_k + \sum_k n_k - 1` is :math:`s - 1` summed without cancellation
   (exactly as :func:`refsoftmax._shifted.shift_rows` does on one process), and
   :math:`-\log p_t = \operatorname{log1p}(r) - (\tilde z_t - m)`, the difference
   :math:`\tilde z_t - m` taken with its exact error (TwoSum);
3. label smoothing adds :math:`\sum_c \sigma_c(-\log p_c)`, a sum of non-negative local terms
   (one more all-reduce sum).

The loss is the same on every rank.  **Backward: local, hand-derived, no communication.**
Rank :math:`k`'s gradient block is the dense gradient's columns
:math:`[o_k, o_k + C_k)`: :math:`g\,((\kappa + \sum_c\sigma_c + 2\lambda\log Z)\,p_c -
\kappa\,\delta_{ct} - \sigma_c)` with :math:`p_c = e_c/s` local, the target's
:math:`p_t - 1` as :math:`-(s - e_t)/s` on the rank that owns it, times
:math:`\operatorname{sech}^2(z_c/c)` with a soft-cap.  The concatenation of the blocks is
:func:`refsoftmax.sparse_softmax_cross_entropy`'s gradient (``tests/test_distributed.py``
checks it to 1e-12 relative in float64 for world sizes 1–4 and uneven blocks).

Runs on any backend ``torch.distributed`` runs on (gloo on the CPU, NCCL on GPUs); the
collectives live in :mod:`refsoftmax.backends.torch` (``all_reduce``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refsoftmax._arrays import resolve
from refsoftmax._cross_entropy import check_common_options, safe_mul
from refsoftmax._dtypes import check_integer, compute_dtype
from refsoftmax._labels import class_indices
from refsoftmax._logit_transforms import check_logit_softcap, check_z_loss, soft_cap
from refsoftmax._protocol import Function, Residuals, prepare_cotangent
from refsoftmax._reduction import reduce, reduce_backward
from refsoftmax._shifted import shifted_exp
from refsoftmax._sparse_call import example_weights
from refsoftmax._validation import check_class_weights

__all__ = ["ShardedSparseSoftmaxCrossEntropy", "sparse_softmax_cross_entropy"]


@dataclass(kw_only=True)
class _Residuals(Residuals):
    logits_dtype: Any
    reduction: str
    p: Any  # local softmax block                                   [..., C_k]
    owner: Any  # this rank holds the target (and the row counts)   [...]
    local_t: Any  # the target's local column (0 where not owned)   [...]
    complement: Any  # 1 - p_t                                       [...]
    kappa: Any  # (1 - ε) w_t, 0 where ignored                       [...]
    smooth: Any  # σ_c of the local classes, or None                 [..., C_k]
    smooth_total: Any  # Σ_c σ_c over all classes                     [...]
    z_factor: Any  # 2 λ log Z (0 where ignored), or None             [...]
    slope: Any  # sech²(z/c) with a soft-cap, or None                 [..., C_k]
    nan_rows: Any  # rows with a NaN logit on some rank               [...]
    losses: Any
    denominator: Any


class ShardedSparseSoftmaxCrossEntropy(Function):
    r"""Sparse softmax cross-entropy of logits sharded along the classes (see the module docstring).

    ``sparse_softmax_cross_entropy(local_logits, labels, *, group=None,
    ignore_index=None, class_weights=None, label_smoothing=0.0, reduction="none",
    mean_denominator="weights", empty_mean="nan", z_loss=0.0, logit_softcap=None)``

    Parameters
    ----------
    local_logits : torch tensor ``[..., C_k]``
        This rank's block of classes (the last axis), in rank order.
    labels : integer tensor ``[...]``
        Global class indices in ``[0, C)`` or ``ignore_index``; the same on every rank.
    group : torch.distributed ProcessGroup, optional
        Default: the default group.
    class_weights : tensor ``[C]``, optional
        The weights of *all* classes (the same on every rank).
    ignore_index, label_smoothing, reduction, mean_denominator, empty_mean, z_loss, logit_softcap
        As :func:`refsoftmax.sparse_softmax_cross_entropy` (label smoothing ``"uniform"``
        over all C classes, ``class_weighting="per_class"``).

    Returns
    -------
    The loss (per example, or reduced), identical on every rank.  ``backward`` returns
    ``{"local_logits": this rank's gradient block}``.

    Raises
    ------
    RuntimeError
        ``torch.distributed`` is not initialised.
    TypeError, ValueError
        As the dense loss; a label outside ``[0, C)`` names the global C.
    """

    name = "distributed.sparse_softmax_cross_entropy"
    differentiable = ("local_logits",)

    def forward(
        self,
        local_logits: Any,
        labels: Any,
        *,
        group: Any = None,
        ignore_index: int | None = None,
        class_weights: Any = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
        mean_denominator: str = "weights",
        empty_mean: str = "nan",
        z_loss: float = 0.0,
        logit_softcap: float | None = None,
    ) -> tuple[Any, _Residuals]:
        from refsoftmax.backends import torch as collectives

        eps = check_common_options(reduction, label_smoothing, "uniform", mean_denominator, empty_mean)
        lam = check_z_loss(z_loss)
        cap = check_logit_softcap(logit_softcap)
        xp, arrays = resolve(local_logits=local_logits, labels=labels, class_weights=class_weights)
        z, t = arrays["local_logits"], arrays["labels"]
        dtype = compute_dtype(xp, z, "local_logits")
        check_integer(xp, t, "labels")
        if z.ndim == 0 or tuple(t.shape) != tuple(z.shape[:-1]):
            msg = (f"labels must have local_logits' shape without the last (class) axis, "
                   f"{tuple(z.shape[:-1])}, got {tuple(t.shape)}")
            raise ValueError(msg)
        rank, size = collectives.group_rank_and_size(group)

        def all_sum(x: Any) -> Any:
            return collectives.all_reduce(x, "sum", group)

        # the blocks' sizes and this rank's offset o_k (one small all-reduce)
        sizes = xp.zeros((size,), dtype=xp.float64, device=z.device)
        sizes[rank] = float(z.shape[-1])
        sizes = [int(v) for v in all_sum(sizes).tolist()]
        offset, c_local, num_classes = sum(sizes[:rank]), z.shape[-1], sum(sizes)
        if num_classes == 0:
            msg = "local_logits hold no class on any rank of the group"
            raise ValueError(msg)
        target, valid_b = class_indices(xp, t, num_classes, name="labels", ignore_index=ignore_index)
        valid = xp.astype(valid_b, dtype)
        w = None if arrays["class_weights"] is None else check_class_weights(
            xp, arrays["class_weights"], num_classes, dtype)
        w_t, denominator = example_weights(xp, w, target, valid, reduction, mean_denominator)

        z = xp.astype(z, dtype)
        slope = None
        if cap is not None:
            z, slope = soft_cap(z, cap, xp=xp)
        nan_rows = collectives.all_reduce(xp.astype(xp.any(xp.isnan(z), axis=-1), dtype), "max", group) > 0
        z = xp.where(xp.isnan(z), xp.full_like(z, -xp.inf), z)  # NaN rows are set NaN at the end
        neg_inf = xp.full(tuple(z.shape[:-1]), -xp.inf, dtype=dtype, device=z.device)
        m_local = xp.max(z, axis=-1) if c_local else neg_inf
        m = collectives.all_reduce(m_local, "max", group)
        limit = m == xp.inf  # +inf logits: the limit rows of shift_rows (0 there, -inf elsewhere)
        if bool(xp.any(limit)):
            lim = xp.expand_dims(limit, axis=-1)
            z = xp.where(lim, xp.where(z == xp.inf, xp.zeros_like(z), xp.full_like(z, -xp.inf)), z)
            m = xp.where(limit, xp.zeros_like(m), m)
        empty = m == -xp.inf
        m = xp.where(empty, xp.zeros_like(m), m)
        mm = xp.expand_dims(m, axis=-1)
        zhat, err, e = shifted_exp(z, mm, xp=xp)
        at_max = zhat == 0
        rest_local = xp.sum(xp.where(at_max, xp.zeros_like(e), e), axis=-1)
        ties_local = xp.sum(xp.astype(at_max, dtype), axis=-1)
        local_t = target - offset
        owner = valid_b & (local_t >= 0) & (local_t < c_local)
        local_t = xp.where(owner, local_t, xp.zeros_like(local_t))
        if c_local:
            idx = xp.expand_dims(local_t, axis=-1)
            zt_raw = xp.take_along_axis(z, idx, axis=-1)[..., 0]
            et_raw = xp.take_along_axis(e, idx, axis=-1)[..., 0]
        else:
            zt_raw = et_raw = xp.zeros_like(m)
        minus_inf_t = owner & (zt_raw == -xp.inf)  # the target's logit is -inf: loss +inf
        zt_local = xp.where(owner & ~minus_inf_t, zt_raw, xp.zeros_like(m))
        et_local = xp.where(owner, et_raw, xp.zeros_like(m))
        t_masked = collectives.all_reduce(xp.astype(minus_inf_t, dtype), "max", group) > 0
        totals = all_sum(xp.stack([rest_local, ties_local, zt_local, et_local], axis=0))
        r = totals[0] + (totals[1] - 1.0)
        r = xp.where(empty, xp.zeros_like(r), r)
        s = xp.where(empty, xp.zeros_like(r), 1.0 + r)
        z_t, e_t = totals[2], totals[3]
        # ẑ_t = z_t - m with its exact error (TwoSum): -log p_t = log1p(r) - ẑ_t - δ_t
        zhat_t = z_t - m
        b_virtual = zhat_t - z_t
        err_t = (z_t - (zhat_t - b_virtual)) + (-m - b_virtual)
        log_s = xp.log1p(r)
        neg_log_p_t = (log_s - zhat_t) - err_t
        neg_log_p_t = xp.where(empty | t_masked, xp.full_like(m, xp.inf), neg_log_p_t)
        safe_s = xp.where(empty, xp.ones_like(s), s)
        complement = xp.where(empty | t_masked, xp.ones_like(s),
                              (r - xp.expm1(zhat_t) - err_t * e_t) / safe_s)

        kappa = (1.0 - eps) * w_t
        losses = safe_mul(kappa, neg_log_p_t, xp=xp)
        smooth = None
        smooth_total = xp.zeros_like(m)
        if eps > 0:
            w_local = (xp.ones((c_local,), dtype=dtype, device=z.device) if w is None
                       else w[offset:offset + c_local])
            smooth = (eps / num_classes) * w_local * xp.expand_dims(valid, axis=-1)
            neg_log_p = (xp.expand_dims(log_s, axis=-1) - zhat) - err  # >= 0, +inf on -inf logits
            neg_log_p = xp.where(xp.expand_dims(empty, -1), xp.full_like(neg_log_p, xp.inf), neg_log_p)
            losses = losses + all_sum(xp.sum(safe_mul(smooth, neg_log_p, xp=xp), axis=-1))
            w_sum = float(num_classes) if w is None else xp.sum(w)
            smooth_total = (eps / num_classes) * w_sum * valid
        z_factor = None
        if lam > 0:
            log_z = xp.where(empty, xp.full_like(m, -xp.inf), m + log_s)
            log_z = xp.where(limit, xp.full_like(m, xp.inf), log_z)
            losses = losses + safe_mul(lam * valid, log_z * log_z, xp=xp)
            z_factor = safe_mul(2.0 * lam * valid, log_z, xp=xp)
        losses = xp.where(nan_rows & valid_b, xp.full_like(losses, xp.nan), losses)

        value = reduce(losses, denominator, reduction, empty_mean, xp=xp)
        p = e / xp.expand_dims(safe_s, axis=-1)
        res = _Residuals(
            xp=xp, value_shape=tuple(value.shape), compute_dtype=dtype,
            logits_dtype=arrays["local_logits"].dtype, reduction=reduction, p=p, owner=owner,
            local_t=local_t, complement=complement, kappa=kappa, smooth=smooth,
            smooth_total=smooth_total, z_factor=z_factor, slope=slope, nan_rows=nan_rows & valid_b,
            losses=losses, denominator=denominator,
        )
        return xp.astype(value, arrays["local_logits"].dtype), res

    def backward(self, residuals: _Residuals, cotangent: Any) -> dict[str, Any]:
        r, xp = residuals, residuals.xp
        g = prepare_cotangent(r, cotangent, r.p)
        g_loss, _ = reduce_backward(g, r.losses, r.denominator, r.reduction, xp=xp)
        coef = r.kappa + r.smooth_total
        if r.z_factor is not None:
            coef = coef + r.z_factor
        grad = safe_mul(xp.expand_dims(coef, axis=-1), r.p, xp=xp)
        if r.smooth is not None:
            grad = grad - r.smooth
        if r.p.shape[-1]:
            # the target's column, on its owner: κ (p_t - 1) = -κ (1 - p_t), plus the rest's share
            idx = xp.expand_dims(r.local_t, axis=-1)
            p_t = xp.take_along_axis(r.p, idx, axis=-1)[..., 0]
            others = r.smooth_total + (0.0 if r.z_factor is None else r.z_factor)
            spike = -safe_mul(r.kappa, r.complement, xp=xp) + safe_mul(others, p_t, xp=xp)
            if r.smooth is not None:
                spike = spike - xp.take_along_axis(r.smooth, idx, axis=-1)[..., 0]
            columns = xp.arange(r.p.shape[-1], device=r.p.device, dtype=r.local_t.dtype)
            at_t = (idx == columns) & xp.expand_dims(r.owner, axis=-1)
            grad = xp.where(at_t, xp.expand_dims(spike, axis=-1), grad)
        grad = safe_mul(xp.expand_dims(g_loss, axis=-1), grad, xp=xp)
        if r.slope is not None:
            grad = grad * r.slope
        grad = xp.where(xp.expand_dims(r.nan_rows, -1), xp.full_like(grad, xp.nan), grad)
        return {"local_logits": xp.astype(grad, r.logits_dtype)}


sparse_softmax_cross_entropy = ShardedSparseSoftmaxCrossEntropy()

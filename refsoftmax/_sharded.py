r"""The engine of the class-sharded losses (:mod:`refsoftmax.distributed`).

Rank :math:`k` of a group of :math:`R` holds the contiguous block
:math:`[o_k, o_k + C_k)` of the :math:`C = \sum_k C_k` classes, in rank order (blocks of any
size, even 0).  Everything a loss needs about a whole row is one of three kinds of number,
each obtained with one all-reduce and nothing of size C:

* the row maximum :math:`m = \max_k m_k` (all-reduce max), after which every rank computes
  its block of :math:`\hat z_c = z_c - m`, the exact error :math:`\delta_c` and
  :math:`e_c = e^{\hat z_c + \delta_c}` locally, to ~1 ulp (:func:`refsoftmax._shifted.shifted_exp`);
* sums of non-negative local terms (all-reduce sum): :math:`r = s - 1` as the sum of
  :math:`e_c` over the classes not at the maximum plus (number at the maximum − 1) —
  exactly :func:`refsoftmax._shifted.shift_rows`' cancellation-free form — and the losses'
  :math:`\sum_c q_c(-\log p_c)`;
* the first class at the maximum (all-reduce min of global indices).

:func:`shard_rows` returns the same :class:`refsoftmax._shifted.Rows` as ``shift_rows``
with the local blocks of :math:`\hat z, \delta, e` and the row quantities
:math:`m, r, s` of the whole row, so ``neg_log_probs``, ``probabilities`` and
``complement_at`` work on a block unchanged.  NaN anywhere in a row makes the row NaN on
every rank; a :math:`+\infty` logit gives the limit rows of ``shift_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._concrete import may_hold
from refsoftmax._shifted import Rows, shifted_exp

__all__ = ["Layout", "allowed_count", "first_at_max", "layout", "shard_rows", "sum_over_others"]


@dataclass(frozen=True)
class Layout:
    """Where this rank's block lies: ``offset`` o_k, ``size`` C_k, ``num_classes`` C."""

    group: Any
    rank: int
    world: int
    sizes: tuple[int, ...]

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def size(self) -> int:
        return self.sizes[self.rank]

    @property
    def num_classes(self) -> int:
        return sum(self.sizes)

    def all_sum(self, x: Any) -> Any:
        from refsoftmax.backends import torch as collectives

        return collectives.all_reduce(x, "sum", self.group)

    def all_max(self, x: Any) -> Any:
        from refsoftmax.backends import torch as collectives

        return collectives.all_reduce(x, "max", self.group)

    def all_min(self, x: Any) -> Any:
        from refsoftmax.backends import torch as collectives

        return collectives.all_reduce(x, "min", self.group)

    def per_rank(self, x: Any, *, xp: Any) -> Any:
        """``[R, *x.shape]``: every rank's ``x`` (one all-reduce sum of a slot per rank)."""
        slots = xp.zeros((self.world, *x.shape), dtype=x.dtype, device=device_of(x))
        slots[self.rank, ...] = x
        return self.all_sum(slots)


def layout(xp: Any, z: Any, group: Any, name: str) -> Layout:
    """The blocks' sizes (one small all-reduce); ``ValueError`` when no rank holds a class."""
    from refsoftmax.backends import torch as collectives

    rank, world = collectives.group_rank_and_size(group)
    sizes = xp.zeros((world,), dtype=xp.float64, device=device_of(z))
    sizes[rank] = float(z.shape[-1])
    out = Layout(group, rank, world, tuple(int(v) for v in collectives.all_reduce(sizes, "sum", group).tolist()))
    if out.num_classes == 0:
        msg = f"{name} hold no class on any rank of the group"
        raise ValueError(msg)
    return out


def shard_rows(z: Any, allowed: Any | None, lay: Layout, *, xp: Any) -> tuple[Rows, Any]:
    r""":func:`refsoftmax._shifted.shift_rows` of the whole row, from this rank's block ``z``.

    ``allowed`` (this rank's block of ``where``) leaves classes out as :math:`-\infty`.
    Two all-reduces: the maximum (with a NaN flag), then the sum of :math:`r`'s two parts.
    Also returns ``limit`` ``[..., 1]``: the rows with a :math:`+\infty` logit (whose
    log-sum-exp is :math:`+\infty`; ``Rows.m`` is 0 there).
    """
    neg_inf = xp.asarray(-xp.inf, dtype=z.dtype, device=device_of(z))
    if allowed is not None:
        z = xp.where(allowed, z, neg_inf)
    row = (*z.shape[:-1], 1)
    # NaN on any rank makes the row NaN everywhere (an all-reduce max need not propagate NaN):
    # one all-reduce max of (the local maximum without NaN, a NaN flag).  The local maximum
    # of a row with a NaN is NaN (max propagates it), so the flag costs no pass over the block.
    m_local = xp.max(z, axis=-1, keepdims=True) if z.shape[-1] else xp.full(
        row, -xp.inf, dtype=z.dtype, device=device_of(z))
    nan_local = xp.isnan(m_local)
    m_local = xp.where(nan_local, xp.full_like(m_local, -xp.inf), m_local)
    both = lay.all_max(xp.concat([m_local, xp.astype(nan_local, z.dtype)], axis=-1))
    m, nan_rows = both[..., :1], both[..., 1:] > 0
    limit = m == xp.inf  # a +inf logit somewhere: the limit rows (0 on the +inf entries, -inf elsewhere)
    if may_hold(xp, limit):
        z = xp.where(limit, xp.where(z == xp.inf, xp.zeros_like(z), neg_inf), z)
        m = xp.where(limit, xp.zeros_like(m), m)
    empty = (m == -xp.inf) & ~nan_rows  # a NaN row's flagged maximum is -inf, but it is NaN, not empty
    m = xp.where(empty, xp.zeros_like(m), m)
    m = xp.where(nan_rows, xp.full_like(m, xp.nan), m)  # NaN rows: every quantity NaN below
    zhat, err, e = shifted_exp(z, m, xp=xp)
    at_max = zhat == 0  # z == m exactly
    parts = xp.concat([xp.sum(xp.where(at_max, xp.zeros_like(e), e), axis=-1, keepdims=True),
                       xp.sum(xp.astype(at_max, z.dtype), axis=-1, keepdims=True)], axis=-1)
    parts = lay.all_sum(parts)
    # r = s - 1: every term except one copy of the maximum (exactly 1), summed directly
    rest = parts[..., :1] + (parts[..., 1:] - 1.0)
    rest = xp.where(empty, xp.zeros_like(rest), rest)
    rest = xp.where(nan_rows, xp.full_like(rest, xp.nan), rest)
    s = xp.where(empty, xp.zeros_like(rest), 1.0 + rest)
    return Rows(xp, m, zhat, err, e, rest, s), limit


def first_at_max(rows: Rows, lay: Layout, *, xp: Any) -> tuple[Any, Any]:
    """``(owner, local index)`` of the row's first most probable class (dense ``argmax`` of ẑ).

    ``owner`` ``[...]`` is true on the rank that holds it; the index is local there (0 elsewhere).
    """
    c = lay.size
    if c:
        local = xp.argmax(rows.zhat, axis=-1)
        best = xp.take_along_axis(rows.zhat, xp.expand_dims(local, axis=-1), axis=-1)[..., 0]
        at_top = best == 0  # this block reaches the row's maximum (ẑ = 0); false in NaN rows
        candidate = xp.where(at_top, xp.astype(local, xp.float64) + lay.offset,
                             xp.full(best.shape, float(lay.num_classes), dtype=xp.float64,
                                     device=device_of(best)))
    else:
        candidate = xp.full(tuple(rows.zhat.shape[:-1]), float(lay.num_classes), dtype=xp.float64,
                            device=device_of(rows.zhat))
    # the first rank (lowest global index) whose block reaches the global maximum ẑ = 0
    top = lay.all_min(candidate)
    top_local = xp.astype(top, xp.int64) - lay.offset
    owner = (top_local >= 0) & (top_local < c)
    return owner, xp.where(owner, top_local, xp.zeros_like(top_local))


def sum_over_others(t: Any, lay: Layout, *, xp: Any) -> Any:
    r""":math:`\sum_{j \ne c} t_j` over the whole row for every local class c (``t ≥ 0``).

    As the dense ``_sum_over_others``: (sum before c) + (sum after c), never "row sum minus
    own term"; the blocks of the other ranks enter through their block totals (one
    all-reduce of a slot per rank).
    """
    before = xp.cumulative_sum(t, axis=-1, include_initial=True)[..., :-1]
    after = xp.flip(xp.cumulative_sum(xp.flip(t, axis=-1), axis=-1, include_initial=True), axis=-1)[..., 1:]
    totals = lay.per_rank(xp.sum(t, axis=-1, keepdims=True), xp=xp)  # [R, ..., 1]
    zero = xp.zeros_like(totals[0])
    lower = sum((totals[k] for k in range(lay.rank)), start=zero)
    upper = sum((totals[k] for k in range(lay.rank + 1, lay.world)), start=zero)
    return (lower + before) + (after + upper)


def allowed_count(z: Any, allowed: Any | None, lay: Layout, *, xp: Any) -> Any:
    """K ``[..., 1]``: the number of allowed classes of the whole row (one all-reduce)."""
    a = xp.ones_like(z) if allowed is None else xp.astype(allowed, z.dtype)
    return lay.all_sum(xp.sum(a, axis=-1, keepdims=True))

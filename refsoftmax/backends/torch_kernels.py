r"""Optional fused PyTorch kernel: the array-API code's accuracy in a few passes over memory.

The array-API code (:mod:`refsoftmax._shifted`, :mod:`refsoftmax._sparse_ce`)
is the definition; this module computes the same quantities to the same
accuracy with in-place torch ops (no autograd: everything runs under
``torch.no_grad``), in one of two forms per row:

* **direct** (rows whose maximum :math:`m` lies in :math:`[0, M]`, :math:`M`
  keeping :math:`C e^{M}` finite: the common case).  The exponentials are taken
  of the logits themselves, :math:`e_c = e^{z_c}`.  Their arguments are exact,
  so there is no shift error to recover, and nothing underflows that the shifted
  form would keep (:math:`z_c - m \le z_c`).  With :math:`s = \sum_c e_c` and
  :math:`r = s/e^{m} - 1 \ge 1`:
  :math:`-\log p_t = \operatorname{log1p}(r) + (m - z_t)` (two non-negative
  terms), :math:`p_c = e_c/s`, and :math:`1 - p_t = (s - e_t)/s` with
  :math:`s - e_t \ge s/2` (as :math:`e_t \le e^{m} \le s/2`): no cancellation
  anywhere.  Four passes over the array: max, exp, sum, scale;
* **shifted** (every other row: a negative or huge maximum, NaN, ``-inf``
  logits, and rows with :math:`r < 1` — confident examples and near-ties —
  where :math:`r` must keep its relative accuracy): the arithmetic of
  :mod:`refsoftmax._shifted` itself — the shift's rounding error δ kept (TwoSum),
  :math:`e = e^{\hat z}(1 + \delta)`, :math:`\log s = \operatorname{log1p}(r)`
  with :math:`r` summed without the maximum's own 1 — in row blocks of about
  2 MiB so that its ~12 passes run in the caches.

Measured at 2048 × 32,000 float32 on 2 cores (``benchmarks/bench_sparse_ce.py``
inputs): the shifted form on the whole array as one block 0.71 s, in 2 MiB
blocks 0.22 s, the direct form 0.094 s (in 2 MiB blocks 0.12 s: with four
passes the per-call overhead of blocks outweighs their cache reuse).  On the
CPU the gradient is allocated by NumPy, which advises the kernel to back large
arrays with transparent huge pages: the first touch of 262 MB costs 42 ms
instead of 98 ms with torch's allocator (the tensor shares that memory,
``torch.from_numpy``).  torch's intra-op threads parallelise each op.

**Accuracy of float32 rows.**  The elementwise work is float32 (a float64 operand would
make torch convert every element: 30-40x slower), but every per-row quantity (the sum
:math:`s`, :math:`r`, :math:`-\log p_t`, :math:`s - e_t`, the row factor
:math:`g\kappa/s`) is float64, and :math:`s` is accumulated as float64 sums of float32
partial sums of 32 terms (:func:`_row_sums`).  A plain float32 sum of 6,000 terms was off
by 3.5 units of 2⁻²⁴ and put the gradient 4.6 ulp (direct form) and 5.1 ulp (shifted form)
from the exact value, above the 4.5-ulp bound; now 3.4 ulp (``docs/accuracy.md``, wide
rows), at the same speed within noise (0.124 s at 2048 × 32,000).

``tests/test_fused.py`` compares every result with the plain path and checks the bound on
vocabulary-wide rows, and the accuracy suite (``tests/accuracy``) measures this kernel
against mpmath.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fused_sparse_softmax_cross_entropy"]

#: Set to False to make refsoftmax ignore this module (tests compare both paths).
ENABLED = True
_BLOCK_BYTES = 1 << 21  # one [rows, C] buffer of the shifted form on the CPU
_SUM_CHUNK = 32  # float32 row sums: float32 partial sums of this many terms, added in float64


def _empty_like(z: Any) -> Any:
    """An uninitialised tensor like ``z``; on the CPU allocated by NumPy (huge pages)."""
    import numpy as np
    import torch

    if z.device.type != "cpu":
        return torch.empty_like(z)
    dtype = np.float32 if z.dtype == torch.float32 else np.float64
    return torch.from_numpy(np.empty(tuple(z.shape), dtype=dtype))


def _row_sums(e: Any) -> Any:
    """``Σ_c e`` per row of non-negative ``e`` ``[n, C]``, in float64 for float32 rows.

    A float32 row sum of 6,000 exponentials is off by up to 3.5 units of 2⁻²⁴ (relative), which
    put the float32 gradient 4.6 ulp from the exact one (``tests/test_fused.py``, wide rows).
    Here float32 sums of 32 neighbours (exact to ~1 unit) are added in float64: 1.1 units, for
    twice the time of one float32 sum (``torch.sum(dtype=float64)`` costs 30x).
    """
    import torch

    if e.dtype == torch.float64:
        return e.sum(dim=1)
    n, c = e.shape
    if c > 1 and e.stride(1) != 1:  # not reached: the kernel's arrays have contiguous rows
        e = e.contiguous()
    k = _SUM_CHUNK
    c0 = c - c % k
    parts = e.as_strided((n, c0 // k, k), (e.stride(0), k, 1)).sum(dim=2)  # a view of e
    s = parts.double().sum(dim=1)
    if c0 < c:
        s += e[:, c0:].double().sum(dim=1)
    return s


def _finish(out: Any, idx: Any, kb: Any, gb: Any, neg_log_p_t: Any, s: Any,
            complement: Any) -> Any:
    """Scale ``out`` (``e``) to the gradient ``g κ (p - onehot)``; return the losses ``κ (-log p_t)``.

    The per-row quantities (``kb``, ``gb``, ``neg_log_p_t``, ``s`` and ``complement``,
    :math:`s - e_t \\ge 0` computed without cancellation by the caller) are float64; ``out``'s dtype may be float32:
    the row factor is rounded to it once, so that the product is a same-dtype op (a float64
    factor makes torch convert every element: 40x slower).
    """
    import torch

    # 0 · anything = 0 (ignored rows), even where the row holds NaN
    losses = torch.where(kb == 0, torch.zeros_like(s), kb * neg_log_p_t)
    gk = gb * kb
    out.mul_((gk / s).to(out.dtype).unsqueeze(1))  # (g κ) p
    spike = -gk * (complement / s)  # g κ (p_t - 1)
    out.scatter_(1, idx, spike.to(out.dtype).unsqueeze(1))
    silent = gk == 0
    if bool(silent.any()):  # exactly 0 where g or κ is 0, even on NaN rows
        out.masked_fill_(silent.unsqueeze(1), 0.0)
    return losses


def _exp_shifted(zb: Any, m: Any, out: Any, b_virtual: Any, err: Any, *, masked: bool) -> None:
    """``out = fl(z - m)`` and ``err = δ = (z - m) - fl(z - m)`` exactly (TwoSum, 5 passes).

    ``masked``: the block may hold ``-inf`` logits, whose δ (``-inf - -inf``) is set to 0.
    """
    import torch

    torch.sub(zb, m, out=out)  # ẑ = fl(z - m)
    # TwoSum (Knuth): δ = (z - a') + (-m - b') with b' = ẑ - z, a' = ẑ - b', exactly
    torch.sub(out, zb, out=b_virtual)
    torch.sub(out, b_virtual, out=err)
    torch.sub(zb, err, out=err)
    torch.sub(-m, b_virtual, out=b_virtual)
    err.add_(b_virtual)
    if masked:
        err.masked_fill_(~torch.isfinite(out), 0.0)  # e = 0 there anyway


def _shifted_block(zb: Any, tb: Any, kb: Any, gb: Any, out: Any, scratch: tuple[Any, Any],
                   *, masked: bool = False) -> Any | None:
    """Losses of the rows ``zb`` (gradient into ``out``) by the shifted form; ``None`` on an infinite maximum."""
    import torch

    m = zb.amax(dim=1, keepdim=True)  # (amax: max with indices costs 6x more)
    if bool(torch.isinf(m).any()):  # an empty (all -inf) row, or a +inf logit
        return None
    b_virtual, err = scratch
    _exp_shifted(zb, m, out, b_virtual, err, masked=masked)
    idx = tb.unsqueeze(1)
    zhat_t = out.gather(1, idx).squeeze(1).double()
    err_t = err.gather(1, idx).squeeze(1).double()
    out.exp_().mul_(err.add_(1.0))  # e = e^{ẑ}(1 + δ); not e + e δ (subnormal e δ under FTZ)
    e_t = out.gather(1, idx).squeeze(1).double()
    s = _row_sums(out)
    if not masked and bool(torch.isnan(s).any()):  # -inf logits (δ NaN there), or a NaN row
        return _shifted_block(zb, tb, kb, gb, out, scratch, masked=True)
    r = s - 1.0  # r = s - 1 is as accurate as s while r >= 1 (s >= 2) ...
    small = r < 1.0
    if bool(small.any()):  # ... else summed without the maximum's own 1 (confident rows)
        rows = small.nonzero().squeeze(1)
        e_rows = out.index_select(0, rows)
        e_rows.scatter_(1, zb.index_select(0, rows).argmax(dim=1, keepdim=True), 0.0)
        r.index_copy_(0, rows, _row_sums(e_rows))
    s = 1.0 + r
    neg_log_p_t = torch.log1p(r) - zhat_t - err_t  # log s - (z_t - m): no cancellation
    # s - e_t = r - expm1(ẑ_t) - δ_t e_t: non-negative terms (see Rows.complement_at)
    return _finish(out, idx, kb, gb, neg_log_p_t, s, r - torch.expm1(zhat_t) - err_t * e_t)


def _shifted(z: Any, t: Any, kappa: Any, g: Any, grad: Any) -> Any | None:
    """The shifted form over ``z`` in row blocks of ``_BLOCK_BYTES``; losses, gradient into ``grad``."""
    import torch

    n, c = z.shape
    height = max(1, min(n, _BLOCK_BYTES // max(1, c * z.element_size())))
    if z.device.type != "cpu":
        height = max(1, n)  # one block on a GPU: per-call overhead dominates there
    losses = torch.empty((n,), dtype=torch.float64, device=z.device)
    scratch = [torch.empty((height, c), dtype=z.dtype, device=z.device) for _ in range(2)]
    for i in range(0, n, height):
        j = min(n, i + height)
        block = _shifted_block(z[i:j], t[i:j], kappa[i:j], g[i:j], grad[i:j],
                               (scratch[0][: j - i], scratch[1][: j - i]))
        if block is None:
            return None
        losses[i:j] = block
    return losses


def _loss_and_grad(z: Any, t: Any, kappa: Any, g: Any) -> tuple[Any, Any] | None:
    """Losses ``[N]`` and gradient ``[N, C]`` of rows ``z``; ``None`` if a row needs the general path."""
    import torch

    c = z.shape[1]
    grad = _empty_like(z)
    m = z.amax(dim=1)
    ceiling = math.log(torch.finfo(z.dtype).max) - math.log(c) - 1.0  # C e^m stays finite
    if not bool(((m >= 0) & (m <= ceiling)).all()):  # also NaN and infinite maxima
        losses = _shifted(z, t, kappa, g, grad)
        return None if losses is None else (losses, grad)
    torch.exp(z, out=grad)  # the direct form (module docstring)
    s = _row_sums(grad)  # float64 per-row quantities from here on
    m = m.double()
    r = s / torch.exp(m) - 1.0  # Σ_{c ≠ argmax} e^{z_c - m}
    idx = t.unsqueeze(1)
    e_t = grad.gather(1, idx).squeeze(1).double()
    neg_log_p_t = torch.log1p(r) + (m - z.gather(1, idx).squeeze(1).double())
    losses = _finish(grad, idx, kappa, g, neg_log_p_t, s, s - e_t)
    near = r < 1.0
    if bool(near.any()):  # r < 1 (confident rows, near-ties): the shifted form keeps r accurate
        rows = near.nonzero().squeeze(1)
        sub = torch.empty((int(rows.shape[0]), c), dtype=z.dtype, device=z.device)
        again = _shifted(z.index_select(0, rows), t.index_select(0, rows),
                         kappa.index_select(0, rows), g.index_select(0, rows), sub)
        if again is None:  # not reached: these rows have finite maxima
            return None
        grad.index_copy_(0, rows, sub)
        losses.index_copy_(0, rows, again)
    return losses, grad


def fused_sparse_softmax_cross_entropy(z: Any, target: Any, kappa: Any, g: Any) -> Any:
    """Per-example losses ``κ (log s - ẑ_t)`` and the VJP ``g (κ p - κ e_t)``.

    Same contract as :func:`refsoftmax.backends.numpy_kernels.fused_sparse_softmax_cross_entropy`:
    ``z`` logits ``[..., C]`` (float32/float64, any device); ``target``,
    ``kappa``, ``g``: ``[...]``.  Returns ``(losses, grad)`` or ``None`` when
    the kernel does not apply.
    """
    import torch

    if not ENABLED or z.dtype not in (torch.float32, torch.float64) or z.shape[-1] == 0:
        return None
    with torch.no_grad():
        c = z.shape[-1]
        result = _loss_and_grad(
            z.reshape(-1, c),
            target.reshape(-1).to(torch.int64),
            # per-row inputs in float64, as every per-row quantity (float32 rows: exact)
            kappa.reshape(-1).to(torch.float64),
            torch.broadcast_to(g, tuple(target.shape)).reshape(-1).to(torch.float64),
        )
    if result is None:
        return None
    losses, grad = result
    return losses.to(z.dtype).reshape(tuple(target.shape)), grad.reshape(tuple(z.shape))

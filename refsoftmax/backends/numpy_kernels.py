"""Optional fused NumPy kernels: the same numbers as the array-API code, faster.

The array-API code in ``refsoftmax/sparse_softmax_cross_entropy.py`` is the
definition.  This module only re-schedules that arithmetic for NumPy:

* **one pass over memory**: rows are processed in blocks of about 2 MiB, so
  max, shift, exp, sum and scale all run on a block while it sits in the
  caches; the logits are read once and the gradient written once.  (Smaller
  blocks fit L2 better but multiply the per-call overhead of the ~15 NumPy
  calls per block: at 2048 × 32,000 float32, 256 KiB blocks took 0.079 s,
  2 MiB blocks 0.057 s, measured with ``benchmarks/bench_sparse_ce.py``'s
  inputs on 2 threads);
* **in place**: float64 rows are shifted and exponentiated in the gradient
  buffer itself, float32 rows in one float64 block; with the two blocks
  holding the shift's rounding error (float64 only), no ``[N, C]`` temporary
  exists;
* **accurate** as the array-API path (:mod:`refsoftmax._shifted`): the
  shift's rounding error folded into the exponentials, ``log1p`` of ``s - 1``,
  and the target's ``p_t - 1`` without cancellation;
* **both cores**: NumPy releases the GIL inside its ufuncs, so row chunks run
  on a thread pool (``REFSOFTMAX_NUM_THREADS``, default ``os.cpu_count()``).

``tests/test_fused.py`` compares every result with the plain path.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["fused_sparse_softmax_cross_entropy", "num_threads"]

#: Set to False to make refsoftmax ignore this module (tests compare both paths).
ENABLED = True
_BLOCK_BYTES = 1 << 21
_pool: ThreadPoolExecutor | None = None


def num_threads() -> int:
    """Worker threads for the fused kernels: ``REFSOFTMAX_NUM_THREADS`` or the core count."""
    text = os.environ.get("REFSOFTMAX_NUM_THREADS", "")
    if text.strip():
        try:
            value = int(text)
        except ValueError as exc:
            msg = f"REFSOFTMAX_NUM_THREADS={text!r} is not an integer"
            raise ValueError(msg) from exc
        return max(1, value)
    return max(1, os.cpu_count() or 1)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers != workers:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refsoftmax")
    return _pool


def _rows(z: np.ndarray, t: np.ndarray, kappa: np.ndarray, g: np.ndarray,
          losses: np.ndarray, grad: np.ndarray, start: int, stop: int) -> bool:
    """Loss and gradient of rows [start, stop); False if a row needs the general path (±∞ maximum).

    The arithmetic of :mod:`refsoftmax._shifted`, in float64 block by block:
    ``log s = log1p(r)`` with ``r = s - 1`` summed without the maximum's own 1,
    and the target's ``p_t - 1`` as ``-(r - expm1(ẑ_t) - δ_t e_t)/s``.  The
    shift's rounding error δ: float32 logits are widened to float64, where
    ``z - m`` is exact to far below a float32 ulp (δ = 0 is accurate enough);
    float64 logits keep δ exactly by TwoSum.  The float32 gradient is rounded
    once, at the end.
    """
    c = z.shape[1]
    wide = z.dtype != np.float64
    step = max(1, _BLOCK_BYTES // (c * 8))
    height = min(step, stop - start)
    work = np.empty((height, c), dtype=np.float64) if wide else None
    err = None if wide else np.empty((height, c), dtype=np.float64)
    tmp = None if wide else np.empty((height, c), dtype=np.float64)
    for i in range(start, stop, step):
        j = min(i + step, stop)
        n = j - i
        rows = np.arange(n)
        tb = t[i:j]
        if work is None:
            src, wb = z[i:j], grad[i:j]
        else:
            src = wb = work[:n]
            np.copyto(wb, z[i:j])  # widen float32 -> float64 (exactly)
        top = src.argmax(axis=1)  # the first maximum (the first NaN in a NaN row)
        m = src[rows, top]
        if np.isinf(m).any():  # an empty (all -inf) row, or a +inf logit
            return False
        neg_m = -m[:, None]
        np.add(src, neg_m, out=wb)  # ẑ = z - m
        if err is not None and tmp is not None:
            # TwoSum: the exact error δ = (z - m) - ẑ (a -inf logit makes it NaN: see below)
            eb, tb_ = err[:n], tmp[:n]
            np.subtract(wb, src, out=tb_)  # b' = ẑ - z
            np.subtract(wb, tb_, out=eb)  # a' = ẑ - b'
            np.subtract(src, eb, out=eb)  # a - a'
            np.subtract(neg_m, tb_, out=tb_)  # b - b'
            eb += tb_  # δ
            masked = np.isnan(eb).any(axis=1) & ~np.isnan(m)  # rows with a -inf logit
            if masked.any():  # there ẑ = -inf, e = 0 and δ = 0 (not -inf - -inf)
                eb[masked] = np.where(np.isfinite(wb[masked]), eb[masked], 0.0)
            err_t = eb[rows, tb]
        else:
            eb, err_t = None, np.zeros(n)
        zhat_t = wb[rows, tb]
        np.exp(wb, out=wb)
        if eb is not None:
            eb += 1.0
            wb *= eb  # e = e^{ẑ}(1 + δ) = e^{z - m} to ~1 ulp
        e_t = wb[rows, tb]
        wb[rows, top] = 0.0  # r = s - 1: every term but the maximum's own 1
        r = wb.sum(axis=1)
        wb[rows, top] = 1.0
        s = 1.0 + r
        k = kappa[i:j]
        neg_log_p_t = np.log1p(r) - zhat_t - err_t  # log s - (z_t - m): no cancellation
        losses[i:j] = np.where(k == 0, 0, k * neg_log_p_t)  # 0 · anything = 0 (ignored rows)
        gk = g[i:j] * k
        gb = grad[i:j]
        np.multiply(wb, (gk / s)[:, None], out=gb, casting="same_kind")  # (g κ) p
        # the target: g κ (p_t - 1) = -g κ (s - e_t)/s, s - e_t = r - expm1(ẑ_t) - δ_t e_t >= 0
        gb[rows, tb] = -gk * ((r - np.expm1(zhat_t) - err_t * e_t) / s)
        silent = gk == 0
        if silent.any():  # exactly 0 where the cotangent or κ is 0, even on NaN rows
            gb[silent] = 0
    return True


def fused_sparse_softmax_cross_entropy(z: Any, target: Any, kappa: Any, g: Any) -> Any:
    """Per-example losses ``κ (log s - ẑ_t)`` and the VJP ``g (κ p - κ e_t)`` in one pass.

    ``z``: logits ``[..., C]`` (float32/float64); ``target``, ``kappa``
    (target weight, 0 for ignored examples) and ``g`` (per-example
    cotangent): ``[...]``.  Returns ``(losses, grad)``, or ``None`` when the
    kernel does not apply (not enabled, or a row whose maximum is infinite),
    in which case the caller takes the general path.
    """
    if not ENABLED or z.dtype not in (np.float32, np.float64) or z.shape[-1] == 0:
        return None
    c = z.shape[-1]
    z2 = np.ascontiguousarray(z).reshape(-1, c)
    n = z2.shape[0]
    t = np.ascontiguousarray(target, dtype=np.intp).reshape(-1)
    # per-row quantities in float64 (float32 rows are computed in float64, rounded once)
    k = np.ascontiguousarray(kappa, dtype=np.float64).reshape(-1)
    gv = np.ascontiguousarray(np.broadcast_to(g, target.shape), dtype=np.float64).reshape(-1)
    losses = np.empty(n, dtype=np.float64)
    grad = np.empty_like(z2)
    workers = min(num_threads(), max(1, n))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if workers == 1 or z2.nbytes < (1 << 22):
            ok = _rows(z2, t, k, gv, losses, grad, 0, n)
        else:
            bounds = np.linspace(0, n, workers + 1).astype(int)
            futures = [
                _executor(workers).submit(_rows, z2, t, k, gv, losses, grad, int(a), int(b))
                for a, b in itertools.pairwise(bounds)
            ]
            ok = all(f.result() for f in futures)
    if not ok:
        return None
    return losses.astype(z2.dtype).reshape(target.shape), grad.reshape(z.shape)

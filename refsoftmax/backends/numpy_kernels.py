"""Optional NumPy kernels: the same numbers as the array-API code, faster and in little memory.

The array-API code (:mod:`refsoftmax._shifted`, :mod:`refsoftmax.softmax`,
:mod:`refsoftmax._sparse_ce`) is the definition.  This module only re-schedules
that arithmetic for NumPy:

* **one pass over memory, in row blocks**: rows are processed in blocks of
  about 2 MiB, so max, shift, exp, sum and scale all run on a block while it
  sits in the caches; the logits are read once and each result written once.
  (Smaller blocks fit L2 better but multiply the per-call overhead of the ~15
  NumPy calls per block: at 2048 × 32,000 float32, 256 KiB blocks took 0.079 s,
  2 MiB blocks 0.057 s, measured with ``benchmarks/bench_sparse_ce.py``'s
  inputs on 2 threads.)  For smaller inputs the blocks shrink so that all of
  them together stay below 1/16 of the input (down to 64 KiB per buffer);
* **little memory**: the only ``[..., C]`` arrays are the results the caller
  keeps (the value, the gradient, the probabilities saved for a backward
  pass); the intermediates live in a few block buffers per thread.  An input
  whose class axis is not last is read through a strided view, not copied
  (``benchmarks/bench_memory.py`` measures the peaks, ``docs/performance.md``
  has the table);
* **accurate** as the array-API path: the shift's rounding error folded into
  the exponentials (TwoSum, float64 rows), ``log s = log1p(r)`` with ``r`` the
  sum without the maximum's own 1, and ``1 - p_t`` without cancellation.
  float16/float32 rows are widened to float64 inside a block (where ``z - m``
  is exact to far below their ulp, so the error term is 0) and each result is
  rounded once.  The sparse cross-entropy first tries the **direct form** of
  :mod:`refsoftmax.backends.torch_kernels` (rows whose maximum lies in
  :math:`[0, M]`: the exponentials of the logits themselves, in the input's
  dtype, no shift and so no shift error), 3× faster; its float32 gradient is
  within 1.75 ulp on the accuracy suite's short rows and 3.85 ulp on rows of 6,000
  classes (NumPy's float32 ``exp`` alone is off by up to 2.3 there), ``docs/accuracy.md``;
* **both cores**: NumPy releases the GIL inside its ufuncs, so row ranges run
  on a thread pool (``REFSOFTMAX_NUM_THREADS``, default ``os.cpu_count()``).

A kernel returns ``None`` when it does not apply (``ENABLED`` false, a dtype
it does not handle, an empty array, or a row whose maximum is infinite: a
``+inf`` logit or a row of ``-inf``); the caller then takes the array-API
path.  NaN rows stay NaN.  ``tests/test_fused.py`` and ``tests/test_memory.py``
compare every result with the plain path.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "fused_softmax",
    "fused_softmax_backward",
    "fused_sparse_ce_backward",
    "fused_sparse_softmax_cross_entropy",
    "num_threads",
]

#: Set to False to make refsoftmax ignore this module (tests compare both paths).
ENABLED = True
_BLOCK_BYTES = 1 << 21  # one block buffer (float64) at most
_TEMP_FRACTION = 16  # all block buffers together at most 1/16 of the input ...
_MIN_BLOCK_BYTES = 1 << 16  # ... or 64 KiB per buffer, whichever is larger
_THREADED_BYTES = 1 << 22  # smaller inputs run on one thread
_WIDE = (np.float16, np.float32)  # computed in float64 and rounded once
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


# ----------------------------------------------------------------------------- row layout


def _merge_start(shape: Sequence[int], strides: Sequence[int]) -> int:
    """The smallest ``k`` such that dims ``k:`` of an array collapse into one without a copy."""
    k = len(shape)
    inner: int | None = None  # stride of the innermost dim of the run (None: all size 1 so far)
    count = 1
    for i in range(len(shape) - 1, -1, -1):
        if shape[i] == 1:
            k = i
        elif inner is None:
            inner, count, k = strides[i], shape[i], i
        elif strides[i] == inner * count:
            count *= shape[i]
            k = i
        else:
            break
    return k


class _Unit(NamedTuple):
    """One run of rows that every array views as a 2-D (``[n, C]``) or 1-D (``[n]``) array."""

    n: int
    wide: list[Any]  # [n, C] views (None where the caller passed None)
    rows: list[Any]  # [n] views


def _units(wide: Sequence[np.ndarray | None], rows: Sequence[np.ndarray | None]) -> list[_Unit]:
    """Split ``[..., C]`` arrays (any strides) and ``[...]`` arrays (C-contiguous) into row runs.

    The leading dims that every wide array can merge are flattened into one row axis; the others
    are iterated over.  No array is copied.
    """
    present = [a for a in wide if a is not None]
    lead = tuple(present[0].shape[:-1])
    c = present[0].shape[-1]
    k = max(_merge_start(lead, a.strides[:-1]) for a in present)
    n = math.prod(lead[k:])
    return [
        _Unit(n, [None if a is None else _view(a, idx, (n, c)) for a in wide],
              [None if a is None else _view(a, idx, (n,)) for a in rows])
        for idx in np.ndindex(*lead[:k])
    ]


def _view(a: np.ndarray, idx: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """``a[idx]`` reshaped to ``shape``: a view (``_merge_start`` chose dims that merge)."""
    key: tuple[Any, ...] = (*idx, Ellipsis)
    out = a[key].reshape(shape)  # the Ellipsis keeps a 0-d result an array (a view)
    if not np.may_share_memory(out, a):  # pragma: no cover - a copy would drop the writes
        msg = "internal error: a row view of a kernel array is a copy"
        raise RuntimeError(msg)
    return out


def _workers(nbytes: int, n_rows: int) -> int:
    """Threads for an input of ``nbytes``: one below 4 MiB; else each gets ≥ 2 MiB and 32 rows.

    (So that the few-row blocks of every thread stay a small part of the input.)
    """
    if nbytes < _THREADED_BYTES:
        return 1
    return max(1, min(num_threads(), nbytes // (_THREADED_BYTES // 2), n_rows // 32))


def _block_rows(nbytes: int, c: int, itemsize: int, buffers: int, workers: int) -> int:
    """Rows per block: one buffer ≤ 2 MiB, and all buffers of all workers ≤ 1/16 of the input
    unless that leaves a buffer under 64 KiB (small inputs: one block, not hundreds)."""
    share = nbytes // (_TEMP_FRACTION * workers * max(1, buffers))
    budget = min(_BLOCK_BYTES, max(_MIN_BLOCK_BYTES, share))
    return max(1, budget // (c * itemsize))


def _run(units: list[_Unit], workers: int,
         task: Callable[[list[tuple[_Unit, int, int]]], bool]) -> bool:
    """``task(segments)`` on ``workers`` threads, each on a contiguous share of all rows."""
    total = sum(u.n for u in units)
    if workers == 1:
        return task([(u, 0, u.n) for u in units])
    bounds = np.linspace(0, total, workers + 1).astype(int)
    shares: list[list[tuple[_Unit, int, int]]] = [[] for _ in range(workers)]
    offset = 0
    for u in units:
        for w, (a, b) in enumerate(itertools.pairwise(bounds)):
            lo, hi = max(a, offset), min(b, offset + u.n)
            if lo < hi:
                shares[w].append((u, lo - offset, hi - offset))
        offset += u.n
    pool = _executor(workers)
    futures = [pool.submit(task, share) for share in shares if share]
    return all([f.result() for f in futures])  # a list: wait for every thread


def _blocks(segments: list[tuple[_Unit, int, int]], height: int
            ) -> Iterator[tuple[_Unit, int, int]]:
    for u, a, b in segments:
        for i in range(a, b, height):
            yield u, i, min(i + height, b)


# ----------------------------------------------------------------------------- shifted rows


class _Shifted(NamedTuple):
    """One block of shifted rows (:class:`refsoftmax._shifted.Rows`), float64."""

    m: np.ndarray  # row maximum                                  [n]
    zhat: np.ndarray | None  # z - m (only when asked to keep it)     [n, C]
    err: np.ndarray | None  # (z - m) - zhat exactly (float64 rows)   [n, C]
    e: np.ndarray  # e^{z - m} to ~1 ulp                          [n, C]
    r: np.ndarray  # s - 1 without cancellation                    [n]
    s: np.ndarray  # Σ e                                          [n]
    log_s: np.ndarray  # log1p(r)                                   [n]
    zhat_t: np.ndarray | None  # at the target                      [n]
    err_t: np.ndarray | None
    e_t: np.ndarray | None


def _buffer_count(dtype: Any, keep_zhat: bool) -> int:
    return (1 if dtype in _WIDE else 3) + (1 if keep_zhat else 0)


def _shift(src: np.ndarray, bufs: list[np.ndarray], target: np.ndarray | None,
           keep_zhat: bool) -> _Shifted | None:
    r"""The arithmetic of :func:`refsoftmax._shifted.shift_rows` on one block ``src`` ``[n, C]``.

    ``bufs``: :func:`_buffer_count` float64 buffers of at least ``n`` rows.  Returns ``None``
    when a row's maximum is infinite.  float64 rows keep the shift's exact error δ by TwoSum
    (a ``-inf`` logit, or a shift that overflows, makes δ NaN there; it is set to 0, where
    :math:`e = 0` anyway); float16/float32 rows are widened first, where ``z - m`` is exact
    to far below their ulp and δ = 0.
    """
    n = src.shape[0]
    rows = np.arange(n)
    wide = src.dtype != np.float64
    zh = bufs[0][:n]
    if wide:
        np.copyto(zh, src)  # widen to float64, exactly
        base = zh
    else:
        base = src
    top = base.argmax(axis=1)  # the first maximum (the first NaN in a NaN row)
    m = base[rows, top]
    if np.isinf(m).any():  # an empty (all -inf) row, or a +inf logit
        return None
    neg_m = -m[:, None]
    np.add(base, neg_m, out=zh)  # ẑ = z - m
    err = tmp = None
    if not wide:
        err, tmp = bufs[1][:n], bufs[2][:n]
        # TwoSum (Knuth): δ = (z - m) - ẑ exactly
        np.subtract(zh, src, out=tmp)  # b' = ẑ - z
        np.subtract(zh, tmp, out=err)  # a' = ẑ - b'
        np.subtract(src, err, out=err)  # a - a'
        np.subtract(neg_m, tmp, out=tmp)  # b - b'
        err += tmp  # δ
        if not math.isfinite(float(err.sum())):  # NaN: a -inf logit or an overflowed shift
            np.copyto(err, 0.0, where=~np.isfinite(zh))
    zhat_t = err_t = e_t = None
    if target is not None:
        zhat_t = zh[rows, target]
        err_t = np.zeros(n) if err is None else err[rows, target]
    if keep_zhat:
        e = bufs[-1][:n]
        np.exp(zh, out=e)
    else:
        e = zh
        np.exp(zh, out=e)
    if err is not None and tmp is not None:
        np.add(err, 1.0, out=tmp)
        e *= tmp  # e = e^{ẑ}(1 + δ) = e^{z - m} to ~1 ulp
    if target is not None:
        e_t = e[rows, target]
    e[rows, top] = 0.0  # r = s - 1: every term but the maximum's own 1
    r = e.sum(axis=1)
    e[rows, top] = 1.0
    return _Shifted(m, zh if keep_zhat else None, err, e, r, 1.0 + r, np.log1p(r),
                    zhat_t, err_t, e_t)


def _at_target(sh: _Shifted) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ẑ_t, δ_t, e_t)`` of a block shifted with a target (a programming error otherwise)."""
    if sh.zhat_t is None or sh.err_t is None or sh.e_t is None:
        msg = "the block was shifted without a target"
        raise RuntimeError(msg)
    return sh.zhat_t, sh.err_t, sh.e_t


def _complement(sh: _Shifted) -> np.ndarray:
    """``1 - p_t = (r + (1 - e_t))/s`` with ``1 - e_t = -expm1(ẑ_t) - δ_t e_t``: no cancellation."""
    zhat_t, err_t, e_t = _at_target(sh)
    return (sh.r + (-np.expm1(zhat_t) - err_t * e_t)) / sh.s


def _neg_log_p_t(sh: _Shifted) -> np.ndarray:
    """``-log p_t = (log s - ẑ_t) - δ_t``: two non-negative terms."""
    zhat_t, err_t, _ = _at_target(sh)
    return (sh.log_s - zhat_t) - err_t


def _shift_plan(x: np.ndarray, c: int, keep_zhat: bool) -> tuple[int, int, int]:
    """``(buffers, workers, block height)`` of a blocked pass of :func:`_shift` over ``x``."""
    nbuf = _buffer_count(x.dtype, keep_zhat)
    workers = _workers(x.nbytes, x.size // c)
    return nbuf, workers, _block_rows(x.nbytes, c, 8, nbuf, workers)


def _shift_buffers(segments: list[tuple[_Unit, int, int]], height: int, c: int,
                   nbuf: int) -> list[np.ndarray]:
    """One task's float64 work buffers for :func:`_shift`, as tall as its tallest block."""
    rows = min(height, max(b - a for _, a, b in segments))
    return [np.empty((rows, c)) for _ in range(nbuf)]


def _floating(dtype: Any) -> bool:
    return dtype in (np.float16, np.float32, np.float64)


# ----------------------------------------------------------------------------- forward


def fused_softmax(
    x: Any, axis: int = -1, *, lse: bool = False, log_probs: bool = False,
    probs: bool = False, residual_dtype: Any = None, target: Any = None,
) -> dict[str, np.ndarray] | None:
    """The forward pass of ``logsumexp``/``log_softmax``/``softmax`` and the sparse CE, in blocks.

    ``x``: float16/32/64 ``[..., C, ...]`` with the classes on ``axis`` (any strides: it is
    read, never copied).  What it computes, each only when asked:

    * ``"lse"`` (``lse=True``): :math:`m + \\operatorname{log1p}(r)`, float64, ``[...]``;
    * ``"log_probs"`` / ``"probs"`` (``log_probs=True`` / ``probs=True``): ``x.shape``,
      ``x.dtype``, C-contiguous, rounded once from float64;
    * ``"p"`` (``residual_dtype`` given): the softmax for a backward pass, classes last
      (``[..., C]``, C-contiguous) in ``residual_dtype``;
    * ``"neg_log_p_t"``, ``"complement"`` (``target`` ``[...]`` integer, classes in range):
      :math:`-\\log p_t` and :math:`1 - p_t`, float64, ``[...]``.

    ``None`` when the kernel does not apply (see the module docstring).
    """
    if (not ENABLED or not isinstance(x, np.ndarray) or not _floating(x.dtype) or x.ndim == 0
            or x.size == 0):
        return None
    v = np.moveaxis(x, axis, -1)
    lead, c = tuple(v.shape[:-1]), int(v.shape[-1])
    out: dict[str, np.ndarray] = {}
    moved: dict[str, np.ndarray] = {}
    for name, wanted in (("log_probs", log_probs), ("probs", probs)):
        if wanted:
            out[name] = np.empty(x.shape, dtype=x.dtype)
            moved[name] = np.moveaxis(out[name], axis, -1)
    if residual_dtype is not None:
        out["p"] = moved["p"] = np.empty(v.shape, dtype=residual_dtype)
    per_row = ["lse"] if lse else []
    t = None
    if target is not None:
        t = np.ascontiguousarray(np.broadcast_to(target, lead), dtype=np.intp)
        per_row += ["neg_log_p_t", "complement"]
    for name in per_row:
        out[name] = np.empty(lead, dtype=np.float64)
    wide_names = list(moved)
    units = _units([v, *(moved[k] for k in wide_names)], [t, *(out[k] for k in per_row)])
    nbuf, workers, height = _shift_plan(v, c, log_probs)

    def task(segments: list[tuple[_Unit, int, int]]) -> bool:
        bufs = _shift_buffers(segments, height, c, nbuf)
        for u, i, j in _blocks(segments, height):
            src, *dst = (a[i:j] for a in u.wide)
            tb = None if u.rows[0] is None else u.rows[0][i:j]
            sh = _shift(src, bufs, tb, keep_zhat=log_probs)
            if sh is None:
                return False
            blocks = dict(zip(wide_names, dst, strict=True))
            rows = dict(zip(per_row, (a[i:j] for a in u.rows[1:] if a is not None), strict=True))
            s = sh.s[:, None]
            if "lse" in rows:
                rows["lse"][...] = sh.m + sh.log_s
            if tb is not None:
                rows["neg_log_p_t"][...] = _neg_log_p_t(sh)
                rows["complement"][...] = _complement(sh)
            pb = blocks.get("p")
            if pb is not None:
                np.divide(sh.e, s, out=pb, casting="same_kind")  # e / s, rounded once
            if "probs" in blocks:
                if pb is not None and pb.dtype == blocks["probs"].dtype:
                    np.copyto(blocks["probs"], pb)
                else:
                    np.divide(sh.e, s, out=blocks["probs"], casting="same_kind")
            if "log_probs" in blocks and sh.zhat is not None:
                # log p = -((log s - ẑ) - δ): two non-negative terms, then the sign
                zh = sh.zhat
                np.subtract(sh.log_s[:, None], zh, out=zh)
                if sh.err is not None:
                    zh -= sh.err
                np.negative(zh, out=blocks["log_probs"], casting="same_kind")
        return True

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ok = _run(units, workers, task)
    return out if ok else None


def fused_sparse_softmax_cross_entropy(z: Any, target: Any, kappa: Any, g: Any) -> Any:
    """Per-example losses ``κ (log s - ẑ_t)`` and the VJP ``g (κ p - κ e_t)`` in one pass.

    ``z``: logits ``[..., C]`` (float32/float64; any strides); ``target``, ``kappa``
    (target weight, 0 for ignored examples) and ``g`` (per-example cotangent): ``[...]``.
    Returns ``(losses, grad)`` (``grad`` ``[..., C]``, C-contiguous), or ``None`` when the
    kernel does not apply (not enabled, or a row whose maximum is infinite), in which case
    the caller takes the general path.  The only ``[..., C]`` array it allocates is the
    gradient.
    """
    if (not ENABLED or not isinstance(z, np.ndarray) or z.dtype not in (np.float32, np.float64)
            or z.ndim == 0 or z.size == 0):
        return None
    lead, c = tuple(z.shape[:-1]), int(z.shape[-1])
    t = np.ascontiguousarray(np.broadcast_to(target, lead), dtype=np.intp)
    # per-row quantities in float64 (float32 rows are computed in float64, rounded once)
    k = np.ascontiguousarray(np.broadcast_to(kappa, lead), dtype=np.float64)
    gv = np.ascontiguousarray(np.broadcast_to(g, lead), dtype=np.float64)
    losses = np.empty(lead, dtype=np.float64)
    grad = np.empty(z.shape, dtype=z.dtype)
    units = _units([z, grad], [t, k, gv, losses])
    nbuf, workers, height = _shift_plan(z, c, False)

    def task(segments: list[tuple[_Unit, int, int]]) -> bool:
        bufs = _shift_buffers(segments, height, c, nbuf)
        for u, i, j in _blocks(segments, height):
            src, gb = (a[i:j] for a in u.wide if a is not None)
            tb, kb, gvb, lb = (a[i:j] for a in u.rows if a is not None)
            near = _direct_sparse_ce(src, tb, kb, gvb, gb, lb)
            if near is None:  # not every row's maximum in [0, M]: the shifted form
                if not _shifted_sparse_ce(src, bufs, tb, kb, gvb, gb, lb):
                    return False
            elif near.any():  # rows with r < 1: the shifted form keeps r's relative accuracy
                rows = np.flatnonzero(near)
                sub_g = np.empty((len(rows), c), dtype=gb.dtype)
                sub_l = np.empty(len(rows))
                if not _shifted_sparse_ce(src[rows], bufs, tb[rows], kb[rows], gvb[rows],
                                          sub_g, sub_l):
                    return False  # pragma: no cover - these rows have finite maxima
                gb[rows], lb[rows] = sub_g, sub_l
        return True

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ok = _run(units, workers, task)
    if not ok:
        return None
    return losses.astype(z.dtype), grad


def _shifted_sparse_ce(src: np.ndarray, bufs: list[np.ndarray], tb: np.ndarray, kb: np.ndarray,
                       gvb: np.ndarray, gb: np.ndarray, lb: np.ndarray) -> bool:
    """Losses into ``lb`` and the gradient into ``gb`` of the rows ``src`` by the shifted form.

    False when a row's maximum is infinite (the caller then takes the general path).
    """
    sh = _shift(src, bufs, tb, keep_zhat=False)
    if sh is None:
        return False
    lb[...] = np.where(kb == 0, 0, kb * _neg_log_p_t(sh))  # 0 · anything = 0 (ignored)
    gk = gvb * kb
    np.multiply(sh.e, (gk / sh.s)[:, None], out=gb, casting="same_kind")  # (g κ) p
    # the target: g κ (p_t - 1) = -g κ (1 - p_t), without cancellation
    gb[np.arange(len(tb)), tb] = -gk * _complement(sh)
    silent = gk == 0
    if silent.any():  # exactly 0 where the cotangent or κ is 0, even on NaN rows
        gb[silent] = 0
    return True


def _direct_sparse_ce(src: np.ndarray, tb: np.ndarray, kb: np.ndarray, gvb: np.ndarray,
                      gb: np.ndarray, lb: np.ndarray) -> np.ndarray | None:
    r"""The direct form (no shift) of the rows ``src``; the rows it leaves to the shifted form.

    Applies when every row maximum :math:`m` lies in :math:`[0, M]` (:math:`C e^{M}`
    finite; NaN rows fail the test); returns ``None`` otherwise, writing nothing.  The
    exponentials are taken of the logits themselves, in the input's dtype: their
    arguments are exact, so there is no shift error to recover, and nothing underflows that
    the shifted form would keep.  With :math:`s = \sum_c e^{z_c}` and :math:`r = s/e^m - 1`:
    :math:`-\log p_t = \operatorname{log1p}(r) + (m - z_t)`, :math:`p_c = e_c / s` and
    :math:`1 - p_t = (s - e_t)/s` with :math:`s - e_t \ge s/2` when :math:`r \ge 1`.
    The returned mask marks the rows with :math:`r < 1` (confident examples, near-ties),
    whose results the caller recomputes by the shifted form.
    """
    m = src.max(axis=1).astype(np.float64)  # NaN in a NaN row
    ceiling = math.log(float(np.finfo(src.dtype).max)) - math.log(src.shape[1]) - 1.0
    if not bool(((m >= 0) & (m <= ceiling)).all()):
        return None
    rows = np.arange(len(tb))
    np.exp(src, out=gb)  # e = e^z: an exact argument
    s = gb.sum(axis=1, dtype=np.float64)
    r = s / np.exp(m) - 1.0  # Σ over every class but the maximum of e^{z - m}
    e_t = gb[rows, tb].astype(np.float64)
    lb[...] = np.where(kb == 0, 0, kb * (np.log1p(r) + (m - src[rows, tb])))  # no cancellation
    gk = gvb * kb
    # (g κ) p, rounded once: the float64 row factor costs 5.7x a float32 one (NumPy widens and
    # narrows each block through its cast buffers), ~28 ms per thread at 2048 x 32,000, but a
    # second rounding puts the gradient 4.6 ulp from the exact one (tests/test_fused.py)
    np.multiply(gb, (gk / s)[:, None], out=gb, casting="same_kind")
    gb[rows, tb] = -gk * ((s - e_t) / s)  # g κ (p_t - 1)
    silent = gk == 0
    if silent.any():  # exactly 0 where the cotangent or κ is 0
        gb[silent] = 0
    return r < 1.0


# ----------------------------------------------------------------------------- backward


def fused_softmax_backward(kind: str, p: Any, g: Any, axis: int, dtype: Any) -> Any:
    """The VJP of ``log_softmax`` (``g - p Σg``) or ``softmax`` (``p (g - Σ g p)``), in blocks.

    ``p``: the saved softmax ``[..., C]`` (classes last, float32/float64); ``g``: the
    cotangent in the input's layout (classes on ``axis``), ``p``'s dtype.  The arithmetic is
    the array-API code's, in ``p``'s dtype, except that the row sums are accumulated in
    float64 (so a float32 sum over a strided class axis loses nothing); the result (the
    input's layout, C-contiguous) is rounded to ``dtype``.  ``None`` when the kernel does not
    apply.
    """
    if (not ENABLED or not isinstance(p, np.ndarray) or not isinstance(g, np.ndarray)
            or p.dtype not in (np.float32, np.float64) or g.dtype != p.dtype
            or not _floating(np.dtype(dtype)) or p.ndim == 0 or p.size == 0):
        return None
    grad = np.empty(g.shape, dtype=dtype)
    gv, outv = np.moveaxis(g, axis, -1), np.moveaxis(grad, axis, -1)
    if tuple(gv.shape) != tuple(p.shape):
        return None
    c = int(p.shape[-1])
    units = _units([p, gv, outv], [])
    workers = _workers(p.nbytes, p.size // c)
    height = _block_rows(p.nbytes, c, p.itemsize, 1, workers)
    same = grad.dtype == p.dtype

    def task(segments: list[tuple[_Unit, int, int]]) -> bool:
        tmp = np.empty((min(height, max(b - a for _, a, b in segments)), c), dtype=p.dtype)
        for u, i, j in _blocks(segments, height):
            pb, gb, ob = (a[i:j] for a in u.wide if a is not None)
            work = ob if same else tmp[: j - i]
            if kind == "log_softmax":
                total = gb.sum(axis=1, keepdims=True, dtype=np.float64)  # Σg
                np.multiply(pb, total, out=work, casting="same_kind")  # p Σg
                np.subtract(gb, work, out=work)
            else:
                t = tmp[: j - i]
                np.multiply(gb, pb, out=t)
                total = t.sum(axis=1, keepdims=True, dtype=np.float64)  # Σ g p
                np.subtract(gb, total, out=t, casting="same_kind")
                np.multiply(pb, t, out=work)
            if work is not ob:
                np.copyto(ob, work, casting="same_kind")
        return True

    with np.errstate(invalid="ignore", over="ignore"):
        _run(units, workers, task)
    return grad


def fused_sparse_ce_backward(p: Any, complement: Any, target: Any, kappa: Any, g: Any,
                             row_ok: Any, axis: int, dtype: Any) -> Any:
    """The VJP of the sparse CE without smoothing: ``g κ p``, ``-g κ (1 - p_t)`` at the target.

    ``p``: the saved softmax ``[..., C]`` (classes last, float32/float64); ``complement``,
    ``target``, ``kappa``, ``g`` (the per-example cotangent) and ``row_ok`` (False: the row's
    gradient is 0): ``[...]``.  The products are formed as the array-API code forms them
    (``safe_mul``: exactly 0 where κ or g is 0), in ``p``'s dtype.  Returns the gradient in
    the logits' layout (classes on ``axis``, C-contiguous) and ``dtype``, or ``None`` when the
    kernel does not apply.
    """
    if (not ENABLED or not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64)
            or not _floating(np.dtype(dtype)) or p.ndim == 0 or p.size == 0):
        return None
    lead, c = tuple(p.shape[:-1]), int(p.shape[-1])
    ct = p.dtype
    t = np.ascontiguousarray(np.broadcast_to(target, lead), dtype=np.intp)
    kb_all = np.ascontiguousarray(np.broadcast_to(kappa, lead), dtype=ct)
    g_all = np.ascontiguousarray(np.broadcast_to(g, lead), dtype=ct)
    comp = np.ascontiguousarray(np.broadcast_to(complement, lead), dtype=ct)
    ok_all = np.ascontiguousarray(np.broadcast_to(row_ok, lead), dtype=bool)
    shape = list(p.shape)
    shape.insert(axis, shape.pop())  # the logits' shape
    grad = np.empty(shape, dtype=dtype)
    outv = np.moveaxis(grad, axis, -1)
    units = _units([p, outv], [t, kb_all, g_all, comp, ok_all])
    workers = _workers(p.nbytes, p.size // c)
    same = grad.dtype == ct
    height = _block_rows(p.nbytes, c, p.itemsize, 0 if same else 1, workers)

    def task(segments: list[tuple[_Unit, int, int]]) -> bool:
        tmp = None if same else np.empty((min(height, max(b - a for _, a, b in segments)), c), ct)
        for u, i, j in _blocks(segments, height):
            pb, ob = (a[i:j] for a in u.wide if a is not None)
            tb, kb, gb, cb, okb = (a[i:j] for a in u.rows if a is not None)
            work = ob if tmp is None else tmp[: j - i]
            np.multiply(pb, kb[:, None], out=work)  # κ p
            zero_k = kb == 0
            if zero_k.any():
                work[zero_k] = 0
            work *= gb[:, None]  # g (κ p)
            spike = -(kb * np.where(zero_k, 0, cb))  # κ (p_t - 1) = -κ (1 - p_t)
            work[np.arange(j - i), tb] = gb * np.where(gb == 0, 0, spike)
            silent = (gb == 0) | ~okb
            if silent.any():
                work[silent] = 0
            if work is not ob:
                np.copyto(ob, work, casting="same_kind")
        return True

    with np.errstate(invalid="ignore", over="ignore"):
        _run(units, workers, task)
    return grad

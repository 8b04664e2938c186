r"""Exact ``linear_softmax_cross_entropy`` over a large vocabulary: Dask (threads) vs NumPy (CPU).

What is measured
----------------
Hidden states ``x [B, D]``, output embedding ``W [C, D]``, bias ``b [C]``, labels ``y [B]``; by
default B = 64, C = 524,288, D = 128, float32 (``W``: 256 MiB; the ``[B, C]`` logits, never
formed by ``numpy``: 128 MiB).  Every row computes the exact
mean loss (``reduction="mean"``, ``chunk_size`` = ``--block``, default 65,536), with the same code
(``refsoftmax.linear_softmax_cross_entropy``) on two kinds of arrays:

========================  ========================================================================
name                      what one call does
========================  ========================================================================
``numpy``                 NumPy arrays; the loop over class chunks runs eagerly.  The baseline.
``dask``                  ``W``/``b`` as ``dask.array.from_array(..., chunks=(block, D))``: the
                          call builds the graph, ``dask.compute(..., scheduler="threads")`` runs
                          it (timed together).  BLAS is held to 1 thread inside (threadpoolctl):
                          Dask's ``--threads`` worker threads are the parallelism.
``dask-generated``        ``W`` drawn block by block *inside* the graph
                          (``dask.array.random.default_rng(seed).standard_normal``): it never
                          exists in memory.  Forward only (a backward would keep every block for
                          the second pass).  Its time includes drawing ``W`` (the NumPy draw of
                          the whole ``W`` is timed once and printed for comparison).
========================  ========================================================================

Each of ``numpy`` and ``dask`` runs twice: forward only (``fwd``) and ``value_and_grad``
(``fwd+bwd``: loss and the gradients with respect to ``W``, ``b`` and ``x``).

Correctness first: every row is called once and compared with ``numpy`` of its pass (loss to
relative 1e-6, each gradient as ``B · grad`` with ``|Δ| ≤ 1e-5 max|ref|``); a row that disagrees
is not timed.  Memory: one more call per row with ``tracemalloc`` (peak of the allocations during
the call, NumPy buffers and Dask's Python objects alike) and the peak RSS above the RSS before the
call (``VmHWM`` reset through ``/proc/self/clear_refs``); the table also says whether the row needs
``W`` in memory (``numpy``, ``dask`` from an in-memory ``W``) or not.  Then ``--reps`` interleaved
rounds (the starting row rotating); the table gives median, IQR, minimum and the ratio to the
``numpy`` row of the same pass, all from that one run, and for the Dask rows the part of the
call spent building the graph (the loss call itself, before ``compute``).

Threads: ``--threads N`` as in ``bench_sparse_ce.py`` (affinity, BLAS pools), and Dask's
``num_workers``.  The results go to ``benchmarks/results/bench_dask.md`` (``--no-results`` to
skip).  The load average at the start and the end is printed: other processes share the cores.

Usage::

    python benchmarks/bench_dask.py                        # ~1-2 min on 2 cores
    python benchmarks/bench_dask.py --batch 256 --classes 262144 --reps 3
    python benchmarks/bench_dask.py --no-backward --block 16384
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sampled_softmax import (  # the benchmarks folder is not a package: found via sys.path
    Log,
    peak_rss_increase,
    summarise,
)
from bench_sparse_ce import available_cores, configure_threads, machine_report

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MiB = float(1 << 20)
LOSS_RTOL = 1e-6
GRAD_ATOL_REL = 1e-5  # absolute tolerance on B·grad, as a fraction of its largest entry


@dataclass
class Row:
    name: str
    passes: str  # "fwd" or "fwd+bwd"
    holds_w: bool  # needs the whole W in memory
    call: Callable[[], tuple[float, dict[str, Any]]]  # loss and NumPy gradients
    times: list[float] = field(default_factory=list)
    builds: list[float] = field(default_factory=list)  # Dask: seconds building the graph


def build_rows(args: argparse.Namespace) -> tuple[list[Row], float]:
    """The rows, and the seconds NumPy takes to draw the whole ``W`` (for ``dask-generated``)."""
    import dask
    import dask.array as da
    import numpy as np

    import refsoftmax as rs

    try:
        from threadpoolctl import threadpool_limits

        def one_blas_thread() -> Any:
            return threadpool_limits(1)
    except ImportError:  # pragma: no cover - BLAS and Dask threads then share the cores
        one_blas_thread = nullcontext

    c, d, b, block = args.classes, args.dim, args.batch, args.block
    dtype = np.dtype(args.dtype)
    lazy_w = da.random.default_rng(args.seed).standard_normal((c, d), chunks=(block, d), dtype=dtype)
    lazy_w = lazy_w * dtype.type(1.0 / np.sqrt(d))  # logits of unit scale
    t0 = time.perf_counter()
    w = lazy_w.compute(scheduler="threads", num_workers=args.threads)  # the same numbers in memory
    draw_seconds = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed + 1)
    bias = (rng.standard_normal(c) * 0.1).astype(dtype)
    x = rng.standard_normal((b, d)).astype(dtype)
    y = rng.integers(0, c, size=b, dtype=np.int64)
    f = rs.linear_softmax_cross_entropy
    opts = {"chunk_size": block, "reduction": "mean"}
    compute = {"scheduler": "threads", "num_workers": args.threads}

    def numpy_fwd() -> tuple[float, dict[str, Any]]:
        return float(f(w, bias, y, x, **opts)), {}

    def numpy_fwd_bwd() -> tuple[float, dict[str, Any]]:
        value, grads = f.value_and_grad(w, bias, y, x, **opts)
        return float(value), grads

    def dask_args(weights: Any) -> tuple[Any, ...]:
        return (weights, da.from_array(bias, chunks=block), da.from_array(y), da.from_array(x))

    builds: dict[str, list[float]] = {"fwd": [], "gen": [], "fwd+bwd": []}

    def dask_fwd(weights: Any, key: str) -> Callable[[], tuple[float, dict[str, Any]]]:
        def call() -> tuple[float, dict[str, Any]]:
            with one_blas_thread():
                t0 = time.perf_counter()
                value = f(*dask_args(weights), **opts)
                builds[key].append(time.perf_counter() - t0)
                return float(value.compute(**compute)), {}
        return call

    def dask_fwd_bwd() -> tuple[float, dict[str, Any]]:
        with one_blas_thread():
            t0 = time.perf_counter()
            value, grads = f.value_and_grad(*dask_args(da.from_array(w, chunks=(block, d))), **opts)
            builds["fwd+bwd"].append(time.perf_counter() - t0)
            value, grads = dask.compute(value, grads, **compute)
        return float(value), grads

    rows = [Row("numpy", "fwd", True, numpy_fwd),
            Row("dask", "fwd", True, dask_fwd(da.from_array(w, chunks=(block, d)), "fwd"),
                builds=builds["fwd"]),
            Row("dask-generated", "fwd", False, dask_fwd(lazy_w, "gen"), builds=builds["gen"])]
    if not args.no_backward:
        rows += [Row("numpy", "fwd+bwd", True, numpy_fwd_bwd),
                 Row("dask", "fwd+bwd", True, dask_fwd_bwd, builds=builds["fwd+bwd"])]
    return rows, draw_seconds


def compare(row: Row, out: tuple[float, dict[str, Any]], ref: tuple[float, dict[str, Any]],
            batch: int) -> tuple[bool, str]:
    import numpy as np

    loss, grads = out
    rel = abs(loss - ref[0]) / abs(ref[0])
    ok = rel <= LOSS_RTOL
    parts = [f"loss {loss:.7f} (rel Δ {rel:.1e})"]
    for name, g_ref in ref[1].items():
        g = batch * np.asarray(grads[name], np.float64)
        g_ref = batch * np.asarray(g_ref, np.float64)
        scale = float(np.max(np.abs(g_ref)))
        err = float(np.max(np.abs(g - g_ref)))
        ok &= err <= GRAD_ATOL_REL * scale
        parts.append(f"{name}: max|Δ(B·g)| {err:.1e} (rel {err / scale:.1e})")
    return ok, "; ".join(parts)


def memory(row: Row) -> tuple[float, float | None]:
    """Peak traced allocation and peak RSS increase of one call, in MiB."""
    gc.collect()
    tracemalloc.start()
    try:
        _, rss = peak_rss_increase(row.call)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / MiB, None if rss is None else rss / MiB


def run(args: argparse.Namespace, log: Log) -> None:
    load_at_start = os.getloadavg()[0]
    rows, draw_seconds = build_rows(args)
    w_mib = args.classes * args.dim * __import__("numpy").dtype(args.dtype).itemsize / MiB
    log.text(f"W: {w_mib:.0f} MiB; drawing it with NumPy (threads scheduler) took {draw_seconds:.2f} s")
    log.text(f"correctness (vs numpy of the same pass; loss rel {LOSS_RTOL:g}; "
             f"B·grad |Δ| ≤ {GRAD_ATOL_REL:g} max|ref|):")
    refs: dict[str, tuple[float, dict[str, Any]]] = {}
    timed: list[Row] = []
    for row in rows:
        t0 = time.perf_counter()
        out = row.call()
        first = time.perf_counter() - t0
        label = f"{row.name} [{row.passes}]"
        if row.passes not in refs:
            refs[row.passes] = out
            log.text(f"  {label:<24} reference: loss {out[0]:.7f}; first call {first:.2f} s")
            timed.append(row)
            continue
        ok, text = compare(row, out, refs[row.passes], args.batch)
        log.text(f"  {label:<24} {'ok   ' if ok else 'WRONG'} {text}; first call {first:.2f} s")
        if ok:
            timed.append(row)
        del out
    refs.clear()
    gc.collect()

    mem: dict[int, tuple[float, float | None]] = {}
    if not args.no_memory:
        for row in timed:
            mem[id(row)] = memory(row)

    for row in timed:
        row.builds.clear()  # the timed rounds' graph-building times only
    start = time.perf_counter()
    for rep in range(args.reps):
        k = rep % len(timed)
        for row in timed[k:] + timed[:k]:
            t0 = time.perf_counter()
            row.call()
            row.times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    load = max(load_at_start, os.getloadavg()[0])
    log.text(f"\ntimed {args.reps} interleaved rounds in {elapsed:.0f} s; "
             f"load avg {os.getloadavg()[0]:.2f} at end")
    if load > 0.75 * args.threads:
        log.text(f"note     : load average up to {load:.2f} on {args.threads} cores: other processes "
                 "shared the cores, so the times are noisy (IQR column)")
    log.text()

    base = {r.passes: summarise(r.times)[0] for r in timed if r.name == "numpy"}
    table = ["| row | pass | W in memory | median s | IQR s | min s | × numpy | of which graph s | "
             "peak traced MiB | peak RSS increase MiB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in timed:
        med, iqr, low = summarise(row.times)
        ratio = f"{med / base[row.passes]:.2f}" if row.passes in base else "n/a"
        traced, rss = mem.get(id(row), (None, None))
        table.append(
            f"| {row.name} | {row.passes} | {'yes' if row.holds_w else 'no'} | {med:.3f} | {iqr:.3f} "
            f"| {low:.3f} | {ratio} | {f'{summarise(row.builds)[0]:.3f}' if row.builds else '—'} "
            f"| {'n/a' if traced is None else f'{traced:.0f}'} | "
            f"{'n/a' if rss is None else f'{rss:.0f}'} |"
        )
    log.md("\n".join(table))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Exact linear softmax CE over a large vocabulary: Dask (threads) vs NumPy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--batch", type=int, default=64, help="examples B")
    parser.add_argument("--classes", type=int, default=524_288, help="classes C")
    parser.add_argument("--dim", type=int, default=128, help="hidden size D")
    parser.add_argument("--block", type=int, default=65_536,
                        help="classes per Dask block of W, and the loss's chunk_size")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--reps", type=int, default=3, help="timed interleaved rounds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs")
    parser.add_argument("--threads", type=int, default=len(available_cores()),
                        help="cores every library may use; Dask's num_workers")
    parser.add_argument("--no-backward", action="store_true", help="forward rows only")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory calls")
    parser.add_argument("--no-results", action="store_true",
                        help="do not write benchmarks/results/bench_dask.md")
    args = parser.parse_args(argv)
    for opt in ("batch", "classes", "dim", "block", "reps", "threads"):
        if getattr(args, opt) < 1:
            parser.error(f"--{opt} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes = configure_threads(args.threads)  # before numpy is imported
    log = Log()
    what = "linear_softmax_cross_entropy on Dask (threads) vs NumPy"
    log.text(f"{what}, exact, mean reduction, {args.dtype}; B={args.batch}, C={args.classes}, "
             f"D={args.dim}, block (chunk_size) {args.block}, seed {args.seed}")
    log.captured(lambda: machine_report(args.threads, notes))
    import dask

    log.text(f"dask     : {dask.__version__}")
    log.text(f"protocol : one correctness call per row, one memory call per row, then {args.reps} "
             "interleaved rounds")
    log.text()
    run(args, log)
    if not args.no_results:
        log.write(RESULTS_DIR / "bench_dask.md", what)
    return 0


if __name__ == "__main__":
    sys.exit(main())

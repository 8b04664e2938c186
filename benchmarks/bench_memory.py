"""Peak extra memory of logsumexp / log_softmax / softmax / sparse CE, as a ratio to the input.

Usage::

    python benchmarks/bench_memory.py                      # 2048 × 32,000, float32 and float64
    python benchmarks/bench_memory.py --batch 512 --classes 4096 --dtypes float32
    python benchmarks/bench_memory.py --compare-with /path/to/old/checkout   # adds "original" rows

Each measurement runs in a **fresh process** (so one run's freed pages and allocator state do
not flatter the next) and reports two numbers, both divided by the input's size:

* ``tracemalloc``: the peak of the memory NumPy allocated during the call (NumPy reports its
  array buffers to ``tracemalloc``) **minus the arrays the call returns as results** (the
  value, the gradient).  What is left is the extra memory: temporaries, and the residuals a
  ``forward`` keeps for its backward pass (they count as extra);
* ``RSS``: the peak resident set above the one before the call (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs``), minus the same returned arrays.  It includes the allocator's and
  the kernel's page granularity, and what ``tracemalloc`` does not see.  (Meaningful for large
  inputs only: glibc serves small arrays from memory the warm-up call already made resident.)

and the median time of ``--reps`` untraced calls (``tracemalloc`` slows every allocation).

The input (and, for the backward, the cotangent) exist before the measurement starts.  Rows:

* ``call``: ``f(x)``; ``forward``: ``f.forward(x)`` (value + residuals);
* ``forward+backward``: ``f.forward`` then ``f.backward`` with a random cotangent;
* ``value_and_grad`` (sparse CE): its fused kernel.

Modes: ``kernel`` (the NumPy kernels of ``refsoftmax.backends.numpy_kernels``, the default),
``generic`` (``numpy_kernels.ENABLED = False``: the array-API code, on NumPy) and, with
``--compare-with DIR``, ``original``: the ``refsoftmax`` package found in ``DIR`` with its
defaults (e.g. a checkout from before the kernels).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

MARK = "@@RESULT@@"
FUNCTIONS = ("logsumexp", "log_softmax", "softmax", "sparse_softmax_cross_entropy")
MODES = {
    "logsumexp": ("call", "forward", "forward+backward"),
    "log_softmax": ("call", "forward", "forward+backward"),
    "softmax": ("call", "forward", "forward+backward"),
    "sparse_softmax_cross_entropy": ("call", "forward", "forward+backward", "value_and_grad"),
}
RESULTS = Path(__file__).resolve().parent / "results" / "bench_memory.md"


def _status_bytes(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _nbytes(obj: object) -> int:
    """Bytes of the arrays in a (nested) result: the value and gradient the caller keeps."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(v) for v in obj)
    return 0


def child(args: argparse.Namespace) -> int:
    """One measurement, in this (fresh) process; prints a JSON line."""
    if args.package:
        sys.path.insert(0, args.package)
    import tracemalloc

    import numpy as np

    import refsoftmax as rs
    from refsoftmax.backends import numpy_kernels

    if args.mode == "generic":
        numpy_kernels.ENABLED = False
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((args.batch, args.classes)) * 2).astype(args.dtype)
    t = rng.integers(0, args.classes, args.batch)
    fn = getattr(rs, args.function)
    sparse = args.function == "sparse_softmax_cross_entropy"
    inputs = (x, t) if sparse else (x,)
    if sparse or args.function == "logsumexp":
        ct = rng.standard_normal(args.batch).astype(args.dtype)
    else:
        ct = rng.standard_normal(x.shape).astype(args.dtype)

    def run() -> tuple[object, ...]:
        """The call; returns what the caller keeps as results (residuals not counted)."""
        if args.what == "call":
            return (fn(*inputs),)
        if args.what == "forward":
            value, res = fn.forward(*inputs)
            run.keep = res  # type: ignore[attr-defined]  # alive at the peak, counted as extra
            return (value,)
        if args.what == "forward+backward":
            value, res = fn.forward(*inputs)
            grads = fn.backward(res, ct)
            return (value, grads)
        value, grads = fn.value_and_grad(*inputs, cotangent=ct)
        return (value, grads)

    run()  # warm-up: imports, the thread pool, first-call caches
    run.keep = None  # type: ignore[attr-defined]
    times = []
    for _ in range(args.reps):  # untraced: tracemalloc slows every allocation down
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        run.keep = None  # type: ignore[attr-defined]
    gc.collect()
    rss_before = _status_bytes("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        hwm_ok = True
    except OSError:
        hwm_ok = False
    tracemalloc.start()
    out = run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = _status_bytes("VmHWM")
    returned = _nbytes(out)
    result = {
        "function": args.function, "what": args.what, "mode": args.mode, "dtype": args.dtype,
        "input_bytes": int(x.nbytes), "returned_bytes": returned, "traced_peak": peak,
        "rss_peak": (hwm - rss_before) if hwm_ok and hwm and rss_before else None,
        "seconds": sorted(times)[len(times) // 2] if times else None,
    }
    print(MARK + json.dumps(result), flush=True)
    return 0


def header(args: argparse.Namespace) -> list[str]:
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = _status_bytes("MemTotal")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = float(line.split()[1]) * 1024
    except OSError:
        pass
    load = f", load avg {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return [
        f"date {dt.date.today().isoformat()}; {cpu}, {os.cpu_count()} cores, "
        f"{(mem or 0) / 2**30:.0f} GiB{load}",
        f"Python {platform.python_version()}, NumPy {np.__version__}; "
        f"REFSOFTMAX_NUM_THREADS={os.environ.get('REFSOFTMAX_NUM_THREADS', '(cores)')}",
        f"input {args.batch} × {args.classes}; one call per fresh process, after one warm-up call",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=32000)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--functions", nargs="+", default=list(FUNCTIONS))
    parser.add_argument("--modes", nargs="+", default=["kernel", "generic"])
    parser.add_argument("--compare-with", default=None,
                        help="a directory holding another refsoftmax package (mode 'original')")
    parser.add_argument("--reps", type=int, default=3,
                        help="untraced timed calls per measurement (the median is reported)")
    parser.add_argument("--no-results", action="store_true", help="do not write results/")
    # the child's arguments
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--function", help=argparse.SUPPRESS)
    parser.add_argument("--what", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--package", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    modes = list(args.modes) + (["original"] if args.compare_with else [])
    lines = header(args)
    for line in lines:
        print(line, flush=True)
    results = []
    for dtype in args.dtypes:
        for function in args.functions:
            for what in MODES[function]:
                for mode in modes:
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--child",
                           "--function", function, "--what", what, "--dtype", dtype,
                           "--mode", "kernel" if mode == "original" else mode,
                           "--batch", str(args.batch), "--classes", str(args.classes),
                           "--reps", str(args.reps)]
                    if mode == "original":
                        cmd += ["--package", str(Path(args.compare_with).resolve())]
                    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    got = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
                    if proc.returncode != 0 or not got:
                        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
                        print(f"{dtype} {function} {what} {mode}: FAILED ({tail})", flush=True)
                        continue
                    r = json.loads(got[-1][len(MARK):])
                    r["mode"] = mode
                    results.append(r)
                    print(f"{dtype:8} {function:30} {what:17} {mode:9} "
                          f"traced {_ratio(r, 'traced_peak')}  RSS {_ratio(r, 'rss_peak')}  "
                          f"{_seconds(r)}", flush=True)
    table = _table(results, modes)
    print("\n" + "\n".join(table))
    if not args.no_results:
        RESULTS.parent.mkdir(exist_ok=True)
        legend = ("Columns: extra memory / input as tracemalloc (RSS); then the median seconds "
                  f"of {args.reps} untraced calls. kernel = `numpy_kernels.ENABLED = True`, "
                  "generic = `False`, original = the package given to `--compare-with`.")
        RESULTS.write_text(f"# bench_memory.py — {dt.date.today().isoformat()}\n\n{legend}\n\n"
                           "```\n" + "\n".join(lines) + "\n```\n\n" + "\n".join(table) + "\n")
        print(f"\nwritten to {RESULTS}")
    return 0


def _ratio(r: dict, key: str) -> str:
    if r.get(key) is None:
        return "n/a"
    return f"{(r[key] - r['returned_bytes']) / r['input_bytes']:.2f}×"


def _seconds(r: dict) -> str:
    return "" if r.get("seconds") is None else f"{r['seconds']:.3f} s"


def _table(results: list[dict], modes: list[str]) -> list[str]:
    """Extra memory / input as tracemalloc (RSS), then the median seconds, per mode."""
    cols = " | ".join(f"{m}" for m in modes) + " | " + " | ".join(f"{m} s" for m in modes)
    out = [f"| dtype | function | call | {cols} |", "|---|---|---|" + "---:|" * 2 * len(modes)]
    keys = []
    for r in results:
        k = (r["dtype"], r["function"], r["what"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        cells, times = [], []
        for m in modes:
            hit = [r for r in results if (r["dtype"], r["function"], r["what"]) == k
                   and r["mode"] == m]
            cells.append("" if not hit else
                         f"{_ratio(hit[0], 'traced_peak')} ({_ratio(hit[0], 'rss_peak')})")
            times.append("" if not hit or hit[0]["seconds"] is None else f"{hit[0]['seconds']:.3f}")
        cells += times
        out.append(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(cells) + " |")
    return out


if __name__ == "__main__":
    raise SystemExit(main())

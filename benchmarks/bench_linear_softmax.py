r"""Exact softmax cross-entropy from hidden states: chunked (refsoftmax) vs materialised logits (CPU).

What is measured
----------------
Hidden states ``x [B, D]``, output embedding ``W [C, D]``, bias ``b [C]``, labels ``y [B]``; by
default B = 4096, C = 262,144, D = 256, float32, so the ``[B, C]`` logits take 4 GiB.  One call
computes the mean loss and the gradients with respect to ``W``, ``b`` and ``x``:

=============================  =====================================================================
name                           what one call does
=============================  =====================================================================
``refsoftmax-chunked``         ``refsoftmax.linear_softmax_cross_entropy.value_and_grad(W, b, y, x,
                               chunk_size=…, reduction="mean")``: never holds ``[B, C]``; one row per
                               ``--chunk-size`` entry (``default`` = the library's choice, reported).
``numpy-materialised``         ``logits = x @ W.T; logits += b`` (the bias added in place, which
                               saves a second 4 GiB array), then
                               ``refsoftmax.sparse_softmax_cross_entropy.value_and_grad(logits, y,
                               reduction="mean")`` (NumPy's fused in-place kernel), then
                               ``dW = G.T @ x``, ``dx = G @ W``, ``db = G.sum(0)``.  The baseline.
``torch-materialised``         ``F.cross_entropy(F.linear(x, W, b), y)`` + ``loss.backward()``
                               (``F.linear`` is ``x @ W.T + b``).                              [peer]
=============================  =====================================================================

Memory
------
For each row a **fresh Python process** (this script with ``--memory-child``) makes the inputs,
then runs one call while measuring:

* ``tracemalloc``: the peak of the memory allocated during the call (NumPy reports its array
  buffers to ``tracemalloc``; torch does not, so torch rows show only RSS), and how much of it
  is still held by the returned loss and gradients (``dW`` alone is C·D·4 bytes = 256 MiB);
* the peak RSS above the RSS before the call (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs``), which also sees torch's allocator and the BLAS buffers.

The target (from the issue) is a peak extra memory of at most 10% of the 4 GiB the
materialised logits take; both readings are reported — with and without the returned
gradients, which every implementation must return.

Time and correctness
--------------------
Before timing, every row is called once and compared with the first row (``refsoftmax-chunked``
with the default chunk): loss to relative 1e-5, each gradient as ``B · grad`` with
``|Δ| ≤ 1e-4 |ref| + 1e-5 max|ref|`` elementwise (maximum differences printed); a row that
disagrees is not timed.  Then ``--reps`` interleaved rounds (default 3; one call takes 10–30 s on
2 cores), the starting row rotating.  The table gives median, IQR, minimum and the ratios to
``numpy-materialised`` and ``torch-materialised``; the target is at most 1.5× materialising.

``--profile`` line-times one ``refsoftmax-chunked`` call (inclusive seconds per line of
``refsoftmax/*.py``; the line timer is ``bench_sampled_softmax.LineTimer``).

Each run writes its tables to ``benchmarks/results/bench_linear_softmax.md`` (``--profile``:
``…-profile.md``; ``--no-results`` to skip).  Threads: ``--threads N`` as in
``bench_sparse_ce.py``, plus ``REFSOFTMAX_NUM_THREADS`` (NumPy fused kernel).

Usage::

    python benchmarks/bench_linear_softmax.py                   # memory + time (0.5-2 min a call)
    python benchmarks/bench_linear_softmax.py --chunk-size default,1024,8192
    python benchmarks/bench_linear_softmax.py --no-memory --reps 5
    python benchmarks/bench_linear_softmax.py --memory-only
    python benchmarks/bench_linear_softmax.py --batch 1024 --classes 65536 --reps 3
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sampled_softmax import (  # the benchmarks folder is not a package: found via sys.path
    GRAD_ATOL_REL,
    GRAD_RTOL,
    LOSS_RTOL,
    LineTimer,
    Log,
    summarise,
)
from bench_sparse_ce import (
    Missing,
    _import_torch,
    available_cores,
    configure_threads,
    machine_report,
)

IMPLEMENTATIONS = ("refsoftmax-chunked", "numpy-materialised", "torch-materialised")
PEERS = ("torch-materialised",)
BASELINE = "numpy-materialised"
MEMORY_TARGET = 0.10  # of the materialised logits
TIME_TARGET = 1.5  # × materialising
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MiB = float(1 << 20)
MARK = "MEMORY-RESULT "


@dataclass
class Problem:
    weights: Any
    biases: Any
    inputs: Any
    labels: Any

    @property
    def logits_bytes(self) -> float:
        return float(self.inputs.shape[0]) * self.weights.shape[0] * self.weights.itemsize


def make_problem(batch: int, classes: int, dim: int, seed: int) -> Problem:
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((classes, dim), dtype=np.float32)
    weights *= np.float32(1.0 / np.sqrt(dim))  # logits of unit scale
    biases = rng.standard_normal(classes, dtype=np.float32) * np.float32(0.1)
    inputs = rng.standard_normal((batch, dim), dtype=np.float32)
    labels = rng.integers(0, classes, size=batch, dtype=np.int64)
    return Problem(weights, biases, inputs, labels)


@dataclass
class Impl:
    name: str  # display name
    kind: str  # one of IMPLEMENTATIONS
    chunk: int | None  # chunk_size argument (None: default)
    step: Callable[[], Any]
    to_numpy: Callable[[Any], tuple[float, dict[str, Any]]]
    times: list[float] = field(default_factory=list)
    first_only: bool = False  # --reps 0: timed by its correctness call alone
    # The first (correctness / memory) call: like ``step`` but also returns the chunk size used.
    first_step: Callable[[], tuple[Any, int | None]] | None = None

    def first(self) -> tuple[Any, int | None]:
        return self.first_step() if self.first_step else (self.step(), None)


def chunk_specs(text: str) -> list[int | None]:
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        out.append(None if part == "default" else int(part))
    return out


def row_name(kind: str, chunk: int | None) -> str:
    if kind != "refsoftmax-chunked":
        return kind
    return f"refsoftmax-chunked[{'default' if chunk is None else chunk}]"


def build(kind: str, chunk: int | None, p: Problem, threads: int) -> Impl:
    import numpy as np

    import refsoftmax

    def np_out(out: Any) -> tuple[float, dict[str, Any]]:
        loss, grads = out
        dense = {}
        for k, g in grads.items():
            dense[k] = g.detach().numpy() if hasattr(g, "detach") else np.asarray(g)
        loss = loss.detach().numpy() if hasattr(loss, "detach") else loss
        return float(np.asarray(loss)), dense

    if kind == "refsoftmax-chunked":
        f = refsoftmax.linear_softmax_cross_entropy

        def step_chunked() -> Any:
            return f.value_and_grad(
                p.weights, p.biases, p.labels, p.inputs, chunk_size=chunk, reduction="mean"
            )

        def first_chunked() -> tuple[Any, int | None]:
            # value_and_grad's own body (forward, then backward with a cotangent of ones), so
            # that the residuals tell the chunk size actually used.
            value, res = f.forward(
                p.weights, p.biases, p.labels, p.inputs, chunk_size=chunk, reduction="mean"
            )
            return (value, f.backward(res, np.ones_like(value))), int(res.chunk)

        return Impl(row_name(kind, chunk), kind, chunk, step_chunked, np_out,
                    first_step=first_chunked)

    if kind == "numpy-materialised":
        ce = refsoftmax.sparse_softmax_cross_entropy
        w, b, x, y = p.weights, p.biases, p.inputs, p.labels

        def step_np() -> Any:
            logits = x @ w.T
            logits += b
            loss, g = ce.value_and_grad(logits, y, reduction="mean")
            del logits
            gl = g.pop("logits")
            return loss, {"weights": gl.T @ x, "biases": np.sum(gl, axis=0), "inputs": gl @ w}

        return Impl(kind, kind, None, step_np, np_out)

    if kind == "torch-materialised":
        torch = _import_torch(threads)
        import torch.nn.functional as F

        wt = torch.from_numpy(p.weights).requires_grad_(True)
        bt = torch.from_numpy(p.biases).requires_grad_(True)
        xt = torch.from_numpy(p.inputs).requires_grad_(True)
        yt = torch.from_numpy(p.labels)

        def step_torch() -> Any:
            wt.grad = bt.grad = xt.grad = None
            loss = F.cross_entropy(F.linear(xt, wt, bt), yt)
            loss.backward()
            return loss.detach(), {"weights": wt.grad, "biases": bt.grad, "inputs": xt.grad}

        return Impl(kind, kind, None, step_torch, np_out)

    raise ValueError(kind)


def compare(impl: Impl, out: Any, ref: tuple[float, dict[str, Any]] | None, batch: int,
            log: Log) -> tuple[bool, tuple[float, dict[str, Any]]]:
    import numpy as np

    loss, grads = impl.to_numpy(out)
    finite = bool(np.isfinite(loss)) and all(bool(np.all(np.isfinite(g))) for g in grads.values())
    if ref is None:
        log.text(f"  {impl.name:<30} reference: loss {loss:.6f}" + ("" if finite else "  NOT FINITE"))
        return finite, (loss, grads)
    ref_loss, ref_grads = ref
    d_loss = abs(loss - ref_loss)
    ok = finite and d_loss <= LOSS_RTOL * abs(ref_loss)
    parts = [f"|Δloss| {d_loss:.1e} (rel {d_loss / abs(ref_loss):.1e})"]
    for k, r in ref_grads.items():
        g = grads[k]
        a = g.astype(np.float64) * batch
        e = r.astype(np.float64) * batch
        ref_max = float(np.max(np.abs(e)))
        d = np.abs(a - e)
        bad = int(np.count_nonzero(d > GRAD_RTOL * np.abs(e) + GRAD_ATOL_REL * ref_max))
        ok = ok and bad == 0
        parts.append(
            f"{k}: max|Δ(B·g)| {float(np.max(d)):.1e} (rel {float(np.max(d)) / ref_max:.1e})"
            + (f", {bad} out of tol" if bad else "")
        )
        del a, e, d
    log.text(f"  {impl.name:<30} {'ok  ' if ok else 'FAIL'}  " + "; ".join(parts))
    return ok, (loss, grads)


# --------------------------------------------------------------------------- memory


def _status_bytes(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_child(args: argparse.Namespace) -> int:
    """Run in a fresh process: one call of ``args.memory_child``, memory measured; print JSON."""
    import resource
    import tracemalloc

    p = make_problem(args.batch, args.classes, args.dim, args.seed)
    chunk = chunk_specs(args.chunk_size)[0]
    impl = build(args.memory_child, chunk, p, args.threads)
    gc.collect()
    rss_before = _status_bytes("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        hwm_ok = True
    except OSError:
        hwm_ok = False
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
    tracemalloc.start()
    t0 = time.perf_counter()
    out, chunk_used = impl.first()
    elapsed = time.perf_counter() - t0
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = _status_bytes("VmHWM")
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
    _, grads = out
    out_bytes = sum(int(g.nbytes) if hasattr(g, "nbytes") else g.numel() * g.element_size()
                    for g in grads.values())
    result = {
        "name": impl.name,
        "seconds": elapsed,
        "tracemalloc_peak": peak,
        "tracemalloc_held": held,
        "output_bytes": out_bytes,
        "rss_peak_increase": (hwm - rss_before) if hwm_ok and hwm and rss_before else None,
        "maxrss_increase": max(0.0, maxrss_after - maxrss_before),
        "chunk_used": chunk_used,
    }
    print(MARK + json.dumps(result), flush=True)
    return 0


def run_memory(args: argparse.Namespace, rows: list[tuple[str, int | None]], logits_bytes: float,
               log: Log) -> None:
    results = []
    for kind, chunk in rows:
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--memory-child", kind,
            "--chunk-size", "default" if chunk is None else str(chunk),
            "--batch", str(args.batch), "--classes", str(args.classes), "--dim", str(args.dim),
            "--seed", str(args.seed), "--threads", str(args.threads), "--no-results",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
        if proc.returncode != 0 or not lines:
            if "Missing" in proc.stderr or "is not installed" in proc.stderr:
                log.text(f"  {row_name(kind, chunk):<30} skipped: library not installed")
            else:
                tail = proc.stderr.strip().splitlines()[-3:]
                log.text(f"  {row_name(kind, chunk):<30} FAILED (rc {proc.returncode}): {' | '.join(tail)}")
            continue
        r = json.loads(lines[-1][len(MARK):])
        r["wall"] = time.perf_counter() - t0
        results.append(r)
        log.text(f"  {r['name']:<30} measured in a fresh process ({r['wall']:.0f} s)")
    if not results:
        return
    limit = MEMORY_TARGET * logits_bytes
    table = [
        "| implementation | chunk_size | tracemalloc peak MiB | of which returned MiB | peak − returned MiB "
        "| RSS peak increase MiB | % of logits (peak / peak − returned / RSS) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        tm = r["tracemalloc_peak"] / MiB
        ret = r["tracemalloc_held"] / MiB
        rss = r["rss_peak_increase"]
        rss_s = "n/a" if rss is None else f"{rss / MiB:.0f}"
        numpy_side = r["tracemalloc_peak"] > 0.01 * r["output_bytes"]
        pct = []
        for v in (r["tracemalloc_peak"] if numpy_side else None,
                  r["tracemalloc_peak"] - r["tracemalloc_held"] if numpy_side else None, rss):
            pct.append("n/a" if v is None else f"{100 * v / logits_bytes:.1f}")
        chunk_s = "" if r["chunk_used"] is None else str(r["chunk_used"])
        table.append(
            f"| {r['name']} | {chunk_s} | {tm:.0f} | {ret:.0f} | {tm - ret:.0f} | {rss_s} | "
            f"{' / '.join(pct)} |"
            if numpy_side else
            f"| {r['name']} | {chunk_s} | n/a (not NumPy) | n/a | n/a | {rss_s} | {' / '.join(pct)} |"
        )
    log.text()
    log.md("\n".join(table))
    log.text()
    items = []
    for r in results:
        if not r["name"].startswith("refsoftmax"):
            continue
        peak, held = r["tracemalloc_peak"], r["tracemalloc_held"]
        items.append(
            f"- {r['name']} (chunk {r['chunk_used']}): peak {peak / MiB:.0f} MiB incl. the "
            f"{held / MiB:.0f} MiB of returned gradients → **{'met' if peak <= limit else 'MISSED'}** "
            f"against {limit / MiB:.0f} MiB (10% of {logits_bytes / MiB:.0f} MiB); "
            f"excluding the returned gradients {(peak - held) / MiB:.0f} MiB → "
            f"**{'met' if peak - held <= limit else 'MISSED'}**"
        )
    if items:
        log.md("Memory target (≤ 10% of the materialised logits):\n\n" + "\n".join(items))


# --------------------------------------------------------------------------- time


def run_time(args: argparse.Namespace, p: Problem, rows: list[tuple[str, int | None]],
             log: Log) -> None:
    impls: list[Impl] = []
    ref: tuple[float, dict[str, Any]] | None = None
    log.text(
        f"correctness (vs the first row; loss rel {LOSS_RTOL:g}; B·grad |Δ| ≤ {GRAD_RTOL:g}|ref| + "
        f"{GRAD_ATOL_REL:g} max|ref|):"
    )
    batch = p.inputs.shape[0]
    for kind, chunk in rows:
        try:
            impl = build(kind, chunk, p, args.threads)
        except Missing as exc:
            log.text(f"  {row_name(kind, chunk):<30} skipped: {exc} is not installed")
            continue
        t0 = time.perf_counter()
        out, chunk_used = impl.first()
        first = time.perf_counter() - t0
        ok, dense = compare(impl, out, ref, batch, log)
        if ref is None and ok:
            ref = dense
        del out, dense
        used = "" if chunk_used is None else f"; chunk_size used: {chunk_used}"
        log.text(f"  {'':<30} first call {first:.1f} s{used}")
        if ok:
            if args.reps == 0:
                impl.times.append(first)
                impl.first_only = True
            impls.append(impl)
        else:
            log.text(f"  {impl.name:<30} disagrees: NOT timed")
        gc.collect()
    ref = None
    gc.collect()
    log.text()
    if not impls:
        log.text("nothing to time")
        return
    start = time.perf_counter()
    for rep in range(args.reps):
        k = rep % len(impls)
        for impl in impls[k:] + impls[:k]:
            t0 = time.perf_counter()
            out = impl.step()
            impl.times.append(time.perf_counter() - t0)
            del out
    elapsed = time.perf_counter() - start
    load = f"; load avg {os.getloadavg()[0]:.2f} at end" if hasattr(os, "getloadavg") else ""
    if args.reps:
        log.text(f"timed {args.reps} interleaved rounds in {elapsed:.0f} s{load}")
    else:
        log.text("--reps 0: every row timed by its correctness call alone")
    log.text()
    med = {i.name: summarise(i.times)[0] for i in impls}
    base = med.get(BASELINE)
    peer = med.get("torch-materialised")
    table = [
        "| implementation | calls | median s | IQR s | min s | × numpy-materialised | × torch-materialised |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for impl in impls:
        m, iqr, mn = summarise(impl.times)
        tag = " (peer)" if impl.kind in PEERS else " (baseline)" if impl.kind == BASELINE else ""
        calls = "1 (first call)" if impl.first_only else str(len(impl.times))
        table.append(
            f"| {impl.name}{tag} | {calls} | {m:.2f} | {iqr:.2f} | {mn:.2f} | "
            f"{'n/a' if base is None else f'{m / base:.2f}'} | "
            f"{'n/a' if peer is None else f'{m / peer:.2f}'} |"
        )
    log.md("\n".join(table))
    items = []
    for impl in impls:
        if impl.kind != "refsoftmax-chunked":
            continue
        for other, m_other in ((BASELINE, base), ("torch-materialised", peer)):
            if m_other is None:
                continue
            ratio = med[impl.name] / m_other
            items.append(
                f"- {impl.name} vs {other}: ×{ratio:.2f} — "
                f"**{'met' if ratio <= TIME_TARGET else 'MISSED'}** (target ≤ ×{TIME_TARGET})"
            )
    if items:
        log.text()
        log.md("Time target (within 1.5× of materialising):\n\n" + "\n".join(items))


def profile_mode(args: argparse.Namespace, p: Problem, log: Log) -> None:
    import refsoftmax

    chunk = chunk_specs(args.chunk_size)[0]
    f = refsoftmax.linear_softmax_cross_entropy

    def call() -> Any:
        return f.value_and_grad(p.weights, p.biases, p.labels, p.inputs, chunk_size=chunk,
                                reduction="mean")

    for _ in range(args.warmup):
        call()
    timer = LineTimer(str(Path(refsoftmax.__file__).resolve().parent))
    calls = max(1, args.reps)
    t0 = time.perf_counter()
    with timer:
        for _ in range(calls):
            call()
    per_call = (time.perf_counter() - t0) / calls
    log.text(f"refsoftmax-chunked[{chunk or 'default'}]: {per_call:.2f} s per call under the line "
             f"timer ({calls} calls); lines ≥ 0.5% of the call shown")
    log.md("")
    timer.report(calls, per_call, log)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Memory and time of chunked exact softmax CE vs materialised logits (CPU).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--reps", type=int, default=3,
                        help="timed rounds; 0: time each row by its correctness call alone")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls (--profile only)")
    parser.add_argument("--batch", type=int, default=4096, help="examples B")
    parser.add_argument("--classes", type=int, default=262_144, help="classes C")
    parser.add_argument("--dim", type=int, default=256, help="hidden size D")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs")
    parser.add_argument("--chunk-size", default="default",
                        help="comma-separated chunk_size values for refsoftmax ('default' = None)")
    parser.add_argument("--threads", type=int, default=len(available_cores()),
                        help="threads/cores every library may use (see bench_sparse_ce.py)")
    parser.add_argument(
        "--only", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None,
        help=f"comma-separated subset of {', '.join(IMPLEMENTATIONS)}",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--memory-only", action="store_true", help="only measure memory")
    parser.add_argument("--profile", action="store_true",
                        help="line-time one refsoftmax-chunked call instead")
    parser.add_argument("--no-results", action="store_true",
                        help="do not write benchmarks/results/*.md")
    parser.add_argument("--results-tag", default="",
                        help="write benchmarks/results/bench_linear_softmax-TAG.md instead")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--list", action="store_true", help="list the implementations and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name in IMPLEMENTATIONS:
            print(name + ("  (peer)" if name in PEERS else "")
                  + ("  (baseline)" if name == BASELINE else ""))
        sys.exit(0)
    if args.only is not None:
        unknown = [n for n in args.only if n not in IMPLEMENTATIONS]
        if unknown:
            parser.error(f"unknown implementation(s) {unknown}; choose from {list(IMPLEMENTATIONS)}")
    try:
        specs = chunk_specs(args.chunk_size)
    except ValueError:
        parser.error("--chunk-size takes 'default' or positive integers, comma-separated")
    if not specs or any(c is not None and c < 1 for c in specs):
        parser.error("--chunk-size takes 'default' or positive integers, comma-separated")
    if args.reps < 0:
        parser.error("--reps must be at least 0")
    for opt in ("batch", "classes", "dim", "threads"):
        if getattr(args, opt) < 1:
            parser.error(f"--{opt} must be at least 1")
    if args.no_memory and args.memory_only:
        parser.error("--no-memory and --memory-only exclude each other")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes = configure_threads(args.threads)  # before numpy and torch are imported
    os.environ["REFSOFTMAX_NUM_THREADS"] = str(args.threads)
    notes.append(f"REFSOFTMAX_NUM_THREADS={args.threads}")
    if args.memory_child is not None:
        return memory_child(args)

    log = Log()
    logits_gib = args.batch * args.classes * 4 / float(1 << 30)
    what = "profile of linear_softmax_cross_entropy" if args.profile else (
        "linear_softmax_cross_entropy (chunked) vs materialised logits")
    log.text(
        f"{what}, forward + backward, mean reduction, float32; B={args.batch}, C={args.classes}, "
        f"D={args.dim} ([B, C] logits: {logits_gib:.2f} GiB), seed {args.seed}"
    )
    log.captured(lambda: machine_report(args.threads, notes))
    parts = []
    if args.profile:
        parts.append(f"{args.warmup} warm-up call(s), then {max(1, args.reps)} under the line timer")
    else:
        if not args.no_memory:
            parts.append("memory: one call per row in a fresh process")
        if not args.memory_only:
            parts.append(
                f"time: one correctness call per row, then {args.reps} interleaved rounds"
                if args.reps else "time: each row timed by its correctness call alone (--reps 0)"
            )
    log.text(f"protocol : {'; '.join(parts)}")
    log.text()

    kinds = [k for k in IMPLEMENTATIONS if args.only is None or k in args.only]
    rows: list[tuple[str, int | None]] = []
    for kind in kinds:
        if kind == "refsoftmax-chunked":
            rows.extend((kind, c) for c in chunk_specs(args.chunk_size))
        else:
            rows.append((kind, None))

    if args.profile:
        p = make_problem(args.batch, args.classes, args.dim, args.seed)
        profile_mode(args, p, log)
    else:
        if not args.no_memory:
            log.text("memory (one call per row, each in a fresh process):")
            run_memory(args, rows, args.batch * args.classes * 4.0, log)
            log.text()
        if not args.memory_only:
            p = make_problem(args.batch, args.classes, args.dim, args.seed)
            run_time(args, p, rows, log)
    if not args.no_results:
        suffix = "".join(f"-{t}" for t in ("profile" if args.profile else "", args.results_tag) if t)
        log.write(RESULTS_DIR / f"bench_linear_softmax{suffix}.md", what)
    return 0


if __name__ == "__main__":
    sys.exit(main())

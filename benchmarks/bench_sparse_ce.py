r"""Forward + backward timing of sparse softmax cross-entropy on the CPU.

What is measured
----------------
One call of each implementation computes, from float32 logits ``[B, C]``
(default 2048 × 32,000) and int labels ``[B]``, the mean loss **and** its
gradient with respect to the logits, both materialised:

==========================  ==================================================================
name                        what one timed call does
==========================  ==================================================================
``numpy-plain``             plain NumPy written in this file in array-API style: max, subtract,
                            exp, sum, log, gather; backward ``(p - onehot) / B``.  Baseline.
``numpy-floor``             the fewest NumPy passes a fused implementation needs, on the fused
                            kernel's threads and row blocks (max, exp, sum, scale; no accuracy
                            work, no checks): a floor for any NumPy-ufunc implementation.
``refsoftmax-numpy``        ``refsoftmax.sparse_softmax_cross_entropy.value_and_grad(
                            logits, labels, reduction="mean")`` on NumPy arrays.
``refsoftmax-numpy-none``   the same with ``reduction="none"`` and a cotangent of ``1/B``
                            (the same gradient, through the per-example path).
``refsoftmax-torch``        ``refsoftmax-numpy``'s call with torch CPU tensors.
``refsoftmax-torch-none``   ``refsoftmax-numpy-none``'s call with torch CPU tensors.
``torch``                   ``F.cross_entropy`` + ``loss.backward()`` (autograd; ``.grad``
                            reset to ``None`` before every call).                     [peer]
``tf-eager``                ``tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits)``
                            under ``tf.GradientTape``, eagerly.                       [peer]
``tf-function``             the same wrapped in ``tf.function`` (traced during warm-up). [peer]
``optax-jit``               ``jax.jit(jax.value_and_grad(mean ∘
                            optax.softmax_cross_entropy_with_integer_labels))`` with
                            ``block_until_ready``; compiled during warm-up.            [peer]
==========================  ==================================================================

Input conversion (NumPy → torch / TF / JAX) happens once, outside the timed region; the
outputs are not copied back to NumPy inside it.  Every implementation gets the same seeded
inputs.

Before timing, every implementation's loss and gradient are compared once with
``numpy-plain``: the loss to relative 1e-5, the gradient with ``rtol=1e-4, atol=1e-6``.  The
gradient of the *mean* is ``(p - onehot) / B``, so tiny (≈ 1/(B·C)) that ``atol=1e-6`` would
accept anything; the check is therefore made on ``B · grad`` (the per-example gradient
``p - onehot``), where the tolerance means something.  The maximum absolute differences are
printed; an implementation that disagrees is not timed.

Protocol: ``--warmup`` untimed calls per implementation (JAX compilation and ``tf.function``
tracing happen there), then ``--reps`` rounds.  Each round calls every implementation once
(round-robin, the starting implementation rotating from round to round) so that slow drift
of the machine (other processes, frequency, memory) affects all of them alike.  Each call is
timed with ``time.perf_counter`` after a ``--pause`` (0.2 s) of sleep, the same for every
implementation: the libraries' worker pools (PyTorch's OpenMP threads, TensorFlow's and XLA's
Eigen pools) keep spinning for a while after a call, and without the pause whichever
implementation runs next shares the cores with them; the table gives the median and the inter-quartile range over
the rounds, the minimum, and the ratio of the median to the fastest peer's median (peers:
``torch``, ``tf-eager``, ``tf-function``, ``optax-jit``).

Threads (``--threads N``, default: every core this process may run on)
----------------------------------------------------------------------
Set *before* any array library is imported:

* CPU affinity: when ``N`` is smaller than the cores available, the process is pinned to
  the first ``N`` of them (``os.sched_setaffinity``, Linux), which bounds every library below.
* ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
  ``NUMEXPR_NUM_THREADS``, ``VECLIB_MAXIMUM_THREADS`` = N (BLAS / OpenMP pools).
* NumPy (both ``numpy-plain`` and ``refsoftmax-numpy``): element-wise ufuncs and reductions are
  single-threaded whatever N is; only BLAS would use the pools above, and none is called.
  So the NumPy rows use one core.
* PyTorch (``torch``, ``refsoftmax-torch``): ``torch.set_num_threads(N)`` (intra-op pool,
  ATen/OpenMP) and ``torch.set_num_interop_threads(N)``.
* TensorFlow: ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` = N and
  ``tf.config.threading.set_{intra,inter}_op_parallelism_threads(N)``.
* JAX / XLA (``optax-jit``): ``JAX_PLATFORMS=cpu``.  By default the XLA CPU client sizes its
  thread pool from the cores the process may run on, i.e. N once the affinity above is set.
  When N is below the usable cores, ``XLA_FLAGS`` is also prefixed with
  ``--xla_cpu_multi_thread_eigen={false if N = 1 else true} intra_op_parallelism_threads=N``.

Usage::

    python benchmarks/bench_sparse_ce.py                      # 15 rounds, 2048 × 32000
    python benchmarks/bench_sparse_ce.py --reps 5 --only numpy-plain,refsoftmax-numpy,torch
    python benchmarks/bench_sparse_ce.py --threads 1 --batch 512 --classes 8000
    python benchmarks/bench_sparse_ce.py --list
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMPLEMENTATIONS = (
    "numpy-plain",
    "numpy-floor",
    "refsoftmax-numpy",
    "refsoftmax-numpy-none",
    "refsoftmax-torch",
    "refsoftmax-torch-none",
    "torch",
    "tf-eager",
    "tf-function",
    "optax-jit",
)
PEERS = ("torch", "tf-eager", "tf-function", "optax-jit")
BASELINE = "numpy-plain"

LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
GRAD_ATOL = 1e-6


class Missing(Exception):
    """An implementation's library is not installed."""


@dataclass
class Impl:
    name: str
    step: Callable[[], Any]  # one forward + backward, finished when it returns
    to_numpy: Callable[[Any], tuple[Any, Any]]  # step()'s output -> (loss, grad) on the host
    times: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- threads


def available_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def configure_threads(n: int) -> list[str]:
    """Limit every library to ``n`` threads; must run before they are imported."""
    notes = []
    cores = available_cores()
    if n < len(cores) and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores[:n])
        notes.append(f"affinity: cores {cores[:n]}")
    for var in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    ):
        os.environ[var] = str(n)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["JAX_PLATFORMS"] = "cpu"
    if n < len(cores):  # XLA's CPU client uses every core it may run on by default
        eigen = "false" if n == 1 else "true"
        xla = f"--xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={n}"
        os.environ["XLA_FLAGS"] = f"{xla} {os.environ.get('XLA_FLAGS', '')}".strip()
    notes.append(f"OMP/MKL/OPENBLAS/TF_NUM_*_THREADS={n}")
    notes.append(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    return notes


# --------------------------------------------------------------------------- implementations


def plain_numpy_value_and_grad(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Mean sparse softmax cross-entropy and its gradient, array-API style on NumPy."""
    import numpy as xp

    n, c = logits.shape
    m = xp.max(logits, axis=-1, keepdims=True)
    zhat = logits - m
    e = xp.exp(zhat)
    s = xp.sum(e, axis=-1, keepdims=True)
    log_s = xp.log(s)
    zhat_t = xp.take_along_axis(zhat, xp.expand_dims(labels, axis=-1), axis=-1)
    loss = xp.mean(log_s - zhat_t)
    p = e / s
    onehot = xp.expand_dims(labels, axis=-1) == xp.arange(c, dtype=labels.dtype)
    grad = (p - xp.astype(onehot, logits.dtype)) * xp.asarray(1.0 / n, dtype=logits.dtype)
    return loss, grad


def floor_numpy_value_and_grad(logits: Any, labels: Any, threads: int, rows: int = 8
                               ) -> tuple[Any, Any]:
    """The fewest NumPy passes a fused implementation needs, on refsoftmax's schedule.

    Per block of ``rows`` rows (in the caches), on ``threads`` threads as the fused kernel:
    the row maximum, ``exp`` of the logits into the fresh gradient array (the direct form,
    no shift), the row sums (float64 accumulation), one scale, and the target entries.
    Nothing else: no shift-error recovery, no ``log1p`` form, no checks, no fallback.  It is
    correct to the benchmark's tolerances on its inputs (maxima in [0, 80]) and sets the
    floor for any NumPy-ufunc implementation on this machine.
    """
    import itertools
    import threading

    import numpy as np

    n = logits.shape[0]
    grad = np.empty_like(logits)
    losses = np.empty(n)

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi, rows):
            z, g, t = logits[i:i + rows], grad[i:i + rows], labels[i:i + rows]
            k = np.arange(len(t))
            z.max(axis=1)  # the maximum pass (the kernel needs it for its range test)
            np.exp(z, out=g)
            s = g.sum(axis=1, dtype=np.float64)
            losses[i:i + rows] = np.log(s) - z[k, t]
            p_t = g[k, t] / s
            np.multiply(g, (1.0 / (n * s)).astype(g.dtype)[:, None], out=g)
            g[k, t] = (p_t - 1.0) / n

    bounds = np.linspace(0, n, threads + 1).astype(int)
    workers = [threading.Thread(target=work, args=(int(a), int(b)))
               for a, b in itertools.pairwise(bounds)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return losses.mean(), grad


def build(name: str, logits_np: Any, labels_np: Any, threads: int) -> Impl:
    """Set up ``name`` on the shared inputs; raise :class:`Missing` if its library is absent."""
    import numpy as np

    batch = logits_np.shape[0]

    def ident(out: Any) -> tuple[Any, Any]:
        return np.asarray(out[0]), np.asarray(out[1])

    if name == "numpy-plain":
        return Impl(name, lambda: plain_numpy_value_and_grad(logits_np, labels_np), ident)

    if name == "numpy-floor":
        return Impl(name, lambda: floor_numpy_value_and_grad(logits_np, labels_np, threads), ident)

    if name.startswith("refsoftmax-"):
        try:
            import refsoftmax
        except ImportError as exc:
            raise Missing("refsoftmax") from exc
        f = refsoftmax.sparse_softmax_cross_entropy
        if name.startswith("refsoftmax-torch"):
            torch = _import_torch(threads)
            z: Any = torch.from_numpy(logits_np)
            t: Any = torch.from_numpy(labels_np)
            ct: Any = torch.full((batch,), 1.0 / batch, dtype=torch.float32)

            def to_np(out: Any) -> tuple[Any, Any]:
                return out[0].numpy(), out[1]["logits"].numpy()
        else:
            z, t = logits_np, labels_np
            ct = np.full((batch,), 1.0 / batch, dtype=np.float32)

            def to_np(out: Any) -> tuple[Any, Any]:
                return np.asarray(out[0]), np.asarray(out[1]["logits"])

        if name.endswith("-none"):

            def step() -> Any:
                return f.value_and_grad(z, t, cotangent=ct, reduction="none")

            def to_np_none(out: Any) -> tuple[Any, Any]:
                losses, grad = to_np(out)
                return np.mean(losses, dtype=np.float64), grad

            return Impl(name, step, to_np_none)
        return Impl(name, lambda: f.value_and_grad(z, t, reduction="mean"), to_np)

    if name == "torch":
        torch = _import_torch(threads)
        import torch.nn.functional as F

        zt = torch.from_numpy(logits_np).clone().requires_grad_(True)
        tt = torch.from_numpy(labels_np)

        def step_torch() -> Any:
            zt.grad = None
            loss = F.cross_entropy(zt, tt)
            loss.backward()
            return loss.detach(), zt.grad

        return Impl(name, step_torch, lambda out: (out[0].numpy(), out[1].numpy()))

    if name.startswith("tf-"):
        tf = _import_tf(threads)
        with tf.device("/CPU:0"):
            zf = tf.constant(logits_np)
            tf_labels = tf.constant(labels_np)

        def tf_step(z: Any, t: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(z)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=z)
                )
            return loss, tape.gradient(loss, z)

        fn = tf.function(tf_step) if name == "tf-function" else tf_step

        def step_tf() -> Any:
            with tf.device("/CPU:0"):
                return fn(zf, tf_labels)

        return Impl(name, step_tf, lambda out: (out[0].numpy(), out[1].numpy()))

    if name == "optax-jit":
        try:
            import jax
            import jax.numpy as jnp
            import optax
        except ImportError as exc:
            raise Missing(str(exc.name or "jax/optax")) from exc

        def loss_fn(z: Any, t: Any) -> Any:
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, t))

        vg = jax.jit(jax.value_and_grad(loss_fn))
        zj = jax.device_put(logits_np)
        tj = jax.device_put(labels_np.astype(np.int32))

        def step_jax() -> Any:
            return jax.block_until_ready(vg(zj, tj))

        return Impl(name, step_jax, ident)

    raise ValueError(name)


def _import_torch(threads: int) -> Any:
    try:
        import torch
    except ImportError as exc:
        raise Missing("torch") from exc
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work already ran
        torch.set_num_interop_threads(threads)
    return torch


def _import_tf(threads: int) -> Any:
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise Missing("tensorflow") from exc
    with contextlib.suppress(RuntimeError):  # already initialised by an earlier tf-* row
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


# --------------------------------------------------------------------------- checks, report


def check(impl: Impl, out: Any, ref_loss: Any, ref_grad: Any, batch: int) -> bool:
    import numpy as np

    loss, grad = impl.to_numpy(out)
    loss = float(loss)
    grad = np.asarray(grad)
    if grad.shape != ref_grad.shape:
        print(f"  {impl.name:<22} FAIL: gradient shape {grad.shape} != {ref_grad.shape}")
        return False
    loss_diff = abs(loss - float(ref_loss))
    loss_ok = loss_diff <= LOSS_RTOL * abs(float(ref_loss))
    g = grad.astype(np.float64) * batch
    r = ref_grad.astype(np.float64) * batch
    grad_ok = bool(np.allclose(g, r, rtol=GRAD_RTOL, atol=GRAD_ATOL))
    raw_diff = float(np.max(np.abs(grad.astype(np.float64) - ref_grad.astype(np.float64))))
    ok = loss_ok and grad_ok and bool(np.all(np.isfinite(grad)))
    print(
        f"  {impl.name:<22} {'ok  ' if ok else 'FAIL'}  "
        f"|Δloss| {loss_diff:.2e} (rel {loss_diff / abs(float(ref_loss)):.1e})  "
        f"max|Δgrad| {raw_diff:.2e}  max|Δ(B·grad)| {float(np.max(np.abs(g - r))):.2e}"
    )
    return ok


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def machine_report(threads: int, notes: list[str]) -> None:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(f"date     : {now}")
    print(f"machine  : {cpu}; {os.cpu_count()} logical cores, {len(available_cores())} usable")
    print(f"threads  : {threads}  ({'; '.join(notes)})")
    print(f"python   : {platform.python_version()} on {platform.platform()}")
    versions = []
    for dist in (
        "refsoftmax",
        "numpy",
        "array-api-compat",
        "torch",
        "tensorflow",
        "tensorflow-cpu",
        "jax",
        "jaxlib",
        "optax",
    ):
        v = _version(dist)
        if v is not None:
            versions.append(f"{dist} {v}")
    print(f"versions : {', '.join(versions)}")
    commit = _git_commit()
    if commit:
        print(f"commit   : {commit}")
    if hasattr(os, "getloadavg"):
        print(f"load avg : {'/'.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min) at start")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def table(impls: list[Impl]) -> None:
    import numpy as np

    stats = {}
    for impl in impls:
        t = np.asarray(impl.times)
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        stats[impl.name] = (med, q3 - q1, float(np.min(t)))
    peer_medians = [stats[n][0] for n in PEERS if n in stats]
    fastest = min(peer_medians) if peer_medians else None
    header = (
        f"{'implementation':<24}{'median s':>10}{'IQR s':>10}{'min s':>10}{'× fastest peer':>16}"
    )
    print(header)
    print("-" * len(header))
    for impl in impls:
        med, iqr, mn = stats[impl.name]
        ratio = f"{med / fastest:.2f}" if fastest else "n/a"
        tag = " (peer)" if impl.name in PEERS else ""
        print(f"{impl.name + tag:<24}{med:>10.4f}{iqr:>10.4f}{mn:>10.4f}{ratio:>16}")
    if fastest:
        best = min((n for n in PEERS if n in stats), key=lambda n: stats[n][0])
        print(f"fastest peer: {best} ({fastest:.4f} s median)")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time forward+backward of sparse softmax cross-entropy on the CPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--reps", type=int, default=15, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per implementation")
    parser.add_argument("--batch", type=int, default=2048, help="examples B")
    parser.add_argument("--classes", type=int, default=32000, help="classes C")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(available_cores()),
        help="threads/cores every library may use (see the module docstring)",
    )
    parser.add_argument(
        "--only",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=None,
        help="comma-separated implementations to run (default: all; see --list)",
    )
    parser.add_argument(
        "--pause", type=float, default=0.2,
        help="seconds of sleep before every timed call, so that the worker threads the previous "
             "library left spinning (OpenMP, Eigen, XLA pools) are idle when the next call starts",
    )
    parser.add_argument("--list", action="store_true", help="list the implementations and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name in IMPLEMENTATIONS:
            print(
                name
                + ("  (peer)" if name in PEERS else "")
                + ("  (baseline)" if name == BASELINE else "")
            )
        sys.exit(0)
    if args.only is not None:
        unknown = [n for n in args.only if n not in IMPLEMENTATIONS]
        if unknown:
            parser.error(
                f"unknown implementation(s) {unknown}; choose from {list(IMPLEMENTATIONS)}"
            )
    for opt in ("reps", "batch", "classes", "threads"):
        if getattr(args, opt) < 1:
            parser.error(f"--{opt} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes = configure_threads(args.threads)  # before numpy, torch, tf, jax are imported

    import numpy as np

    names = [n for n in IMPLEMENTATIONS if args.only is None or n in args.only]
    print(
        f"sparse softmax cross-entropy, forward + backward, mean reduction, float32, "
        f"B={args.batch} × C={args.classes}, seed {args.seed}"
    )
    machine_report(args.threads, notes)
    print(f"protocol : {args.warmup} warm-up call(s) each, {args.reps} interleaved rounds")
    print()

    rng = np.random.default_rng(args.seed)
    logits_np = rng.standard_normal((args.batch, args.classes), dtype=np.float32) * np.float32(2)
    labels_np = rng.integers(0, args.classes, size=args.batch, dtype=np.int64)
    ref_loss, ref_grad = plain_numpy_value_and_grad(logits_np, labels_np)

    # The baseline itself against a float64 evaluation, for the record.
    loss64, grad64 = plain_numpy_value_and_grad(logits_np.astype(np.float64), labels_np)
    d64 = float(np.max(np.abs(ref_grad - grad64)))
    print(
        f"baseline vs float64: |Δloss| {abs(float(ref_loss) - float(loss64)):.2e}, "
        f"max|Δgrad| {d64:.2e}, max|Δ(B·grad)| {d64 * args.batch:.2e}"
    )
    del loss64, grad64

    print(
        f"correctness vs {BASELINE} (loss rel {LOSS_RTOL:g}; B·grad rtol {GRAD_RTOL:g}, "
        f"atol {GRAD_ATOL:g}):"
    )
    impls: list[Impl] = []
    for name in names:
        try:
            impl = build(name, logits_np, labels_np, args.threads)
        except Missing as exc:
            print(f"  {name:<22} skipped: {exc} is not installed")
            continue
        out = impl.step()  # first call: also the first warm-up (compiles / traces)
        ok = check(impl, out, ref_loss, ref_grad, args.batch)
        del out
        if not ok:
            print(f"  {name:<22} disagrees with {BASELINE}: NOT timed")
            continue
        for _ in range(args.warmup - 1):
            impl.step()
        impls.append(impl)
    del ref_grad
    print()
    if not impls:
        print("nothing to time")
        return 1

    gc.collect()
    start = time.perf_counter()
    for rep in range(args.reps):
        k = rep % len(impls)
        for impl in impls[k:] + impls[:k]:
            time.sleep(args.pause)  # the same quiet start for every implementation
            t0 = time.perf_counter()
            out = impl.step()
            impl.times.append(time.perf_counter() - t0)
            del out
    elapsed = time.perf_counter() - start
    load = f"; load avg {os.getloadavg()[0]:.2f} at end" if hasattr(os, "getloadavg") else ""
    print(f"timed {args.reps} rounds in {elapsed:.1f} s{load}")
    print()
    table(impls)
    return 0


if __name__ == "__main__":
    sys.exit(main())

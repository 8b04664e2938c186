r"""Sampled softmax, forward + backward, against TensorFlow's and against exact full softmax (CPU).

What is measured
----------------
Model: hidden states ``x [B, D]``, output embedding ``W [C, D]`` and bias ``b [C]``, one label
per example ``y [B, 1]``; by default B = 1024, D = 256, C = 1,000,000, float32, and 8192 shared
candidates drawn log-uniformly **without replacement** (``unique=True``).  The labels are drawn
from the same log-uniform (Zipf-like) law, so accidental hits occur and are removed.

One sample of candidates (``sampled_values``: candidates, true and sampled expected counts) is
drawn once, with :class:`refsoftmax.samplers.LogUniformSampler`, and given explicitly to every
sampled implementation, so they all compute the same function.  One timed call computes the mean
loss and the gradients with respect to ``W``, ``b`` and ``x``:

=======================  ==========================================================================
name                     what one timed call does
=======================  ==========================================================================
``refsoftmax``           ``refsoftmax.sampled_softmax_loss.value_and_grad(W, b, y, x, S, C,
                         sampled_values=sv, reduction="mean")`` on NumPy arrays.  The ``W`` / ``b``
                         gradients are ``RowSparse`` and stay so (never densified while timed).
``refsoftmax-torch``     the same call on torch CPU tensors (sharing NumPy's memory).
``tf-eager``             ``tf.reduce_mean(tf.nn.sampled_softmax_loss(W, b, y, x, S, C,
                         sampled_values=sv))`` under ``tf.GradientTape`` (``W``, ``b``, ``x``
                         ``tf.Variable``), eagerly; the ``W`` / ``b`` gradients are
                         ``IndexedSlices`` (not densified either).                           [peer]
``tf-function``          the same inside ``tf.function`` (traced during the first call).     [peer]
``refsoftmax-full``      exact full softmax: ``refsoftmax.linear_softmax_cross_entropy
                         .value_and_grad(W, b, y, x, reduction="mean")``, chunked over the
                         classes, dense gradients.
``torch-full``           materialised: ``F.cross_entropy(F.linear(x, W, b), y)`` (``F.linear``
                         is ``x @ W.T + b``) and ``loss.backward()``.                        [peer]
``tf-full-eager``        materialised: ``tf.matmul(x, W, transpose_b=True) + b`` →
                         ``sparse_softmax_cross_entropy_with_logits`` → mean, ``GradientTape``.
                                                                                             [peer]
``tf-full-function``     the same inside ``tf.function``.                                    [peer]
``refsoftmax-sampler``   ``LogUniformSampler(C).sample(y, S, unique=True, seed=k)`` (fresh seed
                         every call; the sampler object is made once).
``tf-sampler``           ``tf.random.log_uniform_candidate_sampler(y, 1, S, True, C, seed=1)``
                         eagerly (the kernel's generator advances, a fresh draw every call). [peer]
=======================  ==========================================================================

The full-softmax rows materialise (or recompute) ``[B, C]`` logits: 4 GB at the default size.  A
materialised peer is **skipped, with the reason printed**, when its estimated peak memory exceeds
``--mem-limit-gb`` (default 16) or what the machine has available less 1 GiB.  The estimates are
``factor × B·C·4`` bytes with factors measured with this script's code in fresh processes at
B = 1024, C = 100,000 (peak RSS): torch ≈ 3.0, TF eager ≈ 4.4, TF ``tf.function`` ≈ 1.3, rounded
up to 3.1 / 4.5 / 1.4.  The peak RSS increase actually seen during each full row's first call is
printed as well.

Correctness first
-----------------
Every implementation is called once before timing and compared with the first implementation
of its group (``refsoftmax`` for the sampled rows, ``refsoftmax-full`` for the full rows): the
loss to relative 1e-5 and each gradient, **densified outside the timed region** (RowSparse
``to_dense()``, ``tf.convert_to_tensor`` of the IndexedSlices), as ``B · grad`` (the gradient
of the *sum*; the mean's is too small for an absolute tolerance to mean anything) with
``|Δ| ≤ 1e-4 |ref| + 1e-5 max|ref|`` elementwise.  The maximum absolute and relative (to the
largest reference entry) differences are printed; an implementation that disagrees is not timed.
The samplers cannot give the same candidates (different generators); both are checked for
``S`` distinct in-range candidates, and their expected counts for consistency with
``Q(c) = 1 - (1 - P(c))^T`` at a single number of tries ``T`` (largest relative residual printed).

Protocol
--------
``--warmup`` untimed calls (default 2; the correctness call is the first) for the sampled rows and
the samplers, then ``--reps`` interleaved rounds (default 10): each round calls every row once
(the samplers ``--sampler-calls`` times, default 5), the starting row rotating.  A full-softmax
call takes tens of seconds, so the full rows take part only in the first ``--full-reps`` rounds
(default 3) and have no warm-up besides the correctness call.  Each call is timed with
``time.perf_counter``.  The tables give the median, inter-quartile range and minimum, the ratio
to the fastest TF sampled row, and (for every row) the median divided by ``refsoftmax``'s.

Targets checked at the end (from the issue): ``refsoftmax`` ≤ the fastest TF sampled row; exact
full softmax ≥ 20× slower than ``refsoftmax``; the sampler reported separately.

``--scaling`` instead times ``refsoftmax`` only (sampled values fixed, so sampling excluded) at
``--scaling-classes`` (default 10^4, 10^5, 10^6) classes, interleaved: the cost should not grow
with C.  ``--profile`` runs the ``refsoftmax`` call under a line timer (inclusive seconds per line
of ``refsoftmax/*.py``) and times its irreducible part (the gather and the three matrix
products) on NumPy and torch.

Each run writes its tables to ``benchmarks/results/bench_sampled_softmax.md`` (``--scaling``:
``…-scaling.md``, ``--profile``: ``…-profile.md``; ``--no-results`` to skip).

Threads: ``--threads N`` as in ``bench_sparse_ce.py`` (whose helpers this script imports):
affinity, BLAS/OpenMP pools, TF intra/inter-op pools, ``torch.set_num_threads``.

Usage::

    python benchmarks/bench_sampled_softmax.py                  # everything (full rows: 0.5-2 min a call)
    python benchmarks/bench_sampled_softmax.py --reps 7 --full-reps 0   # full rows timed once
    python benchmarks/bench_sampled_softmax.py --reps 3 --full-reps 1
    python benchmarks/bench_sampled_softmax.py --only refsoftmax,tf-eager,tf-function
    python benchmarks/bench_sampled_softmax.py --scaling
    python benchmarks/bench_sampled_softmax.py --profile --reps 5
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import linecache
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sparse_ce import (  # the benchmarks folder is not a package: found via sys.path
    Missing,
    _import_tf,
    _import_torch,
    available_cores,
    configure_threads,
    machine_report,
)

SAMPLED = ("refsoftmax", "refsoftmax-torch", "tf-eager", "tf-function")
FULL = ("refsoftmax-full", "torch-full", "tf-full-eager", "tf-full-function")
SAMPLERS = ("refsoftmax-sampler", "tf-sampler")
IMPLEMENTATIONS = SAMPLED + FULL + SAMPLERS
PEERS = ("tf-eager", "tf-function", "torch-full", "tf-full-eager", "tf-full-function", "tf-sampler")
TF_SAMPLED = ("tf-eager", "tf-function")

LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
GRAD_ATOL_REL = 1e-5  # absolute tolerance, as a fraction of the largest reference entry

# Peak memory of a materialised full-softmax call, in units of the B·C·4 bytes of the logits
# (measured with this script's code at B = 1024, C = 100,000 in fresh processes, rounded up).
FULL_MEMORY_FACTORS = {"torch-full": 3.1, "tf-full-eager": 4.5, "tf-full-function": 1.4}

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GiB = float(1 << 30)


# --------------------------------------------------------------------------- output


class Log:
    """Prints as it goes and keeps the output as text and markdown blocks for the results file."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, str]] = []  # ("text" | "md", content)

    def text(self, line: str = "") -> None:
        print(line, flush=True)
        if self.blocks and self.blocks[-1][0] == "text":
            self.blocks[-1] = ("text", self.blocks[-1][1] + line + "\n")
        else:
            self.blocks.append(("text", line + "\n"))

    def md(self, block: str) -> None:
        print(block, flush=True)
        self.blocks.append(("md", block.rstrip("\n") + "\n"))

    def captured(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` (which prints) and log what it printed as text."""
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            fn()
        for line in buf.getvalue().rstrip("\n").split("\n"):
            self.text(line)

    def write(self, path: Path, title: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        parts = [f"# {title}\n", f"Command: `{' '.join(['python', *sys.argv])}`\n"]
        for kind, content in self.blocks:
            text = content.strip("\n")
            if not text:
                continue
            parts.append(f"```text\n{text}\n```\n" if kind == "text" else text + "\n")
        path.write_text("\n".join(parts))
        print(f"\nwrote {path}")


def summarise(times: list[float]) -> tuple[float, float, float]:
    import numpy as np

    t = np.asarray(times)
    q1, med, q3 = np.percentile(t, [25, 50, 75])
    return float(med), float(q3 - q1), float(np.min(t))


def mem_available() -> float | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _status_bytes(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_increase(fn: Callable[[], Any]) -> tuple[Any, float | None]:
    """Call ``fn``; return its result and the peak RSS above the RSS before the call (Linux).

    Resets the process's high-water mark (``VmHWM``) by writing 5 to ``/proc/self/clear_refs``.
    """
    before = _status_bytes("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        before = None
    out = fn()
    peak = _status_bytes("VmHWM")
    if before is None or peak is None:
        return out, None
    return out, max(0.0, peak - before)


# --------------------------------------------------------------------------- line timer


class LineTimer:
    """Inclusive wall time per executed line of the Python files under ``prefix`` (sys.settrace).

    A line's time runs from its line event to the next event of the same frame, so it includes
    the functions it calls (traced ones are also broken down on their own lines).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.times: dict[tuple[str, str, int], float] = defaultdict(float)
        self.hits: dict[tuple[str, str, int], int] = defaultdict(int)
        self._last: dict[int, tuple[tuple[str, str, int] | None, float]] = {}

    def _global(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code.co_filename.startswith(self.prefix):
            self._last[id(frame)] = (None, time.perf_counter())
            return self._local
        return None

    def _local(self, frame: Any, event: str, arg: Any) -> Any:
        now = time.perf_counter()
        key, since = self._last.get(id(frame), (None, now))
        if key is not None:
            self.times[key] += now - since
            self.hits[key] += 1
        if event == "return":
            self._last.pop(id(frame), None)
        else:
            code = frame.f_code
            self._last[id(frame)] = ((code.co_filename, code.co_name, frame.f_lineno), time.perf_counter())
        return self._local

    def __enter__(self) -> LineTimer:
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.settrace(None)

    def report(self, calls: int, total: float, log: Log, min_share: float = 0.005) -> None:
        """Markdown table of the lines taking at least ``min_share`` of ``total`` (per call)."""
        rows = sorted(self.times.items(), key=lambda kv: (kv[0][0], kv[0][2]))
        lines = [
            "| file:line | function | ms / call | % of call | source |",
            "|---|---|---:|---:|---|",
        ]
        for (filename, func, lineno), t in rows:
            per_call = t / calls
            if per_call < min_share * total:
                continue
            src = linecache.getline(filename, lineno).strip().replace("|", "\\|")
            if len(src) > 90:
                src = src[:87] + "..."
            short = "/".join(Path(filename).parts[-2:])
            lines.append(
                f"| {short}:{lineno} | {func} | {per_call * 1e3:.1f} | "
                f"{100 * per_call / total:.1f} | `{src}` |"
            )
        log.md("\n".join(lines))


# --------------------------------------------------------------------------- problem


@dataclass
class Problem:
    batch: int
    classes: int
    dim: int
    num_sampled: int
    weights: Any  # [C, D] float32
    biases: Any  # [C] float32
    inputs: Any  # [B, D] float32
    labels: Any  # [B, 1] int64
    sv: Any  # SampledValues (NumPy)


def log_uniform_labels(rng: Any, classes: int, shape: tuple[int, ...]) -> Any:
    """Log-uniform (Zipf-like) draws in ``[0, classes)``: ``int(exp(U log1p(C))) - 1``."""
    import numpy as np

    u = rng.random(shape)
    return ((np.exp(u * np.log1p(classes)).astype(np.int64) - 1) % classes).astype(np.int64)


def make_problem(batch: int, classes: int, dim: int, num_sampled: int, seed: int) -> Problem:
    import numpy as np

    from refsoftmax.samplers import LogUniformSampler

    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((classes, dim), dtype=np.float32)
    weights *= np.float32(1.0 / np.sqrt(dim))  # logits of unit scale
    biases = rng.standard_normal(classes, dtype=np.float32) * np.float32(0.1)
    inputs = rng.standard_normal((batch, dim), dtype=np.float32)
    labels = log_uniform_labels(rng, classes, (batch, 1))
    sv = LogUniformSampler(classes).sample(labels, num_sampled, unique=True, seed=seed + 1)
    return Problem(batch, classes, dim, num_sampled, weights, biases, inputs, labels, sv)


# --------------------------------------------------------------------------- implementations


@dataclass
class Impl:
    name: str
    group: str  # "sampled" | "full" | "sampler"
    step: Callable[[], Any]
    to_numpy: Callable[[Any], tuple[float, dict[str, Any]]]  # outside timing: densify
    times: list[float] = field(default_factory=list)
    first_only: bool = False  # timed by its single (correctness) call: --full-reps 0


def _numpy_grads(grads: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    out = {}
    for k, g in grads.items():
        g = g.to_dense() if hasattr(g, "to_dense") else g
        if hasattr(g, "detach"):
            g = g.detach().cpu().numpy()
        out[k] = np.asarray(g)
    return out


def _tf_dense(tf: Any, g: Any) -> Any:
    return tf.convert_to_tensor(g).numpy()  # IndexedSlices → dense (unsorted segment sum)


class TFState:
    """TF copies of the problem, shared by every TF row (one 1 GB copy of ``W``)."""

    def __init__(self, tf: Any, p: Problem) -> None:
        with tf.device("/CPU:0"):
            self.w = tf.Variable(p.weights, name="W")
            self.b = tf.Variable(p.biases, name="b")
            self.x = tf.Variable(p.inputs, name="x")
            self.y = tf.constant(p.labels)
            self.y_flat = tf.constant(p.labels[:, 0])
            self.sv = tuple(tf.constant(a) for a in p.sv)


def build(name: str, p: Problem, threads: int, tf_state: dict[str, TFState]) -> Impl:
    """Set up ``name``; raise :class:`Missing` if its library is absent."""
    import numpy as np

    import refsoftmax

    def rs_out(out: Any) -> tuple[float, dict[str, Any]]:
        loss, grads = out
        loss = loss.detach().cpu().numpy() if hasattr(loss, "detach") else loss
        return float(np.asarray(loss)), _numpy_grads(grads)

    if name in ("refsoftmax", "refsoftmax-torch"):
        f = refsoftmax.sampled_softmax_loss
        if name == "refsoftmax":
            w, b, y, x, sv = p.weights, p.biases, p.labels, p.inputs, p.sv
        else:
            torch = _import_torch(threads)
            w, b, y, x = (torch.from_numpy(a) for a in (p.weights, p.biases, p.labels, p.inputs))
            sv = tuple(torch.from_numpy(np.asarray(a)) for a in p.sv)
        s, c = p.num_sampled, p.classes

        def step_rs() -> Any:
            return f.value_and_grad(w, b, y, x, s, c, sampled_values=sv, reduction="mean")

        return Impl(name, "sampled", step_rs, rs_out)

    if name == "refsoftmax-full":
        g = refsoftmax.linear_softmax_cross_entropy
        y_flat = p.labels[:, 0]

        def step_full() -> Any:
            return g.value_and_grad(p.weights, p.biases, y_flat, p.inputs, reduction="mean")

        return Impl(name, "full", step_full, rs_out)

    if name == "torch-full":
        torch = _import_torch(threads)
        import torch.nn.functional as F

        wt = torch.from_numpy(p.weights).requires_grad_(True)
        bt = torch.from_numpy(p.biases).requires_grad_(True)
        xt = torch.from_numpy(p.inputs).requires_grad_(True)
        yt = torch.from_numpy(p.labels[:, 0])

        def step_torch() -> Any:
            wt.grad = bt.grad = xt.grad = None
            loss = F.cross_entropy(F.linear(xt, wt, bt), yt)
            loss.backward()
            return loss.detach(), {"weights": wt.grad, "biases": bt.grad, "inputs": xt.grad}

        return Impl(name, "full", step_torch, rs_out)

    if name.startswith("tf-"):
        tf = _import_tf(threads)
        if "state" not in tf_state:
            tf_state["state"] = TFState(tf, p)
        st = tf_state["state"]
        s, c = p.num_sampled, p.classes

        def tf_out(out: Any) -> tuple[float, dict[str, Any]]:
            loss, (gw, gb, gx) = out
            return float(loss.numpy()), {
                "weights": _tf_dense(tf, gw), "biases": _tf_dense(tf, gb), "inputs": gx.numpy(),
            }

        if name == "tf-sampler":
            def step_tfs() -> Any:
                with tf.device("/CPU:0"):
                    return tf.random.log_uniform_candidate_sampler(
                        true_classes=st.y, num_true=1, num_sampled=s, unique=True, range_max=c,
                        seed=1,
                    )

            return Impl(name, "sampler", step_tfs, lambda out: (0.0, {"sv": [a.numpy() for a in out]}))

        if name in ("tf-eager", "tf-function"):
            def sampled(cand: Any, tec: Any, sec: Any) -> Any:
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(
                        tf.nn.sampled_softmax_loss(
                            st.w, st.b, st.y, st.x, s, c, sampled_values=(cand, tec, sec)
                        )
                    )
                return loss, tape.gradient(loss, [st.w, st.b, st.x])

            fn = tf.function(sampled) if name == "tf-function" else sampled

            def step_tf() -> Any:
                with tf.device("/CPU:0"):
                    return fn(*st.sv)

            return Impl(name, "sampled", step_tf, tf_out)

        def full(labels: Any) -> Any:
            with tf.GradientTape() as tape:
                logits = tf.matmul(st.x, st.w, transpose_b=True) + st.b
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
                )
            return loss, tape.gradient(loss, [st.w, st.b, st.x])

        fn_full = tf.function(full) if name == "tf-full-function" else full

        def step_tf_full() -> Any:
            with tf.device("/CPU:0"):
                return fn_full(st.y_flat)

        return Impl(name, "full", step_tf_full, tf_out)

    if name == "refsoftmax-sampler":
        from refsoftmax.samplers import LogUniformSampler

        sampler = LogUniformSampler(p.classes)
        counter = iter(range(10**9))

        def step_rss() -> Any:
            return sampler.sample(p.labels, p.num_sampled, unique=True, seed=next(counter))

        return Impl(name, "sampler", step_rss, lambda out: (0.0, {"sv": [np.asarray(a) for a in out]}))

    raise ValueError(name)


# --------------------------------------------------------------------------- checks


def compare(impl: Impl, out: Any, ref: tuple[float, dict[str, Any]] | None, batch: int,
            log: Log) -> tuple[bool, tuple[float, dict[str, Any]]]:
    """Compare ``out`` with ``ref`` (``None``: this is the reference); return (ok, densified)."""
    import numpy as np

    loss, grads = impl.to_numpy(out)
    finite = np.isfinite(loss) and all(bool(np.all(np.isfinite(g))) for g in grads.values())
    if ref is None:
        shapes = ", ".join(f"{k} {tuple(g.shape)}" for k, g in grads.items())
        log.text(f"  {impl.name:<18} reference: loss {loss:.6f}; gradients {shapes}"
                 + ("" if finite else "  NOT FINITE"))
        return finite, (loss, grads)
    ref_loss, ref_grads = ref
    d_loss = abs(loss - ref_loss)
    ok = finite and d_loss <= LOSS_RTOL * abs(ref_loss)
    parts = [f"|Δloss| {d_loss:.1e} (rel {d_loss / abs(ref_loss):.1e})"]
    for k, r in ref_grads.items():
        g = grads.get(k)
        if g is None or g.shape != r.shape:
            parts.append(f"{k}: shape {None if g is None else g.shape} != {r.shape}")
            ok = False
            continue
        # Blockwise over the rows, in float64, on B·grad (the gradient of the sum).
        scale = float(batch)
        ref_max = float(np.max(np.abs(r))) * scale
        max_abs, bad = 0.0, 0
        step = max(1, (1 << 24) // max(1, int(np.prod(r.shape[1:], dtype=np.int64))))
        for i in range(0, r.shape[0], step):
            a = g[i:i + step].astype(np.float64) * scale
            e = r[i:i + step].astype(np.float64) * scale
            d = np.abs(a - e)
            max_abs = max(max_abs, float(np.max(d)) if d.size else 0.0)
            bad += int(np.count_nonzero(d > GRAD_RTOL * np.abs(e) + GRAD_ATOL_REL * ref_max))
        ok = ok and bad == 0
        rel = max_abs / ref_max if ref_max else 0.0
        parts.append(f"{k}: max|Δ(B·g)| {max_abs:.1e} (rel {rel:.1e})" + (f", {bad} out of tol" if bad else ""))
    log.text(f"  {impl.name:<18} {'ok  ' if ok else 'FAIL'}  " + "; ".join(parts))
    return ok, (loss, grads)


def check_sampler(impl: Impl, out: Any, p: Problem, log: Log) -> bool:
    """Distinct in-range candidates; expected counts consistent with one number of tries."""
    import numpy as np

    from refsoftmax.samplers import LogUniformSampler

    cand, tec, sec = impl.to_numpy(out)[1]["sv"]
    cand = np.asarray(cand).astype(np.int64)
    ok = cand.shape == (p.num_sampled,) and len(np.unique(cand)) == p.num_sampled
    ok = ok and bool(np.all((cand >= 0) & (cand < p.classes)))
    prob = np.asarray(LogUniformSampler(p.classes).probability(cand))
    prob = prob.astype(np.float32).astype(np.float64)  # TF's float probabilities
    q = np.asarray(sec, dtype=np.float64)
    below_one = q < 1  # Q rounds to exactly 1 for the most frequent classes: no information
    tries = float(np.median(np.log1p(-q[below_one]) / np.log1p(-prob[below_one])))
    prob_t = np.asarray(LogUniformSampler(p.classes).probability(p.labels))
    prob_t = prob_t.astype(np.float32).astype(np.float64)
    qt = np.asarray(tec, dtype=np.float64)

    def residual(pr: Any, qq: Any) -> float:
        model = -np.expm1(tries * np.log1p(-pr)) if tries > p.num_sampled else p.num_sampled * pr
        return float(np.max(np.abs(model.astype(np.float32) - qq) / qq))

    if tries <= p.num_sampled * (1 + 1e-6):  # no rejection: Q = S P
        tries = float(p.num_sampled)
    resid, resid_t = residual(prob, q), residual(prob_t, qt)
    ok = ok and resid < 1e-4 and resid_t < 1e-4
    log.text(
        f"  {impl.name:<18} {'ok  ' if ok else 'FAIL'}  {len(np.unique(cand))} distinct in "
        f"[{cand.min()}, {cand.max()}]; tries T ≈ {tries:.0f}; max rel residual of Q vs "
        f"1-(1-P)^T: candidates {resid:.1e}, labels {resid_t:.1e}"
    )
    return ok


# --------------------------------------------------------------------------- timing


def run_rounds(impls: list[Impl], reps: int, full_reps: int, sampler_calls: int) -> float:
    gc.collect()
    start = time.perf_counter()
    for rep in range(reps):
        active = [i for i in impls if not i.first_only and (i.group != "full" or rep < full_reps)]
        if not active:
            continue
        k = rep % len(active)
        for impl in active[k:] + active[:k]:
            for _ in range(sampler_calls if impl.group == "sampler" else 1):
                t0 = time.perf_counter()
                out = impl.step()
                impl.times.append(time.perf_counter() - t0)
                del out
    return time.perf_counter() - start


def time_table(impls: list[Impl], log: Log) -> dict[str, float]:
    medians = {i.name: summarise(i.times)[0] for i in impls}
    tf_best = min((medians[n] for n in TF_SAMPLED if n in medians), default=None)
    rs = medians.get("refsoftmax")
    lines = [
        "| implementation | kind | calls | median s | IQR s | min s | × fastest TF sampled | × refsoftmax |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for impl in impls:
        if impl.group == "sampler":
            continue
        med, iqr, mn = summarise(impl.times)
        tag = " (peer)" if impl.name in PEERS else ""
        r_tf = f"{med / tf_best:.2f}" if tf_best else "n/a"
        r_rs = f"{med / rs:.2f}" if rs else "n/a"
        calls = "1 (first call)" if impl.first_only else str(len(impl.times))
        lines.append(
            f"| {impl.name}{tag} | {impl.group} | {calls} | {med:.4f} | {iqr:.4f} | "
            f"{mn:.4f} | {r_tf} | {r_rs} |"
        )
    if len(lines) > 2:
        if any(i.first_only for i in impls):
            lines.append("")
            lines.append(
                "\"1 (first call)\": timed by its correctness call only (`--full-reps 0`); for "
                "`tf.function` that call includes tracing (about a second)."
            )
        log.md("\n".join(lines))
    samplers = [i for i in impls if i.group == "sampler"]
    if samplers:
        tf_s = medians.get("tf-sampler")
        lines = [
            "| sampler | calls | median ms | IQR ms | min ms | × tf-sampler |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for impl in samplers:
            med, iqr, mn = summarise(impl.times)
            tag = " (peer)" if impl.name in PEERS else ""
            ratio = f"{med / tf_s:.2f}" if tf_s else "n/a"
            lines.append(
                f"| {impl.name}{tag} | {len(impl.times)} | {med * 1e3:.2f} | {iqr * 1e3:.2f} | "
                f"{mn * 1e3:.2f} | {ratio} |"
            )
        log.text()
        log.md("\n".join(lines))
    return medians


def targets(medians: dict[str, float], log: Log) -> None:
    rs = medians.get("refsoftmax")
    if rs is None:
        return
    items = []
    tf_rows = {n: medians[n] for n in TF_SAMPLED if n in medians}
    if tf_rows:
        best = min(tf_rows, key=lambda n: tf_rows[n])
        met = rs <= tf_rows[best]
        items.append(
            f"- refsoftmax sampled ≤ TF sampled: refsoftmax {rs:.4f} s vs {best} "
            f"{tf_rows[best]:.4f} s (×{rs / tf_rows[best]:.2f}) — **{'met' if met else 'MISSED'}**"
        )
    full_rows = {n: medians[n] for n in FULL if n in medians}
    if full_rows:
        fastest = min(full_rows, key=lambda n: full_rows[n])
        for n in dict.fromkeys(("refsoftmax-full", fastest)):
            if n in full_rows:
                ratio = full_rows[n] / rs
                items.append(
                    f"- ≥ 20× faster than exact full softmax ({n}): {ratio:.1f}× — "
                    f"**{'met' if ratio >= 20 else 'MISSED'}**"
                )
    if "refsoftmax-sampler" in medians and "tf-sampler" in medians:
        items.append(
            f"- sampler (separately): refsoftmax {medians['refsoftmax-sampler'] * 1e3:.2f} ms, "
            f"TF {medians['tf-sampler'] * 1e3:.2f} ms "
            f"(×{medians['refsoftmax-sampler'] / medians['tf-sampler']:.2f})"
        )
    if items:
        log.text()
        log.md("Targets:\n\n" + "\n".join(items))


# --------------------------------------------------------------------------- modes


def main_mode(args: argparse.Namespace, log: Log) -> int:
    import numpy as np

    names = [n for n in IMPLEMENTATIONS if args.only is None or n in args.only]
    t0 = time.perf_counter()
    p = make_problem(args.batch, args.classes, args.dim, args.num_sampled, args.seed)
    cand = np.asarray(p.sv.candidates)
    hits = int(np.count_nonzero(np.isin(p.labels[:, 0], cand)))
    log.text(
        f"inputs made in {time.perf_counter() - t0:.1f} s; {hits}/{p.batch} labels are among the "
        f"candidates (accidental hits); W is {p.weights.nbytes / GiB:.2f} GiB, [B, C] float32 "
        f"logits would be {p.batch * p.classes * 4 / GiB:.2f} GiB"
    )
    log.text()
    tf_state: dict[str, TFState] = {}
    impls: list[Impl] = []
    refs: dict[str, tuple[float, dict[str, Any]]] = {}
    log.text(
        f"correctness (loss rel {LOSS_RTOL:g}; B·grad |Δ| ≤ {GRAD_RTOL:g}|ref| + "
        f"{GRAD_ATOL_REL:g} max|ref|; gradients densified outside timing):"
    )
    logits_bytes = float(p.batch) * p.classes * 4
    for name in names:
        if name in FULL_MEMORY_FACTORS:
            need = FULL_MEMORY_FACTORS[name] * logits_bytes
            avail = mem_available()
            limit = args.mem_limit_gb * GiB
            if avail is not None:
                limit = min(limit, avail - GiB)
            if need > limit:
                log.text(
                    f"  {name:<18} skipped: estimated peak {need / GiB:.1f} GiB "
                    f"({FULL_MEMORY_FACTORS[name]} × the {logits_bytes / GiB:.2f} GiB logits) exceeds "
                    f"the limit {limit / GiB:.1f} GiB (--mem-limit-gb {args.mem_limit_gb:g}; "
                    f"MemAvailable {'?' if avail is None else f'{avail / GiB:.1f} GiB'} − 1 GiB)"
                )
                continue
        try:
            impl = build(name, p, args.threads, tf_state)
        except Missing as exc:
            log.text(f"  {name:<18} skipped: {exc} is not installed")
            continue
        t1 = time.perf_counter()
        out, peak = peak_rss_increase(impl.step)  # first call: traces / warms up
        first = time.perf_counter() - t1
        if impl.group == "sampler":
            ok = check_sampler(impl, out, p, log)
        else:
            ok, dense = compare(impl, out, refs.get(impl.group), p.batch, log)
            if impl.group not in refs and ok:
                refs[impl.group] = dense
            del dense
        del out
        mem = "" if peak is None else f", peak RSS +{peak / GiB:.2f} GiB"
        log.text(f"  {'':<18} first call {first:.2f} s{mem}")
        if not ok:
            log.text(f"  {name:<18} disagrees: NOT timed")
            continue
        if impl.group != "full":
            for _ in range(args.warmup - 1):
                impl.step()
        elif args.full_reps == 0:  # too slow to call again: the correctness call is the sample
            impl.times.append(first)
            impl.first_only = True
        impls.append(impl)
        gc.collect()
    if "sampled" in refs and "full" in refs:
        log.text(
            f"  (for information: sampled loss {refs['sampled'][0]:.5f}, exact full-softmax loss "
            f"{refs['full'][0]:.5f})"
        )
    refs.clear()
    gc.collect()
    log.text()
    if not impls:
        log.text("nothing to time")
        return 1
    elapsed = run_rounds(impls, args.reps, args.full_reps, args.sampler_calls)
    load = f"; load avg {os.getloadavg()[0]:.2f} at end" if hasattr(os, "getloadavg") else ""
    details = []
    if any(i.group == "full" for i in impls):
        details.append(f"{args.full_reps or 'none'} with the full rows")
    if any(i.group == "sampler" for i in impls):
        details.append(f"{args.sampler_calls} sampler calls per round")
    extra = f" ({', '.join(details)})" if details else ""
    log.text(f"timed {args.reps} rounds{extra} in {elapsed:.1f} s{load}")
    log.text()
    medians = time_table(impls, log)
    targets(medians, log)
    return 0


def scaling_mode(args: argparse.Namespace, log: Log) -> int:
    import refsoftmax

    f = refsoftmax.sampled_softmax_loss
    impls = []
    for c in args.scaling_classes:
        t0 = time.perf_counter()
        p = make_problem(args.batch, c, args.dim, args.num_sampled, args.seed)
        log.text(f"C = {c:>9,}: inputs and sampled values made in {time.perf_counter() - t0:.1f} s")

        def step(p: Problem = p) -> Any:
            return f.value_and_grad(
                p.weights, p.biases, p.labels, p.inputs, p.num_sampled, p.classes,
                sampled_values=p.sv, reduction="mean",
            )

        for _ in range(args.warmup):
            step()
        impls.append(Impl(f"refsoftmax C={c:,}", "sampled", step, lambda out: (0.0, {})))
    elapsed = run_rounds(impls, args.reps, 0, 1)
    log.text(f"timed {args.reps} interleaved rounds in {elapsed:.1f} s")
    log.text()
    base = summarise(impls[0].times)[0]
    lines = [
        "| refsoftmax sampled, sampling excluded | calls | median s | IQR s | min s | × smallest C |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for impl in impls:
        med, iqr, mn = summarise(impl.times)
        lines.append(
            f"| {impl.name} | {len(impl.times)} | {med:.4f} | {iqr:.4f} | {mn:.4f} | {med / base:.2f} |"
        )
    log.md("\n".join(lines))
    return 0


def profile_mode(args: argparse.Namespace, log: Log) -> int:
    import numpy as np

    import refsoftmax

    p = make_problem(args.batch, args.classes, args.dim, args.num_sampled, args.seed)
    f = refsoftmax.sampled_softmax_loss

    def call() -> Any:
        return f.value_and_grad(
            p.weights, p.biases, p.labels, p.inputs, p.num_sampled, p.classes,
            sampled_values=p.sv, reduction="mean",
        )

    for _ in range(args.warmup):
        call()
    plain = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        call()
        plain.append(time.perf_counter() - t0)
    timer = LineTimer(str(Path(refsoftmax.__file__).resolve().parent))
    traced = []
    with timer:
        for _ in range(args.reps):
            t0 = time.perf_counter()
            call()
            traced.append(time.perf_counter() - t0)
    med_plain, med_traced = summarise(plain)[0], summarise(traced)[0]
    log.text(
        f"refsoftmax sampled call: median {med_plain:.4f} s untraced, {med_traced:.4f} s under the "
        f"line timer ({args.reps} calls each)"
    )
    log.text("inclusive time per line (a call line includes its callee; lines ≥ 0.5% shown):")
    log.md("")
    timer.report(args.reps, med_traced, log)

    # The irreducible part: gather the candidate rows, three [B, S] × D products.
    cand = np.asarray(p.sv.candidates)
    b, s = p.batch, p.num_sampled
    rng = np.random.default_rng(0)
    g = rng.standard_normal((b, s + 1), dtype=np.float32)

    stages: dict[str, list[float]] = defaultdict(list)

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        stages[key].append(time.perf_counter() - t0)
        return out

    for _ in range(args.reps):
        ws = timed("numpy: W[candidates] (gather S×D)", lambda: np.take(p.weights, cand, axis=0))
        timed("numpy: x @ Ws.T            [B,D]×[D,S]", lambda ws=ws: p.inputs @ ws.T)
        timed("numpy: G[:, 1:] @ Ws (strided view)", lambda ws=ws: g[:, 1:] @ ws)
        gc_ = np.ascontiguousarray(g[:, 1:])
        timed("numpy: G_s @ Ws (contiguous)", lambda ws=ws, gc_=gc_: gc_ @ ws)
        timed("numpy: G[:, 1:].T @ x (strided view)", lambda: g[:, 1:].T @ p.inputs)
        timed("numpy: G_s.T @ x (contiguous)", lambda gc_=gc_: gc_.T @ p.inputs)
        timed("numpy: one [B, 1+S] float32 ufunc (exp)", lambda: np.exp(g))
    try:
        torch = _import_torch(args.threads)
        wt, xt = torch.from_numpy(p.weights), torch.from_numpy(p.inputs)
        ct, gt = torch.from_numpy(cand), torch.from_numpy(g[:, 1:].copy())
        for _ in range(args.reps):
            ws_t = timed("torch: W[candidates]", lambda: wt.index_select(0, ct))
            timed("torch: x @ Ws.T", lambda ws_t=ws_t: xt @ ws_t.T)
            timed("torch: G_s @ Ws", lambda ws_t=ws_t: gt @ ws_t)
            timed("torch: G_s.T @ x", lambda: gt.T @ xt)
    except Missing:
        log.text("torch not installed: no torch floor")
    lines = ["| building block | median ms | IQR ms |", "|---|---:|---:|"]
    for key, ts in stages.items():
        med, iqr, _ = summarise(ts)
        lines.append(f"| {key} | {med * 1e3:.1f} | {iqr * 1e3:.1f} |")
    log.text()
    log.text("building blocks of one call, timed alone:")
    log.md("\n".join(lines))
    return 0


# --------------------------------------------------------------------------- main


def _int_list(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time sampled softmax (refsoftmax vs TF) and exact full softmax on the CPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--reps", type=int, default=10, help="timed rounds")
    parser.add_argument("--full-reps", type=int, default=3,
                        help="rounds (the first ones) that include the full-softmax rows; 0: "
                        "time them by their correctness call alone")
    parser.add_argument("--sampler-calls", type=int, default=5, help="sampler calls per round")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed calls per sampled row / sampler (the check is the first)")
    parser.add_argument("--batch", type=int, default=1024, help="examples B")
    parser.add_argument("--classes", type=int, default=1_000_000, help="classes C")
    parser.add_argument("--dim", type=int, default=256, help="hidden size D")
    parser.add_argument("--num-sampled", type=int, default=8192, help="shared candidates S")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs and the sample")
    parser.add_argument("--mem-limit-gb", type=float, default=16.0,
                        help="skip a materialised full-softmax peer estimated to need more (GiB)")
    parser.add_argument("--threads", type=int, default=len(available_cores()),
                        help="threads/cores every library may use (see bench_sparse_ce.py)")
    parser.add_argument(
        "--only", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None,
        help="comma-separated implementations (default: all; see --list)",
    )
    parser.add_argument("--scaling", action="store_true",
                        help="time refsoftmax sampled (sampling excluded) at several C instead")
    parser.add_argument("--scaling-classes", type=_int_list, default=[10_000, 100_000, 1_000_000],
                        help="class counts of --scaling, comma-separated")
    parser.add_argument("--profile", action="store_true",
                        help="line-time the refsoftmax call and time its building blocks instead")
    parser.add_argument("--no-results", action="store_true",
                        help="do not write benchmarks/results/*.md")
    parser.add_argument("--results-tag", default="",
                        help="write benchmarks/results/bench_sampled_softmax-TAG.md instead")
    parser.add_argument("--list", action="store_true", help="list the implementations and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name in IMPLEMENTATIONS:
            print(name + ("  (peer)" if name in PEERS else ""))
        sys.exit(0)
    if args.only is not None:
        unknown = [n for n in args.only if n not in IMPLEMENTATIONS]
        if unknown:
            parser.error(f"unknown implementation(s) {unknown}; choose from {list(IMPLEMENTATIONS)}")
    for opt in ("reps", "batch", "classes", "dim", "num_sampled", "threads", "sampler_calls"):
        if getattr(args, opt) < 1:
            parser.error(f"--{opt.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.full_reps < 0:
        parser.error("--warmup and --full-reps must be at least 0")
    if args.num_sampled > min([args.classes, *(args.scaling_classes if args.scaling else [])]):
        parser.error("--num-sampled must not exceed the number of classes (unique sampling)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes = configure_threads(args.threads)  # before numpy, torch, tf are imported
    log = Log()
    mode = "scaling" if args.scaling else "profile" if args.profile else "main"
    what = {
        "main": "sampled softmax (refsoftmax vs TF) and exact full softmax",
        "scaling": "refsoftmax sampled softmax at several C (sampled values fixed)",
        "profile": "profile of refsoftmax sampled softmax",
    }[mode]
    log.text(
        f"{what}, forward + backward, mean reduction, float32; B={args.batch}, "
        f"C={args.classes if mode != 'scaling' else args.scaling_classes}, D={args.dim}, "
        f"S={args.num_sampled} shared log-uniform unique candidates, seed {args.seed}"
    )
    log.captured(lambda: machine_report(args.threads, notes))
    log.text(
        f"protocol : {args.warmup} warm-up call(s), "
        + (f"{args.reps} calls untraced, then {args.reps} under the line timer" if mode == "profile"
           else f"{args.reps} interleaved rounds")
        + ("" if mode != "main" else f" (full rows: first {args.full_reps})" if args.full_reps
           else " (full rows: timed by their correctness call alone)")
    )
    log.text()
    rc = {"main": main_mode, "scaling": scaling_mode, "profile": profile_mode}[mode](args, log)
    if not args.no_results:
        suffix = "".join(f"-{t}" for t in ("" if mode == "main" else mode, args.results_tag) if t)
        log.write(RESULTS_DIR / f"bench_sampled_softmax{suffix}.md", what)
    return rc


if __name__ == "__main__":
    sys.exit(main())

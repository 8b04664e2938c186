r"""Forward + backward timing of vocab-parallel sparse cross-entropy on a gloo group (CPU).

What is measured
----------------
Every rank of a gloo process group on 127.0.0.1 holds its block of the float32 logits
``[B, C]`` (default 4096 × 32,000; equal blocks, C/N classes each) and the int labels ``[B]``;
one timed call computes the **mean loss and this rank's block of its gradient**:

=======================  ====================================================================
name                     what one timed call does, on every rank
=======================  ====================================================================
``refsoftmax``           ``refsoftmax.distributed.sparse_softmax_cross_entropy.value_and_grad(
                         block, labels, reduction="mean")`` (hand-derived, local backward).
``refsoftmax-autograd``  the same loss through ``refsoftmax.bridges.torch_autograd`` and
                         ``loss.backward()`` (``.grad`` reset to ``None`` before every call).
``loss_parallel``        ``F.cross_entropy(DTensor.from_local(block, mesh, [Shard(1)]), labels,
                         reduction="mean")`` + ``loss.backward()``, both under
                         ``torch.distributed.tensor.parallel.loss_parallel()``.        [peer]
``megatron-core``        ``megatron.core.tensor_parallel.vocab_parallel_cross_entropy(block,
                         labels).mean()`` + ``backward()``.                              [peer]
``fairscale``            ``fairscale.nn.model_parallel.cross_entropy.vocab_parallel_cross_entropy
                         (block, labels).mean()`` + ``backward()``.                      [peer]
=======================  ====================================================================

Megatron-core (float32 logits) and fairscale overwrite the logits they are given
(``conformance/findings.md``): those two get a fresh copy of the block before every call,
made outside the timed region.

Correctness first: every implementation's loss and gradient block are compared once with
``refsoftmax`` run on the float64 block (itself equal to the dense reference to 1e-12,
``tests/test_distributed.py``): the loss to relative 1e-5, ``B · grad`` (the per-example
gradient) with ``rtol=1e-4, atol=1e-6``.  One that disagrees is not timed.

Protocol: for each world size (``--world-sizes``, default 2 and 4) one group is started
(``refsoftmax.conformance.sharded.Pool``, one thread per rank); ``--warmup`` untimed calls per
implementation, then ``--reps`` rounds, each calling every implementation once, the starting
one rotating (interleaved, so that drift of the machine affects all alike).  Before each call
the ranks meet at a barrier; a call's time is the slowest rank's (``time.perf_counter``).  The
table gives the median, inter-quartile range and minimum over the rounds, and the ratio of
the median to the fastest peer's.  A world size above the number of cores oversubscribes them
(4 ranks on 2 cores here): its times are not a scaling curve.

Usage::

    python benchmarks/bench_sharded_ce.py                       # 4096 × 32000, world 2 and 4
    python benchmarks/bench_sharded_ce.py --world-sizes 2 --reps 3 --batch 512 --classes 8000
    python benchmarks/bench_sharded_ce.py --out benchmarks/results/bench_sharded_ce.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

IMPLEMENTATIONS = ("refsoftmax", "refsoftmax-autograd", "loss_parallel", "megatron-core", "fairscale")
PEERS = ("loss_parallel", "megatron-core", "fairscale")
LOSS_RTOL, GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-4, 1e-6


# --------------------------------------------------------------------------- on every rank


def _steps(block: Any, labels: Any) -> dict[str, Any]:
    """``name -> (prepare, step)``: ``prepare()`` runs untimed, ``step(prepared)`` is timed and
    returns ``(loss, gradient block)``.  A missing library is left out."""
    import torch.distributed as dist
    import torch.nn.functional as F

    from refsoftmax import distributed
    from refsoftmax.bridges import torch_autograd

    world = dist.get_world_size()
    out: dict[str, Any] = {}

    def rs_step(_: Any) -> Any:
        loss, grads = distributed.sparse_softmax_cross_entropy.value_and_grad(block, labels, reduction="mean")
        return loss, grads["local_logits"]

    out["refsoftmax"] = (lambda: None, rs_step)
    bridged = torch_autograd(distributed.sparse_softmax_cross_entropy)
    leaf = block.clone().requires_grad_(True)

    def rs_autograd(_: Any) -> Any:
        leaf.grad = None
        loss = bridged(leaf, labels, reduction="mean")
        loss.backward()
        return loss.detach(), leaf.grad

    out["refsoftmax-autograd"] = (lambda: None, rs_autograd)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import DTensor, Shard
        from torch.distributed.tensor.parallel import loss_parallel

        mesh = init_device_mesh("cpu", (world,))
        lp_leaf = block.clone().requires_grad_(True)

        def lp_step(_: Any) -> Any:
            lp_leaf.grad = None
            with loss_parallel():
                z = DTensor.from_local(lp_leaf, mesh, [Shard(1)], run_check=False)
                loss = F.cross_entropy(z, labels, reduction="mean")
                loss.backward()
            return loss.to_local().detach(), lp_leaf.grad

        out["loss_parallel"] = (lambda: None, lp_step)
    except ImportError:
        pass
    try:
        import warnings

        warnings.simplefilter("ignore")
        from megatron.core import parallel_state
        from megatron.core.tensor_parallel import vocab_parallel_cross_entropy as megatron_ce

        if not parallel_state.model_parallel_is_initialized():
            parallel_state.initialize_model_parallel(tensor_model_parallel_size=world)

        def fresh() -> Any:
            return block.clone().requires_grad_(True)  # it overwrites float32 logits in place

        def mg_step(x: Any) -> Any:
            loss = megatron_ce(x, labels).mean()
            loss.backward()
            return loss.detach(), x.grad

        out["megatron-core"] = (fresh, mg_step)
    except ImportError:
        pass
    try:
        from fairscale.nn.model_parallel import initialize
        from fairscale.nn.model_parallel.cross_entropy import (
            vocab_parallel_cross_entropy as fairscale_ce,
        )

        if not initialize.model_parallel_is_initialized():
            initialize.initialize_model_parallel(world)

        def fs_fresh() -> Any:
            return block.clone().requires_grad_(True)  # it subtracts the row max in place

        def fs_step(x: Any) -> Any:
            loss = fairscale_ce(x, labels).mean()
            loss.backward()
            return loss.detach(), x.grad

        out["fairscale"] = (fs_fresh, fs_step)
    except ImportError:
        pass
    return out


def rank_bench(config: dict[str, Any]) -> dict[str, Any]:
    """One rank's part of the benchmark (run by ``refsoftmax.conformance.sharded.Pool``)."""
    import contextlib
    import gc
    import io

    import numpy as np
    import torch
    import torch.distributed as dist

    from refsoftmax import distributed

    rank, world = dist.get_rank(), dist.get_world_size()
    b, c = config["batch"], config["classes"]
    width = c // world
    rng = np.random.default_rng(config["seed"])
    full = (rng.standard_normal((b, c), dtype=np.float32) * 2).astype(np.float32)
    labels = torch.from_numpy(rng.integers(0, c, b))
    block = torch.from_numpy(np.ascontiguousarray(full[:, rank * width:(rank + 1) * width]))
    del full
    gc.collect()
    with contextlib.redirect_stdout(io.StringIO()):  # fairscale prints its set-up on rank 0
        steps = {k: v for k, v in _steps(block, labels).items() if k in config["only"]}

    # correctness: against refsoftmax on the float64 block
    ref_loss, ref_grads = distributed.sparse_softmax_cross_entropy.value_and_grad(
        block.double(), labels, reduction="mean")
    ref_grad = ref_grads["local_logits"] * b
    checks: dict[str, Any] = {}
    for name, (prepare, step) in steps.items():
        loss, grad = step(prepare())
        dloss = abs(float(loss) - float(ref_loss))
        dgrad = float((grad.double() * b - ref_grad).abs().max())
        ok = dloss <= LOSS_RTOL * abs(float(ref_loss)) and bool(
            torch.allclose(grad.double() * b, ref_grad, rtol=GRAD_RTOL, atol=GRAD_ATOL))
        flags = torch.tensor([0.0 if ok else 1.0, dloss, dgrad], dtype=torch.float64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        checks[name] = {"ok": bool(flags[0] == 0), "dloss": float(flags[1]), "dgrad_b": float(flags[2])}
    timed = [n for n in steps if checks[n]["ok"]]
    times: dict[str, list[float]] = {n: [] for n in timed}
    for _ in range(config["warmup"]):
        for name in timed:
            prepare, step = steps[name]
            step(prepare())
    start = time.perf_counter()
    for rnd in range(config["reps"]):
        order = timed[rnd % len(timed):] + timed[:rnd % len(timed)] if timed else []
        for name in order:
            prepare, step = steps[name]
            arg = prepare()
            gc.collect()
            dist.barrier()
            t0 = time.perf_counter()
            step(arg)
            times[name].append(time.perf_counter() - t0)
            del arg
    return {"rank": rank, "checks": checks, "times": times, "seconds": time.perf_counter() - start,
            "missing": [n for n in config["only"] if n not in steps]}


# --------------------------------------------------------------------------- the driver


def _versions() -> str:
    import importlib.metadata as md

    out = []
    for dist_name in ("refsoftmax", "numpy", "torch", "megatron-core", "fairscale"):
        try:
            out.append(f"{dist_name} {md.version(dist_name)}")
        except md.PackageNotFoundError:
            out.append(f"{dist_name} (not installed)")
    return ", ".join(out)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _stats(values: list[float]) -> tuple[float, float, float]:
    import numpy as np

    a = np.asarray(values)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return float(med), float(q3 - q1), float(a.min())


def run_world(world: int, config: dict[str, Any]) -> tuple[list[str], dict[str, float]]:
    from refsoftmax.conformance import sharded

    lines = [f"world size {world}: {config['batch']} × {config['classes'] // world} float32 logits per rank "
             f"({config['batch'] * config['classes'] // world * 4 / 2**20:.0f} MiB), 1 thread per rank"]
    start = time.perf_counter()
    with sharded.Pool(world, timeout=float(config["timeout"]), threads=1) as pool:
        lines.append(f"  group started in {time.perf_counter() - start:.1f} s")
        replies = pool.exchange([{"op": "call", "fn": __import__("pickle").dumps(f"{Path(__file__).stem}:rank_bench"),
                                  "args": (config,)}] * world)
    bad = [r for r in replies if "result" not in r]
    if bad:
        raise RuntimeError("; ".join(f"{r.get('error')}\n{r.get('trace', '')}" for r in bad))
    results = [r["result"] for r in replies]
    first = results[0]
    if first["missing"]:
        lines.append(f"  not installed: {', '.join(first['missing'])}")
    lines.append(f"  correctness vs refsoftmax on the float64 block (loss rel {LOSS_RTOL:g}; "
                 f"B·grad rtol {GRAD_RTOL:g}, atol {GRAD_ATOL:g}), worst rank:")
    for name, c in first["checks"].items():
        lines.append(f"    {name:20s} {'ok  ' if c['ok'] else 'FAIL'}  |Δloss| {c['dloss']:.2e}  "
                     f"max|Δ(B·grad)| {c['dgrad_b']:.2e}")
    names = list(first["times"])
    per_call = {n: [max(r["times"][n][i] for r in results) for i in range(len(first["times"][n]))] for n in names}
    medians = {n: _stats(v)[0] for n, v in per_call.items()}
    peers = {n: m for n, m in medians.items() if n in PEERS}
    fastest = min(peers, key=peers.__getitem__) if peers else None
    lines.append(f"  timed {config['reps']} rounds in {max(r['seconds'] for r in results):.1f} s")
    lines.append("")
    lines.append(f"  {'implementation':22s} {'median s':>9s} {'IQR s':>9s} {'min s':>9s}  × fastest peer")
    lines.append("  " + "-" * 66)
    for n in names:
        med, iqr, low = _stats(per_call[n])
        ratio = f"{med / peers[fastest]:.2f}" if fastest else "-"
        label = n + (" (peer)" if n in PEERS else "")
        lines.append(f"  {label:22s} {med:9.4f} {iqr:9.4f} {low:9.4f}  {ratio:>13s}")
    if fastest:
        lines.append(f"  fastest peer: {fastest} ({peers[fastest]:.4f} s median)")
    return lines, medians


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--classes", type=int, default=32000)
    p.add_argument("--world-sizes", default="2,4", help="comma-separated (C must divide evenly)")
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=",".join(IMPLEMENTATIONS))
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds for one world size's run")
    p.add_argument("--out", type=Path, default=None, help="also write the output to this Markdown file")
    args = p.parse_args(argv)
    worlds = [int(w) for w in args.world_sizes.split(",") if w]
    for w in worlds:
        if args.classes % w:
            p.error(f"--classes {args.classes} is not a multiple of world size {w}")
    config = {"batch": args.batch, "classes": args.classes, "seed": args.seed, "reps": args.reps,
              "warmup": args.warmup, "timeout": args.timeout,
              "only": [n for n in args.only.split(",") if n]}
    now = datetime.datetime.now(datetime.timezone.utc)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    header = [
        f"vocab-parallel sparse softmax cross-entropy, forward + backward, mean reduction, float32, "
        f"B={args.batch} × C={args.classes}, seed {args.seed}",
        f"date     : {now:%Y-%m-%d %H:%M:%S} UTC",
        f"machine  : {_cpu()}; {os.cpu_count()} logical cores, {cores} usable",
        f"python   : {platform.python_version()} on {platform.platform()}",
        f"versions : {_versions()}",
        f"commit   : {_commit()}",
        f"load avg : {'/'.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min) at start",
        f"protocol : gloo on 127.0.0.1, world sizes {', '.join(map(str, worlds))}; {args.warmup} warm-up "
        f"call(s) each, {args.reps} interleaved rounds; a call's time is its slowest rank's",
        "",
    ]
    print("\n".join(header), flush=True)
    body: list[str] = []
    for w in worlds:
        lines, _ = run_world(w, config)
        print("\n".join(lines) + "\n", flush=True)
        body += [*lines, ""]
    tail = f"load avg : {os.getloadavg()[0]:.2f} at end"
    print(tail)
    if args.out is not None:
        text = "\n".join([f"# bench_sharded_ce.py — {now:%Y-%m-%d}", "", "```text", *header, *body, tail, "```", ""])
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The worker of ``tests/test_distributed.py``: one gloo process group, every case inside it.

Spawned as 4 processes on 127.0.0.1; sub-groups of the first 1, 2, 3 and 4 ranks run each
case with the classes split into (uneven, sometimes empty) contiguous blocks.  Rank 0
compares the loss and the concatenated gradient blocks with the dense reference and writes
one JSON record per (case, world size).
"""

from __future__ import annotations

import json
import traceback
from typing import Any

import numpy as np

SPLITS = {1: [[11]], 2: [[5, 6], [11, 0]], 3: [[4, 4, 3], [1, 0, 10]], 4: [[3, 3, 3, 2], [0, 7, 0, 4]]}


def cases() -> dict[str, dict[str, Any]]:
    """Named cases: logits [B, 11], labels, options (all float64)."""
    rng = np.random.default_rng(20261203)
    c = 11
    z = rng.standard_normal((6, c)) * 3
    t = np.array([0, 10, 4, 4, 7, 2])
    t_ign = t.copy()
    t_ign[2] = -100
    w = rng.uniform(0.3, 2.0, c)
    conf = z.copy()
    conf[1, 10] += 60.0  # a confident row: loss ~ 1e-25
    masked = z.copy()
    masked[3, :5] = -np.inf
    masked[4, 7] = -np.inf  # the target's logit
    nan = z.copy()
    nan[5, 9] = np.nan
    where = rng.uniform(size=z.shape) > 0.25
    where[np.arange(6), t] = True
    where[1, 10] = False  # a masked target: loss +inf
    where[3] = False  # a row with no allowed class
    out = {
        "plain": dict(z=z, t=t, opts={}),
        "mean": dict(z=z, t=t, opts={"reduction": "mean"}),
        "sum": dict(z=z, t=t, opts={"reduction": "sum"}),
        "ignore-weights-mean": dict(z=z, t=t_ign, opts={"ignore_index": -100, "class_weights": w,
                                                        "reduction": "mean"}),
        "smoothing": dict(z=z, t=t_ign, opts={"ignore_index": -100, "label_smoothing": 0.1}),
        "smoothing-weights-mean": dict(z=z, t=t, opts={"label_smoothing": 0.2, "class_weights": w,
                                                       "reduction": "mean"}),
        "z-loss-softcap": dict(z=z * 4, t=t_ign, opts={"ignore_index": -100, "z_loss": 1e-2,
                                                       "logit_softcap": 5.0}),
        "confident": dict(z=conf, t=t, opts={}),
        "minus-inf": dict(z=masked, t=t, opts={}),
        "nan-row": dict(z=nan, t=t, opts={}),
        "count-mean": dict(z=z, t=t_ign, opts={"ignore_index": -100, "class_weights": w,
                                               "reduction": "mean", "mean_denominator": "count"}),
        "where-others-smoothing": dict(z=z, t=t_ign, opts={"ignore_index": -100, "where": where,
                                                           "label_smoothing": 0.1,
                                                           "label_smoothing_mode": "others"}),
        "target-weighting-mean": dict(z=z, t=t, opts={"class_weights": w, "label_smoothing": 0.2,
                                                      "class_weighting": "target", "reduction": "mean"}),
    }
    return out


def more_cases() -> dict[str, dict[str, Any]]:
    """The other sharded functions: soft-label CE, logsumexp/log_softmax/softmax, linear CE.

    Each case: ``kind``, full arrays, options; the logits' class axis (and the labels', the
    weights' rows) is split by the same blocks as the sparse cases.
    """
    rng = np.random.default_rng(7)
    c, b, d = 11, 6, 5
    z = rng.standard_normal((b, c)) * 3
    y = rng.dirichlet(np.ones(c), size=b)
    w = rng.uniform(0.3, 2.0, c)
    where = rng.uniform(size=(b, c)) > 0.3
    where[0] = False  # a row with no allowed class
    where[1, :] = True
    special = z.copy()
    special[0, 3] = np.inf
    special[1, :] = -np.inf
    special[2, 5] = np.nan
    special[3, 4] = -np.inf
    conf = z.copy()
    conf[:, 9] += 60.0  # confident rows: p ~ 1 at class 9
    onehot = np.eye(c)[[9, 9, 1, 9, 0, 9]]
    x = rng.standard_normal((b, d))
    big_w = rng.standard_normal((c, d))
    bias = rng.standard_normal(c)
    t = np.array([0, 10, 4, -100, 7, 2])
    return {
        "dense:plain": dict(kind="dense", z=z, y=y, opts={}),
        "dense:where-weights-mean": dict(kind="dense", z=z, y=y * where, opts={
            "where": where, "class_weights": w, "reduction": "mean"}),
        "dense:smoothing-uniform": dict(kind="dense", z=z, y=y, opts={"label_smoothing": 0.1}),
        "dense:smoothing-others-where-sum": dict(kind="dense", z=z, y=y, opts={
            "label_smoothing": 0.2, "label_smoothing_mode": "others", "where": where,
            "class_weights": w, "reduction": "sum"}),
        "dense:z-loss-softcap-count-mean": dict(kind="dense", z=z * 4, y=y, opts={
            "z_loss": 1e-2, "logit_softcap": 5.0, "reduction": "mean", "mean_denominator": "count"}),
        "dense:confident": dict(kind="dense", z=conf, y=onehot, opts={}),
        "dense:special": dict(kind="dense", z=special, y=y, opts={}),
        "lse:special": dict(kind="logsumexp", z=special, opts={}),
        "lse:keepdims": dict(kind="logsumexp", z=conf, opts={"keepdims": True}),
        "log_softmax:confident": dict(kind="log_softmax", z=conf, opts={}),
        "log_softmax:special": dict(kind="log_softmax", z=special, opts={}),
        "softmax:plain": dict(kind="softmax", z=z, opts={}),
        "linear:plain": dict(kind="linear", w=big_w, b=bias, x=x, t=np.array([0, 10, 4, 4, 7, 2]),
                             opts={}),
        "linear:no-bias-ignore-mean": dict(kind="linear", w=big_w, b=None, x=x, t=t, opts={
            "ignore_index": -100, "reduction": "mean"}),
        "linear:weights-smoothing-z-loss": dict(kind="linear", w=big_w * 3, b=bias, x=x, t=t, opts={
            "ignore_index": -100, "class_weights": w, "label_smoothing": 0.1, "z_loss": 1e-3}),
    }


def _dense_reference(case: dict[str, Any], ct: np.ndarray) -> tuple[Any, dict[str, np.ndarray]]:
    """The dense value and gradients, named as the sharded function's (full, not split)."""
    import refsoftmax as rs

    kind, opts = case["kind"], case["opts"]
    if kind == "dense":
        v, g = rs.softmax_cross_entropy.value_and_grad(case["z"], case["y"], cotangent=ct, **opts)
        return v, {"local_logits": g["logits"], "local_labels": g["labels"]}
    if kind in ("logsumexp", "log_softmax", "softmax"):
        v, g = getattr(rs, kind).value_and_grad(case["z"], cotangent=ct, **opts)
        return v, {"local_x": g["x"]}
    # linear: the sparse reference of the full logits, chained by hand
    logits = case["x"] @ case["w"].T + (0.0 if case["b"] is None else case["b"])
    v, g = rs.sparse_softmax_cross_entropy.value_and_grad(logits, case["t"], cotangent=ct, **opts)
    gz = g["logits"]
    out = {"local_weights": gz.T @ case["x"], "inputs": gz @ case["w"]}
    if case["b"] is not None:
        out["local_biases"] = gz.sum(axis=0)
    return v, out


def _sharded_call(case: dict[str, Any], lo: int, hi: int, torch: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """(function name in refsoftmax.distributed, this rank's positional arrays, options)."""
    kind = case["kind"]
    opts = {k: (torch.tensor(v[..., lo:hi] if k == "where" else v) if isinstance(v, np.ndarray) else v)
            for k, v in case["opts"].items()}
    if kind == "dense":
        return "softmax_cross_entropy", (torch.tensor(case["z"][:, lo:hi]), torch.tensor(case["y"][:, lo:hi])), opts
    if kind in ("logsumexp", "log_softmax", "softmax"):
        return kind, (torch.tensor(case["z"][:, lo:hi]),), opts
    b = None if case["b"] is None else torch.tensor(case["b"][lo:hi])
    return "linear_softmax_cross_entropy", (torch.tensor(case["w"][lo:hi]), b, torch.tensor(case["t"]),
                                            torch.tensor(case["x"])), opts


def _cotangent(case: dict[str, Any], value_shape: tuple[int, ...]) -> np.ndarray:
    return np.linspace(0.5, 1.5, int(np.prod(value_shape))).reshape(value_shape)


SPLIT_GRADS = {"local_logits", "local_labels", "local_x"}  # split along the classes (last axis)
ROW_GRADS = {"local_weights", "local_biases"}  # split along the rows (axis 0)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if same.all():
        return 0.0
    fin = np.isfinite(a) & np.isfinite(b)
    if not (same | fin).all():
        return float("inf")
    d = np.abs(a - b)[fin & ~same]
    scale = np.maximum(np.abs(b[fin & ~same]), np.max(np.abs(b[fin]), initial=0.0) * 1e-300 + 1e-300)
    return float(np.max(d / scale, initial=0.0))


def worker(rank: int, world: int, port: int, out_path: str) -> None:
    import torch
    import torch.distributed as dist

    import refsoftmax as rs
    from refsoftmax import distributed
    from refsoftmax.bridges import torch_autograd

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    records = []
    try:
        groups = {k: dist.new_group(list(range(k))) for k in range(1, world + 1)}
        for k, group in groups.items():
            for split in SPLITS[k]:
                offsets = np.cumsum([0, *split])
                for name, case in cases().items():
                    z, t, opts = case["z"], case["t"], dict(case["opts"])
                    ct = np.linspace(0.5, 1.5, len(t)) if opts.get("reduction", "none") == "none" else np.asarray(0.7)
                    if rank >= k:
                        continue
                    local = torch.tensor(z[:, offsets[rank]:offsets[rank + 1]])
                    kw = {key: (torch.tensor(v[..., offsets[rank]:offsets[rank + 1]] if key == "where" else v)
                                if isinstance(v, np.ndarray) else v) for key, v in opts.items()}
                    try:
                        value, grads = distributed.sparse_softmax_cross_entropy.value_and_grad(
                            local, torch.tensor(t), group=group, cotangent=torch.tensor(ct), **kw)
                        blocks: list[Any] = [None] * k
                        dist.all_gather_object(blocks, grads["local_logits"].numpy(), group=group)
                        values: list[Any] = [None] * k
                        dist.all_gather_object(values, value.numpy(), group=group)
                        error = ""
                    except Exception:  # a failure on one rank is recorded, not a hang
                        error = traceback.format_exc(limit=3)
                        blocks, values = [], []
                    if rank == 0:
                        record = {"case": name, "world": k, "split": split, "error": error}
                        if not error:
                            dense_v, dense_g = rs.sparse_softmax_cross_entropy.value_and_grad(
                                z, t, cotangent=ct, **opts)
                            record["value_rel"] = max(_rel(v, dense_v) for v in values)
                            record["same_on_every_rank"] = all(np.array_equal(v, values[0], equal_nan=True)
                                                               for v in values)
                            record["grad_rel"] = _rel(np.concatenate(blocks, axis=-1), dense_g["logits"])
                        records.append(record)
                    if name in ("plain", "z-loss-softcap") and not error:
                        # the autograd bridge: .backward() through the sharded loss
                        leaf = local.clone().requires_grad_(True)
                        loss = torch_autograd(distributed.sparse_softmax_cross_entropy)(
                            leaf, torch.tensor(t), group=group, **kw)
                        loss.backward(torch.tensor(ct))
                        bridged: list[Any] = [None] * k
                        dist.all_gather_object(bridged, leaf.grad.numpy(), group=group)
                        if rank == 0:
                            records[-1]["bridge_grad_rel"] = _rel(np.concatenate(bridged, axis=-1),
                                                                  dense_g["logits"])
        for k, group in groups.items():
            for split in SPLITS[k]:
                offsets = np.cumsum([0, *split])
                for name, case in more_cases().items():
                    if rank >= k:
                        continue
                    records.extend(_run_more(name, case, k, split, offsets, rank, group, dist, torch))
        records.extend(_run_dtensor(rank, world, dist, torch))
    finally:
        if rank == 0:
            with open(out_path, "w") as fh:
                json.dump(records, fh)
        dist.destroy_process_group()


def _run_more(name: str, case: dict[str, Any], k: int, split: list[int], offsets: Any, rank: int,
              group: Any, dist: Any, torch: Any) -> list[dict[str, Any]]:
    from refsoftmax import distributed

    lo, hi = int(offsets[rank]), int(offsets[rank + 1])
    fname, args, kw = _sharded_call(case, lo, hi, torch)
    dense_v0, _ = _dense_reference(case, None)
    ct = _cotangent(case, np.shape(dense_v0))
    ct_local = ct[..., lo:hi] if case["kind"] in ("log_softmax", "softmax") else ct
    try:
        value, grads = getattr(distributed, fname).value_and_grad(
            *args, group=group, cotangent=torch.tensor(ct_local), **kw)
        gathered = {}
        for gname, g in grads.items():
            if g is None:
                continue
            parts: list[Any] = [None] * k
            dist.all_gather_object(parts, g.numpy(), group=group)
            gathered[gname] = parts
        values: list[Any] = [None] * k
        dist.all_gather_object(values, value.numpy(), group=group)
        error = ""
    except Exception:  # a failure on one rank is recorded, not a hang
        error = traceback.format_exc(limit=4)
    if rank != 0:
        return []
    record: dict[str, Any] = {"family": "more", "case": name, "world": k, "split": split, "error": error}
    if not error:
        dense_v, dense_g = _dense_reference(case, ct)
        if case["kind"] in ("log_softmax", "softmax"):
            record["value_rel"] = _rel(np.concatenate(values, axis=-1), dense_v)
            record["same_on_every_rank"] = True  # the values are blocks
        else:
            record["value_rel"] = max(_rel(v, dense_v) for v in values)
            record["same_on_every_rank"] = all(np.array_equal(v, values[0], equal_nan=True) for v in values)
        rels = {}
        for gname, parts in gathered.items():
            if gname in SPLIT_GRADS:
                full = np.concatenate(parts, axis=-1)
            elif gname in ROW_GRADS:
                full = np.concatenate(parts, axis=0)
            else:  # the inputs' gradient: whole on every rank
                rels[gname + ":same"] = 0.0 if all(np.array_equal(p, parts[0]) for p in parts) else 1.0
                full = parts[0]
            rels[gname] = _rel(full, dense_g[gname])
        record["grad_rel"] = max(rels.values(), default=0.0)
        record["grads"] = sorted(rels)
    return [record]


def _run_dtensor(rank: int, world: int, dist: Any, torch: Any) -> list[dict[str, Any]]:
    """The ordinary sparse CE on a Shard(-1) DTensor (world 2 and 4), and a Replicate fallback."""
    from torch.distributed.tensor import DeviceMesh, Replicate, Shard, distribute_tensor

    import refsoftmax as rs

    out = []
    case = cases()["ignore-weights-mean"]
    z, t, opts = case["z"], case["t"], dict(case["opts"])
    dense_v, dense_g = rs.sparse_softmax_cross_entropy.value_and_grad(z, t, **opts)
    for k in (2, world):
        mesh = DeviceMesh("cpu", list(range(k)))  # every rank of the world takes part in creating it
        if rank >= k:
            continue
        kw = {key: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for key, v in opts.items()}
        record: dict[str, Any] = {"family": "dtensor", "case": f"dtensor-world-{k}", "world": k}
        try:
            dz = distribute_tensor(torch.tensor(z), mesh, [Shard(1)])
            value = rs.sparse_softmax_cross_entropy(dz, torch.tensor(t), **kw)
            v2, grads = rs.sparse_softmax_cross_entropy.value_and_grad(dz, torch.tensor(t), **kw)
            leaf = distribute_tensor(torch.tensor(z), mesh, [Shard(1)]).requires_grad_(True)
            rs.sparse_softmax_cross_entropy(leaf, torch.tensor(t), **kw).backward()
            replicated = distribute_tensor(torch.tensor(z), mesh, [Replicate()])
            v3 = rs.sparse_softmax_cross_entropy(replicated, torch.tensor(t), **kw)
            where = torch.ones(z.shape, dtype=torch.bool)  # an option the sharded loss lacks: gathered
            v4 = rs.sparse_softmax_cross_entropy(dz, torch.tensor(t), where=where, **kw)
            record.update(
                local_block=list(dz.to_local().shape),
                value_type=type(value).__name__,
                grad_type=type(grads["logits"]).__name__,
                value_rel=max(_rel(v.numpy(), dense_v) for v in (value, v2, v3, v4)),
                grad_rel=_rel(grads["logits"].full_tensor().numpy(), dense_g["logits"]),
                backward_rel=_rel(leaf.grad.full_tensor().numpy(), dense_g["logits"]),
                error="",
            )
        except Exception:
            record["error"] = traceback.format_exc(limit=4)
        if rank == 0:
            out.append(record)
    return out

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
    }
    return out


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
                    kw = {key: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for key, v in opts.items()}
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
    finally:
        if rank == 0:
            with open(out_path, "w") as fh:
                json.dump(records, fh)
        dist.destroy_process_group()

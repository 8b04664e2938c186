"""By hand, without refsoftmax: the findings of ``conformance/reports/torch_loss_parallel.md``.

    python conformance/reproducers/repro_torch_loss_parallel.py     # 2 ranks, then 4 (gloo, 127.0.0.1)

PyTorch 2.13.0, ``F.cross_entropy`` of a ``Shard(1)`` DTensor under ``loss_parallel()``.
"""

import datetime
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

Z = [[0.5, -1.0, 2.0, 0.3], [1.0, 0.0, -0.5, 0.2]]


def two_ranks(rank: int, world: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.distributed.tensor.parallel import loss_parallel

    mesh = init_device_mesh("cpu", (world,))
    z = torch.tensor(Z, dtype=torch.float64)
    w = torch.tensor([0.5, 2.0, 1.5, 3.0], dtype=torch.float64)

    # 1. class weights with an ignored label: the value is right, the backward raises
    dz = distribute_tensor(z.clone().requires_grad_(True), mesh, [Shard(1)])
    with loss_parallel():
        loss = F.cross_entropy(dz, torch.tensor([0, -100]), weight=w, ignore_index=-100, reduction="sum")
        value = loss.full_tensor().item()
        try:
            loss.backward()
            backward = "backward ran"
        except RuntimeError as exc:
            backward = f"backward: RuntimeError: {exc}"
    single = F.cross_entropy(z, torch.tensor([0, -100]), weight=w, ignore_index=-100, reduction="sum").item()

    # 2. labels 4 (= C) and -1 cost 0 (gradient: the softmax, no -1 at the label)
    dz = distribute_tensor(torch.tensor([Z[0]] * 3, dtype=torch.float64).requires_grad_(True), mesh, [Shard(1)])
    with loss_parallel():
        invalid = F.cross_entropy(dz, torch.tensor([4, -1, 0]), reduction="none")
        invalid.sum().backward()
    grad = dz.grad.full_tensor()
    if rank == 0:
        print(f"weights + ignore_index: loss {value:.6f} (one process: {single:.6f}); {backward}")
        print("labels 4, -1, 0:", invalid.full_tensor().tolist(), "gradient rows:",
              np.round(grad.tolist(), 4).tolist())
        try:
            F.cross_entropy(torch.tensor([Z[0]] * 3), torch.tensor([4, -1, 0]))
        except IndexError as exc:
            print("one process:", type(exc).__name__, exc)


def four_ranks(rank: int, world: int, port: int) -> None:
    # 3. C = 5 on 4 ranks: blocks 2, 2, 1, 0; the rank with the empty block raises, the others wait
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=20))
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.distributed.tensor.parallel import loss_parallel

    mesh = init_device_mesh("cpu", (world,))
    dz = distribute_tensor(torch.tensor([[0.5, -1.0, 2.0, 0.3, 1.1]], dtype=torch.float64), mesh, [Shard(1)])
    try:
        with loss_parallel():
            outcome = f"loss {F.cross_entropy(dz, torch.tensor([2]), reduction='none').to_local().tolist()}"
    except RuntimeError as exc:
        outcome = f"RuntimeError: {str(exc)[:90]}"
    print(f"rank {rank}, block of {dz.to_local().shape[1]} classes: {outcome}", flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    mp.spawn(two_ranks, args=(2, _free_port()), nprocs=2)
    mp.spawn(four_ranks, args=(4, _free_port()), nprocs=4, join=False).join()

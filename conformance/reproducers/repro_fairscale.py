"""By hand, without refsoftmax: the findings of ``conformance/reports/fairscale.md``.

    python conformance/reproducers/repro_fairscale.py     # 2 ranks of a gloo group on 127.0.0.1

fairscale 0.4.13, ``fairscale.nn.model_parallel.cross_entropy.vocab_parallel_cross_entropy``;
the logits ``[0.5, -1.0, 2.0, 0.3]`` are split in two blocks of two classes.
"""

import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

Z = [0.5, -1.0, 2.0, 0.3]


def main(rank: int, world: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    from fairscale.nn.model_parallel import initialize
    from fairscale.nn.model_parallel.cross_entropy import vocab_parallel_cross_entropy

    initialize.initialize_model_parallel(world)
    k = len(Z) // world
    block = torch.tensor([Z], dtype=torch.float64)[:, rank * k:(rank + 1) * k].clone()

    # 1. the block is overwritten with z - max(z) (the global row maximum)
    before = block.tolist()
    loss = vocab_parallel_cross_entropy(block, torch.tensor([2])).item()
    after = block.tolist()

    # 2. labels 4 (= C) and -1 are accepted; label 0 for comparison
    rows3 = torch.tensor([Z] * 3, dtype=torch.float64)[:, rank * k:(rank + 1) * k].clone()
    invalid = vocab_parallel_cross_entropy(rows3, torch.tensor([4, -1, 0])).tolist()

    # 3. logits that autograd saved (a tanh output): the in-place write is caught at backward
    h = torch.tensor([Z], dtype=torch.float64, requires_grad=True)
    try:
        vocab_parallel_cross_entropy(torch.tanh(h)[:, rank * k:(rank + 1) * k], torch.tensor([2])).sum().backward()
        tanh = "backward ran"
    except RuntimeError as exc:
        tanh = f"RuntimeError: {str(exc)[:95]}..."

    rows = [None] * world
    dist.all_gather_object(rows, (loss, before, after, invalid, tanh))
    if rank == 0:
        for r, (lo, b, a, _, t) in enumerate(rows):
            print(f"rank {r}: loss {lo:.6f}; block {b} -> {a}; tanh logits: {t}")
        print("labels 4, -1, 0:", np.round(rows[0][3], 6).tolist())


if __name__ == "__main__":
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    mp.spawn(main, args=(2, free), nprocs=2)

"""By hand, without refsoftmax: the findings of ``conformance/reports/megatron_core.md``.

    python conformance/reproducers/repro_megatron_core.py     # 2 ranks of a gloo group on 127.0.0.1

Megatron-core 0.16.1, ``megatron.core.tensor_parallel.vocab_parallel_cross_entropy``; the
logits ``[0.5, -1.0, 2.0, 0.3]`` are split in two blocks of two classes.
"""

import socket
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

Z = [0.5, -1.0, 2.0, 0.3]


def main(rank: int, world: int, port: int) -> None:
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    parallel_state.initialize_model_parallel(tensor_model_parallel_size=world)
    k = len(Z) // world
    block = torch.tensor([Z], dtype=torch.float64)[:, rank * k:(rank + 1) * k]

    # 1. label smoothing 0.1, label 2: every rank returns its own loss
    smoothed = vocab_parallel_cross_entropy(block.clone(), torch.tensor([2]), 0.1).item()

    # 2. float32 logits (an activation, as in training) are overwritten: softmax, then gradient
    w = torch.tensor([Z], requires_grad=True)
    logits = (w * 1.0)[:, rank * k:(rank + 1) * k]
    before = logits.tolist()
    loss = vocab_parallel_cross_entropy(logits, torch.tensor([2]))
    after_forward = logits.tolist()
    loss.backward()
    after_backward = logits.tolist()

    # 3. labels 4 (= C) and -1 are accepted; label 0 for comparison
    invalid = vocab_parallel_cross_entropy(torch.cat([block] * 3).clone(), torch.tensor([4, -1, 0])).tolist()

    rows = [None] * world
    dist.all_gather_object(rows, (smoothed, before, after_forward, after_backward, invalid))
    if rank == 0:
        for r, (s, b, f, g, _) in enumerate(rows):
            print(f"rank {r}: smoothed loss {s:.6f}; float32 block {b} -> after forward {np.round(f, 4).tolist()}"
                  f" -> after backward {np.round(g, 4).tolist()}")
        print("w.grad (right):", np.round(w.grad.tolist(), 4).tolist())
        print("labels 4, -1, 0:", np.round(rows[0][4], 6).tolist())


if __name__ == "__main__":
    z = np.array(Z)
    nll = np.log(np.exp(z).sum()) - z  # -log p_c
    eps = 0.1
    print(f"dense, 1 - eps on the label and eps/(C - 1) on the others: {(1 - eps) * nll[2] + eps / 3 * (nll.sum() - nll[2]):.6f}")
    s = eps * 2 / (2 - 1)  # Megatron's smoothing with the local K = 2 and the mean over the local block
    print("Megatron's formula with the local K and mean, per block:",
          [round(float((1 - s) * nll[2] + s * nll[2 * r:2 * r + 2].mean()), 6) for r in range(2)])
    print(f"logsumexp(z) - max(z): {np.log(np.exp(z - z.max()).sum()):.6f}; true loss of label 0: {nll[0]:.6f}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    mp.spawn(main, args=(2, free), nprocs=2)

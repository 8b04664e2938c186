"""Vocab-parallel functions for ``tests/test_conformance_sharded.py``, importable by the spawned ranks.

Each is ``fn(local_logits, labels, **options)`` on one rank; all but ``reference`` are wrong
in one way that only a sharded certification can see.
"""

from __future__ import annotations

from typing import Any

from refsoftmax.conformance.sharded import reference


def _rank() -> int:
    import torch.distributed as dist

    return int(dist.get_rank())


def loss_differs_on_rank_1(local_logits: Any, labels: Any, **options: Any) -> Any:
    """The right loss on rank 0, the loss plus 1e-3 on rank 1 (the gradient is right)."""
    loss = reference(local_logits, labels, **options)
    return loss + 1e-3 if _rank() == 1 else loss


def gradient_doubled_on_rank_1(local_logits: Any, labels: Any, **options: Any) -> Any:
    """The right loss everywhere; rank 1's block of the gradient twice what it should be."""
    import torch

    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            return x.view_as(x)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            return 2 * g if _rank() == 1 else g

    return reference(Double.apply(local_logits), labels, **options)


def raises_on_rank_1(local_logits: Any, labels: Any, **options: Any) -> Any:
    """Rank 1 raises after the collectives (rank 0 returns the right loss)."""
    loss = reference(local_logits, labels, **options)
    if _rank() == 1:
        msg = "rank 1 lost its way"
        raise RuntimeError(msg)
    return loss


def scales_its_input(local_logits: Any, labels: Any, **options: Any) -> Any:
    """The right loss, but every rank's block of logits is overwritten (``mul_(1)`` of a copy
    would be invisible: this writes zeros after computing)."""
    import torch

    loss = reference(local_logits, labels, **options)
    with torch.no_grad():
        local_logits.zero_()
    return loss

"""PyTorch backend (CPU and CUDA)."""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

from refsoftmax.backends._generic import check_scatter_args

NAME = "torch"


def is_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def namespace() -> ModuleType:
    import array_api_compat.torch as xp

    return xp


def owns(xp: ModuleType) -> bool:
    import array_api_compat

    return array_api_compat.is_torch_namespace(xp)


def default_device() -> Any:
    import torch

    return torch.device("cpu")


def parse_device(device: Any) -> Any:
    import torch

    if device is None:
        return default_device()
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        msg = f"device={device!r} is not a torch device: {exc}"
        raise ValueError(msg) from exc


def from_host(obj: Any, device: Any = None) -> Any:
    import numpy as np
    import torch

    arr = np.array(obj, copy=True, order="C")  # a copy: never share memory with the caller
    return torch.from_numpy(arr).to(parse_device(device))


def untracked(x: Any) -> Any:
    """``x`` detached from torch's autograd: refsoftmax records no graph (its gradients are by hand).

    Shares ``x``'s memory (no copy).  :func:`refsoftmax._arrays.resolve` applies it to every
    torch argument of ``forward``/``value_and_grad``; a plain call of a loss on tensors that
    require grad goes through :func:`refsoftmax.bridges.route` first, so its value does carry
    a graph (whose backward is the hand-derived one).
    """
    return x.detach()


def to_numpy(x: Any) -> Any:
    return x.detach().cpu().numpy()


def scatter_add(x: Any, indices: Any, values: Any) -> Any:
    """``x`` with ``values[k]`` added to row ``indices[k]``; duplicates accumulate (``index_add``)."""
    check_scatter_args(x, indices, values)
    return x.index_add(0, indices, values)


def all_reduce(x: Any, op: str = "sum", group: Any = None) -> Any:
    """``x`` reduced over the ``torch.distributed`` process ``group`` (a new tensor; ``x`` is kept).

    ``op``: ``"sum"``, ``"max"`` or ``"min"``.  Every rank of the group must call it with the same shape.
    """
    import torch.distributed as dist

    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    if op not in ops:
        msg = f"op must be one of {sorted(ops)}, got {op!r}"
        raise ValueError(msg)
    out = x.clone()
    dist.all_reduce(out, op=ops[op], group=group)
    return out


def group_rank_and_size(group: Any = None) -> tuple[int, int]:
    """This process's rank in ``group`` and the group's size (the default group: ``None``)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        msg = "torch.distributed is not initialised: call torch.distributed.init_process_group first"
        raise RuntimeError(msg)
    return dist.get_rank(group), dist.get_world_size(group)


class Generator:
    """A ``torch.Generator`` on the requested device, seeded."""

    def __init__(self, seed: int | None, device: Any = None) -> None:
        import torch

        self._device = parse_device(device)
        self._gen = torch.Generator(device=self._device)
        if seed is None:
            self._gen.seed()
        else:
            self._gen.manual_seed(int(seed))

    def uniform(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        import torch

        out = torch.rand(shape, generator=self._gen, device=self._device, dtype=torch.float64)
        return out if dtype is None else out.to(dtype)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> Any:
        import torch

        return torch.randint(
            low, high, shape, generator=self._gen, device=self._device, dtype=torch.int64
        )


def fused_sparse_softmax_cross_entropy(z: Any, target: Any, kappa: Any, g: Any) -> Any:
    """The fused kernel of :mod:`refsoftmax.backends.torch_kernels` (``None`` if it does not apply)."""
    from refsoftmax.backends import torch_kernels

    return torch_kernels.fused_sparse_softmax_cross_entropy(z, target, kappa, g)


def class_shards(x: Any) -> tuple[Any, Any, Any] | None:
    """``(local tensor, process group, layout)`` of a DTensor sharded along its last axis.

    For a ``torch.distributed.tensor.DTensor`` on a 1-D device mesh with placement
    ``Shard(-1)`` (contiguous blocks in rank order, as ``torch.chunk`` splits them);
    ``None`` for anything else.  ``layout`` is what :func:`from_class_shards` needs to
    wrap a block of the same layout back into a DTensor.
    """
    import sys

    tensor_module = sys.modules.get("torch.distributed.tensor")
    if tensor_module is None or not isinstance(x, tensor_module.DTensor):
        return None
    mesh, placements = x.device_mesh, tuple(x.placements)
    if mesh.ndim != 1 or len(placements) != 1 or not placements[0].is_shard():
        return None
    if placements[0].dim % x.ndim != x.ndim - 1:
        return None
    return x.to_local(), mesh.get_group(), (mesh, placements, tuple(x.shape))


def from_class_shards(local: Any, layout: Any) -> Any:
    """This rank's block ``local`` as a DTensor of ``layout`` (from :func:`class_shards`)."""
    from torch.distributed.tensor import DTensor

    mesh, placements, shape = layout
    return DTensor.from_local(local, mesh, placements, run_check=False, shape=shape,
                              stride=_contiguous_strides(shape))


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def full_tensor(x: Any) -> Any:
    """A DTensor gathered into an ordinary tensor (every rank gets all of it); others unchanged."""
    import sys

    tensor_module = sys.modules.get("torch.distributed.tensor")
    if tensor_module is not None and isinstance(x, tensor_module.DTensor):
        return x.full_tensor()
    return x

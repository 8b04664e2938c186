"""PyTorch ``loss_parallel()``: ``F.cross_entropy`` of a ``Shard(-1)`` DTensor, on 2 and 4 ranks.

Certified with the sharded harness (:mod:`refsoftmax.conformance.sharded`): each rank wraps
its block in ``DTensor.from_local(block, mesh, [Shard(-1)], shape=..., stride=...)`` on a
1-D CPU mesh of the whole group, and ``F.cross_entropy`` (class axis moved to 1 for leading
dims) and the backward run under ``torch.distributed.tensor.parallel.loss_parallel()``; the
loss is returned as its local (replicated) tensor.  The blocks are a DTensor's own
(``torch.chunk``: ``ceil(C/N)`` classes each, the last ones fewer; layout ``"chunk"``).

* Options as ``F.cross_entropy``: ``reduction``, ``ignore_index`` (−100 by default: a case
  with −100 labels and no ``ignore_index`` is skipped), class weights (replicated);
  ``label_smoothing`` is documented as not supported (it raises): skipped.
* **No empty block**: a rank whose block is empty raises (``index 0 is out of bounds for
  dimension 1 with size 0``) while the others wait for it in a collective
  (``conformance/findings.md``), so a case that would leave a block empty (C < N, or e.g.
  C = 5 on 4 ranks: blocks 2, 2, 1, 0) is widened to the fewest classes without one; one case
  per world size is also run with its empty block (:data:`EMPTY_BLOCK_CASES`).
* The global class count (for ``from_local``'s ``shape``) is one all-reduce of the block
  sizes, made by the adapter before the call.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "torch_loss_parallel"
FUNCTION = "torch.nn.functional.cross_entropy under loss_parallel() (Shard(-1) DTensor)"
WORLD_SIZES = (2, 4)
_MESH: list[Any] = []


def available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch.distributed as dist

    return bool(dist.is_available()) and importlib.util.find_spec("torch.distributed.tensor.parallel") is not None


def version() -> str:
    import torch

    return str(torch.__version__)


def _mesh() -> Any:
    if not _MESH:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        _MESH.append(init_device_mesh("cpu", (dist.get_world_size(),)))
    return _MESH[0]


def cross_entropy(local_logits: Any, labels: Any, *, reduction: str = "none", ignore_index: int = -100,
                  class_weights: Any = None) -> Any:
    """On every rank, under ``loss_parallel()`` (:attr:`sharded_context`): the loss of the
    ``Shard(-1)`` DTensor made of this rank's block."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.distributed.tensor import DTensor, Shard

    mesh = _mesh()
    classes = torch.tensor([local_logits.shape[-1]], dtype=torch.int64)
    dist.all_reduce(classes)
    shape = (*local_logits.shape[:-1], int(classes.item()))
    stride = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        stride[i] = stride[i + 1] * max(shape[i + 1], 1)
    z: Any = DTensor.from_local(local_logits, mesh, [Shard(local_logits.ndim - 1)], run_check=False,
                           shape=torch.Size(shape), stride=tuple(stride))
    if z.ndim > 2:
        z = z.movedim(-1, 1)
    loss = F.cross_entropy(z, labels, weight=class_weights, reduction=reduction, ignore_index=ignore_index)
    return loss.to_local() if isinstance(loss, DTensor) else loss


def _loss_parallel() -> Any:
    from torch.distributed.tensor.parallel import loss_parallel

    return loss_parallel()


cross_entropy.sharded_context = _loss_parallel  # type: ignore[attr-defined]


def _call(remote: Any, inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    extra = set(options) - {"reduction", "ignore_index", "label_smoothing"}
    if extra:
        raise Unsupported(f"option(s) {sorted(extra)} not expressible in F.cross_entropy")
    if float(options.get("label_smoothing", 0.0) or 0.0) > 0:
        raise Unsupported("loss_parallel() does not support label_smoothing (documented; it raises)")
    kwargs: dict[str, Any] = {"reduction": options.get("reduction", "none"),
                              "ignore_index": options.get("ignore_index", -100)}
    if options.get("ignore_index") is None and bool((inputs["labels"].array == -100).any()):
        raise Unsupported("torch treats -100 as ignored by default; the case has no ignore_index")
    if "class_weights" in inputs:
        kwargs["class_weights"] = inputs["class_weights"]
    return remote(inputs["logits"], inputs["labels"], **kwargs)


def sharding(world_size: int) -> Any:
    from refsoftmax.conformance.sharded import Sharding

    return Sharding(world_size, "chunk", empty_blocks=False)


def targets(world_size: int = 2) -> list[Target]:
    from refsoftmax.conformance.sharded import sharded_target

    return [sharded_target(f"{__name__}:cross_entropy", sharding(world_size), library=LIBRARY,
                           function=f"{FUNCTION} [world {world_size}]", call=_call,
                           convention_doc="docs of torch.distributed.tensor.parallel.loss_parallel")]


#: The case run once per world size with an empty block (``chunk`` layout as is), to show in
#: the report what happens: C = 1 on 2 ranks (blocks 1, 0), C = 5 on 4 (blocks 2, 2, 1, 0).
EMPTY_BLOCK_CASES = {2: "one-class[float64]", 4: "basic[float64]"}


def certify(*, backend: str = "numpy", seed: int = 0, max_examples: int = 20, progress: Any = None,
            world_sizes: tuple[int, ...] | None = None, cases: Any = None) -> Any:
    """Certify at each of :data:`WORLD_SIZES` (one gloo group each); one merged report.

    Unless ``cases`` is given, each world size also runs its :data:`EMPTY_BLOCK_CASES` case
    with the empty block left in (function ``... [world N, an empty block]``).
    """
    import sys

    from refsoftmax.conformance import sharded
    from refsoftmax.conformance.cases import generate
    from refsoftmax.conformance.report import Report

    module = sys.modules[__name__]
    report = Report(LIBRARY, version(), backend, seed=seed, max_examples=max_examples)
    for n in tuple(world_sizes or WORLD_SIZES):
        with sharded.pool(n):
            sharded.merge(report, sharded.certify_adapter(
                module, world_sizes=(n,), backend=backend, seed=seed, max_examples=max_examples,
                cases=cases, progress=progress))
            if cases is not None or n not in EMPTY_BLOCK_CASES:
                continue
            layout = sharded.Sharding(n, "chunk")
            case = [c for c in generate(sharded.LOSS, seed=seed, max_examples=0, dtypes=("float64",))
                    if c.name == EMPTY_BLOCK_CASES[n]]
            target = sharded.sharded_target(f"{__name__}:cross_entropy", layout, library=LIBRARY,
                                            function=f"{FUNCTION} [world {n}, an empty block]", call=_call)
            sharded.merge(report, sharded.certify_targets(
                [target], layout, library=LIBRARY, version=report.version, backend=backend, seed=seed,
                max_examples=max_examples, cases=case, progress=progress), f"world size {n}, an empty block")
    return report

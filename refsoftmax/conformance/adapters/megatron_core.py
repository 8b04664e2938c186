"""Megatron-core: ``megatron.core.tensor_parallel.vocab_parallel_cross_entropy``, on 2 and 4 ranks.

Certified with the sharded harness (:mod:`refsoftmax.conformance.sharded`): every case runs
on the ranks of one gloo group per world size, rank ``k`` holding the ``k``-th of N equal
blocks of the classes.  Conventions, read in ``megatron/core/tensor_parallel/cross_entropy.py``
(0.16.1):

* the logits are cast with ``.float()``: float64 logits are computed, and the loss returned,
  in float32 (``compute_dtype="float32"``); float16/bfloat16 are computed in float32;
* ``label_smoothing=ε`` gives the target 1 − ε and every other class ε/(K − 1) (the NeMo
  formula in its comment: ``label_smoothing_mode="others"``), for 0 < ε < 1 (asserted:
  precondition ``smoothing_below_one``);
* per-token losses only (no ``reduction``), no ``ignore_index``, no class weights: cases
  that need them are skipped;
* ``vocab_start_index = rank × local vocab size``: the blocks must be equal (layout
  ``"even"``; cases whose C is not a multiple of N are widened).

The function sets up Megatron's tensor-parallel state on a rank's first call
(``parallel_state.initialize_model_parallel(tensor_model_parallel_size=N)``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "megatron_core"
FUNCTION = "megatron.core.tensor_parallel.vocab_parallel_cross_entropy"
WORLD_SIZES = (2, 4)


def available() -> bool:
    try:
        return importlib.util.find_spec("megatron.core") is not None and importlib.util.find_spec("torch") is not None
    except ModuleNotFoundError:
        return False


def version() -> str:
    return importlib.metadata.version("megatron-core")


def vocab_parallel_cross_entropy(local_logits: Any, labels: Any, label_smoothing: float = 0.0) -> Any:
    """On every rank: Megatron's loss of this rank's block (its parallel state set up once)."""
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy as ce

    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=dist.get_world_size())
    return ce(local_logits, labels, label_smoothing)


def _call(remote: Any, inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    extra = set(options) - {"reduction", "label_smoothing"}
    if extra:
        raise Unsupported(f"option(s) {sorted(extra)} not expressible in {FUNCTION}")
    if options.get("reduction", "none") != "none":
        raise Unsupported(f"{FUNCTION} returns per-token losses (no reduction)")
    if "class_weights" in inputs:
        raise Unsupported(f"{FUNCTION} takes no class weights")
    eps = float(options.get("label_smoothing", 0.0) or 0.0)
    return remote(inputs["logits"], inputs["labels"], **({"label_smoothing": eps} if eps else {}))


def sharding(world_size: int) -> Any:
    from refsoftmax.conformance.sharded import Sharding

    return Sharding(world_size, "even")


def targets(world_size: int = 2) -> list[Target]:
    from refsoftmax.conformance.sharded import sharded_target

    return [sharded_target(
        f"{__name__}:vocab_parallel_cross_entropy", sharding(world_size), library=LIBRARY,
        function=f"{FUNCTION} [world {world_size}]", call=_call,
        conventions={"label_smoothing_mode": "others"}, compute_dtype="float32",
        preconditions=("smoothing_below_one",),
        convention_doc="megatron/core/tensor_parallel/cross_entropy.py: .float(); NeMo's smoothing",
    )]


def certify(*, backend: str = "numpy", seed: int = 0, max_examples: int = 20, progress: Any = None,
            world_sizes: tuple[int, ...] | None = None, cases: Any = None) -> Any:
    """Certify at each of :data:`WORLD_SIZES` (one gloo group each); one merged report."""
    import sys

    from refsoftmax.conformance import sharded

    return sharded.certify_adapter(sys.modules[__name__], world_sizes=world_sizes, backend=backend,
                                   seed=seed, max_examples=max_examples, cases=cases, progress=progress)

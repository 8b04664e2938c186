"""fairscale: ``fairscale.nn.model_parallel.cross_entropy.vocab_parallel_cross_entropy``, on 2 and 4 ranks.

Certified with the sharded harness (:mod:`refsoftmax.conformance.sharded`), rank ``k``
holding the ``k``-th of N equal blocks of the classes.  Read in
``fairscale/nn/model_parallel/cross_entropy.py`` (0.4.13): ``vocab_parallel_cross_entropy(
vocab_parallel_logits, target)`` computes in the logits' dtype and returns per-token losses;
it has no options (no reduction, ``ignore_index``, class weights or label smoothing: such
cases are skipped), and ``vocab_start_index = rank × local vocab size`` needs equal blocks
(layout ``"even"``; cases whose C is not a multiple of N are widened).  The function sets up
fairscale's model-parallel state on a rank's first call (``initialize_model_parallel(N)``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "fairscale"
FUNCTION = "fairscale.nn.model_parallel.cross_entropy.vocab_parallel_cross_entropy"
WORLD_SIZES = (2, 4)


def available() -> bool:
    return importlib.util.find_spec("fairscale") is not None and importlib.util.find_spec("torch") is not None


def version() -> str:
    return importlib.metadata.version("fairscale")


def vocab_parallel_cross_entropy(local_logits: Any, labels: Any) -> Any:
    """On every rank: fairscale's loss of this rank's block (its model-parallel state set up once)."""
    import torch.distributed as dist
    from fairscale.nn.model_parallel import initialize
    from fairscale.nn.model_parallel.cross_entropy import vocab_parallel_cross_entropy as ce

    if not initialize.model_parallel_is_initialized():
        initialize.initialize_model_parallel(dist.get_world_size())
    return ce(local_logits, labels)


def _call(remote: Any, inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    extra = {k for k, v in options.items() if not (k == "reduction" and v == "none")}
    if extra or "class_weights" in inputs:
        what = sorted(extra | ({"class_weights"} if "class_weights" in inputs else set()))
        raise Unsupported(f"{FUNCTION} takes no options (per-token losses): {what}")
    return remote(inputs["logits"], inputs["labels"])


def sharding(world_size: int) -> Any:
    from refsoftmax.conformance.sharded import Sharding

    return Sharding(world_size, "even")


def targets(world_size: int = 2) -> list[Target]:
    from refsoftmax.conformance.sharded import sharded_target

    return [sharded_target(f"{__name__}:vocab_parallel_cross_entropy", sharding(world_size), library=LIBRARY,
                           function=f"{FUNCTION} [world {world_size}]", call=_call,
                           convention_doc="fairscale/nn/model_parallel/cross_entropy.py")]


def certify(*, backend: str = "numpy", seed: int = 0, max_examples: int = 20, progress: Any = None,
            world_sizes: tuple[int, ...] | None = None, cases: Any = None) -> Any:
    """Certify at each of :data:`WORLD_SIZES` (one gloo group each); one merged report."""
    import sys

    from refsoftmax.conformance import sharded

    return sharded.certify_adapter(sys.modules[__name__], world_sizes=world_sizes, backend=backend,
                                   seed=seed, max_examples=max_examples, cases=cases, progress=progress)

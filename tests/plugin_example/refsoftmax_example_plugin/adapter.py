"""The refsoftmax adapter of ``refsoftmax_example_plugin`` (entry point ``example``)."""

from __future__ import annotations

from typing import Any

from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "example"


def available() -> bool:
    return True


def version() -> str:
    import refsoftmax_example_plugin

    return refsoftmax_example_plugin.__version__


def _call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    from refsoftmax_example_plugin import sparse_cross_entropy

    extra = (set(options) - {"reduction"}) | (set(inputs) - {"logits", "labels"})
    if extra:  # e.g. ignore_index or class_weights: the case is skipped
        raise Unsupported(f"{sorted(extra)} not expressible in sparse_cross_entropy")
    return sparse_cross_entropy(inputs["logits"], inputs["labels"], **options)


def targets() -> list[Target]:
    return [Target(
        LIBRARY, "refsoftmax_example_plugin.sparse_cross_entropy", "sparse_softmax_cross_entropy",
        "numpy", _call, wrt=(),
        imports="from refsoftmax_example_plugin import sparse_cross_entropy",
        expression="sparse_cross_entropy(logits, labels, **options)",
    )]

"""PyTorch: ``F.cross_entropy`` (class indices and probabilities) and ``F.nll_loss(F.log_softmax(...))``.

Conventions (measured, ``docs/conventions.md``): class-index targets follow
the reference defaults (uniform smoothing, per-class weights, mean over
Σ w[label] of non-ignored rows, NaN for an all-ignored mean); probability
targets divide the mean by the number of examples (``mean_denominator="all"``).
The class axis is axis 1 in PyTorch: inputs with leading dims are moved there.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "torch"


def available() -> bool:
    return importlib.util.find_spec("torch") is not None


def version() -> str:
    import torch

    return str(torch.__version__)


def _classes_to_axis1(z: Any) -> Any:
    return z if z.ndim <= 2 else z.movedim(-1, 1)


def _check(options: dict[str, Any], allowed: set[str]) -> None:
    extra = set(options) - allowed
    if extra:
        raise Unsupported(f"option(s) {sorted(extra)} not expressible in this function")


def _cross_entropy(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    import torch.nn.functional as F

    _check(options, {"reduction", "ignore_index", "label_smoothing"})
    labels = inputs["labels"]
    kwargs: dict[str, Any] = {"reduction": options.get("reduction", "none"),
                              "label_smoothing": options.get("label_smoothing", 0.0)}
    if "class_weights" in inputs:
        kwargs["weight"] = inputs["class_weights"]
    if labels.dtype.is_floating_point:
        target = _classes_to_axis1(labels)
    else:
        target = labels
        kwargs["ignore_index"] = options.get("ignore_index", -100)
        if options.get("ignore_index") is None and bool((labels == -100).any()):
            raise Unsupported("torch treats -100 as ignored by default; the case has no ignore_index")
    return F.cross_entropy(_classes_to_axis1(inputs["logits"]), target, **kwargs)


def _nll_log_softmax(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    import torch.nn.functional as F

    _check(options, {"reduction", "ignore_index"})
    kwargs: dict[str, Any] = {"reduction": options.get("reduction", "none"),
                              "ignore_index": options.get("ignore_index", -100)}
    if "class_weights" in inputs:
        kwargs["weight"] = inputs["class_weights"]
    logp = F.log_softmax(_classes_to_axis1(inputs["logits"]), dim=1 if inputs["logits"].ndim > 1 else 0)
    return F.nll_loss(logp, inputs["labels"], **kwargs)


def targets() -> list[Target]:
    doc = "docs/conventions.md, PyTorch rows"
    imports = "import torch, torch.nn.functional as F"
    return [
        Target(
            LIBRARY, "torch.nn.functional.cross_entropy (class indices)",
            "sparse_softmax_cross_entropy", "torch", _cross_entropy,
            conventions={}, convention_doc=doc, imports=imports,
            expression="F.cross_entropy(torch.tensor(logits, dtype=torch.{dtype}), torch.tensor(labels), "
                       "weight=None if {w} is None else torch.tensor({w}, dtype=torch.{dtype}), **options)",
        ),
        Target(
            LIBRARY, "torch.nn.functional.nll_loss(log_softmax)",
            "sparse_softmax_cross_entropy", "torch", _nll_log_softmax,
            convention_doc=doc, imports=imports,
            expression="F.nll_loss(F.log_softmax(torch.tensor(logits, dtype=torch.{dtype}), dim=-1), "
                       "torch.tensor(labels), weight=None if {w} is None else torch.tensor({w}, "
                       "dtype=torch.{dtype}), **options)",
        ),
        Target(
            LIBRARY, "torch.nn.functional.cross_entropy (probabilities)",
            "softmax_cross_entropy", "torch", _cross_entropy, wrt=("logits", "labels"),
            conventions={"mean_denominator": "all"}, convention_doc=doc, imports=imports,
            expression="F.cross_entropy(torch.tensor(logits, dtype=torch.{dtype}), "
                       "torch.tensor(labels, dtype=torch.{dtype}), **options)",
        ),
    ]

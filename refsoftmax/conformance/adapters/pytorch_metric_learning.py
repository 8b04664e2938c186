"""pytorch-metric-learning: ``losses.CosFaceLoss`` and ``losses.NormalizedSoftmaxLoss`` (PyTorch autograd).

Certified against :func:`refsoftmax.am_softmax_loss` (features ``[N, D]``,
class weights ``[C, D]``, labels ``[N]``), gradients w.r.t. the features and
the weights.  What the losses compute (pytorch-metric-learning 2.9 source):

- ``CosFaceLoss(num_classes, embedding_size, margin=0.35, scale=64)``:
  cosines between the normalised embeddings and the normalised columns of
  its parameter ``W`` ``[D, C]``, the target's cosine lowered by ``margin``,
  all times ``scale``, then cross-entropy: the reference with the same
  ``scale`` and ``margin``;
- ``NormalizedSoftmaxLoss(num_classes, embedding_size, temperature=0.05)``:
  the embeddings (``DotProductSimilarity`` normalises them by default) times
  the normalised columns of ``W``, divided by ``temperature``: the reference
  with ``margin=0`` and ``scale=1/temperature``.

Both return the mean over the batch (their default ``MeanReducer``): a case
with another reduction is evaluated one example at a time (``returns="mean"``).
Each call builds the loss module for the case's C and D and evaluates it with
``torch.func.functional_call(loss, {"W": weights.T}, (features, labels))``,
so ``W`` is the case's weights (transposed to PML's ``[D, C]``) and the
gradient w.r.t. them flows through it.  The reference's ``scale`` and
``margin`` are passed explicitly (the reference defaults, 30 and 0.35, where
a case has none), never PML's defaults.  PML has no ignore index (such cases
are skipped) and takes 2-D embeddings only.

The registry's ``am_softmax_loss`` cases all have ``margin=0.2`` and no
reduction, so this module registers a second spec, ``am_softmax_loss/pml``
(:data:`SPEC`): the same reference on the same inputs with ``margin=0`` (and
some with 0.35, CosFace's default), scales 1, 8, 20 (temperature 0.05) and 64,
mostly ``reduction="mean"`` (PML's own reduction of the whole batch), plus
invalid inputs: labels C, -1 and -100 (no ignore index), a zero embedding
and a zero weight column.  ``CosFaceLoss`` is certified on both specs,
``NormalizedSoftmaxLoss`` on the margin-0 cases of the second one.  No
convention differs from the reference, so no target declares one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from refsoftmax.conformance.cases import _GENERATORS, Case, register
from refsoftmax.conformance.targets import SPECS, LossSpec, Target, Unsupported, register_spec

LIBRARY = "pytorch_metric_learning"

#: the spec of the margin-0 / batch-mean cases registered by this module
SPEC = "am_softmax_loss/pml"

#: the reference's defaults (``refsoftmax.am_softmax_loss``), passed where a case has none
SCALE, MARGIN = 30.0, 0.35

_DOC = "pytorch_metric_learning.losses (2.x source); docs/conventions.md"
_IMPORTS = ("import torch\nfrom pytorch_metric_learning import losses\n"
            "import refsoftmax.conformance.adapters.pytorch_metric_learning  # registers the spec")
_F = "torch.tensor(features, dtype=torch.{dtype})"
_W = "{{'W': torch.tensor(weights, dtype=torch.{dtype}).T}}"
_SHAPE = "num_classes=weights.shape[0], embedding_size=weights.shape[1]"


def available() -> bool:
    return (importlib.util.find_spec("pytorch_metric_learning") is not None
            and importlib.util.find_spec("torch") is not None)


def version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("pytorch-metric-learning")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed without metadata
        import pytorch_metric_learning

        return str(getattr(pytorch_metric_learning, "__version__", "unknown"))


# ------------------------------------------------------------------ the second spec's cases

def _pml_case(case: Case, name: str, **options: Any) -> Case:
    opts = {k: v for k, v in case.options.items() if k != "ignore_index"}
    return Case(name, SPEC, dict(case.inputs), {**opts, **options}, valid=case.valid, tags=case.tags)


def _edge(rng: np.random.Generator) -> list[Case]:
    edge, _ = _GENERATORS["am_softmax_loss"]
    base = [c for c in edge(rng) if "ignore_index" not in c.options]
    out = [_pml_case(c, f"{c.name}-mean", margin=0.0, reduction="mean") for c in base]
    basic = base[0]
    out.append(_pml_case(basic, "basic-none", margin=0.0))
    out.append(_pml_case(basic, "basic-scale-20-mean", margin=0.0, scale=20.0, reduction="mean"))
    out.append(_pml_case(basic, "basic-margin-0.35-scale-64-mean", margin=0.35, scale=64.0, reduction="mean"))
    f, w, y = basic.inputs["features"], basic.inputs["weights"], basic.inputs["labels"]
    c = w.shape[0]
    invalid = ("labels", "invalid")
    for name, labels in (("label-too-large", [0, c, 2, 1]), ("label-negative", [0, -1, 2, 1]),
                         ("label-minus-100", [0, -100, 2, 1])):
        out.append(Case(name, SPEC, {"features": f, "weights": w, "labels": np.array(labels)},
                        {"scale": 8.0, "margin": 0.0, "reduction": "mean"}, valid=False, tags=invalid))
    f0 = f.copy()
    f0[1] = 0.0
    out.append(Case("zero-feature", SPEC, {"features": f0, "weights": w, "labels": y},
                    {"scale": 8.0, "margin": 0.0, "reduction": "mean"}, valid=False, tags=("invalid",)))
    w0 = w.copy()
    w0[int(y[0])] = 0.0
    out.append(Case("zero-weight-row", SPEC, {"features": f, "weights": w0, "labels": y},
                    {"scale": 8.0, "margin": 0.0, "reduction": "mean"}, valid=False, tags=("invalid",)))
    return out


def _random(rng: np.random.Generator, i: int) -> Case:
    _, random = _GENERATORS["am_softmax_loss"]
    case = random(rng, i)
    scale = float(rng.choice([1.0, 8.0, 20.0, 64.0]))
    margin = 0.0 if rng.random() < 0.6 else 0.35
    reduction = "mean" if rng.random() < 0.7 else "none"
    return _pml_case(case, case.name, scale=scale, margin=margin, reduction=reduction)


def _register() -> None:
    """Register :data:`SPEC` and its cases (idempotent)."""
    import refsoftmax
    from refsoftmax.conformance import specs_registry  # noqa: F401  (the am_softmax_loss cases)

    if SPEC not in SPECS:
        register_spec(LossSpec(SPEC, ("features", "weights", "labels"), array_options=(),
                               reference=refsoftmax.am_softmax_loss))
    if SPEC not in _GENERATORS:
        register(SPEC, _edge, _random)


_register()


# ------------------------------------------------------------------ the targets

def _check(inputs: dict[str, Any], options: dict[str, Any]) -> None:
    if options.get("ignore_index") is not None:
        raise Unsupported("pytorch-metric-learning's losses have no ignore index")
    extra = set(options) - {"scale", "margin", "reduction", "ignore_index"}
    if extra:
        raise Unsupported(f"option(s) {sorted(extra)} not expressible in pytorch-metric-learning")
    if options.get("reduction", "none") != "mean":  # the engine asks for ``returns`` only
        raise Unsupported("returns the batch mean only")
    if inputs["features"].ndim != 2:
        raise Unsupported("pytorch-metric-learning takes embeddings of shape (batch_size, embedding_size)")


def _apply(loss: Any, inputs: dict[str, Any]) -> Any:
    from torch.func import functional_call

    return functional_call(loss, {"W": inputs["weights"].T}, (inputs["features"], inputs["labels"]))


def _cosface(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    from pytorch_metric_learning import losses

    _check(inputs, options)
    c, d = inputs["weights"].shape
    loss = losses.CosFaceLoss(num_classes=c, embedding_size=d, margin=float(options.get("margin", MARGIN)),
                              scale=float(options.get("scale", SCALE)))
    return _apply(loss, inputs)


def _normalized_softmax(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    from pytorch_metric_learning import losses

    _check(inputs, options)
    if float(options.get("margin", MARGIN)) != 0.0:
        raise Unsupported("NormalizedSoftmaxLoss has no margin (the reference with margin=0)")
    c, d = inputs["weights"].shape
    loss = losses.NormalizedSoftmaxLoss(num_classes=c, embedding_size=d,
                                        temperature=1.0 / float(options.get("scale", SCALE)))
    return _apply(loss, inputs)


def _target(function: str, loss: str, call: Callable[[dict[str, Any], dict[str, Any]], Any],
            module: str, notes: str) -> Target:
    return Target(
        LIBRARY, function, loss, "torch", call, wrt=("features", "weights"), returns="mean",
        convention_doc=_DOC, imports=_IMPORTS,
        expression=f"torch.func.functional_call(losses.{module}, {_W}, ({_F}, torch.tensor(labels)))",
        notes=notes,
    )


def targets() -> list[Target]:
    cosface = (f"CosFaceLoss({_SHAPE}, margin=options.get('margin', {MARGIN}), "
               f"scale=options.get('scale', {SCALE}))")
    normalized = f"NormalizedSoftmaxLoss({_SHAPE}, temperature=1 / options.get('scale', {SCALE}))"
    return [
        _target("pytorch_metric_learning.losses.CosFaceLoss", "am_softmax_loss", _cosface, cosface,
                "the registry's am_softmax_loss cases (margin 0.2, scale 8), one example at a time"),
        _target("pytorch_metric_learning.losses.CosFaceLoss (am_softmax_loss/pml cases)", SPEC, _cosface,
                cosface, "margins 0 and 0.35, batch means, invalid labels and zero vectors"),
        _target("pytorch_metric_learning.losses.NormalizedSoftmaxLoss", SPEC, _normalized_softmax,
                normalized, "the margin-0 cases; temperature = 1 / scale"),
    ]

"""PaddlePaddle: ``F.cross_entropy`` (integer labels; ``soft_label=True``) and ``F.softmax_with_cross_entropy``.

Gradients by ``paddle.grad`` (the ``paddle`` driver in
:mod:`refsoftmax.conformance.frameworks_extra`).  Paddle's CPU kernels take
float32 and float64 only, so on a CPU device float16/bfloat16 cases are
skipped.

What the adapter passes through: ``reduction``, ``ignore_index``,
``label_smoothing`` and class weights (``weight=``) of ``F.cross_entropy``;
``ignore_index`` of ``F.softmax_with_cross_entropy`` (which has no reduction,
weights or smoothing).  Layout only: Paddle returns integer-label losses
with a trailing axis of 1 on some paths (``label_smoothing > 0``, and always
for ``softmax_with_cross_entropy`` and soft labels), which is squeezed, and
``softmax_with_cross_entropy`` takes integer labels with that trailing 1
(its documented shape), which is added.  Paddle's ``ignore_index`` defaults
to -100: a case with label -100 and no ``ignore_index`` is skipped.
Paddle has no gradient with respect to soft labels (``paddle.grad`` returns
None), so only the logits' gradient is certified.

Conventions (measured, ``docs/conventions.md``, Paddle rows):

- integer labels, ``reduction="mean"``: with a *negative* ``ignore_index``
  (the default -100) and no class weights the sum is divided by the number
  of **all** rows, ignored ones included (``mean_denominator="all"``); with a
  non-negative ``ignore_index`` or with class weights it is the reference's
  Σ w[label] over non-ignored rows;
- a zero denominator (every row ignored, or Σ w[label] = 0) gives 0 with
  gradient 0 (``empty_mean="zero"``).

Known disagreements that no option reproduces (they show as failures):
logits more than 64 below the row maximum are clipped to max − 64, so a
label's loss is capped near 64 (``[200, -200, 0]`` with label 1 costs 64,
not 400; a label on a −∞ logit costs 64.22 instead of +∞; gradients are
unaffected); label smoothing is applied in float32 even for float64 logits
(relative errors ~1e-8); with class weights and smoothing, or soft labels,
the row weight is ``Σ_c w_c q_c``; smoothing with an ignored label raises
``ValueError``; soft labels with negative entries are accepted.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from typing import Any

from refsoftmax.conformance.cases import DTYPES
from refsoftmax.conformance.frameworks_extra import PaddleFramework  # noqa: F401  (registers "paddle")
from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "paddle"
#: Paddle 3.3.1 crashes the interpreter (SIGSEGV) when imported after TensorFlow 2.21 (the other
#: order works), so ``refsoftmax certify paddle`` runs in a process of its own.
ISOLATE = True

_DOC = "docs/conventions.md, Paddle rows"
_IMPORTS = "import paddle, paddle.nn.functional as F"
_Z = "paddle.to_tensor(logits).astype('{dtype}')"
_W = "weight=None if {w} is None else paddle.to_tensor({w}).astype('{dtype}')"
_OPTIONS = "**dict(dict(reduction='none'), **options)"  # Paddle's default reduction is "mean"


def available() -> bool:
    return importlib.util.find_spec("paddle") is not None


def version() -> str:
    """From the package metadata: importing paddle here could crash a process holding TensorFlow."""
    import importlib.metadata

    return importlib.metadata.version("paddlepaddle")


def _check(options: dict[str, Any], allowed: set[str]) -> None:
    extra = set(options) - allowed
    if extra:
        raise Unsupported(f"option(s) {sorted(extra)} not expressible in this function")


def _squeeze_trailing_one(value: Any, labels_shape: tuple[int, ...]) -> Any:
    if tuple(value.shape) == (*labels_shape, 1):
        return value.squeeze(-1)
    return value


def _ignore_index(inputs: dict[str, Any], options: dict[str, Any]) -> int:
    if options.get("ignore_index") is None:
        if bool((inputs["labels"] == -100).any()):
            raise Unsupported("paddle treats -100 as ignored by default; the case has no ignore_index")
        return -100
    return int(options["ignore_index"])


def _cross_entropy(soft: bool) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    def call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        import paddle.nn.functional as F

        labels = inputs["labels"]
        kwargs: dict[str, Any] = {"reduction": options.get("reduction", "none"),
                                  "label_smoothing": options.get("label_smoothing", 0.0)}
        if "class_weights" in inputs:
            kwargs["weight"] = inputs["class_weights"]
        if soft:
            _check(options, {"reduction", "label_smoothing"})
            kwargs["soft_label"] = True
            label_shape = tuple(labels.shape[:-1])
        else:
            _check(options, {"reduction", "label_smoothing", "ignore_index"})
            kwargs["ignore_index"] = _ignore_index(inputs, options)
            label_shape = tuple(labels.shape)
        value = F.cross_entropy(inputs["logits"], labels, **kwargs)
        return _squeeze_trailing_one(value, label_shape)

    return call


def _softmax_with_cross_entropy(soft: bool) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    def call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        import paddle.nn.functional as F

        if options.get("reduction", "none") != "none":
            raise Unsupported(f"softmax_with_cross_entropy returns per-example losses: "
                              f"no reduction={options['reduction']!r}")
        if "class_weights" in inputs:
            raise Unsupported("softmax_with_cross_entropy has no class weights")
        labels = inputs["labels"]
        _check(options, {"reduction"} if soft else {"reduction", "ignore_index"})
        with warnings.catch_warnings():  # "deprecated since 2.0.0" (a UserWarning), on every call
            warnings.simplefilter("ignore", UserWarning)
            if soft:
                value = F.softmax_with_cross_entropy(inputs["logits"], labels, soft_label=True)
                return _squeeze_trailing_one(value, tuple(labels.shape[:-1]))
            value = F.softmax_with_cross_entropy(inputs["logits"], labels.unsqueeze(-1),
                                                 ignore_index=_ignore_index(inputs, options))
        return _squeeze_trailing_one(value, tuple(labels.shape))

    return call


def _dtypes() -> tuple[str, ...]:
    import paddle

    return DTYPES if not str(paddle.device.get_device()).startswith("cpu") else ("float64", "float32")


def targets() -> list[Target]:
    dtypes = _dtypes()
    sparse_conventions = {"mean_denominator": "all", "empty_mean": "zero"}
    labels = "paddle.to_tensor(labels)"
    soft = "paddle.to_tensor(labels).astype('{dtype}')"
    return [
        Target(
            LIBRARY, "paddle.nn.functional.cross_entropy (integer labels)",
            "sparse_softmax_cross_entropy", "paddle", _cross_entropy(soft=False), dtypes=dtypes,
            conventions=sparse_conventions, convention_doc=_DOC, imports=_IMPORTS,
            expression=f"F.cross_entropy({_Z}, {labels}, {_W}, {_OPTIONS})",
        ),
        Target(
            LIBRARY, "paddle.nn.functional.cross_entropy (soft_label=True)",
            "softmax_cross_entropy", "paddle", _cross_entropy(soft=True), dtypes=dtypes,
            conventions={"empty_mean": "zero"}, convention_doc=_DOC, imports=_IMPORTS,
            expression=f"F.cross_entropy({_Z}, {soft}, {_W}, soft_label=True, {_OPTIONS})",
        ),
        Target(
            LIBRARY, "paddle.nn.functional.softmax_with_cross_entropy (integer labels)",
            "sparse_softmax_cross_entropy", "paddle", _softmax_with_cross_entropy(soft=False), dtypes=dtypes,
            convention_doc=_DOC, imports=_IMPORTS,
            expression=f"F.softmax_with_cross_entropy({_Z}, {labels}.unsqueeze(-1), **options)",
        ),
        Target(
            LIBRARY, "paddle.nn.functional.softmax_with_cross_entropy (soft_label=True)",
            "softmax_cross_entropy", "paddle", _softmax_with_cross_entropy(soft=True), dtypes=dtypes,
            convention_doc=_DOC, imports=_IMPORTS,
            expression=f"F.softmax_with_cross_entropy({_Z}, {soft}, soft_label=True)",
        ),
    ]

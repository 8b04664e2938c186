"""tinygrad: ``Tensor.sparse_categorical_crossentropy`` (integer labels, classes on the last axis).

``logits.sparse_categorical_crossentropy(Y, ignore_index=-1, label_smoothing=0.0,
reduction="mean")`` (tinygrad's signature); gradients by tinygrad's autograd
(``Tensor.gradient``, the engine of ``Tensor.backward``), on the device
chosen by :func:`~refsoftmax.conformance.frameworks_extra.tinygrad_device`
(``$DEV``; else ``CPU`` when ``clang`` is on the PATH; else the pure-Python
``PYTHON`` device).  The device is part of the reported version.  On the
``PYTHON`` emulator rows wider than 1024 classes are skipped (5-13 s per
case there) and kernels are built without tinygrad's kernel optimisations
(see :func:`~refsoftmax.conformance.frameworks_extra.tinygrad_context`).

What tinygrad expresses is passed through: ``reduction``, ``label_smoothing``
and ``ignore_index``.  tinygrad has no class weights (cases with them are
skipped), and its ``ignore_index=-1`` (the default) means *no* ignore
index, so a case asking to ignore the label -1 is skipped; a case without
``ignore_index`` is run with tinygrad's default.

Conventions (measured, float64, tinygrad 0.14, rtol 1e-12 on value and
gradient): smoothing spreads ε uniformly over all C classes
(``-(1-ε) log p_t - ε mean_c log p_c``, the reference's
``label_smoothing_mode="uniform"``), also on ignored rows' mean;
``"mean"`` divides by the number of non-ignored rows, for a negative and a
non-negative ``ignore_index`` alike (the reference's default without
weights); so no target declares a convention.  Known disagreements,
reported as failures: a label outside ``[0, C)`` that is not
``ignore_index`` (C, -1, or -100 without ``ignore_index``) silently costs 0
with gradient 0, and still counts in the mean's denominator, instead of an
error; an all-ignored ``"mean"`` is 0/0 = NaN with a NaN gradient (the
reference: NaN, gradient 0); in float16/bfloat16 a −∞ logit that is not the
label makes the row's loss NaN (``0 · −∞`` in the one-hot product; float32
and float64 are exact).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from refsoftmax.conformance.frameworks_extra import (  # noqa: F401  (registers "tinygrad")
    TinygradFramework,
    tinygrad_context,
    tinygrad_device,
)
from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "tinygrad"

_DOC = "tinygrad 0.14 mixin/op.py, measured (refsoftmax.conformance.adapters.tinygrad)"
_IMPORTS = "from tinygrad import Tensor, dtypes"
#: Rows wider than this are skipped on the PYTHON emulator, which runs every kernel in Python.
_PYTHON_MAX_CLASSES = 1024


def available() -> bool:
    return importlib.util.find_spec("tinygrad") is not None


def version() -> str:
    import importlib.metadata

    from tinygrad import Device

    try:
        v = importlib.metadata.version("tinygrad")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        v = "unknown"
    return f"{v} (device {tinygrad_device() or Device.DEFAULT})"


def _sparse_categorical_crossentropy(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    extra = set(options) - {"reduction", "ignore_index", "label_smoothing"}
    if extra:
        raise Unsupported(f"option(s) {sorted(extra)} not expressible in sparse_categorical_crossentropy")
    if "class_weights" in inputs:
        raise Unsupported("tinygrad's sparse_categorical_crossentropy has no class weights")
    ignore = options.get("ignore_index")
    if ignore == -1:
        raise Unsupported("tinygrad reads ignore_index=-1 as 'no ignore index'")
    if tinygrad_device() == "PYTHON" and inputs["logits"].shape[-1] > _PYTHON_MAX_CLASSES:
        raise Unsupported(f"more than {_PYTHON_MAX_CLASSES} classes on tinygrad's PYTHON emulator "
                          "(5-13 s per case there; with clang installed, DEV=CPU runs them)")
    with tinygrad_context():
        return inputs["logits"].sparse_categorical_crossentropy(
            inputs["labels"], ignore_index=-1 if ignore is None else int(ignore),
            label_smoothing=float(options.get("label_smoothing", 0.0)), reduction=options.get("reduction", "none"),
        )


def targets() -> list[Target]:
    device = tinygrad_device()
    imports = _IMPORTS if device is None else f"import os; os.environ.setdefault('DEV', {device!r})\n{_IMPORTS}"
    return [
        Target(
            LIBRARY, "tinygrad.Tensor.sparse_categorical_crossentropy",
            "sparse_softmax_cross_entropy", "tinygrad", _sparse_categorical_crossentropy,
            convention_doc=_DOC, imports=imports,
            expression="Tensor(logits, dtype=dtypes.{dtype}).sparse_categorical_crossentropy("
                       "Tensor(labels), ignore_index=options.get('ignore_index', -1), "
                       "label_smoothing=options.get('label_smoothing', 0.0), "
                       "reduction=options.get('reduction', 'none')).numpy()",
        ),
    ]

"""keras-rs: the two steps of TF's sampled-softmax estimator it provides as layers.

* ``keras_rs.layers.SamplingProbabilityCorrection`` against the log-Q step
  (spec ``log_q_correction``: ``logits - log(q)``), gradients w.r.t. the
  logits and the probabilities.  Declared convention: ``clip=(epsilon, 1.0)``
  with the default ``epsilon=1e-6``: keras-rs evaluates
  ``logits - log(clip(q, epsilon, 1))`` (its source; its docstring says
  epsilon is "added"), so a probability below ``1e-6``, a zero, or an
  expected count above 1 (TF's estimator subtracts ``log Q`` of the expected
  count, which can exceed 1) follows that convention instead of the plain
  ``log q``.
* ``keras_rs.layers.RemoveAccidentalHits`` against accidental-hit exclusion
  (spec ``accidental_hit_exclusion``), gradient w.r.t. the logits.  An
  excluded logit is any value ``<= -1e30`` (``<=`` half the dtype's lowest
  value where that is larger); see
  :class:`~refsoftmax.conformance.sampled.AccidentalHitExclusion`.

The layers run on Keras' backend (``KERAS_BACKEND``, default TensorFlow),
which picks the framework driver; each call builds the layer with the case's
dtype so that Keras does not cast the inputs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from typing import Any

from refsoftmax.conformance import sampled  # noqa: F401  (registers the specs)
from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "keras_rs"
EPSILON = 1e-6  # SamplingProbabilityCorrection's default


def available() -> bool:
    if importlib.util.find_spec("keras_rs") is None or importlib.util.find_spec("keras") is None:
        return False
    try:
        importlib.import_module("keras_rs")
    except Exception:  # e.g. Keras 2, or a backend that fails to import
        return False
    return True


def version() -> str:
    try:
        return importlib.metadata.version("keras-rs")
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(importlib.import_module("keras_rs"), "__version__", "unknown"))


def _framework() -> str:
    import keras

    backend = str(keras.backend.backend())
    return backend if backend in ("tensorflow", "jax", "torch") else "numpy"


def _dtype(x: Any) -> str:
    return str(getattr(x.dtype, "name", x.dtype)).replace("torch.", "")


_LAYERS: dict[tuple[str, str], Any] = {}


def _layer(name: str, dtype: str) -> Any:
    """One (stateless) layer per class and dtype, built on first use."""
    if (name, dtype) not in _LAYERS:
        import keras_rs

        _LAYERS[name, dtype] = getattr(keras_rs.layers, name)(dtype=dtype)
    return _LAYERS[name, dtype]


def _check(options: dict[str, Any]) -> None:
    if options:
        raise Unsupported(f"option(s) {sorted(options)} not expressible in this layer")


def _correction(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    _check(options)
    layer = _layer("SamplingProbabilityCorrection", _dtype(inputs["logits"]))
    return layer(inputs["logits"], inputs["candidate_sampling_probability"])


def _remove_hits(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    _check(options)
    layer = _layer("RemoveAccidentalHits", _dtype(inputs["logits"]))
    return layer(inputs["logits"], inputs["labels"], inputs["candidate_ids"])


def targets() -> list[Target]:
    framework = _framework()
    imports = "import keras, keras_rs\nimport refsoftmax.conformance.sampled  # registers the specs"
    convert = "keras.ops.convert_to_tensor({x}, dtype='{{dtype}}')"
    doc = "keras-rs source (keras_rs/src/layers/retrieval/); docs/losses/sampled_softmax.md"
    return [
        Target(
            LIBRARY,
            "keras_rs.layers.SamplingProbabilityCorrection",
            "log_q_correction",
            framework,
            _correction,
            wrt=("logits", "candidate_sampling_probability"),
            conventions={"clip": (EPSILON, 1.0)},
            convention_doc=doc + ": ops.clip(q, epsilon, 1.0)",
            imports=imports,
            expression="keras_rs.layers.SamplingProbabilityCorrection(dtype='{dtype}')("
            + convert.format(x="logits")
            + ", "
            + convert.format(x="candidate_sampling_probability")
            + ")",
        ),
        Target(
            LIBRARY,
            "keras_rs.layers.RemoveAccidentalHits",
            "accidental_hit_exclusion",
            framework,
            _remove_hits,
            wrt=("logits",),
            convention_doc=doc,
            imports=imports,
            expression="keras_rs.layers.RemoveAccidentalHits(dtype='{dtype}')("
            + convert.format(x="logits")
            + ", "
            + convert.format(x="labels")
            + ", keras.ops.convert_to_tensor(candidate_ids))",
        ),
    ]

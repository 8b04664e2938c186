"""The registry of refsoftmax's public losses: one entry per loss, read by everything that iterates them.

Each :class:`LossEntry` says how to call a loss (its array arguments in order,
the integer ones among them, fixed options) and how to make valid inputs for
it (:attr:`LossEntry.make`, host NumPy arrays from a seeded generator).  Three
consumers read the registry:

* the **contract tests** (``tests/test_contract.py``) check every entry for the
  same properties: namespace/dtype/device preservation, every integer dtype,
  the NaN/∞ policy, an empty batch, one class, inputs left unmodified, a
  backward linear in the cotangent, finite differences, equality across
  backends;
* the **conformance suite** (:mod:`refsoftmax.conformance`) builds a spec and
  cases for every entry that has no hand-written ones, so that every public
  loss can be certified (``certify(fn, loss=name)``);
* the **accuracy suite** (``tests/accuracy``) is checked to cover every entry.

Adding a loss is adding one :func:`register_loss` call.

Examples
--------
>>> import numpy as np
>>> from refsoftmax.registry import LOSSES
>>> entry = LOSSES["sparse_softmax_cross_entropy"]
>>> example = entry.make(np.random.default_rng(0), 3, 5)
>>> sorted(example.inputs), tuple(example.inputs["logits"].shape)
(['labels', 'logits'], (3, 5))
>>> tuple(entry(example).shape)                     # one loss per example
(3,)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import refsoftmax as rs
from refsoftmax._protocol import Function
from refsoftmax.samplers import SampledValues

__all__ = ["LOSSES", "Example", "LossEntry", "register_loss"]


@dataclass(frozen=True)
class Example:
    """Inputs of one call: arrays by argument name (host NumPy, float64 / int64) and keyword options.

    Options may hold arrays too (``class_weights``) and tuples of arrays
    (``sampled_values``); consumers convert them with the inputs.
    """

    inputs: dict[str, np.ndarray]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LossEntry:
    """How to call one public loss and how to make inputs for it.

    Attributes
    ----------
    function : Function
        The refsoftmax function.
    positional : tuple of str
        Its array arguments, in call order (``example.inputs`` keys).
    make : callable ``(rng, batch, classes) -> Example``
        Valid inputs with ``batch`` examples and ``classes`` classes (any
        ``batch >= 0``, ``classes >= 1``); float inputs float64, integer ones int64.
    integer : tuple of str
        The integer arguments (labels): the contract tests try every integer dtype.
    examples_along : dict
        ``{float argument: axis}`` whose index along ``axis`` is the example
        index of the (per-example) value; the NaN policy is tested by putting a
        NaN into example 0 of the first such argument.
    min_classes : int
        The fewest classes the loss accepts (sampled losses need more than
        their sample).
    """

    function: Function
    positional: tuple[str, ...]
    make: Callable[[np.random.Generator, int, int], Example]
    integer: tuple[str, ...] = ("labels",)
    examples_along: Mapping[str, int] = field(default_factory=lambda: {"logits": 0})
    min_classes: int = 1

    @property
    def name(self) -> str:
        return self.function.name

    @property
    def differentiable(self) -> tuple[str, ...]:
        return self.function.differentiable

    def args(self, example: Example, convert: Callable[[Any], Any] = lambda a: a
             ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(positional, keyword)`` arguments of ``example``, each array passed through ``convert``."""
        args = tuple(convert(example.inputs[n]) for n in self.positional)
        return args, {k: _convert_nested(v, convert) for k, v in example.options.items()}

    def __call__(self, example: Example, convert: Callable[[Any], Any] = lambda a: a) -> Any:
        args, kwargs = self.args(example, convert)
        return self.function(*args, **kwargs)

    def value_and_grad(self, example: Example, convert: Callable[[Any], Any] = lambda a: a,
                       cotangent: Any = None) -> tuple[Any, dict[str, Any]]:
        args, kwargs = self.args(example, convert)
        return self.function.value_and_grad(*args, cotangent=cotangent, **kwargs)


def _convert_nested(v: Any, convert: Callable[[Any], Any]) -> Any:
    if isinstance(v, np.ndarray):
        return convert(v)
    if isinstance(v, SampledValues):
        return SampledValues(*(convert(np.asarray(u)) for u in v))
    if isinstance(v, tuple):
        return tuple(_convert_nested(u, convert) for u in v)
    return v


LOSSES: dict[str, LossEntry] = {}


def register_loss(entry: LossEntry) -> LossEntry:
    """Add (or replace) ``entry`` under its function's name; returns it."""
    if not isinstance(entry.function, Function):
        msg = f"entry.function must be a refsoftmax Function, got {type(entry.function).__name__}"
        raise TypeError(msg)
    LOSSES[entry.name] = entry
    return entry


# ---------------------------------------------------------------- input factories


def _logits(rng: np.random.Generator, batch: int, classes: int) -> np.ndarray:
    return rng.normal(0.0, 2.0, (batch, classes))


def _sparse(**options: Any) -> Callable[[np.random.Generator, int, int], Example]:
    def make(rng: np.random.Generator, batch: int, classes: int) -> Example:
        return Example({"logits": _logits(rng, batch, classes),
                        "labels": rng.integers(0, classes, batch)}, dict(options))
    return make


def _map(rng: np.random.Generator, batch: int, classes: int) -> Example:
    return Example({"x": _logits(rng, batch, classes)})


def _dense(rng: np.random.Generator, batch: int, classes: int) -> Example:
    y = rng.dirichlet(np.ones(classes), size=batch) if batch else np.zeros((0, classes))
    return Example({"logits": _logits(rng, batch, classes), "labels": y})


def _multi_hot(rng: np.random.Generator, batch: int, classes: int, **options: Any) -> Example:
    y = (rng.random((batch, classes)) < 0.4).astype(np.float64)
    return Example({"logits": _logits(rng, batch, classes), "targets": y}, dict(options))


def _linear(rng: np.random.Generator, batch: int, classes: int) -> Example:
    dim = 4
    return Example({"weights": rng.normal(0, 0.5, (classes, dim)), "biases": rng.normal(0, 0.5, classes),
                    "labels": rng.integers(0, classes, batch), "inputs": rng.normal(0, 1, (batch, dim))})


def _sampled(**options: Any) -> Callable[[np.random.Generator, int, int], Example]:
    """A linear example with a fixed sample of ``min(3, classes - 1)`` candidates."""

    def make(rng: np.random.Generator, batch: int, classes: int) -> Example:
        base = _linear(rng, batch, classes)
        num_sampled = max(1, min(3, classes - 1))
        cands = rng.choice(classes, num_sampled, replace=False).astype(np.int64)
        sv = SampledValues(cands, rng.uniform(0.2, 2.0, (batch, 1)), rng.uniform(0.2, 2.0, num_sampled))
        inputs = dict(base.inputs)
        inputs["labels"] = inputs["labels"][:, None]
        return Example(inputs, {"num_sampled": num_sampled, "num_classes": classes,
                                "sampled_values": sv, **options})
    return make


def _am(rng: np.random.Generator, batch: int, classes: int) -> Example:
    dim = 5
    return Example({"features": rng.normal(0, 1, (batch, dim)), "weights": rng.normal(0, 1, (classes, dim)),
                    "labels": rng.integers(0, classes, batch)}, {"scale": 8.0, "margin": 0.2})


_LINEAR_ARGS = ("weights", "biases", "labels", "inputs")
_LINEAR_EXAMPLES = {"inputs": 0}

for _fn in (rs.logsumexp, rs.log_softmax, rs.softmax, rs.sparsemax, rs.entmax15):
    register_loss(LossEntry(_fn, ("x",), _map, integer=(), examples_along={"x": 0}))
register_loss(LossEntry(rs.softmax_cross_entropy, ("logits", "labels"), _dense, integer=()))
register_loss(LossEntry(rs.sparse_softmax_cross_entropy, ("logits", "labels"), _sparse()))
register_loss(LossEntry(rs.as_softmax_cross_entropy, ("logits", "labels"), _sparse(delta=0.1)))
register_loss(LossEntry(rs.temperature_softmax_cross_entropy, ("logits", "labels"), _sparse(temperature=2.0)))
register_loss(LossEntry(rs.topk_softmax_cross_entropy, ("logits", "labels"), _sparse(k=1)))
register_loss(LossEntry(rs.sparsemax_loss, ("logits", "labels"), _sparse()))
register_loss(LossEntry(rs.entmax15_loss, ("logits", "labels"), _sparse()))
register_loss(LossEntry(rs.multilabel_categorical_cross_entropy, ("logits", "targets"), _multi_hot, integer=()))
register_loss(LossEntry(rs.multilabel_as_softmax_loss, ("logits", "targets"),
                        lambda rng, b, c: _multi_hot(rng, b, c, delta=0.1), integer=()))
register_loss(LossEntry(rs.linear_softmax_cross_entropy, _LINEAR_ARGS, _linear,
                        examples_along=_LINEAR_EXAMPLES))
register_loss(LossEntry(rs.sampled_softmax_loss, _LINEAR_ARGS, _sampled(),
                        examples_along=_LINEAR_EXAMPLES, min_classes=2))
register_loss(LossEntry(rs.nce_loss, _LINEAR_ARGS, _sampled(), examples_along=_LINEAR_EXAMPLES, min_classes=2))
register_loss(LossEntry(rs.negative_sampling_loss, _LINEAR_ARGS, _sampled(),
                        examples_along=_LINEAR_EXAMPLES, min_classes=2))
register_loss(LossEntry(rs.am_softmax_loss, ("features", "weights", "labels"), _am,
                        examples_along={"features": 0}))

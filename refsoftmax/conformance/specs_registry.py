"""Specs and cases for every registered loss that has no hand-written ones (:mod:`refsoftmax.registry`).

Importing this module registers, for each :data:`refsoftmax.registry.LOSSES`
entry without a spec, a :class:`~refsoftmax.conformance.targets.LossSpec`
(its array arguments in call order) and case generators built from the
entry's input factory: a basic batch, one example, one class, a NaN in one
example, confident examples (one class far ahead), a non-negative
``ignore_index`` where the loss takes one, and seeded random batches.  So
``certify(fn, loss=name)`` works for every public loss (AM-Softmax,
``logsumexp``, the multi-label losses ...); the hand-written specs (sparse and
dense CE, the sampled family, sparsemax/entmax losses) keep their curated
edge cases.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from refsoftmax.conformance.cases import _GENERATORS, Case, register
from refsoftmax.conformance.targets import SPECS, LossSpec, register_spec
from refsoftmax.registry import LOSSES, Example, LossEntry

__all__ = ["register_all"]


def _case(entry: LossEntry, name: str, example: Example, tags: tuple[str, ...], valid: bool = True) -> Case:
    return Case(name, entry.name, dict(example.inputs), dict(example.options), valid=valid, tags=tags)


def _edge(entry: LossEntry) -> Any:
    takes_ignore = "ignore_index" in inspect.signature(entry.function.forward).parameters

    def edge(rng: np.random.Generator) -> list[Case]:
        lo = max(entry.min_classes, 1)
        cases = [
            _case(entry, "basic", entry.make(rng, 4, max(5, lo)), ("shape",)),
            _case(entry, "one-example", entry.make(rng, 1, max(6, lo)), ("shape",)),
            _case(entry, "one-class", entry.make(rng, 3, lo), ("shape",)),
        ]
        nan = entry.make(rng, 3, max(4, lo))
        arg, axis = next(iter(entry.examples_along.items()))
        x = np.array(nan.inputs[arg], dtype=np.float64)
        np.moveaxis(x, axis, 0)[0, ...] = np.nan
        cases.append(_case(entry, "nan-in-one-example", Example({**nan.inputs, arg: x}, nan.options),
                           ("non-finite",)))
        big = entry.make(rng, 3, max(5, lo))
        scaled = {k: (v * 40.0 if np.issubdtype(v.dtype, np.floating) and k == arg else v)
                  for k, v in big.inputs.items()}
        cases.append(_case(entry, "large-scores", Example(scaled, big.options), ("magnitude",)))
        if takes_ignore and "labels" in entry.integer:
            ex = entry.make(rng, 5, max(5, lo))
            labels = np.array(ex.inputs["labels"])
            flat = labels.reshape(-1)
            flat[::2] = 1  # padding index 1, as fairseq uses: a class index the batch also ignores
            cases.append(_case(entry, "ignore-index-1", Example({**ex.inputs, "labels": labels},
                                                              {**ex.options, "ignore_index": 1}), ("option",)))
        return cases
    return edge


def _random(entry: LossEntry) -> Any:
    def random(rng: np.random.Generator, i: int) -> Case:
        batch = int(rng.integers(1, 6))
        classes = int(rng.integers(max(2, entry.min_classes), 9))
        return _case(entry, f"random-{i}", entry.make(rng, batch, classes), ("random",))
    return random


def _array_options(entry: LossEntry) -> tuple[str, ...]:
    return ("class_weights",) if "class_weights" in inspect.signature(entry.function.forward).parameters else ()


def register_all() -> None:
    """Register a spec and cases for every registry entry that has none (idempotent)."""
    for name, entry in LOSSES.items():
        if name in SPECS and name in _GENERATORS:
            continue
        register_spec(LossSpec(name, entry.positional, array_options=_array_options(entry)))
        register(name, _edge(entry), _random(entry))


register_all()

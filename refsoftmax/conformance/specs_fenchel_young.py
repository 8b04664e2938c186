"""Conformance specs and cases of the Fenchel–Young losses: ``sparsemax_loss`` and ``entmax15_loss``.

Importing this module registers both losses with :func:`~refsoftmax.conformance.targets.register_spec`
and :func:`~refsoftmax.conformance.cases.register`, so that
``certify(fn, loss="sparsemax_loss")`` works without an adapter.  The
reference is :func:`refsoftmax.sparsemax_loss` / :func:`refsoftmax.entmax15_loss`:
``loss(logits, labels, *, ignore_index=None, reduction="none")``, classes on
the last axis, leading batch dims allowed, ``"mean"`` over the non-ignored
examples (NaN when every example is ignored), no class weights and no
label smoothing.

Curated cases probe what distinguishes these losses from cross-entropy:
the margin beyond which loss and gradient are exactly 0 (1 for sparsemax, 2
for 1.5-entmax), sparse and dense supports, ties, −∞ logits (an impossible
class, +∞ when it is the label, +∞ with gradient 0 for a row of all −∞),
magnitudes far from 0 (the loss is shift-invariant), non-negative and
negative ``ignore_index``, and invalid labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from refsoftmax.conformance.cases import Case, register
from refsoftmax.conformance.targets import LossSpec, register_spec

__all__ = ["FENCHEL_YOUNG_LOSSES", "MARGINS"]

#: The Fenchel–Young losses with conformance specs.
FENCHEL_YOUNG_LOSSES = ("sparsemax_loss", "entmax15_loss")
#: ``z_t - max_{c != t} z_c`` at and beyond which the loss and its gradient are exactly 0.
MARGINS = {"sparsemax_loss": 1.0, "entmax15_loss": 2.0}


def _logits(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 2.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale


def _edge_cases(loss: str) -> Any:
    L = loss
    margin = MARGINS[loss]

    def edge(rng: np.random.Generator) -> list[Case]:
        c: list[Case] = []
        z = _logits(rng, (4, 5))
        t = np.array([0, 4, 2, 1])
        c.append(Case("basic", L, {"logits": z, "labels": t}, tags=("shape",)))
        c.append(Case("one-class", L, {"logits": _logits(rng, (3, 1)), "labels": np.zeros(3, np.int64)},
                      tags=("shape",)))
        c.append(Case("one-example", L, {"logits": _logits(rng, (1, 6)), "labels": np.array([3])},
                      tags=("shape",)))
        c.append(Case("leading-dims", L, {"logits": _logits(rng, (2, 3, 4)),
                                          "labels": rng.integers(0, 4, (2, 3))}, tags=("shape",)))
        c.append(Case("wide-row", L, {"logits": _logits(rng, (2, 4096)), "labels": np.array([0, 4095])},
                      tags=("shape",)))
        # support: every class (small logits), one or two classes (large spread)
        c.append(Case("dense-support", L, {"logits": _logits(rng, (3, 6), 0.05), "labels": np.array([0, 5, 2])},
                      tags=("support",)))
        c.append(Case("sparse-support", L, {"logits": _logits(rng, (4, 6), 8.0), "labels": np.array([1, 0, 5, 3])},
                      tags=("support",)))
        # loss and gradient exactly 0 beyond the margin (row 0: label wins by margin + 0.5;
        # row 1: by margin + 3); row 2 falls short by 0.5
        zm = _logits(rng, (3, 5), 0.5)
        tm = np.array([2, 0, 3])
        for row, extra in ((0, 0.5), (1, 3.0), (2, -0.5)):
            others = np.delete(zm[row], tm[row])
            zm[row, tm[row]] = others.max() + margin + extra
        c.append(Case("beyond-margin", L, {"logits": zm, "labels": tm}, tags=("support",)))
        c.append(Case("ties", L, {"logits": np.zeros((2, 5)), "labels": np.array([1, 4])}, tags=("magnitude",)))
        c.append(Case("tied-maxima", L, {"logits": np.array([[1.0, 1.0, 0.0, -3.0], [2.0, -1.0, 2.0, 2.0]]),
                                         "labels": np.array([2, 0])}, tags=("magnitude",)))
        c.append(Case("tiny-logits", L, {"logits": _logits(rng, (3, 4), 1e-30), "labels": np.array([0, 1, 3])},
                      tags=("magnitude",)))
        c.append(Case("large-logits", L, {"logits": _logits(rng, (3, 4), 1.0) + 1000.0,
                                          "labels": np.array([0, 1, 3])}, tags=("magnitude", "overflow")))
        c.append(Case("large-spread", L, {"logits": np.array([[200.0, -200.0, 0.0], [-60.0, 60.0, 1.0]]),
                                          "labels": np.array([1, 0])}, tags=("magnitude", "overflow")))
        c.append(Case("negative-large", L, {"logits": _logits(rng, (2, 4), 1.0) - 1000.0,
                                            "labels": np.array([2, 3])}, tags=("magnitude", "overflow")))
        zi = _logits(rng, (3, 4))
        zi[0, 1] = -np.inf
        zi[2, 0] = -np.inf
        c.append(Case("minus-inf-logit", L, {"logits": zi, "labels": np.array([0, 3, 2])}, tags=("non-finite",)))
        zl = _logits(rng, (2, 3))
        zl[1, 2] = -np.inf
        c.append(Case("label-on-minus-inf", L, {"logits": zl, "labels": np.array([0, 2])}, tags=("non-finite",)))
        za = _logits(rng, (2, 3))
        za[0] = -np.inf
        c.append(Case("all-minus-inf-row", L, {"logits": za, "labels": np.array([1, 2])}, tags=("non-finite",)))
        zn = _logits(rng, (2, 3))
        zn[0, 1] = np.nan
        c.append(Case("nan-logit", L, {"logits": zn, "labels": np.array([0, 2])}, tags=("non-finite",)))
        c.append(Case("label-boundary", L, {"logits": _logits(rng, (2, 7)), "labels": np.array([0, 6])},
                      tags=("labels",)))
        # options
        for red in ("sum", "mean"):
            c.append(Case(f"reduction-{red}", L, {"logits": z, "labels": t}, {"reduction": red}, tags=("option",)))
        ti = np.array([0, -100, 2, -100])
        c.append(Case("ignore-index", L, {"logits": z, "labels": ti}, {"ignore_index": -100}, tags=("option",)))
        c.append(Case("ignore-index-mean", L, {"logits": z, "labels": ti},
                      {"ignore_index": -100, "reduction": "mean"}, tags=("option",)))
        c.append(Case("all-ignored-mean", L, {"logits": z, "labels": np.full(4, -100)},
                      {"ignore_index": -100, "reduction": "mean"}, tags=("option", "empty")))
        # a non-negative ignore_index that is also a class: labels equal to it are left out
        tc = np.array([0, 2, 2, 1])
        c.append(Case("ignore-class-index", L, {"logits": z, "labels": tc}, {"ignore_index": 2}, tags=("option",)))
        c.append(Case("ignore-class-index-sum", L, {"logits": z, "labels": tc},
                      {"ignore_index": 2, "reduction": "sum"}, tags=("option",)))
        c.append(Case("ignore-class-index-mean", L, {"logits": z, "labels": tc},
                      {"ignore_index": 2, "reduction": "mean"}, tags=("option",)))
        c.append(Case("all-ignored-class-mean", L, {"logits": z, "labels": np.full(4, 2)},
                      {"ignore_index": 2, "reduction": "mean"}, tags=("option", "empty")))
        # invalid input: the candidate must refuse
        c.append(Case("label-too-large", L, {"logits": z, "labels": np.array([0, 5, 2, 1])}, valid=False,
                      tags=("labels", "invalid")))
        c.append(Case("label-negative", L, {"logits": z, "labels": np.array([0, -1, 2, 1])}, valid=False,
                      tags=("labels", "invalid")))
        c.append(Case("label-minus-100", L, {"logits": z, "labels": np.array([0, -100, 2, 1])}, valid=False,
                      tags=("labels", "invalid")))
        return c

    return edge


def _random_case(loss: str) -> Any:
    def random(rng: np.random.Generator, i: int) -> Case:
        b = int(rng.integers(1, 6))
        k = int(rng.integers(1, 12))
        scale = float(np.exp(rng.uniform(np.log(1e-3), np.log(50.0))))
        z = _logits(rng, (b, k), scale) + rng.uniform(-100, 100)
        t = rng.integers(0, k, b)
        options: dict[str, Any] = {}
        if rng.random() < 0.3 and b > 1:
            # a non-negative ignore_index (a class): the form every FY implementation accepts;
            # negative ones are probed by the curated cases
            ignored = int(rng.integers(0, k))
            t[int(rng.integers(0, b))] = ignored
            options["ignore_index"] = ignored
        options["reduction"] = str(rng.choice(["none", "sum", "mean"]))
        return Case(f"random-{i}", loss, {"logits": z, "labels": t}, options, tags=("random",))

    return random


def _register() -> None:
    for loss in FENCHEL_YOUNG_LOSSES:
        register_spec(LossSpec(loss, ("logits", "labels"), array_options=()))
        register(loss, _edge_cases(loss), _random_case(loss))


_register()

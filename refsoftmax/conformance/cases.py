"""Conformance cases: curated edge cases and seeded random cases, per loss.

A :class:`Case` holds float64 master copies of the inputs (classes on the
last axis), the reference options, the dtype the candidate is fed, and
whether the input is valid.  The candidate receives the inputs rounded to
that dtype; the reference is evaluated in float64 on the *same rounded*
numbers, so the comparison measures the implementation, not the rounding of
its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DTYPES", "Case", "generate", "round_to_dtype"]

DTYPES = ("float64", "float32", "float16", "bfloat16")


def round_to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to ``dtype`` and returned as float64 (bfloat16: round to nearest even)."""
    x = np.asarray(x, dtype=np.float64)
    if dtype == "float64":
        return x.copy()
    if dtype == "float32":
        return x.astype(np.float32).astype(np.float64)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float64)
    if dtype == "bfloat16":
        f = x.astype(np.float32)
        bits = f.view(np.uint32).astype(np.uint64)
        finite = np.isfinite(f)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        out = np.where(finite, rounded, bits).astype(np.uint32).view(np.float32)
        return out.astype(np.float64)
    msg = f"dtype must be one of {DTYPES}, got {dtype!r}"
    raise ValueError(msg)


@dataclass(frozen=True)
class Case:
    """One input to certify a loss on."""

    name: str
    loss: str
    inputs: dict[str, np.ndarray]
    options: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float64"
    valid: bool = True
    tags: tuple[str, ...] = ()

    def rounded(self) -> dict[str, np.ndarray]:
        """The inputs as the candidate sees them: float inputs rounded to ``dtype``."""
        out = {}
        for k, v in self.inputs.items():
            out[k] = round_to_dtype(v, self.dtype) if np.issubdtype(v.dtype, np.floating) else v
        opts = self.options.get("class_weights")
        if opts is not None:
            out["class_weights"] = np.asarray(opts, np.float64)
        return out

    def rounded_options(self) -> dict[str, Any]:
        """The options as the candidate sees them: float arrays inside tuple-valued options
        (e.g. ``sampled_values``) rounded to ``dtype``, like the inputs; others unchanged."""
        return {k: _round_nested(v, self.dtype) if isinstance(v, tuple) else v
                for k, v in self.options.items()}

    def with_dtype(self, dtype: str) -> Case:
        return Case(f"{self.name}[{dtype}]", self.loss, self.inputs, self.options, dtype, self.valid, self.tags)


def _round_nested(v: Any, dtype: str) -> Any:
    if isinstance(v, tuple):
        return tuple(_round_nested(u, dtype) for u in v)
    if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating):
        return round_to_dtype(v, dtype)
    return v


# ------------------------------------------------------------------ softmax cross-entropy

def _logits(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 2.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale


def _sparse_edge_cases(rng: np.random.Generator) -> list[Case]:
    L = "sparse_softmax_cross_entropy"
    c: list[Case] = []
    z = _logits(rng, (4, 5))
    t = np.array([0, 4, 2, 1])
    c.append(Case("basic", L, {"logits": z, "labels": t}, tags=("shape",)))
    c.append(Case("one-class", L, {"logits": _logits(rng, (3, 1)), "labels": np.zeros(3, np.int64)}, tags=("shape",)))
    c.append(Case("one-example", L, {"logits": _logits(rng, (1, 6)), "labels": np.array([3])}, tags=("shape",)))
    c.append(Case("leading-dims", L, {"logits": _logits(rng, (2, 3, 4)), "labels": rng.integers(0, 4, (2, 3))},
                  tags=("shape",)))
    c.append(Case("wide-row", L, {"logits": _logits(rng, (2, 4096)), "labels": np.array([0, 4095])}, tags=("shape",)))
    c.append(Case("ties", L, {"logits": np.zeros((2, 5)), "labels": np.array([1, 4])}, tags=("magnitude",)))
    c.append(Case("tiny-logits", L, {"logits": _logits(rng, (3, 4), 1e-30), "labels": np.array([0, 1, 3])},
                  tags=("magnitude",)))
    c.append(Case("large-logits", L, {"logits": _logits(rng, (3, 4), 1.0) + 1000.0, "labels": np.array([0, 1, 3])},
                  tags=("magnitude", "overflow")))
    c.append(Case("large-spread", L, {"logits": np.array([[200.0, -200.0, 0.0], [-60.0, 60.0, 1.0]]),
                                      "labels": np.array([1, 0])}, tags=("magnitude", "overflow")))
    c.append(Case("negative-large", L, {"logits": _logits(rng, (2, 4), 1.0) - 1000.0, "labels": np.array([2, 3])},
                  tags=("magnitude", "overflow")))
    zi = _logits(rng, (3, 4))
    zi[0, 1] = -np.inf
    zi[2, 0] = -np.inf
    c.append(Case("minus-inf-logit", L, {"logits": zi, "labels": np.array([0, 3, 2])}, tags=("non-finite",)))
    zl = _logits(rng, (2, 3))
    zl[1, 2] = -np.inf
    c.append(Case("label-on-minus-inf", L, {"logits": zl, "labels": np.array([0, 2])}, tags=("non-finite",)))
    zn = _logits(rng, (2, 3))
    zn[0, 1] = np.nan
    c.append(Case("nan-logit", L, {"logits": zn, "labels": np.array([0, 2])}, tags=("non-finite",)))
    c.append(Case("label-boundary", L, {"logits": _logits(rng, (2, 7)), "labels": np.array([0, 6])}, tags=("labels",)))
    # options
    w = np.array([0.5, 2.0, 1.5, 3.0, 0.25])
    c.append(Case("class-weights", L, {"logits": z, "labels": t}, {"class_weights": w}, tags=("option",)))
    for red in ("sum", "mean"):
        c.append(Case(f"reduction-{red}", L, {"logits": z, "labels": t}, {"reduction": red}, tags=("option",)))
        c.append(Case(f"weights-{red}", L, {"logits": z, "labels": t}, {"class_weights": w, "reduction": red},
                      tags=("option",)))
    ti = np.array([0, -100, 2, -100])
    c.append(Case("ignore-index", L, {"logits": z, "labels": ti}, {"ignore_index": -100}, tags=("option",)))
    c.append(Case("ignore-index-mean", L, {"logits": z, "labels": ti}, {"ignore_index": -100, "reduction": "mean"},
                  tags=("option",)))
    c.append(Case("ignore-weights-mean", L, {"logits": z, "labels": ti},
                  {"ignore_index": -100, "class_weights": w, "reduction": "mean"}, tags=("option",)))
    # a non-negative ignore_index (fairseq pads with 1): the index is also a valid class
    tp = np.array([1, 4, 1, 0])
    c.append(Case("ignore-index-1", L, {"logits": z, "labels": tp}, {"ignore_index": 1}, tags=("option",)))
    c.append(Case("ignore-index-0-mean", L, {"logits": z, "labels": np.array([0, 4, 2, 0])},
                  {"ignore_index": 0, "reduction": "mean"}, tags=("option",)))
    c.append(Case("all-ignored-mean", L, {"logits": z, "labels": np.full(4, -100)},
                  {"ignore_index": -100, "reduction": "mean"}, tags=("option", "empty")))
    for eps in (0.1, 1.0):
        c.append(Case(f"smoothing-{eps}", L, {"logits": z, "labels": t}, {"label_smoothing": eps}, tags=("option",)))
    c.append(Case("smoothing-weights-mean", L, {"logits": z, "labels": t},
                  {"label_smoothing": 0.2, "class_weights": w, "reduction": "mean"}, tags=("option",)))
    c.append(Case("smoothing-ignore-mean", L, {"logits": z, "labels": ti},
                  {"label_smoothing": 0.2, "ignore_index": -100, "reduction": "mean"}, tags=("option",)))
    # leading batch dims crossed with reductions, ignored rows and weights (a mean that divides by
    # logits.shape[0] passes every 2-D case); drawn from their own stream, so that the other
    # cases' inputs do not move
    lead = np.random.default_rng(1009)
    zl3, tl3 = _logits(lead, (2, 3, 5)), lead.integers(0, 5, (2, 3))
    tl3i = tl3.copy()
    tl3i[1, 0] = -100
    for red in ("sum", "mean"):
        c.append(Case(f"leading-dims-{red}", L, {"logits": zl3, "labels": tl3}, {"reduction": red},
                      tags=("shape", "option")))
        c.append(Case(f"leading-dims-weights-{red}", L, {"logits": zl3, "labels": tl3},
                      {"class_weights": w, "reduction": red}, tags=("shape", "option")))
        c.append(Case(f"leading-dims-ignore-{red}", L, {"logits": zl3, "labels": tl3i},
                      {"ignore_index": -100, "class_weights": w, "reduction": red}, tags=("shape", "option")))
    # invalid input: the candidate must refuse
    c.append(Case("label-too-large", L, {"logits": z, "labels": np.array([0, 5, 2, 1])}, valid=False,
                  tags=("labels", "invalid")))
    c.append(Case("label-negative", L, {"logits": z, "labels": np.array([0, -1, 2, 1])}, valid=False,
                  tags=("labels", "invalid")))
    return c


def _random_sparse(rng: np.random.Generator, i: int) -> Case:
    b = int(rng.integers(1, 6))
    k = int(rng.integers(1, 12))
    scale = float(np.exp(rng.uniform(np.log(1e-3), np.log(50.0))))
    z = _logits(rng, (b, k), scale) + rng.uniform(-100, 100)
    t = rng.integers(0, k, b)
    options: dict[str, Any] = {}
    if rng.random() < 0.4:
        options["class_weights"] = rng.uniform(0.1, 3.0, k)
    if rng.random() < 0.3:
        options["label_smoothing"] = float(rng.choice([0.05, 0.1, 0.3]))
    if rng.random() < 0.3 and b > 1:
        t[int(rng.integers(0, b))] = -100
        options["ignore_index"] = -100
    options["reduction"] = str(rng.choice(["none", "sum", "mean"]))
    z, t = _with_leading_dims(i, z, t)
    return Case(f"random-{i}", "sparse_softmax_cross_entropy", {"logits": z, "labels": t}, options, tags=("random",))


def _with_leading_dims(i: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """About a third of the random cases put their ``b`` rows in two batch dims, ``[2, b/2]`` or
    ``[1, b]`` (a decision from the case number's own stream: the other draws do not move)."""
    if np.random.default_rng([i, 7]).random() >= 0.35:
        return arrays
    b = arrays[0].shape[0]
    lead = (2, b // 2) if b % 2 == 0 else (1, b)
    return tuple(a.reshape(lead + a.shape[1:]) for a in arrays)


def _dense_edge_cases(rng: np.random.Generator) -> list[Case]:
    L = "softmax_cross_entropy"
    c: list[Case] = []

    def dist(shape: tuple[int, ...], sharp: float = 1.0) -> np.ndarray:
        a = np.exp(rng.standard_normal(shape) * sharp)
        return a / a.sum(-1, keepdims=True)

    z = _logits(rng, (4, 5))
    c.append(Case("basic", L, {"logits": z, "labels": dist((4, 5))}, tags=("shape",)))
    c.append(Case("one-hot", L, {"logits": z, "labels": np.eye(5)[[0, 4, 2, 1]]}, tags=("labels",)))
    c.append(Case("peaked", L, {"logits": z, "labels": dist((4, 5), 6.0)}, tags=("labels",)))
    c.append(Case("uniform-labels", L, {"logits": z, "labels": np.full((4, 5), 0.2)}, tags=("labels",)))
    c.append(Case("one-class", L, {"logits": _logits(rng, (3, 1)), "labels": np.ones((3, 1))}, tags=("shape",)))
    c.append(Case("leading-dims", L, {"logits": _logits(rng, (2, 3, 4)), "labels": dist((2, 3, 4))}, tags=("shape",)))
    c.append(Case("wide-row", L, {"logits": _logits(rng, (2, 4096)), "labels": dist((2, 4096))}, tags=("shape",)))
    c.append(Case("large-logits", L, {"logits": _logits(rng, (3, 4), 1.0) + 1000.0, "labels": dist((3, 4))},
                  tags=("magnitude", "overflow")))
    zi = _logits(rng, (2, 4))
    zi[0, 1] = -np.inf
    yi = dist((2, 4))
    yi[0, 1] = 0.0
    yi[0] /= yi[0].sum()
    c.append(Case("minus-inf-logit-no-mass", L, {"logits": zi, "labels": yi}, tags=("non-finite",)))
    yl = dist((2, 4))
    c.append(Case("mass-on-minus-inf", L, {"logits": zi, "labels": yl}, tags=("non-finite",)))
    for eps in (0.1, 1.0):
        c.append(Case(f"smoothing-{eps}", L, {"logits": z, "labels": dist((4, 5))}, {"label_smoothing": eps},
                      tags=("option",)))
    for red in ("sum", "mean"):
        c.append(Case(f"reduction-{red}", L, {"logits": z, "labels": dist((4, 5))}, {"reduction": red},
                      tags=("option",)))
    w = np.array([0.5, 2.0, 1.5, 3.0, 0.25])
    c.append(Case("class-weights", L, {"logits": z, "labels": dist((4, 5))}, {"class_weights": w}, tags=("option",)))
    c.append(Case("weights-mean", L, {"logits": z, "labels": np.eye(5)[[0, 4, 2, 1]]},
                  {"class_weights": w, "reduction": "mean"}, tags=("option",)))
    lead = np.random.default_rng(1013)  # own stream (see the sparse cases)
    zl3 = _logits(lead, (2, 3, 5))
    a3 = np.exp(lead.standard_normal((2, 3, 5)))
    yl3 = a3 / a3.sum(-1, keepdims=True)
    for red in ("sum", "mean"):
        c.append(Case(f"leading-dims-{red}", L, {"logits": zl3, "labels": yl3}, {"reduction": red},
                      tags=("shape", "option")))
        c.append(Case(f"leading-dims-weights-{red}", L, {"logits": zl3, "labels": yl3},
                      {"class_weights": w, "reduction": red}, tags=("shape", "option")))
    c.append(Case("negative-label", L, {"logits": z, "labels": np.array([[0.5, -0.5, 1, 0, 0]] * 4)},
                  valid=False, tags=("labels", "invalid")))
    return c


def _random_dense(rng: np.random.Generator, i: int) -> Case:
    b = int(rng.integers(1, 6))
    k = int(rng.integers(1, 12))
    scale = float(np.exp(rng.uniform(np.log(1e-3), np.log(50.0))))
    z = _logits(rng, (b, k), scale) + rng.uniform(-100, 100)
    a = np.exp(rng.standard_normal((b, k)) * rng.uniform(0.1, 5))
    y = a / a.sum(-1, keepdims=True)
    options: dict[str, Any] = {"reduction": str(rng.choice(["none", "sum", "mean"]))}
    if rng.random() < 0.3:
        options["label_smoothing"] = float(rng.choice([0.05, 0.1, 0.3]))
    z, y = _with_leading_dims(i, z, y)
    return Case(f"random-{i}", "softmax_cross_entropy", {"logits": z, "labels": y}, options, tags=("random",))


_GENERATORS: dict[str, tuple[Callable[[np.random.Generator], list[Case]], Callable[[np.random.Generator, int], Case]]] = {
    "sparse_softmax_cross_entropy": (_sparse_edge_cases, _random_sparse),
    "softmax_cross_entropy": (_dense_edge_cases, _random_dense),
}


#: Losses whose cases come in fewer dtypes than asked for (e.g. integer-only inputs).
_CASE_DTYPES: dict[str, tuple[str, ...]] = {}


def register(loss: str, edge: Callable[[np.random.Generator], list[Case]],
             random: Callable[[np.random.Generator, int], Case], *,
             dtypes: tuple[str, ...] | None = None) -> None:
    """Add (or replace) the case generators of ``loss`` (public as ``conformance.register_cases``).

    Parameters
    ----------
    loss : str
        The spec's name (:func:`refsoftmax.conformance.register_spec`).
    edge : callable
        ``edge(rng) -> list[Case]``: the curated cases, generated in every
        dtype ``generate`` is asked for (invalid ones, ``valid=False``, once).
    random : callable
        ``random(rng, i) -> Case``: the ``i``-th seeded random case (float64
        and float32).
    dtypes : tuple of str, optional
        Restricts the dtypes the cases are generated in (default: every dtype
        ``generate`` is asked for).

    See :func:`refsoftmax.conformance.register_spec` for a worked example.
    """
    _GENERATORS[loss] = (edge, random)
    if dtypes is None:
        _CASE_DTYPES.pop(loss, None)
    else:
        _CASE_DTYPES[loss] = tuple(dtypes)


def generate(loss: str, *, seed: int = 0, max_examples: int = 20,
             dtypes: tuple[str, ...] = DTYPES) -> list[Case]:
    """Curated edge cases (every dtype) and ``max_examples`` random cases (float64 and float32)."""
    if loss not in _GENERATORS:
        msg = f"no conformance cases for loss={loss!r}; known: {sorted(_GENERATORS)}"
        raise ValueError(msg)
    edge, random = _GENERATORS[loss]
    if loss in _CASE_DTYPES:
        dtypes = tuple(d for d in dtypes if d in _CASE_DTYPES[loss])
    rng = np.random.default_rng(seed)
    cases = []
    invalid_dtype = "float64" if "float64" in dtypes or not dtypes else dtypes[0]
    for case in edge(rng):
        for dtype in dtypes:
            if not case.valid and dtype != invalid_dtype:  # invalid cases: once
                continue
            cases.append(case.with_dtype(dtype))
    for i in range(max_examples):
        case = random(rng, i)
        for dtype in ("float64", "float32"):
            if dtype in dtypes:
                cases.append(case.with_dtype(dtype))
    return cases

"""The accuracy suite: every public loss and gradient against the 50-digit mpmath oracle.

``measure(dtype)`` returns the worst error in ulps per (function, quantity)
over the suite's inputs; ``tests/accuracy/test_accuracy.py`` asserts bounds on
it and ``docs/scripts/accuracy_table.py`` publishes it as ``docs/accuracy.md``.

Inputs (float64 numbers, read exactly by the oracle): random rows; confident
rows (the target ahead by a margin of 1 … 700, and behind by the same);
masking logits (−1e9); ties at the maximum; huge (±1e6 offsets, spread 1e4)
and tiny (1e-300) magnitudes.  For float32/float16/bfloat16 the inputs are
rounded to that dtype first, the oracle evaluates the rounded inputs, and the
error is counted in ulps of the result's dtype against the exact value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tests.accuracy import mp_oracle as mo

import refsoftmax as rs

MARGINS = (1.0, 5.0, 10.0, 30.0, 40.0, 100.0, 300.0, 700.0)
NUM_CLASSES = 6


@dataclass
class Inputs:
    """One batch of logit rows with a label per row."""

    kind: str
    z: np.ndarray  # [N, C] float64
    t: np.ndarray  # [N] int64


def batches(dtype: Any) -> Iterator[Inputs]:
    """The suite's logit batches, rounded to ``dtype`` (and back to float64, exactly)."""
    rng = np.random.default_rng(2026)
    c = NUM_CLASSES
    margins = MARGINS if np.finfo(dtype).maxexp > 1000 else tuple(m for m in MARGINS if m <= 80)
    yield Inputs("random", rng.normal(0, 3, (12, c)), rng.integers(0, c, 12))
    conf = rng.normal(0, 1, (len(margins), c))
    conf[:, 2] = conf.max(axis=1) + np.array(margins)  # class 2 ahead by the margin
    yield Inputs("confident", conf, np.full(len(margins), 2))
    yield Inputs("confident, wrong label", conf, np.full(len(margins), 4))
    low = rng.normal(0, 1, (len(margins), c))
    low[:, 1] = low.min(axis=1) - np.array(margins)  # class 1 behind by the margin
    yield Inputs("far behind", low, np.full(len(margins), 1))
    masked = rng.normal(0, 2, (6, c))
    masked[:, ::2] = -1e9  # attention-style masking logits
    yield Inputs("masking logits (-1e9)", masked, np.array([1, 3, 5, 1, 3, 0]))
    ties = np.round(rng.normal(0, 1, (6, c)))
    ties[:, :3] = 2.0
    yield Inputs("ties at the maximum", ties, np.array([0, 1, 2, 3, 4, 5]))
    if np.finfo(dtype).maxexp > 24:
        huge = 1e6 + rng.normal(0, 1e4, (6, c))
        yield Inputs("huge (1e6 ± 1e4)", huge, rng.integers(0, c, 6))
    if np.finfo(dtype).minexp < -1000:
        yield Inputs("tiny (1e-300)", rng.normal(0, 1e-300, (6, c)), rng.integers(0, c, 6))


def _round(x: np.ndarray, dtype: Any) -> np.ndarray:
    return np.asarray(x, dtype=dtype).astype(np.float64)


def ulps(got: Any, exact: np.ndarray, scale: np.ndarray | None, dtype: Any) -> float:
    """Worst ``|got − exact| / ulp(max(|exact|, scale, tiny))`` in ``dtype``'s ulps."""
    got = np.asarray(got, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    same = (got == exact) | (np.isnan(got) & np.isnan(exact))
    mag = np.abs(exact) if scale is None else np.maximum(np.abs(exact), scale)
    mag = np.maximum(mag, np.finfo(dtype).tiny)
    # ulp of the magnitude in the result's dtype: 2^(exponent - mantissa bits)
    info = np.finfo(dtype)
    ulp = np.exp2(np.floor(np.log2(np.where(np.isfinite(mag), mag, 1.0))) - info.nmant)
    with np.errstate(invalid="ignore"):
        err = np.where(same, 0.0, np.abs(got - exact) / ulp)
    return float(np.max(np.where(np.isnan(err), np.inf, err)))


@dataclass
class Result:
    function: str
    quantity: str
    worst_ulp: float
    where: str


Check = Callable[[Inputs, Any], list[tuple[str, float]]]


def _np(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _sparse(**kw: Any) -> Check:
    def check(b: Inputs, dtype: Any) -> list[tuple[str, float]]:
        z = np.asarray(b.z, dtype=dtype)
        loss, grads = rs.sparse_softmax_cross_entropy.value_and_grad(z, b.t, **kw)
        ref = mo.sparse_ce(_np(z), b.t, eps=kw.get("label_smoothing", 0.0),
                           mode=kw.get("label_smoothing_mode", "uniform"),
                           class_weights=kw.get("class_weights"))
        return [("value", ulps(loss, ref[0], None, dtype)),
                ("gradient", ulps(grads["logits"], ref[1], ref[2], dtype))]
    return check


def _temperature(b: Inputs, dtype: Any) -> list[tuple[str, float]]:
    z = np.asarray(b.z, dtype=dtype)
    # T = 2 divides exactly, so the oracle's z/T is the code's z/T
    loss, grads = rs.temperature_softmax_cross_entropy.value_and_grad(z, b.t, temperature=2.0)
    ref = mo.sparse_ce(_np(z), b.t, temperature=2.0)
    return [("value", ulps(loss, ref[0], None, dtype)),
            ("gradient", ulps(grads["logits"], ref[1], ref[2], dtype))]


def _topk(b: Inputs, dtype: Any) -> list[tuple[str, float]]:
    z = np.asarray(b.z, dtype=dtype)
    k = 3
    loss, grads = rs.topk_softmax_cross_entropy.value_and_grad(z, b.t, k=k)
    zz = _np(z)
    # the k largest, ties at the k-th value going to the lowest indices (refsoftmax's rule)
    order = np.lexsort((np.arange(zz.shape[1])[None, :].repeat(len(zz), 0), -zz), axis=1)
    allowed = np.zeros(zz.shape, bool)
    np.put_along_axis(allowed, order[:, :k], True, axis=1)
    allowed[np.arange(len(b.t)), b.t] = True
    ref = mo.sparse_ce(zz, b.t, allowed=allowed)
    return [("value", ulps(loss, ref[0], None, dtype)),
            ("gradient", ulps(grads["logits"], ref[1], ref[2], dtype))]


def _dense(b: Inputs, dtype: Any) -> list[tuple[str, float]]:
    z = np.asarray(b.z, dtype=dtype)
    rng = np.random.default_rng(1)
    y = rng.dirichlet(np.ones(z.shape[1]), size=z.shape[0])
    y[0] = 0.0
    y[0, b.t[0]] = 1.0  # one one-hot row: its gradient is p - e_t
    y = np.asarray(y, dtype=dtype)
    loss, grads = rs.softmax_cross_entropy.value_and_grad(z, y)
    ref = mo.dense_ce(_np(z), _np(y))
    dl = mo.dense_label_grad(_np(z), None, 0.0, "uniform")
    return [("value", ulps(loss, ref[0], None, dtype)),
            ("gradient", ulps(grads["logits"], ref[1], ref[2], dtype)),
            ("label gradient", ulps(grads["labels"], dl, None, dtype))]


def _dense_others(b: Inputs, dtype: Any) -> list[tuple[str, float]]:
    """Label gradient of label_smoothing_mode="others", next to masking logits."""
    z = np.asarray(b.z, dtype=dtype)
    y = np.zeros(z.shape, dtype=dtype)
    y[np.arange(len(b.t)), b.t] = 1.0
    _, grads = rs.softmax_cross_entropy.value_and_grad(
        z, y, label_smoothing=0.25, label_smoothing_mode="others")
    dl = mo.dense_label_grad(_np(z), None, 0.25, "others")
    return [("label gradient", ulps(grads["labels"], dl, None, dtype))]


def _lse(b: Inputs, dtype: Any) -> list[tuple[str, float]]:
    z = np.asarray(b.z, dtype=dtype)
    value, grads = rs.logsumexp.value_and_grad(z)
    ref = mo.logsumexp(_np(z))
    return [("value", ulps(value, ref[0], ref[1], dtype)),
            ("gradient", ulps(grads["x"], ref[2], None, dtype))]


def _log_softmax(b: Inputs, dtype: Any) -> list[tuple[str, float]]:
    z = np.asarray(b.z, dtype=dtype)
    ref = mo.log_softmax(_np(z))
    return [("value", ulps(rs.log_softmax(z), ref[0], None, dtype))]


def _softmax(b: Inputs, dtype: Any) -> list[tuple[str, float]]:
    z = np.asarray(b.z, dtype=dtype)
    ref = mo.logsumexp(_np(z))
    return [("value", ulps(rs.softmax(z), ref[2], None, dtype))]


CHECKS: dict[str, Check] = {
    "logsumexp": _lse,
    "log_softmax": _log_softmax,
    "softmax": _softmax,
    "sparse_softmax_cross_entropy": _sparse(),
    "sparse_softmax_cross_entropy (smoothing 0.1)": _sparse(label_smoothing=0.1),
    "sparse_softmax_cross_entropy (smoothing 0.1, others)": _sparse(
        label_smoothing=0.1, label_smoothing_mode="others"),
    "sparse_softmax_cross_entropy (class weights)": _sparse(
        class_weights=np.array([0.5, 2.0, 1.0, 3.0, 0.25, 1.5])),
    "softmax_cross_entropy": _dense,
    "softmax_cross_entropy (others smoothing)": _dense_others,
    "temperature_softmax_cross_entropy (T = 2)": _temperature,
    "topk_softmax_cross_entropy (k = 3)": _topk,
}


def measure(dtype: Any = np.float64, names: list[str] | None = None) -> list[Result]:
    """Worst ulp error per (function, quantity) over every batch, with the batch kind it occurred in."""
    worst: dict[tuple[str, str], Result] = {}
    for b in batches(dtype):
        b = Inputs(b.kind, _round(b.z, dtype), b.t)
        for name, check in CHECKS.items():
            if names is not None and name not in names:
                continue
            with np.errstate(all="ignore"):
                rows = check(b, dtype)
            for quantity, err in rows:
                key = (name, quantity)
                if key not in worst or err > worst[key].worst_ulp:
                    worst[key] = Result(name, quantity, err, b.kind)
    return list(worst.values())

"""The accuracy suite: every public loss and gradient against the 50-digit mpmath oracle.

``measure(env)`` returns the worst error in ulps per (function, quantity) over
the suite's inputs, on one backend and dtype; ``tests/accuracy/test_accuracy.py``
asserts bounds on it and ``docs/scripts/accuracy_table.py`` publishes it as
``docs/accuracy.md``.

Inputs (float64 numbers, read exactly by the oracle): random rows; confident
rows (the target ahead by a margin of 1 … 700, and behind by the same);
masking logits (−1e9); ties at the maximum; huge (1e6 ± 1e4) and tiny
(1e-300) magnitudes.  The losses that compute their logits (linear, sampled,
NCE, negative sampling) get inputs on an integer grid, where ``x Wᵀ + b`` is
exact in every dtype, so that the oracle and the code see the same logits;
the confident ones have margins up to ~700.  For float32/float16/bfloat16 the
inputs are rounded to that dtype first, the oracle evaluates the rounded
inputs, and the error is counted in ulps of the result's dtype against the
exact value: "within 4 ulp of the correctly rounded value" is an error below
4.5 here.  How an element that is a difference of terms is measured (its
*scale*) is explained in :mod:`tests.accuracy.mp_oracle`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np

import refsoftmax as rs
from refsoftmax import backends
from refsoftmax.conformance.cases import round_to_dtype
from refsoftmax.samplers import SampledValues
from tests.accuracy import mp_oracle as mo


def _freeze(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, (tuple, list)):
        return tuple(_freeze(u) for u in v)
    return v


_MEMO: dict[Any, Any] = {}


def oracle(name: str, *args: Any, **kwargs: Any) -> Any:
    """``mp_oracle.<name>(*args, **kwargs)``, memoised: the exact values do not depend on the
    backend, so every backend measuring the same dtype shares one oracle evaluation."""
    key = (name, _freeze(args), _freeze(sorted(kwargs.items())))
    if key not in _MEMO:
        # the working precision is set here, not only at import: another test module lowering
        # mpmath.mp.dps (a global) must not turn the oracle into a 50-digit one
        with mpmath.workdps(mo.DIGITS):
            _MEMO[key] = getattr(mo, name)(*args, **kwargs)
    return _MEMO[key]


MARGINS = (1.0, 5.0, 10.0, 30.0, 40.0, 100.0, 300.0, 700.0)
NUM_CLASSES = 6
DTYPES = ("float64", "float32", "float16", "bfloat16")
_INFO = {"float64": np.finfo(np.float64), "float32": np.finfo(np.float32),
         "float16": np.finfo(np.float16)}


def nmant(dtype: str) -> int:
    """Mantissa bits of ``dtype`` (bfloat16: 7)."""
    return 7 if dtype == "bfloat16" else int(_INFO[dtype].nmant)


def max_exponent(dtype: str) -> int:
    return 128 if dtype == "bfloat16" else int(_INFO[dtype].maxexp)


def min_exponent(dtype: str) -> int:
    return -125 if dtype == "bfloat16" else int(_INFO[dtype].minexp)


@dataclass(frozen=True)
class Env:
    """Where a measurement runs: a refsoftmax backend and the inputs' floating dtype."""

    backend: str
    dtype: str

    def floats(self, x: np.ndarray) -> Any:
        """``x`` (already rounded to ``dtype``) as a backend array of ``dtype``."""
        module = backends.load(self.backend)
        if self.dtype == "bfloat16":  # only torch has it; the exact float32 copy converts exactly
            import torch

            return torch.asarray(np.asarray(x, np.float32)).to(torch.bfloat16)
        return module.from_host(np.asarray(x, dtype=self.dtype))

    def ints(self, t: np.ndarray) -> Any:
        return backends.load(self.backend).from_host(np.asarray(t, dtype=np.int64))

    def host(self, y: Any) -> np.ndarray:
        if self.dtype == "bfloat16":
            return y.float().numpy().astype(np.float64)
        return np.asarray(backends.load(self.backend).to_numpy(y), dtype=np.float64)

    def round(self, x: np.ndarray) -> np.ndarray:
        return round_to_dtype(x, self.dtype)


def ulps(got: np.ndarray, exact: np.ndarray, scale: np.ndarray | None, dtype: str) -> float:
    """Worst ``|got − exact| / ulp(max(|exact|, scale, smallest normal))`` in ``dtype``'s ulps.

    Equal values (the same infinity included) and NaN against NaN count 0; a NaN or an
    infinity where the exact value is finite counts ``inf``.  Where the exact value and its
    scale are subnormal the unit is the smallest normal number instead.
    """
    got = np.asarray(got, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    same = (got == exact) | (np.isnan(got) & np.isnan(exact))
    mag = np.abs(exact) if scale is None else np.maximum(np.abs(exact), scale)
    tiny = 2.0 ** (min_exponent(dtype) - 1)  # the smallest normal number
    # ulp of the magnitude in the result's dtype: 2^(exponent - mantissa bits)
    ulp = np.exp2(np.floor(np.log2(np.where(np.isfinite(mag) & (mag > 0), mag, 1.0))) - nmant(dtype))
    # a subnormal result has no relative accuracy to speak of (gradual underflow drops bits
    # in every intermediate): there the error is counted in units of the smallest normal
    ulp = np.where(mag < tiny, tiny, ulp)
    with np.errstate(invalid="ignore"):
        err = np.where(same, 0.0, np.abs(got - exact) / ulp)
    return float(np.max(np.where(np.isnan(err), np.inf, err), initial=0.0))


# --------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Logits:
    """Logit rows ``z`` ``[N, C]`` with a label per row ``t``."""

    kind: str
    z: np.ndarray
    t: np.ndarray


def logit_batches(dtype: str) -> Iterator[Logits]:
    """The suite's logit batches (float64; rounded to ``dtype`` by the caller)."""
    rng = np.random.default_rng(2026)
    c = NUM_CLASSES
    # e^-margin must stay a normal number of the dtype for the confident rows to mean anything
    margins = tuple(m for m in MARGINS if m < -min_exponent(dtype) * 0.69)
    yield Logits("random", rng.normal(0, 3, (12, c)), rng.integers(0, c, 12))
    conf = rng.normal(0, 1, (len(margins), c))
    conf[:, 2] = conf.max(axis=1) + np.array(margins)  # class 2 ahead by the margin
    yield Logits("confident", conf, np.full(len(margins), 2))
    yield Logits("confident, wrong label", conf, np.full(len(margins), 4))
    low = rng.normal(0, 1, (len(margins), c))
    low[:, 1] = low.min(axis=1) - np.array(margins)  # class 1 behind by the margin
    yield Logits("far behind", low, np.full(len(margins), 1))
    # just inside the margins where sparsemax (1) and entmax-1.5 (2) put all mass on the target
    near = np.array([m - 10.0**-k for m in (1.0, 2.0) for k in (1, 4, 8, 12)])
    edge = np.full((len(near), c), -8.0) + rng.uniform(-1, 0, (len(near), c))
    edge[:, 0], edge[:, 3] = 0.0, -near
    yield Logits("near the sparse margin", edge, np.zeros(len(near), np.int64))
    if max_exponent(dtype) > 30:  # -1e9 is -inf in float16: not a masking logit there
        masked = rng.normal(0, 2, (6, c))
        masked[:, ::2] = -1e9  # attention-style masking logits
        yield Logits("masking logits (-1e9)", masked, np.array([1, 3, 5, 1, 3, 1]))
    ties = np.round(rng.normal(0, 1, (6, c)))
    ties[:, :3] = 2.0
    yield Logits("ties at the maximum", ties, np.array([0, 1, 2, 3, 4, 5]))
    if max_exponent(dtype) > 24:
        yield Logits("huge (1e6 ± 1e4)", 1e6 + rng.normal(0, 1e4, (6, c)), rng.integers(0, c, 6))
    if min_exponent(dtype) < -1000:
        yield Logits("tiny (1e-300)", rng.normal(0, 1e-300, (6, c)), rng.integers(0, c, 6))


@dataclass(frozen=True)
class Linear:
    """``weights [C, D]``, ``biases [C]``, ``inputs [B, D]``, labels ``[B]``: an integer grid."""

    kind: str
    w: np.ndarray
    b: np.ndarray
    x: np.ndarray
    t: np.ndarray


def linear_batches(dtype: str) -> Iterator[Linear]:
    """Integer inputs: every logit ``x·W_c + b_c`` is an integer below 2^11, exact in every dtype
    but bfloat16 (8 bits: there the grid is kept below 256)."""
    rng = np.random.default_rng(7)
    c, d = 8, 4
    small = dtype == "bfloat16"
    w = rng.integers(-2, 3, (c, d)).astype(np.float64)
    w[np.arange(c), np.arange(c) % d] = 3.0  # no zero rows; rows differ
    b = rng.integers(-2, 3, c).astype(np.float64)
    yield Linear("random", w, b, rng.integers(-2, 3, (10, d)).astype(np.float64), rng.integers(0, c, 10))
    # confident: x_i = a_i W_t (+ noise), margin ≈ a_i (|W_t|² - W_t·W_c)
    scales = (1, 3, 10) if small else (1, 3, 10, 30, 60)
    if min_exponent(dtype) < -1000:
        scales = (*scales, 100)
    t = np.arange(len(scales)) % c
    x = np.array(scales, np.float64)[:, None] * w[t] + rng.integers(-1, 2, (len(scales), d))
    yield Linear("confident", w, b, x, t)
    yield Linear("confident, wrong label", w, b, x, (t + 1) % c)


@dataclass(frozen=True)
class Sampled:
    """A linear batch with a fixed sample: candidates ``[S]`` and expected counts."""

    kind: str
    lin: Linear
    labels: np.ndarray  # [B, T]
    sv: tuple[np.ndarray, np.ndarray, np.ndarray]


def sampled_batches(dtype: str) -> Iterator[Sampled]:
    rng = np.random.default_rng(11)
    for lin in linear_batches(dtype):
        n, c = len(lin.t), len(lin.w)
        cands = np.array([0, 3, 5, 6, 7])  # includes labels of some rows: accidental hits
        true_ec = rng.uniform(0.2, 3.0, (n, 1))
        samp_ec = rng.uniform(0.2, 3.0, len(cands))
        yield Sampled(lin.kind, lin, lin.t[:, None] % c, (cands, true_ec, samp_ec))


@dataclass(frozen=True)
class Features:
    """AM-Softmax inputs: ``features [N, D]``, ``weights [C, D]``, labels."""

    kind: str
    f: np.ndarray
    w: np.ndarray
    t: np.ndarray


def feature_batches(dtype: str) -> Iterator[Features]:
    rng = np.random.default_rng(5)
    c, d = 6, 5
    w = rng.normal(0, 1, (c, d))
    yield Features("random", rng.normal(0, 1, (10, d)), w, rng.integers(0, c, 10))
    t = np.arange(8) % c
    aligned = w[t] + rng.normal(0, 0.01, (8, d))  # cos_t ≈ 1: confident at s = 30
    yield Features("confident (aligned)", aligned, w, t)
    yield Features("huge norms (1e100)", 1e100 * rng.normal(0, 1, (4, d)) if max_exponent(dtype) > 500
                   else 1e4 * rng.normal(0, 1, (4, d)), w, rng.integers(0, c, 4))


# --------------------------------------------------------------------- checks

Rows = list[tuple[str, str, float]]  # (batch kind, quantity, error in ulps)


def _rounded_logits(env: Env) -> Iterator[Logits]:
    for b in logit_batches(env.dtype):
        yield Logits(b.kind, env.round(b.z), b.t)


def _sparse_like(fn: Any, oracle_kw: dict[str, Any], **kw: Any) -> Callable[[Env], Rows]:
    """A check of an integer-label CE against :func:`mo.sparse_ce` with ``oracle_kw``."""
    def check(env: Env) -> Rows:
        rows: Rows = []
        for b in _rounded_logits(env):
            call_kw = {k: env.floats(env.round(v)) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
            loss, grads = fn.value_and_grad(env.floats(b.z), env.ints(b.t), **call_kw)
            ref = oracle("sparse_ce", b.z, b.t, **oracle_kw)
            rows += [(b.kind, "value", ulps(env.host(loss), ref[0], None, env.dtype)),
                     (b.kind, "gradient", ulps(env.host(grads["logits"]), ref[1], ref[2], env.dtype))]
        return rows
    return check


def _z_cap(z_loss: float, cap: float | None) -> Callable[[Env], Rows]:
    """Sparse CE with ``z_loss`` and ``logit_softcap`` against :func:`mo.sparse_ce_z_cap`."""
    def check(env: Env) -> Rows:
        rows: Rows = []
        for b in _rounded_logits(env):
            finite = np.isfinite(b.z).all(axis=-1)  # the oracle takes finite rows (masking logits included)
            z, t = b.z[finite], b.t[finite]
            if not len(t):
                continue
            loss, grads = rs.sparse_softmax_cross_entropy.value_and_grad(
                env.floats(z), env.ints(t), z_loss=z_loss, logit_softcap=cap)
            value, vscale, grad, gscale = oracle("sparse_ce_z_cap", z, t, z_loss=z_loss, cap=cap)
            rows += [(b.kind, "value", ulps(env.host(loss), value, vscale, env.dtype)),
                     (b.kind, "gradient", ulps(env.host(grads["logits"]), grad, gscale, env.dtype))]
        return rows
    return check


def _topk(env: Env) -> Rows:
    rows: Rows = []
    k = 3
    for b in _rounded_logits(env):
        loss, grads = rs.topk_softmax_cross_entropy.value_and_grad(env.floats(b.z), env.ints(b.t), k=k)
        # the k largest, ties at the k-th value going to the lowest indices (refsoftmax's rule)
        order = np.lexsort((np.broadcast_to(np.arange(b.z.shape[1]), b.z.shape), -b.z), axis=1)
        allowed = np.zeros(b.z.shape, bool)
        np.put_along_axis(allowed, order[:, :k], True, axis=1)
        allowed[np.arange(len(b.t)), b.t] = True
        ref = oracle("sparse_ce", b.z, b.t, allowed=allowed)
        rows += [(b.kind, "value", ulps(env.host(loss), ref[0], None, env.dtype)),
                 (b.kind, "gradient", ulps(env.host(grads["logits"]), ref[1], ref[2], env.dtype))]
    return rows


def _as_softmax(env: Env) -> Rows:
    rows: Rows = []
    for b in _rounded_logits(env):
        loss, grads = rs.as_softmax_cross_entropy.value_and_grad(env.floats(b.z), env.ints(b.t), delta=0.1)
        ref = oracle("as_softmax", b.z, b.t, 0.1)
        rows += [(b.kind, "value", ulps(env.host(loss), ref[0], None, env.dtype)),
                 (b.kind, "gradient", ulps(env.host(grads["logits"]), ref[1], ref[2], env.dtype))]
    return rows


def _soft_labels(b: Logits, env: Env) -> np.ndarray:
    rng = np.random.default_rng(1)
    y = rng.dirichlet(np.ones(b.z.shape[1]), size=b.z.shape[0])
    y[0] = 0.0
    y[0, b.t[0]] = 1.0  # one one-hot row: its gradient is p - e_t
    return env.round(y)


def _dense(env: Env) -> Rows:
    rows: Rows = []
    for b in _rounded_logits(env):
        y = _soft_labels(b, env)
        loss, grads = rs.softmax_cross_entropy.value_and_grad(env.floats(b.z), env.floats(y))
        ref = oracle("dense_ce", b.z, y)
        dl = oracle("dense_label_grad", b.z, None, 0.0, "uniform")
        rows += [(b.kind, "value", ulps(env.host(loss), ref[0], None, env.dtype)),
                 (b.kind, "gradient", ulps(env.host(grads["logits"]), ref[1], ref[2], env.dtype)),
                 (b.kind, "label gradient", ulps(env.host(grads["labels"]), dl, None, env.dtype))]
    return rows


def _dense_others(env: Env) -> Rows:
    """Label gradient of label_smoothing_mode="others", next to masking logits."""
    rows: Rows = []
    for b in _rounded_logits(env):
        y = np.zeros(b.z.shape)
        y[np.arange(len(b.t)), b.t] = 1.0
        _, grads = rs.softmax_cross_entropy.value_and_grad(
            env.floats(b.z), env.floats(y), label_smoothing=0.25, label_smoothing_mode="others")
        dl = oracle("dense_label_grad", b.z, None, 0.25, "others")
        rows.append((b.kind, "label gradient", ulps(env.host(grads["labels"]), dl, None, env.dtype)))
    return rows


def _lse(env: Env) -> Rows:
    rows: Rows = []
    for b in _rounded_logits(env):
        value, grads = rs.logsumexp.value_and_grad(env.floats(b.z))
        ref = oracle("logsumexp", b.z)
        rows += [(b.kind, "value", ulps(env.host(value), ref[0], ref[1], env.dtype)),
                 (b.kind, "gradient", ulps(env.host(grads["x"]), ref[2], None, env.dtype))]
    return rows


def _log_softmax(env: Env) -> Rows:
    rows: Rows = []
    for b in _rounded_logits(env):
        ref = oracle("log_softmax", b.z)
        rows.append((b.kind, "value", ulps(env.host(rs.log_softmax(env.floats(b.z))), ref[0], None, env.dtype)))
    return rows


def _softmax(env: Env) -> Rows:
    rows: Rows = []
    for b in _rounded_logits(env):
        ref = oracle("logsumexp", b.z)
        rows.append((b.kind, "value", ulps(env.host(rs.softmax(env.floats(b.z))), ref[2], None, env.dtype)))
    return rows


def _multi_hot(b: Logits) -> np.ndarray:
    y = np.zeros(b.z.shape)
    y[np.arange(len(b.t)), b.t] = 1.0
    y[np.arange(len(b.t)), (b.t + 3) % b.z.shape[1]] = 1.0  # a second positive per row
    return y


def _multilabel(env: Env) -> Rows:
    rows: Rows = []
    for b in _rounded_logits(env):
        y = _multi_hot(b)
        loss, grads = rs.multilabel_categorical_cross_entropy.value_and_grad(env.floats(b.z), env.floats(y))
        ref = oracle("multilabel_ce", b.z, y)
        rows += [(b.kind, "value", ulps(env.host(loss), ref[0], None, env.dtype)),
                 (b.kind, "gradient", ulps(env.host(grads["logits"]), ref[1], None, env.dtype))]
    return rows


def _multilabel_as(env: Env) -> Rows:
    rows: Rows = []
    for b in _rounded_logits(env):
        y = _multi_hot(b)
        loss, grads = rs.multilabel_as_softmax_loss.value_and_grad(env.floats(b.z), env.floats(y), delta=0.1)
        kn, kp = oracle("multilabel_as_masks", b.z, y, 0.1)
        ref = oracle("multilabel_ce", b.z, y, kn, kp)
        rows += [(b.kind, "value", ulps(env.host(loss), ref[0], None, env.dtype)),
                 (b.kind, "gradient", ulps(env.host(grads["logits"]), ref[1], None, env.dtype))]
    return rows


def _fenchel_young(kind: str) -> Callable[[Env], Rows]:
    loss_fn = rs.sparsemax_loss if kind == "sparsemax" else rs.entmax15_loss
    map_fn = rs.sparsemax if kind == "sparsemax" else rs.entmax15

    def check(env: Env) -> Rows:
        rows: Rows = []
        for b in _rounded_logits(env):
            if b.kind.startswith("huge") or b.kind.startswith("masking"):
                continue  # the maps are not shift-invariant in this sense: covered by the ties/confident rows
            loss, grads = loss_fn.value_and_grad(env.floats(b.z), env.ints(b.t))
            ref = oracle("fenchel_young", b.z, b.t, kind)
            rows += [(b.kind, "value", ulps(env.host(loss), *ref["value"], env.dtype)),
                     (b.kind, "gradient", ulps(env.host(grads["logits"]), *ref["gradient"], env.dtype)),
                     (b.kind, "map", ulps(env.host(map_fn(env.floats(b.z))), *ref["map"], env.dtype))]
        return rows
    return check


def _linear(env: Env) -> Rows:
    rows: Rows = []
    for b in linear_batches(env.dtype):
        loss, grads = rs.linear_softmax_cross_entropy.value_and_grad(
            env.floats(b.w), env.floats(b.b), env.ints(b.t), env.floats(b.x))
        ref = oracle("linear_ce", b.w, b.b, b.t, b.x)
        rows.append((b.kind, "value", ulps(env.host(loss), *ref["value"], env.dtype)))
        for name in ("weights", "biases", "inputs"):
            rows.append((b.kind, f"d {name}", ulps(env.host(grads[name]), *ref[name], env.dtype)))
    return rows


def _sampled_call(env: Env, s: Sampled) -> tuple[tuple[Any, ...], SampledValues]:
    cands, tec, sec = s.sv
    sv = SampledValues(env.ints(cands), env.floats(env.round(tec)), env.floats(env.round(sec)))
    args = (env.floats(s.lin.w), env.floats(s.lin.b), env.ints(s.labels), env.floats(s.lin.x))
    return args, sv


def _sampled_softmax(env: Env) -> Rows:
    rows: Rows = []
    for s in sampled_batches(env.dtype):
        args, sv = _sampled_call(env, s)
        loss, grads = rs.sampled_softmax_loss.value_and_grad(
            *args, len(s.sv[0]), len(s.lin.w), 1, sv)
        cands, tec, sec = s.sv
        ref = oracle("sampled_softmax", s.lin.w, s.lin.b, s.labels, s.lin.x, cands, env.round(tec), env.round(sec))
        rows.append((s.kind, "value", ulps(env.host(loss), *ref["value"], env.dtype)))
        for name in ("weights", "biases", "inputs"):
            g = grads[name].to_dense() if hasattr(grads[name], "to_dense") else grads[name]
            rows.append((s.kind, f"d {name}", ulps(env.host(g), *ref[name], env.dtype)))
    return rows


def _sigmoid_family(name: str) -> Callable[[Env], Rows]:
    fn = getattr(rs, name)
    nce = name == "nce_loss"

    def check(env: Env) -> Rows:
        rows: Rows = []
        for s in sampled_batches(env.dtype):
            args, sv = _sampled_call(env, s)
            loss, grads = fn.value_and_grad(*args, len(s.sv[0]), len(s.lin.w), 1, sv,
                                            remove_accidental_hits=True)
            cands, tec, sec = s.sv
            ref = oracle("sigmoid_family", s.lin.w, s.lin.b, s.labels, s.lin.x, cands, env.round(tec),
                                    env.round(sec), true_label="1/T" if nce else "1",
                                    subtract_log_q=nce, remove_hits=True)
            rows.append((s.kind, "value", ulps(env.host(loss), *ref["value"], env.dtype)))
            for arg in ("weights", "biases", "inputs"):
                g = grads[arg].to_dense() if hasattr(grads[arg], "to_dense") else grads[arg]
                rows.append((s.kind, f"d {arg}", ulps(env.host(g), *ref[arg], env.dtype)))
        return rows
    return check


def _am_softmax(env: Env) -> Rows:
    rows: Rows = []
    for b in feature_batches(env.dtype):
        f, w = env.round(b.f), env.round(b.w)
        loss, grads = rs.am_softmax_loss.value_and_grad(env.floats(f), env.floats(w), env.ints(b.t))
        ref = oracle("am_softmax", f, w, b.t, 30.0, 0.35)
        rows.append((b.kind, "value", ulps(env.host(loss), *ref["value"], env.dtype)))
        for name in ("features", "weights"):
            rows.append((b.kind, f"d {name}", ulps(env.host(grads[name]), *ref[name], env.dtype)))
    return rows


_WEIGHTS = np.array([0.5, 2.0, 1.0, 3.0, 0.25, 1.5])

CHECKS: dict[str, Callable[[Env], Rows]] = {
    "logsumexp": _lse,
    "log_softmax": _log_softmax,
    "softmax": _softmax,
    "sparse_softmax_cross_entropy": _sparse_like(rs.sparse_softmax_cross_entropy, {}),
    "sparse_softmax_cross_entropy (smoothing 0.1)": _sparse_like(
        rs.sparse_softmax_cross_entropy, {"eps": 0.1}, label_smoothing=0.1),
    "sparse_softmax_cross_entropy (smoothing 0.1, others)": _sparse_like(
        rs.sparse_softmax_cross_entropy, {"eps": 0.1, "mode": "others"},
        label_smoothing=0.1, label_smoothing_mode="others"),
    "sparse_softmax_cross_entropy (class weights)": _sparse_like(
        rs.sparse_softmax_cross_entropy, {"class_weights": _WEIGHTS}, class_weights=_WEIGHTS),
    "sparse_softmax_cross_entropy (z-loss 1e-2)": _z_cap(1e-2, None),
    "sparse_softmax_cross_entropy (soft-cap 30)": _z_cap(0.0, 30.0),
    "softmax_cross_entropy": _dense,
    "softmax_cross_entropy (others smoothing)": _dense_others,
    "temperature_softmax_cross_entropy (T = 2)": _sparse_like(
        rs.temperature_softmax_cross_entropy, {"temperature": 2.0}, temperature=2.0),
    "topk_softmax_cross_entropy (k = 3)": _topk,
    "as_softmax_cross_entropy (δ = 0.1)": _as_softmax,
    "multilabel_categorical_cross_entropy": _multilabel,
    "multilabel_as_softmax_loss (δ = 0.1)": _multilabel_as,
    "sparsemax_loss / sparsemax": _fenchel_young("sparsemax"),
    "entmax15_loss / entmax15": _fenchel_young("entmax15"),
    "linear_softmax_cross_entropy": _linear,
    "sampled_softmax_loss": _sampled_softmax,
    "nce_loss": _sigmoid_family("nce_loss"),
    "negative_sampling_loss": _sigmoid_family("negative_sampling_loss"),
    "am_softmax_loss (s = 30, m = 0.35)": _am_softmax,
}


@dataclass
class Result:
    function: str
    quantity: str
    worst_ulp: float
    where: str


def measure(env: Env, names: list[str] | None = None) -> list[Result]:
    """Worst ulp error per (function, quantity) over every batch, with the batch kind it occurred in."""
    worst: dict[tuple[str, str], Result] = {}
    for name, check in CHECKS.items():
        if names is not None and name not in names:
            continue
        with np.errstate(all="ignore"):
            rows = check(env)
        for kind, quantity, err in rows:
            key = (name, quantity)
            if key not in worst or err > worst[key].worst_ulp:
                worst[key] = Result(name, quantity, err, kind)
    return list(worst.values())


def _quantities() -> list[tuple[str, str]]:
    """Every (function, quantity) the suite reports, from one float64 NumPy measurement's layout."""
    out = []
    for name, check in CHECKS.items():
        del check
        base = ["value", "gradient"]
        if name.startswith("softmax_cross_entropy ("):
            base = ["label gradient"]
        elif name == "softmax_cross_entropy":
            base = ["value", "gradient", "label gradient"]
        elif name in ("log_softmax", "softmax"):
            base = ["value"]
        elif "sparsemax" in name or "entmax" in name:
            base = ["value", "gradient", "map"]
        elif name.startswith(("linear", "sampled", "nce", "negative")):
            base = ["value", "d weights", "d biases", "d inputs"]
        elif name.startswith("am_softmax"):
            base = ["value", "d features", "d weights"]
        out += [(name, q) for q in base]
    return out


QUANTITIES = _quantities()

"""The multi-label losses' NaN / ±∞ policy and their accuracy against a 50-digit mpmath oracle.

* NaN logit → that example's loss and whole gradient row NaN, other rows untouched, never a
  zero-loss example in ``ZeroLossStats``;
* ±∞ logits → the mathematical limit (derived in ``refsoftmax.multilabel.log1p_sum_exp``),
  checked against explicit values and against the finite formula at ±1e300;
* value and gradient within 8 ulp (float64) of the exact value, and within 4 float32 ulps of
  the correctly rounded value for float32 inputs, including confident rows (margins up to 700).
"""

from __future__ import annotations

import functools
from typing import Any

import mpmath
import numpy as np
import pytest

import refsoftmax as rs

ML = rs.multilabel_categorical_cross_entropy
MLAS = rs.multilabel_as_softmax_loss
FUNCTIONS = [
    pytest.param(ML, {}, id="mlcce"),
    pytest.param(MLAS, {"delta": 0.1}, id="mlas-0.1"),
    pytest.param(MLAS, {"delta": 0.5}, id="mlas-0.5"),
]
MAX_ULP_FLOAT64 = 8.0
MAX_ULP_FLOAT32 = 4.0


def _run(backend, fn, kw, z, y, reduction="none"):
    """``(value, grad, residuals)`` as NumPy (value/grad) through forward + backward."""
    value, res = fn.forward(backend.asarray(z), backend.asarray(y), reduction=reduction, **kw)
    grads = fn.backward(res, res.xp.ones_like(value))
    return backend.to_numpy(value), backend.to_numpy(grads["logits"]), res


def _masks(backend, fn, res, y):
    """The kept terms (all of them for the plain loss), as NumPy."""
    if fn is ML:
        return y == 0, y == 1
    return backend.to_numpy(res.kept_neg), backend.to_numpy(res.kept_pos)


# ---------------------------------------------------------------- mpmath oracle

@functools.cache
def _exact_term(v: tuple[float, ...], mask: tuple[bool, ...]) -> tuple[Any, tuple[Any, ...]]:
    """log(1 + Σ_M e^{v}) and its gradient, at 50 digits (log1p: no 1 + tiny rounding)."""
    with mpmath.workdps(50):
        ex = [mpmath.exp(mpmath.mpf(x)) if k else mpmath.mpf(0) for x, k in zip(v, mask, strict=True)]
        total = mpmath.fsum(ex)
        s = 1 + total
        return mpmath.log1p(total), tuple(e / s for e in ex)


def exact(z: np.ndarray, kept_neg: np.ndarray, kept_pos: np.ndarray):
    """Exact per-row losses and gradients (lists of mpf) for float64 logits and the kept terms."""
    values, grads = [], []
    with mpmath.workdps(50):  # a + b at 50 digits too (mpmath's default is 15)
        for row, kn, kp in zip(z.astype(np.float64), kept_neg, kept_pos, strict=True):
            a, ga = _exact_term(tuple(row.tolist()), tuple(kn.tolist()))
            b, gb = _exact_term(tuple((-row).tolist()), tuple(kp.tolist()))
            values.append(a + b)
            grads.extend(x - w for x, w in zip(ga, gb, strict=True))
    return values, grads


def _nearest(x: mpmath.mpf, dtype) -> np.floating:
    """``x`` correctly rounded to ``dtype`` (checks the neighbours: no double rounding)."""
    f = dtype(float(x))
    candidates = [f, np.nextafter(f, dtype(np.inf)), np.nextafter(f, dtype(-np.inf))]
    return min(candidates, key=lambda c: abs(mpmath.mpf(float(c)) - x))


def flushes_subnormals(backend, dtype) -> bool:
    """True where the backend flushes subnormal results to zero (XLA on CPU does)."""
    x = -745.0 + 30.0 if dtype is np.float64 else -100.0  # e^x is subnormal, not 0
    return bool(backend.to_numpy(backend.xp.exp(backend.asarray([x], dtype=dtype)))[0] == 0)


def ulp_errors(got: np.ndarray, want: list, dtype, *, ftz: bool = False) -> np.ndarray:
    """|got - exact| / ulp(exact) (float64), or |got - round(exact)| / ulp (float32) per element.

    With ``ftz`` (a backend that flushes subnormals to zero) an exact value below the smallest
    normal may come back as 0: that is the backend's arithmetic, not the loss's, and counts
    as no error (every other element is measured in ulps as usual).
    """
    tiny = mpmath.mpf(float(np.finfo(dtype).tiny))
    out = []
    with mpmath.workdps(50):
        for g, x in zip(np.asarray(got).ravel().tolist(), want, strict=True):
            if x == 0 or (ftz and g == 0 and abs(x) < tiny):
                out.append(0.0 if g == 0 else np.inf)
                continue
            r = _nearest(x, dtype)
            ulp = mpmath.mpf(float(np.spacing(np.abs(r))))
            ref = x if dtype is np.float64 else mpmath.mpf(float(r))
            out.append(float(abs(mpmath.mpf(g) - ref) / ulp))
    return np.asarray(out)


def oracle_rows(dtype, n: int = 160, c: int = 7, seed: int = 7):
    """Random rows, confident rows (margins up to 700; 100 in float32, where e^-104 is 0),
    confident rows with one wrong class (shift m > 0 and terms down to e^-700: the TwoSum
    path), and rows with ties and exact zeros."""
    rng = np.random.default_rng(seed)
    top = 700.0 if dtype is np.float64 else 100.0
    zs, ys = [], []
    for i in range(n):
        y = (rng.random(c) < 0.4).astype(np.int64)
        kind = i % 4
        if kind == 0:
            z = rng.standard_normal(c) * rng.choice([0.1, 1.0, 5.0, 30.0])
        elif kind in (1, 2):
            margin = rng.uniform(1.0, top, c)
            z = np.where(y == 1, margin, -margin)
            if kind == 2:
                j = rng.integers(0, c)
                z[j] = (1.0 if y[j] == 0 else -1.0) * rng.uniform(0.0, 5.0)
        else:
            z = rng.choice([-3.0, -1.0, 0.0, 0.5, 2.0, 2.0], c)
        zs.append(z)
        ys.append(y)
    # fixed cases: all negatives at -40 (old code: loss exactly 0), all at the largest margin
    zs += [np.array([40.0] + [-40.0] * (c - 1)), np.array([top] + [-top] * (c - 1))]
    ys += [np.array([1] + [0] * (c - 1))] * 2
    return np.asarray(zs).astype(dtype), np.asarray(ys)


@pytest.mark.parametrize(("fn", "kw"), FUNCTIONS)
def test_float64_within_8_ulp_of_mpmath(backend, fn, kw):
    z, y = oracle_rows(np.float64)
    value, grad, res = _run(backend, fn, kw, z, y)
    want_v, want_g = exact(z, *_masks(backend, fn, res, y))
    err_v = ulp_errors(value, want_v, np.float64)
    err_g = ulp_errors(grad, want_g, np.float64)
    assert err_v.max() <= MAX_ULP_FLOAT64, (err_v.max(), z[err_v.argmax()], y[err_v.argmax()])
    assert err_g.max() <= MAX_ULP_FLOAT64, (err_g.max(), z[err_g.argmax() // z.shape[1]])
    if fn is ML:  # the confident rows are tiny but not 0 (log(1 + tiny) gave exactly 0)
        assert value[-2] > 0 and value[-1] > 0


@pytest.mark.parametrize(("fn", "kw"), FUNCTIONS)
def test_float32_within_4_ulp_of_correct_rounding(backend, fn, kw):
    z, y = oracle_rows(np.float32)
    value, grad, res = _run(backend, fn, kw, z, y)
    assert value.dtype == np.float32 and grad.dtype == np.float32
    want_v, want_g = exact(z, *_masks(backend, fn, res, y))  # exact for the float32 inputs
    # margins up to 100: e^-100 is subnormal in float32, flushed to 0 by XLA (see ulp_errors)
    ftz = flushes_subnormals(backend, np.float32)
    err_v = ulp_errors(value, want_v, np.float32, ftz=ftz)
    err_g = ulp_errors(grad, want_g, np.float32, ftz=ftz)
    tiny = np.finfo(np.float32).tiny
    sub_v = np.abs(np.asarray([float(x) for x in want_v])) < tiny
    sub_g = np.abs(np.asarray([float(x) for x in want_g])) < tiny
    assert err_v[~sub_v].max() <= MAX_ULP_FLOAT32, (err_v.max(), z[err_v.argmax()], y[err_v.argmax()])
    assert err_g[~sub_g].max() <= MAX_ULP_FLOAT32, (err_g.max(), z[err_g.argmax() // z.shape[1]])
    # A subnormal result (below 1.2e-38) has no relative accuracy to keep: each of its terms
    # e^{v_i} is already rounded to the fixed grid of 2^-149 (the ulp there) before the sum, so
    # a loss summing C such terms is off by up to C/2 grid steps, plus the backend's exp error
    # in that range (torch: one more step).  Measured in those steps the bound is C.
    c = z.shape[1]
    assert sub_v.any() and sub_g.any()  # the float32 rows do reach the subnormal range
    assert err_v[sub_v].max() <= c and err_g[sub_g].max() <= c


def test_confident_example_hand_values(backend):
    # every negative at -40, the positive at +40: 3 e^-40 (= 1.2745e-17), not 0
    z = np.array([[40.0, -40.0, -40.0]])
    value, grad, _ = _run(backend, ML, {}, z, np.array([[1, 0, 0]]))
    e = np.exp(-40.0)
    np.testing.assert_allclose(value, [3 * e], rtol=4e-16)
    np.testing.assert_allclose(grad, [[-e, e, e]], rtol=4e-16)


def test_as_mask_matches_exact_probabilities(backend):
    """The AS mask agrees with the one from exact probabilities (away from the boundary)."""
    z, y = oracle_rows(np.float64)
    _, _, res = _run(backend, MLAS, {"delta": 0.1}, z, y)
    kept_neg, kept_pos = _masks(backend, MLAS, res, y)
    with mpmath.workdps(50):
        for row, yr, kn, kp in zip(z, y, kept_neg, kept_pos, strict=True):
            ex = [mpmath.exp(mpmath.mpf(float(x))) for x in row]
            s = mpmath.fsum(ex)
            p = [e / s for e in ex]
            p_min = min((p[i] for i in range(len(p)) if yr[i]), default=mpmath.inf)
            p_max = max((p[i] for i in range(len(p)) if not yr[i]), default=-mpmath.inf)
            for i in range(len(p)):
                gap = (p_min - p[i]) if not yr[i] else (p[i] - p_max)
                if abs(gap - mpmath.mpf(0.1)) < mpmath.mpf("1e-12"):
                    continue
                assert bool(kn[i] or kp[i]) == bool(gap <= mpmath.mpf(0.1))


# ---------------------------------------------------------------- NaN

NAN_ROWS = np.array([
    [1.0, -2.0, 0.5, 3.0],
    [np.nan, -2.0, 0.5, 3.0],   # NaN on a positive
    [1.0, np.nan, 0.5, 3.0],    # NaN on a negative
    [4.0, -3.0, 1.0, -5.0],     # AS: nothing kept, loss exactly 0
    [4.0, -3.0, np.nan, -5.0],  # ... plus a NaN on a class the mask would drop
    [0.2, np.nan, -1.0, 0.0],   # no positive (AS: loss 0 whatever the logits) - still NaN
])
NAN_TARGETS = np.array([
    [1, 0, 0, 1],
    [1, 0, 0, 1],
    [1, 0, 0, 1],
    [1, 0, 0, 0],
    [1, 0, 0, 0],
    [0, 0, 0, 0],
])


@pytest.mark.parametrize(("fn", "kw"), FUNCTIONS)
def test_nan_row_gives_nan_loss_and_gradient(backend, fn, kw):
    nan = np.isnan(NAN_ROWS).any(axis=1)
    value, grad, res = _run(backend, fn, kw, NAN_ROWS, NAN_TARGETS)
    assert np.isnan(value[nan]).all()
    assert np.isnan(grad[nan]).all()  # every class of the row, never 0
    assert not np.isnan(value[~nan]).any() and not np.isnan(grad[~nan]).any()
    # the other rows are exactly what they are without the NaN rows
    clean_v, clean_g, clean_res = _run(backend, fn, kw, NAN_ROWS[~nan], NAN_TARGETS[~nan])
    np.testing.assert_array_equal(value[~nan], clean_v)
    np.testing.assert_array_equal(grad[~nan], clean_g)
    if fn is MLAS:
        # NaN examples count as examples but never as zero-loss ones
        assert res.stats == rs.ZeroLossStats(len(NAN_ROWS), clean_res.stats.num_zero_loss)
        assert clean_res.stats.num_zero_loss == int((clean_v == 0).sum()) >= 1
        if kw["delta"] < 0.5:
            assert value[3] == 0.0  # the clean twin of row 4 is a zero-loss example
        # a NaN row keeps every term
        kept = backend.to_numpy(res.kept_neg) | backend.to_numpy(res.kept_pos)
        assert kept[nan].all()


@pytest.mark.parametrize(("fn", "kw"), FUNCTIONS)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_nan_row_reduced(backend, fn, kw, reduction):
    nan = np.isnan(NAN_ROWS).any(axis=1)
    value, grad, _ = _run(backend, fn, kw, NAN_ROWS, NAN_TARGETS, reduction=reduction)
    assert np.isnan(value)
    assert np.isnan(grad[nan]).all() and not np.isnan(grad[~nan]).any()
    _, per_row, _ = _run(backend, fn, kw, NAN_ROWS, NAN_TARGETS)
    scale = 1.0 if reduction == "sum" else 1.0 / len(NAN_ROWS)
    np.testing.assert_allclose(grad[~nan], per_row[~nan] * scale, rtol=1e-15)


def test_nan_stats_feed_the_schedule():
    """Stats of a batch whose only 'satisfied-looking' row is NaN: no zero-loss example."""
    z = np.array([[4.0, np.nan, 1.0], [0.1, 0.0, 0.2]])
    y = np.array([[1, 0, 0], [1, 0, 1]])
    _, res = MLAS.forward(z, y, delta=0.1)
    assert res.stats == rs.ZeroLossStats(2, 0)
    assert rs.accumulation_steps(*res.stats) == 1


# ---------------------------------------------------------------- ±∞

def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


BIG = 1e300
# (logits, targets, expected loss, expected gradient): the derived limits
INF_CASES = [
    # one negative at +inf: first term +inf, gradient 1 there and 0 on the other negatives;
    # the positive term log(1 + e^-1) is untouched: gradient -sigmoid(-1)
    ([1.0, np.inf, 0.0], [1, 0, 0], np.inf, [-_sigmoid(-1.0), 1.0, 0.0]),
    # two negatives at +inf share equally
    ([1.0, np.inf, np.inf, -2.0], [1, 0, 0, 0], np.inf, [-_sigmoid(-1.0), 0.5, 0.5, 0.0]),
    # one positive at -inf: second term +inf, gradient -1 there, 0 on the other positive
    ([-np.inf, 2.0, -1.0], [1, 1, 0], np.inf, [-1.0, 0.0, _sigmoid(-1.0)]),
    # three positives at -inf: -1/3 each
    ([-np.inf, -np.inf, -np.inf, -1.0], [1, 1, 1, 0], np.inf, [-1 / 3, -1 / 3, -1 / 3, _sigmoid(-1.0)]),
    # mixed: each term on its own
    ([-np.inf, np.inf, 0.5, -0.5], [1, 0, 1, 0], np.inf, [-1.0, 1.0, 0.0, 0.0]),
    # a positive at +inf and a negative at -inf contribute nothing: log(1 + e^-2) + log(1 + e^-3)
    ([np.inf, -np.inf, 2.0, -3.0], [1, 0, 1, 0],
     np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-3.0)), [0.0, 0.0, -_sigmoid(-2.0), _sigmoid(-3.0)]),
    # every logit -inf: negatives contribute 0, the positive +inf
    ([-np.inf, -np.inf, -np.inf], [1, 0, 0], np.inf, [-1.0, 0.0, 0.0]),
]


@pytest.mark.parametrize(("fn", "kw"), FUNCTIONS)
@pytest.mark.parametrize("case", range(len(INF_CASES)))
def test_infinite_logits_give_the_limit(backend, fn, kw, case):
    z, y, want_value, want_grad = INF_CASES[case]
    z, y = np.array([z]), np.array([y])
    value, grad, res = _run(backend, fn, kw, z, y)
    # the AS mask keeps every term that matters here (an infinitely wrong class has p = 1/k,
    # or p = 0 with p_min = 0, so its gap is <= 0; the terms it drops are 0 in the limit):
    # the AS form has the plain loss's limit
    assert value[0] == pytest.approx(want_value, rel=4e-16)
    np.testing.assert_allclose(grad[0], want_grad, rtol=4e-16, atol=0)
    # the finite formula at a large stand-in has the same gradient (the limit is attained)
    # and a huge (or the same finite) value
    stand_in = np.where(np.isinf(z), np.sign(z) * BIG, z)
    big_value, big_grad, _ = _run(backend, fn, kw, stand_in, y)
    np.testing.assert_allclose(big_grad, grad, rtol=4e-16, atol=0)
    if np.isinf(want_value):
        assert big_value[0] >= BIG
    else:
        assert big_value[0] == value[0]
    if fn is MLAS:
        assert res.stats.num_zero_loss == 0


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_infinite_logit_reduced(backend, reduction):
    z = np.array([[1.0, np.inf, 0.0], [0.5, -0.5, 2.0]])
    y = np.array([[1, 0, 0], [1, 0, 1]])
    value, grad, _ = _run(backend, ML, {}, z, y, reduction=reduction)
    assert value == np.inf and np.isfinite(grad).all()
    _, per_row, _ = _run(backend, ML, {}, z, y)
    np.testing.assert_allclose(grad, per_row * (1.0 if reduction == "sum" else 0.5), rtol=1e-15)


def test_as_single_kind_rows_stay_zero_with_infinities(backend):
    """No negative (or no positive): the AS loss is identically 0, also at ±∞ logits."""
    z = np.array([[-np.inf, 1.0, np.inf], [np.inf, -np.inf, 0.0]])
    y = np.array([[1, 1, 1], [0, 0, 0]])
    value, grad, res = _run(backend, MLAS, {"delta": 0.1}, z, y)
    np.testing.assert_array_equal(value, [0.0, 0.0])
    np.testing.assert_array_equal(grad, np.zeros_like(z))
    assert res.stats == rs.ZeroLossStats(2, 2)
    # the plain loss does see them
    plain, _, _ = _run(backend, ML, {}, z, y)
    np.testing.assert_array_equal(plain, [np.inf, np.inf])


def test_no_classes(backend):
    z = np.zeros((2, 0))
    y = np.zeros((2, 0), dtype=np.int64)
    for fn, kw in ((ML, {}), (MLAS, {"delta": 0.1})):
        value, grad, _ = _run(backend, fn, kw, z, y)
        np.testing.assert_array_equal(value, [0.0, 0.0])
        assert grad.shape == (2, 0)

"""AS-Softmax, the multi-label losses and the accumulation / δ schedules."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

import refsoftmax as rs

AS = rs.as_softmax_cross_entropy
ML = rs.multilabel_categorical_cross_entropy
MLAS = rs.multilabel_as_softmax_loss


def as_oracle(z, t, delta):
    """Independent NumPy: mask from scipy's softmax, loss from scipy's logsumexp."""
    p = special.softmax(z, axis=-1)
    p_t = np.take_along_axis(p, t[..., None], -1)
    kept = ~((p_t - p) > delta)
    lse = special.logsumexp(np.where(kept, z, -np.inf), axis=-1)
    return lse - np.take_along_axis(z, t[..., None], -1)[..., 0], kept


def ml_oracle(z, y, kept_neg=None, kept_pos=None):
    neg = (y == 0) if kept_neg is None else (y == 0) & kept_neg
    pos = (y == 1) if kept_pos is None else (y == 1) & kept_pos
    a = np.log1p(np.sum(np.where(neg, np.exp(z), 0.0), axis=-1))
    b = np.log1p(np.sum(np.where(pos, np.exp(-z), 0.0), axis=-1))
    return a + b


# ---------------------------------------------------------------- AS-Softmax

@pytest.mark.parametrize("delta", [0.0, 0.05, 0.3, 0.9])
def test_as_softmax_matches_oracle(backend, rng, delta):
    z = rng.standard_normal((3, 4, 7)) * 2
    t = rng.integers(0, 7, (3, 4))
    expected, kept = as_oracle(z, t, delta)
    value, res = AS.forward(backend.asarray(z), backend.asarray(t), delta=delta)
    np.testing.assert_allclose(backend.to_numpy(value), expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(backend.to_numpy(res.kept), kept)
    assert res.stats.num_examples == 12
    assert res.stats.num_zero_loss == int((kept.sum(-1) == 1).sum())


def test_as_softmax_gradcheck_away_from_the_boundary(backend, rng):
    for seed in range(4):
        r = np.random.default_rng(seed)
        z = r.standard_normal((4, 6)) * 2
        t = r.integers(0, 6, 4)
        p = special.softmax(z, -1)
        margin = np.abs(np.take_along_axis(p, t[:, None], 1) - p - 0.1).min()
        if margin < 1e-3:
            continue  # too close to where the mask changes
        rs.gradcheck(AS, (backend.asarray(z), backend.asarray(t)), delta=0.1, reduction="mean")


def test_delta_at_least_one_is_softmax_cross_entropy(backend, rng):
    z = rng.standard_normal((5, 8))
    t = rng.integers(0, 8, 5)
    w = rng.uniform(0.5, 2, 8)
    for delta in (1.0, 3.5):
        a, ga = AS.value_and_grad(backend.asarray(z), backend.asarray(t), delta=delta,
                                  class_weights=backend.asarray(w), reduction="mean")
        b, gb = rs.sparse_softmax_cross_entropy.value_and_grad(
            backend.asarray(z), backend.asarray(t), class_weights=backend.asarray(w), reduction="mean")
        np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-15)
        np.testing.assert_allclose(backend.to_numpy(ga["logits"]), backend.to_numpy(gb["logits"]), rtol=1e-15)
    # forward values are bit-identical (same code path, no mask)
    a = AS(backend.asarray(z), backend.asarray(t), delta=1.0)
    b = rs.sparse_softmax_cross_entropy(backend.asarray(z), backend.asarray(t))
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


def test_hand_worked_example():
    """docs/losses/as_softmax.md: z = [3, 0, 2.9], t = 0, δ = 0.1."""
    z = np.array([[3.0, 0.0, 2.9]])
    # p = e^z / (e^3 + 1 + e^2.9) = [0.5118, 0.0255, 0.4631]; p_t - p = [0, 0.4863, 0.0487]
    # class 1 is dropped (0.4863 > 0.1); the loss is log(e^3 + e^2.9) - 3 = 0.6444
    value, grads = AS.value_and_grad(z, np.array([0]), delta=0.1)
    assert np.round(value[0], 4) == 0.6444
    # gradient: softmax over {0, 2} minus e_t = [0.5250 - 1, 0, 0.4750]
    np.testing.assert_allclose(np.round(grads["logits"][0], 4), [-0.4750, 0.0, 0.4750])


def test_satisfied_example_has_zero_loss_and_gradient(backend):
    z = backend.asarray([[5.0, 0.0, -1.0], [0.0, 0.1, 0.2]])
    value, grads = AS.value_and_grad(z, backend.asarray([0, 2]), delta=0.1)
    v = backend.to_numpy(value)
    assert v[0] == 0.0 and v[1] > 0
    np.testing.assert_array_equal(backend.to_numpy(grads["logits"])[0], 0.0)


@given(hnp.arrays(np.float64, (4, 5), elements=st.floats(-8, 8)), st.floats(0, 1.2),
       hnp.arrays(np.int64, (4,), elements=st.integers(0, 4)))
def test_as_softmax_properties(backend, z, delta, t):
    value, grads = AS.value_and_grad(backend.asarray(z), backend.asarray(t), delta=delta)
    _, res = AS.forward(backend.asarray(z), backend.asarray(t), delta=delta)
    v = backend.to_numpy(value)
    g = backend.to_numpy(grads["logits"])
    kept = backend.to_numpy(res.kept)
    assert (v >= 0).all()
    np.testing.assert_array_equal(g[~kept], 0.0)  # excluded classes: exactly 0
    zero = kept.sum(-1) == 1
    np.testing.assert_array_equal(v[zero], 0.0)
    np.testing.assert_array_equal(g[zero], 0.0)
    assert res.stats.num_zero_loss == int(zero.sum())


def test_as_softmax_ignore_index_and_nan(backend):
    z = backend.asarray([[1.0, 2.0, 3.0], [np.nan, 0.0, 1.0], [0.0, 0.0, 0.0]])
    value, res = AS.forward(z, backend.asarray([2, 1, -1]), delta=0.1, ignore_index=-1)
    v = backend.to_numpy(value)
    assert np.isnan(v[1]) and v[2] == 0.0
    assert res.stats.num_examples == 2


@pytest.mark.parametrize("delta, exc", [(-0.1, ValueError), (float("nan"), ValueError),
                                        (float("inf"), ValueError), ("0.1", TypeError)])
def test_bad_delta(delta, exc):
    with pytest.raises(exc, match="delta must be"):
        AS(np.zeros((1, 3)), np.array([0]), delta=delta)
    with pytest.raises(exc, match="delta must be"):
        MLAS(np.zeros((1, 3)), np.array([[1, 0, 0]]), delta=delta)


def test_as_softmax_labels_out_of_range():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got 3"):
        AS(np.zeros((1, 3)), np.array([3]))


# ---------------------------------------------------------------- multi-label

def test_multilabel_matches_oracle_and_gradcheck(backend, rng):
    z = rng.standard_normal((4, 6)) * 3
    y = (rng.random((4, 6)) > 0.5).astype(np.int64)
    y[0] = 0  # no positive
    y[1] = 1  # no negative
    value = ML(backend.asarray(z), backend.asarray(y))
    np.testing.assert_allclose(backend.to_numpy(value), ml_oracle(z, y), rtol=1e-13)
    rs.gradcheck(ML, (backend.asarray(z), backend.asarray(y)), reduction="mean")


def test_multilabel_as_matches_authors_rule(backend, rng):
    z = rng.standard_normal((6, 5)) * 2
    y = (rng.random((6, 5)) > 0.6).astype(np.float64)
    y[0] = 0
    y[1] = 1
    y[2] = [1, 0, 0, 0, 0]
    p = special.softmax(z, -1)
    p_min = np.where(y == 1, p, np.inf).min(-1, keepdims=True)
    p_max = np.where(y == 1, -np.inf, p).max(-1, keepdims=True)
    expected = ml_oracle(z, y, kept_neg=(p_min - p) <= 0.1, kept_pos=(p - p_max) <= 0.1)
    value, res = MLAS.forward(backend.asarray(z), backend.asarray(y), delta=0.1)
    v = backend.to_numpy(value)
    np.testing.assert_allclose(v, expected, rtol=1e-13, atol=1e-15)
    assert v[0] == 0.0 and v[1] == 0.0  # no positive / no negative: loss exactly 0
    assert res.stats.num_zero_loss == int((expected == 0).sum())


def test_multilabel_as_gradcheck_and_large_delta(backend, rng):
    z = rng.standard_normal((4, 5))
    y = np.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 1], [0, 0, 0, 1, 1]])
    rs.gradcheck(MLAS, (backend.asarray(z), backend.asarray(y)), delta=0.05)
    # δ ≥ 1 keeps every term of examples that have both positives and negatives
    a = MLAS(backend.asarray(z), backend.asarray(y), delta=1.0)
    b = ML(backend.asarray(z), backend.asarray(y))
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-15)


def test_multilabel_hand_example():
    # z = [2, -1, 0], y = [1, 0, 0]: log(1 + e^-1 + e^0) + log(1 + e^-2) = 0.8620 + 0.1269 = 0.9889
    value, grads = ML.value_and_grad(np.array([[2.0, -1.0, 0.0]]), np.array([[1, 0, 0]]))
    assert np.round(value[0], 4) == 0.9889
    s = 1 + np.exp(-1) + 1
    np.testing.assert_allclose(grads["logits"][0], [-np.exp(-2) / (1 + np.exp(-2)), np.exp(-1) / s, 1 / s])


def test_multilabel_bad_targets():
    with pytest.raises(ValueError, match="targets must be multi-hot"):
        ML(np.zeros((1, 3)), np.array([[0.5, 0, 1]]))
    with pytest.raises(ValueError, match="targets must have the logits' shape"):
        ML(np.zeros((1, 3)), np.array([[1, 0]]))


# ---------------------------------------------------------------- schedules

def test_accumulation_steps():
    assert rs.accumulation_steps(100, 0) == 1
    assert rs.accumulation_steps(100, 50) == 2
    assert rs.accumulation_steps(100, 60) == 2  # round(2.5) = 2 (half to even, as Python)
    assert rs.accumulation_steps(100, 75, lam=1.5) == 6
    assert rs.accumulation_steps(100, 99, max_steps=8) == 8
    assert rs.accumulation_steps(10, 10, max_steps=5) == 5
    with pytest.raises(ValueError, match="pass max_steps"):
        rs.accumulation_steps(10, 10)
    with pytest.raises(ValueError, match="exceeds num_examples"):
        rs.accumulation_steps(10, 11)
    with pytest.raises(ValueError, match="lam must be"):
        rs.accumulation_steps(10, 1, lam=0)


def test_schedule_never_decreases_and_grows_by_one():
    sched = rs.AccumulationSchedule(max_steps=5)
    zero_ratios = [0.0, 0.9, 0.9, 0.0, 0.95, 0.99, 0.99, 0.99, 0.99, 0.0] * 3
    history = []
    for r in zero_ratios:
        sched.observe(100, int(100 * r))
        history.append(sched.steps)
    assert all(b >= a for a, b in itertools.pairwise(history))
    assert all(b - a <= 1 for a, b in itertools.pairwise(history))
    assert max(history) == 5
    with pytest.raises(ValueError, match="max_steps must be"):
        rs.AccumulationSchedule(max_steps=0)


def test_delta_schedule():
    assert rs.delta_schedule(0, 1000, delta_min=0.2, warmup_fraction=0.5) == 1.0
    assert rs.delta_schedule(250, 1000, delta_min=0.2, warmup_fraction=0.5) == pytest.approx(0.6)
    assert rs.delta_schedule(999, 1000, delta_min=0.2, warmup_fraction=0.5) == pytest.approx(0.2)
    assert rs.delta_schedule(5, 1000, delta_min=0.2, warmup_fraction=0.0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="delta_min must be in"):
        rs.delta_schedule(0, 10, delta_min=1.5)


@given(hnp.arrays(np.float64, (4, 5), elements=st.floats(-8, 8)),
       hnp.arrays(np.int64, (4, 5), elements=st.integers(0, 1)), st.floats(0, 1.2))
def test_multilabel_as_properties(backend, z, y, delta):
    value, grads = MLAS.value_and_grad(backend.asarray(z), backend.asarray(y), delta=delta)
    _, res = MLAS.forward(backend.asarray(z), backend.asarray(y), delta=delta)
    v = backend.to_numpy(value)
    g = backend.to_numpy(grads["logits"])
    kept = backend.to_numpy(res.kept_neg) | backend.to_numpy(res.kept_pos)
    assert (v >= 0).all()
    np.testing.assert_array_equal(g[~kept], 0.0)  # excluded terms: exactly 0
    zero = v == 0
    np.testing.assert_array_equal(g[zero], 0.0)
    assert res.stats.num_zero_loss == int(zero.sum())
    full = backend.to_numpy(ML(backend.asarray(z), backend.asarray(y)))
    assert (v <= full + 1e-12).all()  # dropping terms never increases the loss

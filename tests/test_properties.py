"""Metamorphic properties (hypothesis): relations that must hold whatever the numbers are."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refsoftmax as rs

SPARSE = rs.sparse_softmax_cross_entropy
DENSE = rs.softmax_cross_entropy

finite = st.floats(-30, 30, allow_nan=False, width=64)


@st.composite
def problems(draw, max_classes=6):
    """Logits [B, C] with integer labels and a normalised label distribution."""
    b = draw(st.integers(1, 4))
    c = draw(st.integers(1, max_classes))
    z = draw(hnp.arrays(np.float64, (b, c), elements=finite))
    t = draw(hnp.arrays(np.int64, (b,), elements=st.integers(0, c - 1)))
    raw = draw(hnp.arrays(np.float64, (b, c), elements=st.floats(0, 1)))
    raw[:, 0] += 1e-3
    y = raw / raw.sum(-1, keepdims=True)
    eps = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    return z, t, y, eps


@given(problems(), st.floats(-1e3, 1e3))
def test_shift_invariance(backend, prob, shift):
    z, t, _y, eps = prob
    a = SPARSE(backend.asarray(z), backend.asarray(t), label_smoothing=eps)
    b = SPARSE(backend.asarray(z + shift), backend.asarray(t), label_smoothing=eps)
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-9, atol=1e-9)


@given(problems())
def test_sparse_equals_dense_with_one_hot(backend, prob):
    z, t, _, eps = prob
    onehot = np.eye(z.shape[1])[t]
    for mode in ("uniform", "others"):
        a, ga = SPARSE.value_and_grad(backend.asarray(z), backend.asarray(t), label_smoothing=eps,
                                      label_smoothing_mode=mode, reduction="mean")
        b, gb = DENSE.value_and_grad(backend.asarray(z), backend.asarray(onehot), label_smoothing=eps,
                                     label_smoothing_mode=mode, reduction="mean")
        np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(backend.to_numpy(ga["logits"]), backend.to_numpy(gb["logits"]),
                                   rtol=1e-12, atol=1e-13)


@given(st.integers(0, 2), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_axis_equals_moveaxis(backend, axis, c, seed):
    rng = np.random.default_rng(seed)
    shape = [2, 3, 2]
    shape[axis] = c
    z = rng.standard_normal(shape)
    labels_shape = tuple(s for i, s in enumerate(shape) if i != axis)
    t = rng.integers(0, c, size=labels_shape)
    a, ga = SPARSE.value_and_grad(backend.asarray(z), backend.asarray(t), axis=axis, label_smoothing=0.1)
    moved = np.moveaxis(z, axis, -1)
    b, gb = SPARSE.value_and_grad(backend.asarray(moved), backend.asarray(t), label_smoothing=0.1)
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-14)
    np.testing.assert_allclose(np.moveaxis(backend.to_numpy(ga["logits"]), axis, -1),
                               backend.to_numpy(gb["logits"]), rtol=1e-14)
    y = np.moveaxis(np.eye(c)[t], -1, axis)
    d, gd = DENSE.value_and_grad(backend.asarray(z), backend.asarray(y), axis=axis)
    e, ge = DENSE.value_and_grad(backend.asarray(moved), backend.asarray(np.eye(c)[t]))
    np.testing.assert_allclose(backend.to_numpy(d), backend.to_numpy(e), rtol=1e-14)
    np.testing.assert_allclose(np.moveaxis(backend.to_numpy(gd["labels"]), axis, -1),
                               backend.to_numpy(ge["labels"]), rtol=1e-14)


@given(problems(max_classes=6), st.data())
def test_where_mask_equals_slicing_the_class_out(backend, prob, data):
    z, t, y, eps = prob
    c = z.shape[1]
    assume(c >= 2)
    drop = data.draw(st.integers(0, c - 1))
    keep = [i for i in range(c) if i != drop]
    t = np.where(t == drop, keep[0], t)
    where = np.ones(c, bool)
    where[drop] = False
    for mode in ("uniform", "others"):
        a, ga = SPARSE.value_and_grad(backend.asarray(z), backend.asarray(t), where=backend.asarray(where),
                                      label_smoothing=eps, label_smoothing_mode=mode)
        t_sliced = np.searchsorted(keep, t)
        b, gb = SPARSE.value_and_grad(backend.asarray(z[:, keep]), backend.asarray(t_sliced),
                                      label_smoothing=eps, label_smoothing_mode=mode)
        np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-13, atol=1e-13)
        g = backend.to_numpy(ga["logits"])
        np.testing.assert_allclose(g[:, keep], backend.to_numpy(gb["logits"]), rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(g[:, drop], 0.0)
    y_masked = np.where(where, y, 0.0)
    d = DENSE(backend.asarray(z), backend.asarray(y_masked), where=backend.asarray(where), label_smoothing=eps)
    e = DENSE(backend.asarray(z[:, keep]), backend.asarray(y_masked[:, keep]), label_smoothing=eps)
    np.testing.assert_allclose(backend.to_numpy(d), backend.to_numpy(e), rtol=1e-13, atol=1e-13)


@given(problems())
def test_losses_nonnegative_and_gradient_rows_sum_to_zero(backend, prob):
    z, t, y, eps = prob
    value, grads = DENSE.value_and_grad(backend.asarray(z), backend.asarray(y), label_smoothing=eps)
    assert (backend.to_numpy(value) >= 0).all()
    np.testing.assert_allclose(backend.to_numpy(grads["logits"]).sum(-1), 0.0, atol=1e-12)
    value, grads = SPARSE.value_and_grad(backend.asarray(z), backend.asarray(t), label_smoothing=eps)
    assert (backend.to_numpy(value) >= 0).all()
    np.testing.assert_allclose(backend.to_numpy(grads["logits"]).sum(-1), 0.0, atol=1e-12)


@given(problems())
def test_mean_of_slices_equals_masked_mean(backend, prob):
    """ignore_index == dropping those examples (with the default denominator)."""
    z, t, _, eps = prob
    assume(z.shape[0] >= 2)
    t_ignored = t.copy()
    t_ignored[0] = -1
    a = SPARSE(backend.asarray(z), backend.asarray(t_ignored), ignore_index=-1, reduction="mean",
               label_smoothing=eps)
    b = SPARSE(backend.asarray(z[1:]), backend.asarray(t[1:]), reduction="mean", label_smoothing=eps)
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-13)


@pytest.mark.parametrize("fn", [rs.logsumexp, rs.log_softmax, rs.softmax], ids=lambda f: f.name)
@given(z=hnp.arrays(np.float64, (3, 4), elements=finite), shift=st.floats(-100, 100))
def test_blocks_shift_relations(backend, fn, z, shift):
    a = backend.to_numpy(fn(backend.asarray(z)))
    b = backend.to_numpy(fn(backend.asarray(z + shift)))
    expected = a + shift if fn is rs.logsumexp else a
    np.testing.assert_allclose(b, expected, rtol=1e-12, atol=1e-10)

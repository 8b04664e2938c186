"""logsumexp, log_softmax and softmax against scipy.special, with gradients."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

import refsoftmax as rs

BLOCKS = [
    (rs.logsumexp, lambda z, axis: special.logsumexp(z, axis=axis)),
    (rs.log_softmax, lambda z, axis: special.log_softmax(z, axis=axis)),
    (rs.softmax, lambda z, axis: special.softmax(z, axis=axis)),
]


@pytest.mark.parametrize("fn, ref", BLOCKS, ids=lambda f: getattr(f, "name", ""))
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_matches_scipy_and_gradcheck(backend, rng, fn, ref, axis):
    z = rng.standard_normal((3, 4, 5)) * 5
    got = backend.to_numpy(fn(backend.asarray(z), axis=axis))
    np.testing.assert_allclose(got, ref(z, axis), rtol=1e-13, atol=1e-15)
    rs.gradcheck(fn, (backend.asarray(z[:2, :3, :4]),), axis=axis)


def test_logsumexp_keepdims(backend, rng):
    z = rng.standard_normal((3, 4))
    v = rs.logsumexp(backend.asarray(z), axis=0, keepdims=True)
    assert tuple(v.shape) == (1, 4)
    rs.gradcheck(rs.logsumexp, (backend.asarray(z),), axis=0, keepdims=True)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_edge_rows(backend):
    z = backend.asarray([[-np.inf, -np.inf], [-np.inf, 1.0], [np.inf, 1.0]])
    lse, grads = rs.logsumexp.value_and_grad(z)
    np.testing.assert_array_equal(backend.to_numpy(lse), [-np.inf, 1.0, np.inf])
    g = backend.to_numpy(grads["x"])
    np.testing.assert_array_equal(g[:2], [[0.0, 0.0], [0.0, 1.0]])
    p = backend.to_numpy(rs.softmax(backend.asarray([[-np.inf, 1.0, 1.0]])))
    np.testing.assert_array_equal(p, [[0.0, 0.5, 0.5]])
    lp = backend.to_numpy(rs.log_softmax(backend.asarray([[-np.inf, 0.0]])))
    np.testing.assert_array_equal(lp, [[-np.inf, 0.0]])


def test_large_values_do_not_overflow(backend):
    z = backend.asarray([[1000.0, 1000.0], [-1000.0, -1000.0]])
    np.testing.assert_allclose(backend.to_numpy(rs.logsumexp(z)), [1000 + np.log(2), -1000 + np.log(2)],
                               rtol=1e-15)


def test_rejects_integer_and_scalar_input(backend):
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        rs.softmax(backend.asarray([1, 2, 3]))
    with pytest.raises(ValueError, match="at least one dimension"):
        rs.softmax(backend.asarray(np.float64(1.0)))

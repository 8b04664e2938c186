"""z-loss and logit soft-capping on the three cross-entropies: values against an independent
formula, gradients against finite differences, accuracy of the soft-cap slope, limits, errors."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

import refsoftmax as rs
from refsoftmax._logit_transforms import soft_cap

SPARSE, DENSE, LINEAR = rs.sparse_softmax_cross_entropy, rs.softmax_cross_entropy, rs.linear_softmax_cross_entropy
OPTIONS = [
    {"z_loss": 1e-2},
    {"logit_softcap": 3.0},
    {"z_loss": 0.25, "logit_softcap": 2.0},
    {"z_loss": 1e-2, "logit_softcap": 5.0, "label_smoothing": 0.1, "weights": True},
]


def _lse(z):
    m = z.max(-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]


def oracle_sparse(z, t, *, z_loss=0.0, logit_softcap=None, label_smoothing=0.0, class_weights=None,
                  ignore_index=-100):
    """An independent float64 formula: cap, log-softmax, PyTorch's weighted smoothing, + λ lse²."""
    zc = logit_softcap * np.tanh(z / logit_softcap) if logit_softcap else z
    logp = zc - _lse(zc)[..., None]
    c = z.shape[-1]
    w = np.ones(c) if class_weights is None else class_weights
    valid = t != ignore_index
    tt = np.where(valid, t, 0)
    q = (1 - label_smoothing) * np.eye(c)[tt] + label_smoothing / c
    ce = -(q * w * logp).sum(-1)
    return np.where(valid, ce + z_loss * _lse(zc) ** 2, 0.0)


def _opts(o, rng, c):
    o = dict(o)
    if o.pop("weights", False):
        o["class_weights"] = rng.uniform(0.3, 2.0, c)
    return o


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(sorted(o)))
def test_sparse_value_and_gradient(backend, rng, opts):
    z = rng.standard_normal((2, 3, 6)) * 4
    t = rng.integers(0, 6, (2, 3))
    t[1, 2] = -100
    o = _opts(opts, rng, 6)
    expected = oracle_sparse(z, t, **o)
    args = {k: (backend.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in o.items()}
    got = SPARSE(backend.asarray(z), backend.asarray(t), ignore_index=-100, **args)
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-13, atol=1e-15)
    for reduction in ("none", "mean"):
        rs.gradcheck(SPARSE, (backend.asarray(z), backend.asarray(t)), ignore_index=-100,
                     reduction=reduction, **args)


@pytest.mark.parametrize("opts", [o for o in OPTIONS if "weights" not in o], ids=lambda o: ",".join(sorted(o)))
def test_dense_value_and_gradient(backend, rng, opts):
    z = rng.standard_normal((4, 5)) * 4
    a = np.exp(rng.standard_normal((4, 5)))
    y = a / a.sum(-1, keepdims=True)
    cap = opts.get("logit_softcap")
    zc = cap * np.tanh(z / cap) if cap else z
    expected = -(y * (zc - _lse(zc)[..., None])).sum(-1) + opts.get("z_loss", 0.0) * _lse(zc) ** 2
    got = DENSE(backend.asarray(z), backend.asarray(y), **opts)
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-13)
    rs.gradcheck(DENSE, (backend.asarray(z), backend.asarray(y)), reduction="sum", **opts)


@pytest.mark.parametrize("opts", [o for o in OPTIONS if "weights" not in o and "label_smoothing" not in o],
                         ids=lambda o: ",".join(sorted(o)))
def test_linear_equals_sparse_of_the_logits(backend, rng, opts):
    w, b, x = rng.standard_normal((11, 4)), rng.standard_normal(11), rng.standard_normal((5, 4)) * 2
    t = np.array([0, 10, 3, -100, 7])
    exact = oracle_sparse(x @ w.T + b, t, **opts)
    arrays = [backend.asarray(a) for a in (w, b, t, x)]
    got = LINEAR(*arrays, chunk_size=4, ignore_index=-100, **opts)
    np.testing.assert_allclose(backend.to_numpy(got), exact, rtol=1e-13)
    rs.gradcheck(LINEAR, arrays, chunk_size=4, ignore_index=-100, reduction="mean", **opts)


def test_defaults_are_bitwise_the_plain_loss(rng):
    z, t = rng.standard_normal((4, 7)), rng.integers(0, 7, 4)
    plain = SPARSE.value_and_grad(z, t)
    same = SPARSE.value_and_grad(z, t, z_loss=0.0, logit_softcap=None)
    np.testing.assert_array_equal(plain[0], same[0])
    np.testing.assert_array_equal(plain[1]["logits"], same[1]["logits"])


def test_z_loss_adds_lambda_logsumexp_squared(rng):
    z, t = rng.standard_normal((3, 5)) * 10, rng.integers(0, 5, 3)
    lam = 0.125
    diff = SPARSE(z, t, z_loss=lam) - SPARSE(z, t)
    np.testing.assert_allclose(diff, lam * np.asarray(rs.logsumexp(z)) ** 2, rtol=1e-14)


def test_a_huge_cap_is_no_cap(rng):
    z, t = rng.standard_normal((3, 5)), rng.integers(0, 5, 3)
    np.testing.assert_allclose(SPARSE(z, t, logit_softcap=1e8), SPARSE(z, t), rtol=1e-14)


def test_soft_cap_slope_is_accurate_where_one_minus_tanh_squared_cancels():
    z = np.array([0.0, 1e-8, 0.5, 3.0, 20.0, 60.0, -60.0, 300.0, 700.0])
    capped, slope = soft_cap(z, 2.0, xp=np)
    for zi, ci, si in zip(z, capped, slope, strict=True):
        with mpmath.workdps(50):  # local: mpmath's precision is a global other tests rely on
            u = mpmath.mpf(float(zi)) / 2
            exact_c, exact_s = 2 * mpmath.tanh(u), mpmath.sech(u) ** 2
        assert abs(ci - float(exact_c)) <= 2 * np.spacing(abs(float(exact_c)) or 1e-300)
        assert abs(si - float(exact_s)) <= 4 * np.spacing(float(exact_s)), (zi, si, float(exact_s))
    naive = 1 - np.tanh(z / 2) ** 2
    assert naive[5] == 0.0 and slope[5] > 0  # 1 - tanh² loses everything at z/c = 30


def test_soft_cap_limits_and_nan():
    z = np.array([[np.inf, 0.0, -1.0], [-np.inf, 1.0, 2.0], [np.nan, 0.0, 1.0]])
    loss, grads = SPARSE.value_and_grad(z, np.array([0, 2, 1]), logit_softcap=4.0)
    # +inf is capped to 4: a finite loss; ±inf logits get slope 0
    expected = oracle_sparse(np.where(np.isnan(z), 0.0, z)[:2], np.array([0, 2]), logit_softcap=4.0)
    np.testing.assert_allclose(loss[:2], expected, rtol=1e-13)  # (the oracle's log-softmax cancels)
    assert grads["logits"][0, 0] == 0.0 and grads["logits"][1, 0] == 0.0
    assert np.isnan(loss[2]) and np.isnan(grads["logits"][2]).all()


def test_z_loss_limits(rng):
    z = np.array([[np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]])
    loss = SPARSE(z, np.array([0, 1]), z_loss=0.1)
    assert loss[0] == math.inf and np.isfinite(loss[1])
    # an ignored example adds no z-loss, even with a NaN row
    z2 = np.array([[np.nan, 0.0], [1.0, 2.0]])
    loss2, grads2 = SPARSE.value_and_grad(z2, np.array([-1, 0]), ignore_index=-1, z_loss=0.1)
    assert loss2[0] == 0.0 and (grads2["logits"][0] == 0).all()


@pytest.mark.parametrize("fn, kwargs, exc, match", [
    (SPARSE, {"z_loss": -1.0}, ValueError, "z_loss must be finite and >= 0"),
    (SPARSE, {"z_loss": float("nan")}, ValueError, "z_loss"),
    (SPARSE, {"z_loss": True}, TypeError, "z_loss must be a real number"),
    (SPARSE, {"logit_softcap": 0.0}, ValueError, "logit_softcap must be finite and > 0"),
    (SPARSE, {"logit_softcap": float("inf")}, ValueError, "logit_softcap"),
    (SPARSE, {"logit_softcap": "30"}, TypeError, "logit_softcap must be None or a real number"),
    (DENSE, {"z_loss": -0.5}, ValueError, "z_loss"),
    (DENSE, {"logit_softcap": -2.0}, ValueError, "logit_softcap"),
])
def test_bad_options_name_the_argument(fn, kwargs, exc, match):
    z = np.zeros((2, 3))
    labels = np.array([0, 1]) if fn is SPARSE else np.full((2, 3), 1 / 3)
    with pytest.raises(exc, match=match):
        fn(z, labels, **kwargs)


def test_linear_bad_options():
    w, x = np.ones((3, 2)), np.ones((2, 2))
    with pytest.raises(ValueError, match="z_loss"):
        LINEAR(w, None, np.array([0, 1]), x, z_loss=-1)
    with pytest.raises(ValueError, match="logit_softcap"):
        LINEAR(w, None, np.array([0, 1]), x, logit_softcap=0)

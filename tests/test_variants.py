"""Softmax variants: temperature, top-k (Sparse-softmax), Fenchel–Young (sparsemax, 1.5-entmax), AM-Softmax.

Values are checked against independent NumPy/scipy oracles written here (the
Fenchel–Young projections by bisection on the threshold, not by sorting),
gradients by finite differences (``refsoftmax.gradcheck``) and, for the
Fenchel–Young family, against the ``entmax`` package with torch autograd.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

import refsoftmax as rs
from refsoftmax.am_softmax import am_softmax_loss as AM
from refsoftmax.fenchel_young import entmax15 as ENTMAX15
from refsoftmax.fenchel_young import entmax15_loss as ENTMAX15_LOSS
from refsoftmax.fenchel_young import sparsemax as SPARSEMAX
from refsoftmax.fenchel_young import sparsemax_loss as SPARSEMAX_LOSS
from refsoftmax.temperature_softmax import temperature_softmax_cross_entropy as TEMP
from refsoftmax.topk_softmax import topk_softmax_cross_entropy as TOPK

SPARSE = rs.sparse_softmax_cross_entropy
FY_LOSSES = {"sparsemax": (SPARSEMAX_LOSS, 2.0), "entmax15": (ENTMAX15_LOSS, 1.5)}
FY_MAPS = {"sparsemax": (SPARSEMAX, 2.0), "entmax15": (ENTMAX15, 1.5)}


# ---------------------------------------------------------------- oracles (NumPy + scipy only)

def temperature_oracle(z, t, temperature):
    logp = special.log_softmax(np.asarray(z, np.float64) / temperature, axis=-1)
    return -np.take_along_axis(logp, np.asarray(t)[..., None], -1)[..., 0]


def topk_oracle_sets(z, t, k):
    """Kept set per row: the first k of a stable descending argsort (ties: lowest index), plus t."""
    order = np.argsort(-np.asarray(z, np.float64), axis=-1, kind="stable")[..., :k]
    kept = np.zeros(np.shape(z), bool)
    np.put_along_axis(kept, order, True, axis=-1)
    np.put_along_axis(kept, np.asarray(t)[..., None], True, axis=-1)
    return kept


def topk_oracle(z, t, k):
    z = np.asarray(z, np.float64)
    kept = topk_oracle_sets(z, t, k)
    lse = special.logsumexp(np.where(kept, z, -np.inf), axis=-1)
    return lse - np.take_along_axis(z, np.asarray(t)[..., None], -1)[..., 0]


def tsallis_oracle(z, alpha):
    """argmax_{p in simplex} <z, p> - Omega_alpha(p), by bisection on the threshold tau.

    p = [(alpha - 1) z - tau]_+^(1 / (alpha - 1)); returns (p, tau, (alpha - 1) z) with the
    max-shifted z (tau lies in [-1, 0] there).
    """
    x = (alpha - 1) * (np.asarray(z, np.float64) - np.max(z, axis=-1, keepdims=True))
    lo = np.full((*x.shape[:-1], 1), -1.0)
    hi = np.zeros_like(lo)
    for _ in range(200):
        mid = (lo + hi) / 2
        mass = (np.maximum(x - mid, 0) ** (1 / (alpha - 1))).sum(-1, keepdims=True)
        lo, hi = np.where(mass >= 1, mid, lo), np.where(mass >= 1, hi, mid)
    tau = (lo + hi) / 2
    p = np.maximum(x - tau, 0) ** (1 / (alpha - 1))
    return p / p.sum(-1, keepdims=True), tau, x


def fenchel_young_oracle(z, t, alpha):
    """Omega*(z) + Omega(e_t) - z_t with Omega = (sum p^alpha - 1) / (alpha (alpha - 1))."""
    z = np.asarray(z, np.float64)
    p, _, _ = tsallis_oracle(z, alpha)
    omega = ((p**alpha).sum(-1) - 1) / (alpha * (alpha - 1))
    return (p * z).sum(-1) - omega - np.take_along_axis(z, np.asarray(t)[..., None], -1)[..., 0]


def sparsemax_loss_martins(z, t):
    """Martins & Astudillo (2016), eq. 13: -z_t + 1/2 sum_{j in S} (z_j^2 - tau^2) + 1/2."""
    z = np.asarray(z, np.float64)
    p, tau, x = tsallis_oracle(z, 2.0)
    support = p > 0
    quad = np.where(support, x**2 - tau**2, 0.0).sum(-1)
    return -np.take_along_axis(x, np.asarray(t)[..., None], -1)[..., 0] + 0.5 * quad + 0.5


def am_oracle(f, w, t, scale, margin):
    f = np.asarray(f, np.float64)
    w = np.asarray(w, np.float64)
    cos = (f / np.linalg.norm(f, axis=-1, keepdims=True)) @ (w / np.linalg.norm(w, axis=-1, keepdims=True)).T
    onehot = np.eye(w.shape[0])[t]
    logp = special.log_softmax(scale * (cos - margin * onehot), axis=-1)
    return -(logp * onehot).sum(-1)


def away_from_boundaries(rng, shape, alpha, scale=2.0, gap=1e-3):
    """Random logits where no class is within ``gap`` of the support boundary (differentiable)."""
    for _ in range(1000):
        z = rng.standard_normal(shape) * scale
        _, tau, x = tsallis_oracle(z, alpha)
        if np.min(np.abs(x - tau)) > gap:
            return z
    raise AssertionError("no point away from the boundaries found")  # pragma: no cover


def _labels_with_ignored(rng, shape, num_classes, ignore_index=-100):
    t = rng.integers(0, num_classes, size=shape)
    t.reshape(-1)[0] = ignore_index
    return t


# ---------------------------------------------------------------- temperature

@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature_matches_oracle(backend, rng, temperature):
    z = rng.standard_normal((3, 4, 6)) * 3
    t = _labels_with_ignored(rng, (3, 4), 6)
    valid = t != -100
    expected = np.where(valid, temperature_oracle(z, np.where(valid, t, 0), temperature), 0.0)
    zb, tb = backend.asarray(z), backend.asarray(t)
    got = TEMP(zb, tb, temperature=temperature, ignore_index=-100)
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-13, atol=1e-14)
    total = TEMP(zb, tb, temperature=temperature, ignore_index=-100, reduction="sum")
    np.testing.assert_allclose(backend.to_numpy(total), expected.sum(), rtol=1e-13)
    mean = TEMP(zb, tb, temperature=temperature, ignore_index=-100, reduction="mean")
    np.testing.assert_allclose(backend.to_numpy(mean), expected.sum() / valid.sum(), rtol=1e-13)


def test_temperature_one_is_sparse_cross_entropy(backend, rng):
    z = rng.standard_normal((5, 7)) * 2
    t = rng.integers(0, 7, size=5)
    t[2] = -1
    for reduction in ("none", "mean"):
        a, ga = TEMP.value_and_grad(backend.asarray(z), backend.asarray(t), temperature=1.0,
                                    ignore_index=-1, reduction=reduction)
        b, gb = SPARSE.value_and_grad(backend.asarray(z), backend.asarray(t), ignore_index=-1,
                                      reduction=reduction, mean_denominator="count")
        np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-14)
        np.testing.assert_allclose(backend.to_numpy(ga["logits"]), backend.to_numpy(gb["logits"]),
                                   rtol=1e-13, atol=1e-15)


def test_temperature_is_cross_entropy_of_scaled_logits(backend, rng):
    z = rng.standard_normal((4, 5))
    t = rng.integers(0, 5, size=4)
    a, ga = TEMP.value_and_grad(backend.asarray(z), backend.asarray(t), temperature=0.25)
    b, gb = SPARSE.value_and_grad(backend.asarray(z / 0.25), backend.asarray(t))
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-13)
    # chain rule: d/dz = (1/T) d/d(z/T)
    np.testing.assert_allclose(backend.to_numpy(ga["logits"]), backend.to_numpy(gb["logits"]) / 0.25,
                               rtol=1e-12, atol=1e-15)


def test_temperature_worked_example():
    # z = [0, 2 log 3], T = 2: z/T = [0, log 3], p = [1/4, 3/4].
    # label 1: loss = -log(3/4) = log(4/3) = 0.28768207245178...
    # gradient (p - e_1)/T = [1/4, -1/4]/2 = [0.125, -0.125]
    z = np.array([[0.0, 2 * np.log(3.0)]])
    value, grads = TEMP.value_and_grad(z, np.array([1]), temperature=2.0)
    np.testing.assert_allclose(value, [0.2876820724517809], rtol=1e-15)
    np.testing.assert_allclose(grads["logits"], [[0.125, -0.125]], rtol=1e-14)


@pytest.mark.parametrize("temperature", [0.5, 3.0])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_temperature_gradcheck(backend, rng, temperature, reduction):
    z = rng.standard_normal((2, 3, 5))
    t = _labels_with_ignored(rng, (2, 3), 5)
    rs.gradcheck(TEMP, (backend.asarray(z), backend.asarray(t)), temperature=temperature,
                 ignore_index=-100, reduction=reduction)


# ---------------------------------------------------------------- top-k (Sparse-softmax)

@pytest.mark.parametrize("k", [1, 2, 4, 6])
def test_topk_matches_oracle(backend, rng, k):
    z = rng.standard_normal((3, 4, 6)) * 3
    z[0, 0] = [1.0, 2.0, 2.0, 2.0, 0.0, 2.0]  # ties at the k-th value
    z[0, 1] = np.round(z[0, 1])
    t = rng.integers(0, 6, size=(3, 4))  # many targets outside the top k for small k
    expected = topk_oracle(z, t, k)
    got = TOPK(backend.asarray(z), backend.asarray(t), k=k)
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-13, atol=1e-14)
    mean = TOPK(backend.asarray(z), backend.asarray(t), k=k, reduction="mean")
    np.testing.assert_allclose(backend.to_numpy(mean), expected.mean(), rtol=1e-13)


def test_topk_with_k_equal_classes_is_sparse_cross_entropy(backend, rng):
    z = rng.standard_normal((2, 3, 5)) * 2
    t = _labels_with_ignored(rng, (2, 3), 5)
    for reduction in ("none", "sum", "mean"):
        a, ga = TOPK.value_and_grad(backend.asarray(z), backend.asarray(t), k=5, ignore_index=-100,
                                    reduction=reduction)
        b, gb = SPARSE.value_and_grad(backend.asarray(z), backend.asarray(t), ignore_index=-100,
                                      reduction=reduction, mean_denominator="count")
        np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-14)
        np.testing.assert_allclose(backend.to_numpy(ga["logits"]), backend.to_numpy(gb["logits"]),
                                   rtol=1e-13, atol=1e-15)


def test_topk_worked_examples():
    # e^z = [4, 2, 1, 0.5], k = 2: top-2 = {0, 1}.
    # target 0 (inside): K = {0, 1}, loss = log(6/4) = 0.405465108108...,
    #   gradient [4/6 - 1, 2/6, 0, 0] = [-1/3, 1/3, 0, 0]
    # target 2 (outside, added): K = {0, 1, 2}, loss = log(7/1) = 1.9459101490553132,
    #   gradient [4/7, 2/7, 1/7 - 1, 0] = [4/7, 2/7, -6/7, 0]
    z = np.log(np.array([[4.0, 2.0, 1.0, 0.5], [4.0, 2.0, 1.0, 0.5]]))
    value, grads = TOPK.value_and_grad(z, np.array([0, 2]), k=2)
    np.testing.assert_allclose(value, [0.4054651081081644, 1.9459101490553132], rtol=1e-14)
    np.testing.assert_allclose(grads["logits"], [[-1 / 3, 1 / 3, 0, 0], [4 / 7, 2 / 7, -6 / 7, 0]],
                               rtol=1e-14, atol=1e-16)
    assert grads["logits"][0, 2] == 0.0 and grads["logits"][0, 3] == 0.0 and grads["logits"][1, 3] == 0.0
    # ties: z = [1, 1, 1, 0], k = 2 keeps classes 0 and 1 (lowest indices), target 3 is added:
    # K = {0, 1, 3}, loss = log(2e + 1) - 0 = 1.862069200..., class 2 gets exactly 0
    value, grads = TOPK.value_and_grad(np.array([[1.0, 1.0, 1.0, 0.0]]), np.array([3]), k=2)
    e = np.e
    np.testing.assert_allclose(value, [np.log(2 * e + 1)], rtol=1e-15)
    np.testing.assert_allclose(grads["logits"], [[e / (2 * e + 1), e / (2 * e + 1), 0.0, 1 / (2 * e + 1) - 1]],
                               rtol=1e-14)
    assert grads["logits"][0, 2] == 0.0
    # target 2 is among the tied values but not among the first two: it is added, K = {0, 1, 2}
    value = TOPK(np.array([[1.0, 1.0, 1.0, 0.0]]), np.array([2]), k=2)
    np.testing.assert_allclose(value, [np.log(3.0)], rtol=1e-15)
    # a NaN logit is always kept: its row is NaN, the other rows are untouched
    value = TOPK(np.array([[np.nan, 1.0, 2.0], [0.0, 1.0, 2.0]]), np.array([2, 2]), k=1)
    assert np.isnan(value[0]) and value[1] == 0.0


def _gap_ok(z, k, gap=1e-3):
    s = -np.sort(-z, axis=-1)
    return k == z.shape[-1] or np.min(s[..., k - 1] - s[..., k]) > gap


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_topk_gradcheck(backend, rng, k, reduction):
    z = rng.standard_normal((2, 3, 5))
    while not _gap_ok(z, k):  # pragma: no cover - depends on the draw
        z = rng.standard_normal((2, 3, 5))
    t = _labels_with_ignored(rng, (2, 3), 5)
    rs.gradcheck(TOPK, (backend.asarray(z), backend.asarray(t)), k=k, ignore_index=-100,
                 reduction=reduction)


@st.composite
def topk_problems(draw):
    """Logits with many ties (drawn from a few values, -inf included), labels and k."""
    b = draw(st.integers(1, 4))
    c = draw(st.integers(1, 7))
    values = st.sampled_from([-2.0, -0.5, 0.0, 0.0, 1.0, 1.0, 3.0, -np.inf])
    # no subnormal logits: XLA on the CPU flushes them to 0 (5e-324 ties with 0 on JAX)
    z = draw(hnp.arrays(np.float64, (b, c), elements=values | st.floats(-5, 5, allow_subnormal=False)))
    z[:, 0] = np.where(np.isinf(z[:, 0]), 0.0, z[:, 0])  # at least one finite logit per row
    t = draw(hnp.arrays(np.int64, (b,), elements=st.integers(0, c - 1)))
    t = np.where(np.isinf(np.take_along_axis(z, t[:, None], 1)[:, 0]), 0, t)  # finite target logits
    k = draw(st.integers(1, c))
    return z, t, k


@given(topk_problems())
def test_topk_excluded_classes_get_exactly_zero_gradient(backend, prob):
    z, t, k = prob
    kept = topk_oracle_sets(z, t, k)
    value, grads = TOPK.value_and_grad(backend.asarray(z), backend.asarray(t), k=k)
    g = backend.to_numpy(grads["logits"])
    np.testing.assert_array_equal(g[~kept], 0.0)
    v = backend.to_numpy(value)
    assert np.all(v >= 0) and np.all(np.isfinite(v))
    np.testing.assert_allclose(v, topk_oracle(z, t, k), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g.sum(-1), 0.0, atol=1e-12)
    # the kept set has exactly k elements, k + 1 when the target is outside the top k
    top = topk_oracle_sets(z, np.argmax(z, axis=-1), k)  # a label inside the top k: K = top k
    assert np.all(top.sum(-1) == k)
    target_in_top = np.take_along_axis(top, t[:, None], 1)[:, 0]
    np.testing.assert_array_equal(kept.sum(-1), np.where(target_in_top, k, k + 1))


# ---------------------------------------------------------------- Fenchel–Young: values

@pytest.mark.parametrize("variant", sorted(FY_LOSSES))
def test_fenchel_young_losses_match_oracle(backend, rng, variant):
    fn, alpha = FY_LOSSES[variant]
    z = rng.standard_normal((3, 4, 6)) * 2 + 5.0  # shifted: the loss is shift-invariant
    t = _labels_with_ignored(rng, (3, 4), 6)
    valid = t != -100
    expected = np.where(valid, fenchel_young_oracle(z, np.where(valid, t, 0), alpha), 0.0)
    if variant == "sparsemax":
        np.testing.assert_allclose(expected, np.where(valid, sparsemax_loss_martins(z, np.where(valid, t, 0)), 0.0),
                                   rtol=1e-10, atol=1e-12)
    zb, tb = backend.asarray(z), backend.asarray(t)
    got = fn(zb, tb, ignore_index=-100)
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-10, atol=1e-12)
    mean = fn(zb, tb, ignore_index=-100, reduction="mean")
    np.testing.assert_allclose(backend.to_numpy(mean), expected.sum() / valid.sum(), rtol=1e-10)
    total = fn(zb, tb, ignore_index=-100, reduction="sum")
    np.testing.assert_allclose(backend.to_numpy(total), expected.sum(), rtol=1e-10)


@pytest.mark.parametrize("variant", sorted(FY_MAPS))
def test_fenchel_young_maps_match_oracle(backend, rng, variant):
    fn, alpha = FY_MAPS[variant]
    z = rng.standard_normal((4, 3, 7)) * 2
    expected, _, _ = tsallis_oracle(z, alpha)
    got = backend.to_numpy(fn(backend.asarray(z)))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert np.all(got >= 0)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-14)
    assert (got == 0).any()  # sparse
    moved = backend.to_numpy(fn(backend.asarray(np.moveaxis(z, -1, 0)), axis=0))
    np.testing.assert_allclose(np.moveaxis(moved, 0, -1), got, rtol=1e-14, atol=1e-16)


def test_fenchel_young_worked_examples():
    # sparsemax of z = [1, 0.5, -1]: sorted cumsums 1, 1.5, 0.5; 1 + 1*1 > 1, 1 + 2*0.5 > 1.5,
    # 1 + 3*(-1) < 0.5  ->  support 2, tau = (1.5 - 1)/2 = 0.25, p = [0.75, 0.25, 0].
    # loss(t=0) = <p - e_0, z> + (1 - |p|^2)/2 = -0.125 + (1 - 0.625)/2 = 0.0625
    # loss(t=2) = 0.75 + 0.125 + 1 + 0.1875 = 2.0625;  gradients p - e_t
    z = np.array([[1.0, 0.5, -1.0], [1.0, 0.5, -1.0]])
    value, grads = SPARSEMAX_LOSS.value_and_grad(z, np.array([0, 2]))
    np.testing.assert_allclose(value, [0.0625, 2.0625], rtol=1e-14)
    np.testing.assert_allclose(grads["logits"], [[-0.25, 0.25, 0.0], [0.75, 0.25, -1.0]], rtol=1e-14)
    # VJP of sparsemax with g = [1, 0, 0]: on S = {0, 1}, g - mean_S(g) = [0.5, -0.5], 0 off S
    p, grads = SPARSEMAX.value_and_grad(z[0], cotangent=np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(p, [0.75, 0.25, 0.0], rtol=1e-15)
    np.testing.assert_allclose(grads["x"], [0.5, -0.5, 0.0], rtol=1e-15)

    # 1.5-entmax of z = [0, -0.4, -2]: x = z/2 = [0, -0.2, -1];
    # k=1: tau = 0 - sqrt(1) = -1 <= 0; k=2: mean -0.1, sum of squared deviations 0.02,
    # delta = (1 - 0.02)/2 = 0.49, tau = -0.1 - 0.7 = -0.8 <= -0.2; k=3: tau = -0.783 > -1.
    # support 2, tau = -0.8, p = [0.8^2, 0.6^2, 0] = [0.64, 0.36, 0].
    # loss(t=0) = <p - e_0, z> + (1 - sum p^1.5)/0.75 = -0.144 + (1 - 0.512 - 0.216)/0.75
    #           = -0.144 + 0.272/0.75 = 82/375 = 0.218666...
    z = np.array([[0.0, -0.4, -2.0]])
    value, grads = ENTMAX15_LOSS.value_and_grad(z, np.array([0]))
    np.testing.assert_allclose(value, [82 / 375], rtol=1e-14)
    np.testing.assert_allclose(grads["logits"], [[-0.36, 0.36, 0.0]], rtol=1e-13, atol=1e-16)
    # VJP with g = [1, 0, 0]: s = sqrt(p) = [0.8, 0.6, 0], <s, g> / sum(s) = 0.8/1.4;
    # s*g - s * 0.8/1.4 = [0.8 - 0.64/1.4, -0.48/1.4, 0] = [12/35, -12/35, 0]
    p, grads = ENTMAX15.value_and_grad(z[0], cotangent=np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(p, [0.64, 0.36, 0.0], rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(grads["x"], [12 / 35, -12 / 35, 0.0], rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("variant", sorted(FY_LOSSES))
def test_fenchel_young_zero_loss_beyond_the_margin(backend, variant):
    fn, _ = FY_LOSSES[variant]
    # z_t - max_other >= 1 (sparsemax) / >= 2 (1.5-entmax): p = e_t exactly, loss and gradient 0
    z = backend.asarray([[5.0, 1.0, -3.0], [0.0, 3.0, 0.5]])
    value, grads = fn.value_and_grad(z, backend.asarray([0, 1]))
    np.testing.assert_array_equal(backend.to_numpy(value), [0.0, 0.0])
    np.testing.assert_array_equal(backend.to_numpy(grads["logits"]), np.zeros((2, 3)))


@pytest.mark.parametrize("variant", sorted(FY_LOSSES))
def test_fenchel_young_minus_inf_equals_slicing_out(backend, rng, variant):
    fn, _ = FY_LOSSES[variant]
    z = rng.standard_normal((4, 5))
    t = np.array([0, 1, 3, 4])
    zinf = z.copy()
    zinf[:, 2] = -np.inf
    keep = [0, 1, 3, 4]
    a, ga = fn.value_and_grad(backend.asarray(zinf), backend.asarray(t))
    b, gb = fn.value_and_grad(backend.asarray(z[:, keep]), backend.asarray(np.searchsorted(keep, t)))
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-13, atol=1e-15)
    g = backend.to_numpy(ga["logits"])
    np.testing.assert_allclose(g[:, keep], backend.to_numpy(gb["logits"]), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(g[:, 2], 0.0)
    # a label on a -inf logit: +inf; a row of all -inf: +inf with gradient 0; NaN propagates
    v = backend.to_numpy(fn(backend.asarray(zinf), backend.asarray([2, 0, 0, 0])))
    assert v[0] == np.inf and np.isfinite(v[1:]).all()
    value, grads = fn.value_and_grad(backend.asarray([[-np.inf, -np.inf], [0.0, 1.0]]), backend.asarray([0, 1]))
    assert backend.to_numpy(value)[0] == np.inf
    np.testing.assert_array_equal(backend.to_numpy(grads["logits"])[0], 0.0)
    v = backend.to_numpy(fn(backend.asarray([[np.nan, 1.0], [0.0, 1.0]]), backend.asarray([1, 1])))
    assert np.isnan(v[0]) and np.isfinite(v[1])


# ---------------------------------------------------------------- Fenchel–Young: the entmax package

def _entmax_reference(name):
    entmax = pytest.importorskip("entmax")
    return getattr(entmax, name)


@pytest.mark.parametrize("variant", sorted(FY_LOSSES))
def test_fenchel_young_losses_against_entmax_package(backend, rng, variant):
    torch = pytest.importorskip("torch")
    ref = _entmax_reference(f"{variant}_loss")
    fn, _ = FY_LOSSES[variant]
    z = rng.standard_normal((40, 9)) * 2
    t = rng.integers(0, 9, size=40)
    zt = torch.tensor(z, requires_grad=True)
    ref_value = ref(zt, torch.tensor(t))
    u = rng.standard_normal(40)
    (ref_value * torch.tensor(u)).sum().backward()
    value, grads = fn.value_and_grad(backend.asarray(z), backend.asarray(t), cotangent=backend.asarray(u))
    np.testing.assert_allclose(backend.to_numpy(value), ref_value.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(grads["logits"]), zt.grad.numpy(), rtol=1e-12, atol=1e-14)

    # the package's nn.Module: ignore_index and the mean over non-ignored examples
    module = _entmax_reference({"sparsemax": "SparsemaxLoss", "entmax15": "Entmax15Loss"}[variant])
    t[::3] = 4
    zt = torch.tensor(z, requires_grad=True)
    ref_mean = module(ignore_index=4, reduction="elementwise_mean")(zt, torch.tensor(t))
    ref_mean.backward()
    value, grads = fn.value_and_grad(backend.asarray(z), backend.asarray(t), ignore_index=4, reduction="mean")
    np.testing.assert_allclose(backend.to_numpy(value), ref_mean.item(), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(grads["logits"]), zt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("variant", sorted(FY_MAPS))
def test_fenchel_young_maps_against_entmax_package(backend, rng, variant):
    torch = pytest.importorskip("torch")
    ref = _entmax_reference(variant)
    fn, _ = FY_MAPS[variant]
    z = rng.standard_normal((6, 5, 8)) * 2
    u = rng.standard_normal(z.shape)
    for axis in (-1, 1):
        zt = torch.tensor(z, requires_grad=True)
        ref_p = ref(zt, dim=axis)
        (ref_p * torch.tensor(u)).sum().backward()
        p, grads = fn.value_and_grad(backend.asarray(z), axis=axis, cotangent=backend.asarray(u))
        np.testing.assert_allclose(backend.to_numpy(p), ref_p.detach().numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(backend.to_numpy(grads["x"]), zt.grad.numpy(), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- Fenchel–Young: gradients

@pytest.mark.parametrize("variant", sorted(FY_LOSSES))
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_fenchel_young_losses_gradcheck(backend, rng, variant, reduction):
    fn, alpha = FY_LOSSES[variant]
    z = away_from_boundaries(rng, (2, 3, 5), alpha)
    t = _labels_with_ignored(rng, (2, 3), 5)
    rs.gradcheck(fn, (backend.asarray(z), backend.asarray(t)), ignore_index=-100, reduction=reduction)


@pytest.mark.parametrize("variant", sorted(FY_MAPS))
def test_fenchel_young_maps_gradcheck(backend, rng, variant):
    fn, alpha = FY_MAPS[variant]
    z = away_from_boundaries(rng, (3, 5), alpha)
    rs.gradcheck(fn, (backend.asarray(z),))
    zt = np.ascontiguousarray(z.T)
    rs.gradcheck(fn, (backend.asarray(zt),), axis=0)


finite = st.floats(-20, 20, allow_nan=False, width=64)


@given(hnp.arrays(np.float64, (3, 5), elements=finite), st.integers(0, 4), st.floats(0.05, 20.0),
       st.integers(1, 5))
def test_every_loss_is_nonnegative(backend, z, label, temperature, k):
    t = backend.asarray(np.full(3, label))
    zb = backend.asarray(z)
    for value in (TEMP(zb, t, temperature=temperature), TOPK(zb, t, k=k), SPARSEMAX_LOSS(zb, t),
                  ENTMAX15_LOSS(zb, t)):
        v = backend.to_numpy(value)
        assert np.all(v >= 0) and np.all(np.isfinite(v))
    f = np.where(np.abs(z) < 1e-3, 1.0, z)  # nonzero feature vectors
    w = np.eye(5)[:, :5] + 0.1
    v = backend.to_numpy(AM(backend.asarray(f), backend.asarray(w), t))
    assert np.all(v >= 0) and np.all(np.isfinite(v))


# ---------------------------------------------------------------- AM-Softmax

@pytest.mark.parametrize("scale, margin", [(30.0, 0.35), (4.0, 0.0), (10.0, 0.2)])
def test_am_softmax_matches_oracle(backend, rng, scale, margin):
    f = rng.standard_normal((3, 4, 6))
    w = rng.standard_normal((7, 6)) * 3
    t = _labels_with_ignored(rng, (3, 4), 7)
    valid = t != -100
    expected = np.where(valid, am_oracle(f, w, np.where(valid, t, 0), scale, margin), 0.0)
    args = (backend.asarray(f), backend.asarray(w), backend.asarray(t))
    got = AM(*args, scale=scale, margin=margin, ignore_index=-100)
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-12, atol=1e-13)
    mean = AM(*args, scale=scale, margin=margin, ignore_index=-100, reduction="mean")
    np.testing.assert_allclose(backend.to_numpy(mean), expected.sum() / valid.sum(), rtol=1e-12)


def test_am_softmax_worked_example():
    # f = [3, 4] -> f_hat = [0.6, 0.8]; W = [[1, 0], [0, 2]] -> W_hat = I; c = [0.6, 0.8].
    # s = 2, m = 0.1, t = 1: psi = [1.2, 2 (0.8 - 0.1)] = [1.2, 1.4],
    # loss = log(e^1.2 + e^1.4) - 1.4 = log(1 + e^-0.2) = 0.5981388693815918.
    # q0 = 1/(1 + e^0.2); G = s (q - e_t) = 2 q0 [1, -1]; sum_j G_j c_j = 2 q0 (0.6 - 0.8) = -0.4 q0;
    # dL/df = (W_hat^T G + 0.4 q0 f_hat) / 5 = q0 ([2, -2] + [0.24, 0.32]) / 5 = q0 [0.448, -0.336];
    # dL/dw_0 = (G_0 f_hat - G_0 c_0 w_hat_0) / 1 = 2 q0 ([0.6, 0.8] - [0.6, 0]) = q0 [0, 1.6];
    # dL/dw_1 = (G_1 f_hat - G_1 c_1 w_hat_1) / 2 = -2 q0 ([0.6, 0.8] - [0, 0.8]) / 2 = q0 [-0.6, 0].
    value, grads = AM.value_and_grad(np.array([[3.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 2.0]]),
                                     np.array([1]), scale=2.0, margin=0.1)
    np.testing.assert_allclose(value, [0.5981388693815918], rtol=1e-14)
    q0 = 1 / (1 + np.exp(0.2))
    np.testing.assert_allclose(grads["features"], q0 * np.array([[0.448, -0.336]]), rtol=1e-13)
    np.testing.assert_allclose(grads["weights"], q0 * np.array([[0.0, 1.6], [-0.6, 0.0]]), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_am_softmax_gradcheck(backend, rng, reduction):
    f = rng.standard_normal((2, 3, 4))
    w = rng.standard_normal((5, 4))
    t = _labels_with_ignored(rng, (2, 3), 5)
    rs.gradcheck(AM, (backend.asarray(f), backend.asarray(w), backend.asarray(t)), scale=8.0,
                 margin=0.35, ignore_index=-100, reduction=reduction)


def test_am_softmax_against_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    f = rng.standard_normal((6, 5))
    w = rng.standard_normal((4, 5))
    t = rng.integers(0, 4, size=6)
    ft = torch.tensor(f, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    cos = F.normalize(ft, dim=-1) @ F.normalize(wt, dim=-1).T
    logits = 30.0 * (cos - 0.35 * F.one_hot(torch.tensor(t), 4).double())
    ref = F.cross_entropy(logits, torch.tensor(t))
    ref.backward()
    value, grads = AM.value_and_grad(f, w, t, reduction="mean")
    np.testing.assert_allclose(value, ref.item(), rtol=1e-13)
    np.testing.assert_allclose(grads["features"], ft.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(grads["weights"], wt.grad.numpy(), rtol=1e-11, atol=1e-14)


def test_am_softmax_properties(backend, rng):
    f = rng.standard_normal((5, 3))
    w = rng.standard_normal((4, 3))
    t = rng.integers(0, 4, size=5)
    value, grads = AM.value_and_grad(backend.asarray(f), backend.asarray(w), backend.asarray(t))
    gf, gw = backend.to_numpy(grads["features"]), backend.to_numpy(grads["weights"])
    # scale invariance of each vector: the gradients are orthogonal to their argument
    np.testing.assert_allclose((gf * f).sum(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose((gw * w).sum(-1), 0.0, atol=1e-12)
    scaled = AM(backend.asarray(f * 7.0), backend.asarray(w * 0.1), backend.asarray(t))
    np.testing.assert_allclose(backend.to_numpy(scaled), backend.to_numpy(value), rtol=1e-13)
    # margin 0 = sparse softmax cross-entropy of s * cosine
    cos = (f / np.linalg.norm(f, axis=-1, keepdims=True)) @ (w / np.linalg.norm(w, axis=-1, keepdims=True)).T
    a = AM(backend.asarray(f), backend.asarray(w), backend.asarray(t), scale=5.0, margin=0.0)
    b = SPARSE(backend.asarray(5.0 * cos), backend.asarray(t))
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-13)
    # an ignored example may have a zero feature vector (padding): loss and gradient 0 there
    f[2] = 0.0
    t[2] = -1
    value, grads = AM.value_and_grad(backend.asarray(f), backend.asarray(w), backend.asarray(t),
                                     ignore_index=-1)
    assert backend.to_numpy(value)[2] == 0.0
    np.testing.assert_array_equal(backend.to_numpy(grads["features"])[2], 0.0)


# ---------------------------------------------------------------- shared behaviour

SPARSE_LABEL_LOSSES = [
    (TEMP, dict(temperature=0.7)),
    (TOPK, dict(k=3)),
    (SPARSEMAX_LOSS, {}),
    (ENTMAX15_LOSS, {}),
]


@pytest.mark.parametrize("fn, kw", SPARSE_LABEL_LOSSES, ids=lambda x: getattr(x, "name", ""))
def test_axis_equals_moveaxis_and_empty_mean(backend, rng, fn, kw):
    z = rng.standard_normal((4, 2, 3))  # classes on axis 0
    t = rng.integers(0, 4, size=(2, 3))
    a, ga = fn.value_and_grad(backend.asarray(z), backend.asarray(t), axis=0, **kw)
    b, gb = fn.value_and_grad(backend.asarray(np.moveaxis(z, 0, -1)), backend.asarray(t), **kw)
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-14)
    np.testing.assert_allclose(np.moveaxis(backend.to_numpy(ga["logits"]), 0, -1),
                               backend.to_numpy(gb["logits"]), rtol=1e-14, atol=1e-16)
    # every example ignored: the mean is NaN (0/0), the gradient exactly 0
    value, grads = fn.value_and_grad(backend.asarray(z), backend.asarray(np.full((2, 3), -7)), axis=0,
                                     ignore_index=-7, reduction="mean", **kw)
    assert np.isnan(backend.to_numpy(value))
    np.testing.assert_array_equal(backend.to_numpy(grads["logits"]), 0.0)


ALL_FUNCTIONS = [*SPARSE_LABEL_LOSSES, (SPARSEMAX, {}), (ENTMAX15, {}), (AM, {})]


def _host_args(fn, dtype):
    if fn is AM:
        return (np.array([[1.0, 2.0], [0.5, -1.0]], dtype), np.array([[1.0, 0.0], [0.3, 1.0], [-1.0, 0.2]], dtype),
                np.array([0, 2]))
    z = np.array([[0.5, 2.0, -1.0, 0.0], [3.0, 0.0, 1.0, 2.5]], dtype)
    return (z,) if fn in (SPARSEMAX, ENTMAX15) else (z, np.array([1, 3]))


@pytest.mark.parametrize("fn, kw", ALL_FUNCTIONS, ids=lambda x: getattr(x, "name", ""))
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_dtypes(backend, fn, kw, dtype):
    host = _host_args(fn, dtype)
    try:
        args = [backend.asarray(a) for a in host]
    except (TypeError, ValueError):
        pytest.skip("backend has no float16")
    value, grads = fn.value_and_grad(*args, **kw)
    assert value.dtype == args[0].dtype
    for i, name in enumerate(fn.differentiable):
        assert grads[name].dtype == args[i].dtype
    # the same (rounded) inputs in float64
    reference = fn(*[backend.asarray(a.astype(np.float64) if a.dtype.kind == "f" else a) for a in host], **kw)
    tol = 1e-3 if dtype == np.float16 else 1e-6
    np.testing.assert_allclose(backend.to_numpy(value).astype(np.float64), backend.to_numpy(reference),
                               rtol=tol, atol=tol)


def test_bfloat16_torch():
    torch = pytest.importorskip("torch")
    z = torch.tensor([[0.0, 3.0, -5.0, 1.0]], dtype=torch.bfloat16)
    for fn, kw in SPARSE_LABEL_LOSSES:
        value, grads = fn.value_and_grad(z, torch.tensor([1]), **kw)
        assert value.dtype == torch.bfloat16 and grads["logits"].dtype == torch.bfloat16
    assert ENTMAX15(z).dtype == torch.bfloat16


def test_device_is_kept(strict_device1):
    b = strict_device1
    z = b.asarray(np.array([[0.5, 2.0, -1.0], [3.0, 0.0, 1.0]]))
    t = b.asarray([1, 2])
    for fn, kw in SPARSE_LABEL_LOSSES:
        value, grads = fn.value_and_grad(z, t, **kw)
        assert value.device == z.device and grads["logits"].device == z.device
    for fn in (SPARSEMAX, ENTMAX15):
        p, grads = fn.value_and_grad(z)
        assert p.device == z.device and grads["x"].device == z.device
    value, grads = AM.value_and_grad(z, b.asarray(np.eye(3)), t)
    assert grads["features"].device == z.device and grads["weights"].device == z.device


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "fn, kwargs, exc, match",
    [
        (TEMP, dict(temperature=0.0), ValueError, "temperature must be finite and > 0, got 0.0"),
        (TEMP, dict(temperature=-1.0), ValueError, "temperature must be finite and > 0"),
        (TEMP, dict(temperature=float("inf")), ValueError, "temperature must be finite"),
        (TEMP, dict(temperature=float("nan")), ValueError, "temperature must be finite"),
        (TEMP, dict(temperature="2"), TypeError, "temperature must be a real number"),
        (TEMP, dict(temperature=True), TypeError, "temperature must be a real number"),
        (TOPK, dict(k=0), ValueError, r"k must be in \[1, 3\] \(the number of classes\), got 0"),
        (TOPK, dict(k=4), ValueError, r"k must be in \[1, 3\]"),
        (TOPK, dict(k=1.5), TypeError, "k must be an integer"),
        (TOPK, dict(k=True), TypeError, "k must be an integer"),
        (TOPK, dict(), TypeError, "k"),
        *[
            (fn, {**kw, **bad}, exc, match)
            for fn, kw in SPARSE_LABEL_LOSSES
            for bad, exc, match in [
                (dict(labels=[0, 3]), ValueError, r"labels must be in \[0, 3\), got 3"),
                (dict(labels=[0, -1]), ValueError, r"labels must be in \[0, 3\), got -1"),
                (dict(labels=[0, 1, 2]), ValueError, "labels must have shape"),
                (dict(labels=[0.0, 1.0]), TypeError, "labels must have an integer dtype"),
                (dict(logits=[[1, 2, 3], [1, 2, 3]]), TypeError, "logits must have a real floating dtype"),
                (dict(reduction="avg"), ValueError, "reduction must be one of"),
                (dict(axis=2), ValueError, "axis=2 is out of range"),
                (dict(ignore_index=1.5), TypeError, "ignore_index must be an integer"),
            ]
        ],
    ],
    ids=lambda x: getattr(x, "name", None) if hasattr(x, "name") else None,
)
def test_sparse_label_losses_bad_input(backend, fn, kwargs, exc, match):
    args = dict(logits=np.zeros((2, 3)), labels=np.array([0, 1]))
    args.update(kwargs)
    args = {k: (backend.asarray(v) if isinstance(v, (np.ndarray, list)) else v) for k, v in args.items()}
    with pytest.raises(exc, match=match):
        fn(args.pop("logits"), args.pop("labels"), **args)


@pytest.mark.parametrize("fn", [SPARSEMAX, ENTMAX15], ids=lambda f: f.name)
def test_maps_bad_input(backend, fn):
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        fn(backend.asarray([1, 2, 3]))
    with pytest.raises(ValueError, match="x must have at least one dimension"):
        fn(backend.asarray(np.float64(1.0)))
    with pytest.raises(ValueError, match="axis=1 is out of range"):
        fn(backend.asarray([1.0, 2.0]), axis=1)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(scale=0.0), ValueError, "scale must be finite and > 0, got 0.0"),
        (dict(scale=-30.0), ValueError, "scale must be finite and > 0"),
        (dict(scale=float("inf")), ValueError, "scale must be finite"),
        (dict(scale="30"), TypeError, "scale must be a real number"),
        (dict(margin=-0.1), ValueError, "margin must be finite and >= 0, got -0.1"),
        (dict(margin=float("nan")), ValueError, "margin must be finite and >= 0"),
        (dict(margin=None), TypeError, "margin must be a real number"),
        (dict(weights=np.ones((3, 4))), ValueError, r"weights must have shape \(num_classes, 2\)"),
        (dict(weights=np.ones(2)), ValueError, r"weights must have shape \(num_classes, 2\)"),
        (dict(weights=np.ones((0, 2))), ValueError, "weights must have at least one class"),
        (dict(labels=[0, 1, 1]), ValueError, r"labels must have shape \(2,\)"),
        (dict(labels=[0, 3]), ValueError, r"labels must be in \[0, 3\), got 3"),
        (dict(labels=[-1, 0]), ValueError, r"labels must be in \[0, 3\), got -1"),
        (dict(labels=[0.0, 1.0]), TypeError, "labels must have an integer dtype"),
        (dict(features=[[1, 2], [3, 4]]), TypeError, "features must have a real floating dtype"),
        (dict(weights=np.ones((3, 2), int)), TypeError, "weights must have a real floating dtype"),
        (dict(features=np.float64(1.0)), ValueError, "features must have at least one dimension"),
        (dict(features=np.array([[1.0, 2.0], [0.0, 0.0]])), ValueError,
         r"features must have a nonzero norm .* example 1 \(flattened\) has norm 0"),
        (dict(weights=np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])), ValueError,
         "weights must have nonzero rows .* row 1 has norm 0"),
        (dict(reduction="mean_all"), ValueError, "reduction must be one of"),
        (dict(ignore_index="x"), TypeError, "ignore_index must be an integer"),
    ],
)
def test_am_softmax_bad_input(backend, kwargs, exc, match):
    args = dict(features=np.array([[1.0, 2.0], [0.5, -1.0]]), weights=np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                labels=np.array([0, 2]))
    args.update(kwargs)
    args = {k: (backend.asarray(v) if isinstance(v, (np.ndarray, list, np.generic)) else v) for k, v in args.items()}
    with pytest.raises(exc, match=match):
        AM(args.pop("features"), args.pop("weights"), args.pop("labels"), **args)


def test_cotangent_shape_is_checked(backend):
    z = backend.asarray(np.zeros((2, 3)))
    for fn, kw in SPARSE_LABEL_LOSSES:
        _, res = fn.forward(z, backend.asarray([0, 1]), **kw)
        with pytest.raises(ValueError, match=r"cotangent must have the value's shape \(2,\)"):
            fn.backward(res, backend.asarray(np.ones(3)))
    _, res = SPARSEMAX.forward(z)
    with pytest.raises(ValueError, match=r"cotangent must have the value's shape \(2, 3\)"):
        SPARSEMAX.backward(res, backend.asarray(np.ones(3)))


def test_am_softmax_extreme_norms_and_ignored_nan():
    """Norms are computed with scaling: no overflow at 1e154, no false zero at 1e-170."""
    from refsoftmax.am_softmax import am_softmax_loss

    w = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    base = am_softmax_loss(np.array([[3.0, 4.0]]), w, np.array([0]), scale=2.0, margin=0.1)
    for factor in (1e154, 1e-170, 1e300):
        v = am_softmax_loss(np.array([[3.0, 4.0]]) * factor, w, np.array([0]), scale=2.0, margin=0.1)
        np.testing.assert_allclose(v, base, rtol=1e-14)
    f = np.array([[3.0, 4.0], [np.nan, np.inf]])
    value, grads = am_softmax_loss.value_and_grad(f, w, np.array([1, -1]), ignore_index=-1)
    assert value[1] == 0.0
    assert np.isfinite(grads["features"]).all() and np.isfinite(grads["weights"]).all()
    with pytest.raises(ValueError, match="nonzero feature dimension"):
        am_softmax_loss(np.zeros((2, 0)), np.zeros((3, 0)), np.array([0, 1]))


def test_sparsemax_backward_propagates_nan():
    from refsoftmax.fenchel_young import sparsemax

    _, grads = sparsemax.value_and_grad(np.array([[np.nan, 1.0, 0.0]]), cotangent=np.ones((1, 3)))
    assert np.isnan(grads["x"]).all()


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_temperature_tiny_is_exact():
    from refsoftmax.temperature_softmax import temperature_softmax_cross_entropy

    v = temperature_softmax_cross_entropy(np.array([[2.0, 0.0]]), np.array([0]), temperature=1e-308)
    assert v[0] == 0.0
    v = temperature_softmax_cross_entropy(np.array([[2.0, 0.0]]), np.array([1]), temperature=1e-308)
    assert v[0] == np.inf  # the true value 2e308 does not fit in float64

"""Sampled softmax (both estimators), NCE, negative sampling and the chunked exact loss."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import special

import refsoftmax as rs

C, D, B, S = 9, 4, 5, 6


@pytest.fixture
def model(rng):
    w = rng.standard_normal((C, D))
    b = rng.standard_normal(C)
    x = rng.standard_normal((B, D))
    return w, b, x


def every_class(batch, num_true=1, num_classes=C):
    return (np.arange(num_classes), np.ones((batch, num_true)), np.ones(num_classes))


def _sigmoid_ce(x, y):
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


# ------------------------------------------------------------------ equivalences

def test_sampling_every_class_is_full_softmax(backend, model, rng):
    w, b, x = model
    y = rng.integers(0, C, (B, 1))
    full, g_full = rs.sparse_softmax_cross_entropy.value_and_grad(x @ w.T + b, y[:, 0])
    args = [backend.asarray(a) for a in (w, b, y, x)]
    sv = tuple(backend.asarray(a) for a in every_class(B))
    value, grads = rs.sampled_softmax_loss.value_and_grad(*args, C, C, sampled_values=sv)
    np.testing.assert_allclose(backend.to_numpy(value), full, rtol=1e-13)
    # the same gradients as full softmax: dL/dx = G W, dL/dW = G^T x
    gz = g_full["logits"]
    np.testing.assert_allclose(backend.to_numpy(grads["inputs"]), gz @ w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(grads["weights"].to_dense()), gz.T @ x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(grads["biases"].to_dense()), gz.sum(0), rtol=1e-12, atol=1e-14)


def test_target_excluded_with_every_class_uniform_is_full_softmax(model, rng):
    w, b, x = model
    y = rng.integers(0, C, (B, 1))
    full = rs.sparse_softmax_cross_entropy(x @ w.T + b, y[:, 0])
    # all classes drawn once from the uniform q = 1/C: k_eff = C - 1, correction log(1) = 0
    sv = (np.arange(C), np.full((B, 1), 1.0), np.full(C, 1.0))  # expected count = S q = 1
    value = rs.sampled_softmax_loss(w, b, y, x, C, C, sampled_values=sv, estimator="target_excluded")
    np.testing.assert_allclose(value, full, rtol=1e-13)


@pytest.mark.parametrize("remove", [False, True])
def test_nce_with_every_class_is_one_vs_all_sigmoid(backend, model, rng, remove):
    w, b, x = model
    y = rng.integers(0, C, (B, 1))
    logits = x @ w.T + b
    onehot = np.eye(C)[y[:, 0]]
    expected = _sigmoid_ce(logits, onehot).sum(1)
    if not remove:  # the true class also appears as a noise sample, with label 0
        expected = expected + _sigmoid_ce(np.take_along_axis(logits, y, 1)[:, 0], 0.0)
    args = [backend.asarray(a) for a in (w, b, y, x)]
    sv = tuple(backend.asarray(a) for a in every_class(B))
    value = rs.nce_loss(*args, C, C, sampled_values=sv, remove_accidental_hits=remove)
    np.testing.assert_allclose(backend.to_numpy(value), expected, rtol=1e-13)


def test_negative_sampling_by_hand(rng):
    w = rng.standard_normal((C, D))
    x = rng.standard_normal((2, D))
    y = np.array([[3], [5]])
    cand = np.array([1, 3, 3, 8])
    value = rs.negative_sampling_loss(w, None, y, x, 4, C, sampled_values=(cand, np.ones((2, 1)), np.ones(4)))
    logsig = special.log_expit
    for i in range(2):
        expected = -logsig(x[i] @ w[y[i, 0]]) - sum(logsig(-(x[i] @ w[c])) for c in cand)
        assert np.isclose(value[i], expected, rtol=1e-13)


def test_negative_sampling_needs_a_noise_distribution(model):
    w, b, x = model
    with pytest.raises(ValueError, match="pass unigrams"):
        rs.negative_sampling_loss(w, b, np.zeros((B, 1), int), x, 3, C)


# ------------------------------------------------------------------ gradients

SAMPLED_LOSSES = [
    (rs.sampled_softmax_loss, dict()),
    (rs.sampled_softmax_loss, dict(remove_accidental_hits=False)),
    (rs.sampled_softmax_loss, dict(subtract_log_q=False, reduction="mean")),
    (rs.nce_loss, dict()),
    (rs.nce_loss, dict(remove_accidental_hits=True, reduction="sum")),
    (rs.negative_sampling_loss, dict()),
    (rs.negative_sampling_loss, dict(remove_accidental_hits=True)),
]


@pytest.mark.parametrize("fn, kwargs", SAMPLED_LOSSES, ids=lambda v: getattr(v, "name", str(v)))
@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("per_example", [False, True])
def test_gradcheck_sampled(backend, model, rng, fn, kwargs, num_true, per_example):
    w, b, x = model
    y = rng.integers(0, C, (B, num_true))
    y[1] = y[0]  # a label shared across the batch: its weight-row gradients must add up
    shape = (B, S) if per_example else (S,)
    cand = rng.integers(0, C, shape)
    cand.reshape(-1)[:2] = y[0, 0]  # accidental hits, and a candidate drawn twice
    sv = (cand, rng.uniform(0.2, 2.0, (B, num_true)), rng.uniform(0.2, 2.0, shape))
    args = [backend.asarray(a) for a in (w, b, y, x)] + [S, C, num_true]
    args.append(tuple(backend.asarray(a) for a in sv))
    rs.gradcheck(fn, tuple(args), **kwargs)


@pytest.mark.parametrize("per_example", [False, True])
def test_gradcheck_target_excluded(backend, model, rng, per_example):
    w, b, x = model
    y = rng.integers(0, C, (B, 1))
    shape = (B, S) if per_example else (S,)
    cand = rng.integers(0, C, shape)
    cand.reshape(-1)[0] = y[0, 0]
    sv = (cand, rng.uniform(0.1, 0.5, (B, 1)), rng.uniform(0.1, 0.5, shape))
    args = [backend.asarray(a) for a in (w, b, y, x)] + [S, C, 1, tuple(backend.asarray(a) for a in sv)]
    rs.gradcheck(rs.sampled_softmax_loss, tuple(args), estimator="target_excluded", reduction="mean")


def test_row_sparse_gradients_accumulate(model):
    w, b, x = model
    y = np.array([[2], [2], [2], [4], [2]])
    cand = np.array([7, 7, 1, 7, 0, 7])
    sv = (cand, np.ones((B, 1)), np.ones(S))
    _, grads = rs.sampled_softmax_loss.value_and_grad(w, b, y, x, S, C, sampled_values=sv)
    gw = grads["weights"]
    assert isinstance(gw, rs.RowSparse) and gw.shape == (C, D)
    dense = gw.to_dense()
    idx = np.asarray(gw.indices)
    vals = np.asarray(gw.values)
    np.testing.assert_allclose(dense[2], vals[idx == 2].sum(0), rtol=1e-14)
    np.testing.assert_allclose(dense[7], vals[idx == 7].sum(0), rtol=1e-14)
    assert (idx == 7).sum() == 4 and (idx == 2).sum() == 4


def test_target_excluded_row_whose_samples_all_hit(model):
    w, b, x = model
    y = np.full((B, 1), 3)
    value, grads = rs.sampled_softmax_loss.value_and_grad(
        w, b, y, x, 2, C, sampled_values=(np.array([3, 3]), np.full((B, 1), 0.2), np.full(2, 0.2)),
        estimator="target_excluded")
    np.testing.assert_array_equal(value, 0.0)
    np.testing.assert_array_equal(grads["inputs"], 0.0)


# ------------------------------------------------------------------ estimators vs full softmax

def _grad_inputs_full(w, b, x, y):
    g = rs.sparse_softmax_cross_entropy.value_and_grad(x @ w.T + b, y[:, 0])[1]["logits"]
    return g @ w


@pytest.mark.parametrize("estimator", ["logq", "target_excluded"])
def test_estimator_gradient_bias_shrinks_with_num_sampled(rng, estimator):
    """The mean sampled gradient approaches the full-softmax gradient as num_sampled grows."""
    from refsoftmax import samplers

    num_classes, dim = 200, 8
    w = rng.standard_normal((num_classes, dim)) * 0.5
    b = -np.log1p(np.arange(num_classes)) * 0.5  # Zipf-like, matching the log-uniform sampler
    x = rng.standard_normal((1, dim))
    y = np.array([[3]])
    full = _grad_inputs_full(w, b, x, y)
    sampler = samplers.LogUniformSampler(num_classes)
    errors = []
    for num_sampled in (5, 40, 160):
        grads = []
        for seed in range(150):
            sv = sampler.sample(y, num_sampled, unique=estimator == "logq", seed=seed)
            _, g = rs.sampled_softmax_loss.value_and_grad(
                w, b, y, x, num_sampled, num_classes, sampled_values=sv, estimator=estimator,
                sampler=sampler if estimator == "target_excluded" else None)
            grads.append(g["inputs"])
        errors.append(np.linalg.norm(np.mean(grads, axis=0) - full) / np.linalg.norm(full))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


# ------------------------------------------------------------------ numerics and bad input

@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_accidental_hits_do_not_overflow_half(dtype, rng):
    w = rng.standard_normal((C, D)).astype(dtype)
    x = rng.standard_normal((B, D)).astype(dtype)
    y = np.zeros((B, 1), int)
    cand = np.array([0, 0, 1, 2, 0, 3])
    sv = (cand, np.ones((B, 1), np.float32), np.ones(S, np.float32))
    for fn in (rs.sampled_softmax_loss, rs.nce_loss):
        value, grads = fn.value_and_grad(w, None, y, x, S, C, sampled_values=sv, remove_accidental_hits=True)
        assert value.dtype == dtype
        assert np.isfinite(value).all() and np.isfinite(grads["inputs"]).all()
        assert np.isfinite(grads["weights"].to_dense()).all()


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(labels=np.full((B, 1), C)), ValueError, r"labels must be in \[0, 9\), got 9"),
        (dict(labels=np.zeros((B, 2), int)), ValueError, r"labels must have shape \(batch=5, num_true=1\)"),
        (dict(labels=np.zeros((B, 1))), TypeError, "labels must have an integer dtype"),
        (dict(inputs=np.zeros((B, D + 1))), ValueError, "inputs must have shape"),
        (dict(biases=np.zeros(C + 1)), ValueError, "biases must have shape"),
        (dict(num_classes=C + 1), ValueError, r"weights must have shape \(num_classes=10"),
        (dict(num_sampled=0), ValueError, "num_sampled must be >= 1, got 0"),
        (dict(num_sampled=2.5), TypeError, "num_sampled must be an integer"),
        (dict(sampled_values=(np.array([0, C]), np.ones((B, 1)), np.ones(2))), ValueError,
         r"sampled candidates must be in \[0, 9\), got 9"),
        (dict(sampled_values=(np.array([0, 1]), np.zeros((B, 1)), np.ones(2))), ValueError,
         "expected counts must be > 0"),
        (dict(sampled_values=(np.array([0, 1]), np.ones((B, 2)), np.ones(2))), ValueError,
         "true_expected_count must have shape"),
        (dict(sampled_values=(1, 2)), ValueError, "sampled_values must be a"),
    ],
)
def test_bad_input(model, change, exc, match):
    w, b, x = model
    args = dict(weights=w, biases=b, labels=np.zeros((B, 1), int), inputs=x, num_sampled=2,
                num_classes=C, sampled_values=(np.array([0, 1]), np.ones((B, 1)), np.ones(2)))
    args.update(change)
    with pytest.raises(exc, match=match):
        rs.sampled_softmax_loss(**args)


def test_target_excluded_bad_options(model):
    w, b, x = model
    sv = (np.array([0, 1]), np.ones((B, 2)), np.ones(2))
    with pytest.raises(ValueError, match="needs num_true=1"):
        rs.sampled_softmax_loss(w, b, np.zeros((B, 2), int), x, 2, C, 2, sv, estimator="target_excluded")
    with pytest.raises(ValueError, match="contradicts"):
        rs.sampled_softmax_loss(w, b, np.zeros((B, 1), int), x, 2, C, 1, (sv[0], sv[1][:, :1], sv[2]),
                                remove_accidental_hits=False, estimator="target_excluded")
    with pytest.raises(ValueError, match="estimator must be one of"):
        rs.sampled_softmax_loss(w, b, np.zeros((B, 1), int), x, 2, C, estimator="nce")


# ------------------------------------------------------------------ linear (chunked exact) softmax

@pytest.mark.parametrize("chunk", [1, 4, 9, 100, None])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_linear_equals_materialised(backend, model, rng, chunk, reduction):
    w, b, x = model
    y = rng.integers(0, C, B)
    y[2] = -1
    y[4] = y[0]  # a label shared by two examples: its weight-gradient row accumulates
    z = x @ w.T + b
    ref, g = rs.sparse_softmax_cross_entropy.value_and_grad(z, y, ignore_index=-1, reduction=reduction)
    args = [backend.asarray(a) for a in (w, b, y, x)]
    value, grads = rs.linear_softmax_cross_entropy.value_and_grad(*args, chunk_size=chunk, ignore_index=-1,
                                                                 reduction=reduction)
    np.testing.assert_allclose(backend.to_numpy(value), ref, rtol=1e-13)
    gz = g["logits"]
    np.testing.assert_allclose(backend.to_numpy(grads["inputs"]), gz @ w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(grads["weights"]), gz.T @ x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(grads["biases"]), gz.sum(0), rtol=1e-12, atol=1e-14)


def test_linear_gradcheck(backend, model, rng):
    w, b, x = model
    y = rng.integers(0, C, B)
    args = tuple(backend.asarray(a) for a in (w, b, y, x))
    rs.gradcheck(rs.linear_softmax_cross_entropy, args, chunk_size=4, reduction="sum")
    rs.gradcheck(rs.linear_softmax_cross_entropy, (args[0], None, args[2], args[3]),
                 wrt=("weights", "inputs"), chunk_size=2)


def test_linear_huge_logits_are_exact():
    w = np.array([[1.0], [1.0], [1.0]])
    b = np.array([0.0, 1.0, -2.0])
    x = np.array([[1e10]])
    expected = -special.log_softmax([0.0, 1.0, -2.0])
    for t in range(3):
        v = rs.linear_softmax_cross_entropy(w, b, np.array([t]), x, chunk_size=1)
        np.testing.assert_allclose(v, [expected[t]], rtol=1e-6)  # b is tiny next to x: ulp(1e10) ~ 2e-6


def test_linear_never_materialises_the_logits(rng):
    batch, classes, dim = 256, 16384, 16
    w = rng.standard_normal((classes, dim)).astype(np.float32)
    b = np.zeros(classes, np.float32)
    x = rng.standard_normal((batch, dim)).astype(np.float32)
    y = rng.integers(0, classes, batch)
    logits_bytes = batch * classes * 4  # 16 MiB
    tracemalloc.start()
    _value, _grads = rs.linear_softmax_cross_entropy.value_and_grad(w, b, y, x, chunk_size=128)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    output_bytes = w.nbytes + b.nbytes + x.nbytes  # the gradients themselves
    assert peak - output_bytes < 0.1 * logits_bytes, (peak, output_bytes, logits_bytes)


def test_linear_bad_input(model):
    w, b, x = model
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\), got -3"):
        rs.linear_softmax_cross_entropy(w, b, np.array([0, 1, -3, 0, 0]), x)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        rs.linear_softmax_cross_entropy(w, b, np.zeros(B, int), x, chunk_size=0)
    with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
        rs.linear_softmax_cross_entropy(w, b, np.zeros((B, 1), int), x)


def test_linear_edge_rows():
    """All -inf row: +inf and gradient 0, as sparse CE; ignored NaN rows leak nothing."""
    w = np.zeros((3, 2))
    b = np.full(3, -np.inf)
    value, grads = rs.linear_softmax_cross_entropy.value_and_grad(w, b, np.array([0, -1]), np.ones((2, 2)),
                                                                 ignore_index=-1)
    np.testing.assert_array_equal(value, [np.inf, 0.0])
    for g in grads.values():
        np.testing.assert_array_equal(g, 0.0)
    x = np.array([[1.0, 2.0], [np.nan, 1.0]])
    value, grads = rs.linear_softmax_cross_entropy.value_and_grad(np.ones((3, 2)), np.zeros(3), np.array([0, -1]),
                                                                 x, ignore_index=-1)
    assert np.isfinite(value).all()
    for g in grads.values():
        assert np.isfinite(g).all()


def test_sigmoid_terms_exact_at_infinite_logits():
    w = np.array([[1.0], [1.0]])
    b = np.array([0.0, -np.inf])  # the sampled class can never score: its noise term is exactly 0
    sv = (np.array([1]), np.ones((1, 1)), np.ones(1))
    value = rs.nce_loss(w, b, np.array([[0]]), np.array([[0.0]]), 1, 2, sampled_values=sv)
    np.testing.assert_allclose(value, [np.log(2.0)], rtol=1e-15)


def test_target_excluded_checks_expected_counts(model):
    w, b, x = model
    sv = (np.array([0, 1]), np.zeros((B, 1)), np.ones(2))
    with pytest.raises(ValueError, match="expected counts must be > 0"):
        rs.sampled_softmax_loss(w, b, np.full((B, 1), 3), x, 2, C, sampled_values=sv, estimator="target_excluded")


# ------------------------------------------------------------------ in-place safety

@pytest.mark.parametrize("loss, kwargs", [
    (rs.sampled_softmax_loss, {}),
    (rs.sampled_softmax_loss, {"estimator": "target_excluded"}),
    (rs.sampled_softmax_loss, {"subtract_log_q": False}),
    (rs.nce_loss, {}),
    (rs.negative_sampling_loss, {}),
])
@pytest.mark.parametrize("with_biases", [True, False])
def test_inputs_untouched_and_backward_repeatable(backend, model, rng, loss, kwargs, with_biases):
    # the forward updates its own [B, S] temporaries in place (backends.inplace): it must
    # never write into an argument, and the residuals must survive a second backward
    w, b, x = model
    y = rng.integers(0, C, (B, 1))
    cand = np.array([0, 2, 2, 5, 7, 8])
    cand[0] = y[0, 0]  # an accidental hit
    sv_np = (cand, np.full((B, 1), 0.5), np.full(S, 0.4))
    host = [w, b if with_biases else None, y, x, *sv_np]
    copies = [None if a is None else a.copy() for a in host]
    args = [None if a is None else backend.asarray(a) for a in host]
    sv = tuple(args[4:])
    value, res = loss.forward(*args[:4], S, C, sampled_values=sv, **kwargs)
    first = loss.backward(res, backend.xp.ones_like(value))
    second = loss.backward(res, backend.xp.ones_like(value))
    for name in first:
        a, b2 = first[name], second[name]
        if hasattr(a, "to_dense"):
            a, b2 = a.to_dense(), b2.to_dense()
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b2))
    for arg, original in zip(args, copies, strict=True):
        if original is not None:
            np.testing.assert_array_equal(backend.to_numpy(arg), original)

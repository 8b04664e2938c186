"""Softmax cross-entropy (dense and sparse): values, gradients, edge values, options."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import special

import refsoftmax as rs
from tests import oracle

SPARSE = rs.sparse_softmax_cross_entropy
DENSE = rs.softmax_cross_entropy


def _dist(rng, shape):
    return special.softmax(rng.standard_normal(shape) * 2, axis=-1)


# ---------------------------------------------------------------- values vs oracle

OPTION_GRID = [
    dict(),
    dict(label_smoothing=0.1),
    dict(label_smoothing=0.3, label_smoothing_mode="others"),
    dict(class_weights=True),
    dict(class_weights=True, label_smoothing=0.2),
    dict(class_weights=True, label_smoothing=0.2, class_weighting="target"),
    dict(class_weights=True, label_smoothing=0.2, label_smoothing_mode="others", class_weighting="target"),
    dict(where=True),
    dict(where=True, label_smoothing=0.25),
    dict(where=True, label_smoothing=0.25, label_smoothing_mode="others", class_weights=True),
    dict(ignore_index=-100),
    dict(ignore_index=2, class_weights=True, label_smoothing=0.1),
]


def _materialise(opts, rng, shape):
    opts = dict(opts)
    c = shape[-1]
    if opts.get("class_weights"):
        opts["class_weights"] = rng.uniform(0.2, 3.0, size=c)
    if opts.get("where"):
        where = rng.random(shape) > 0.3
        where[..., 0] = True
        opts["where"] = where
    return opts


@pytest.mark.parametrize("opts", OPTION_GRID, ids=lambda o: ",".join(sorted(o)) or "plain")
def test_sparse_matches_oracle(backend, rng, opts):
    shape = (3, 4, 6)
    opts = _materialise(opts, rng, shape)
    z = rng.standard_normal(shape) * 3
    t = rng.integers(0, shape[-1], size=shape[:-1])
    if "where" in opts:  # labels on allowed classes only, so the loss is finite
        t = np.where(np.take_along_axis(opts["where"], t[..., None], -1)[..., 0], t, 0)
    if opts.get("ignore_index") is not None:
        t[0, :2] = opts["ignore_index"]
    expected = oracle.sparse_losses(
        z, t, where=opts.get("where"), ignore_index=opts.get("ignore_index"),
        class_weights=opts.get("class_weights"), eps=opts.get("label_smoothing", 0.0),
        mode=opts.get("label_smoothing_mode", "uniform"),
        weighting=opts.get("class_weighting", "per_class"),
    )
    args = {k: (backend.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}
    got = SPARSE(backend.asarray(z), backend.asarray(t), **args)
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-13, atol=1e-14)
    for kind in ("weights", "count", "all"):
        mean = SPARSE(backend.asarray(z), backend.asarray(t), reduction="mean",
                      mean_denominator=kind, **args)
        den = oracle.sparse_denominator(t, ignore_index=opts.get("ignore_index"),
                                        class_weights=opts.get("class_weights"), kind=kind)
        np.testing.assert_allclose(backend.to_numpy(mean), expected.sum() / den, rtol=1e-13)
    total = SPARSE(backend.asarray(z), backend.asarray(t), reduction="sum", **args)
    np.testing.assert_allclose(backend.to_numpy(total), expected.sum(), rtol=1e-13)


@pytest.mark.parametrize("opts", [o for o in OPTION_GRID if "ignore_index" not in o and "class_weighting" not in o],
                         ids=lambda o: ",".join(sorted(o)) or "plain")
def test_dense_matches_oracle(backend, rng, opts):
    shape = (5, 7)
    opts = _materialise(opts, rng, shape)
    z = rng.standard_normal(shape) * 3
    y = _dist(rng, shape)
    if "where" in opts:
        y = np.where(opts["where"], y, 0.0)
    expected = oracle.dense_losses(
        z, y, where=opts.get("where"), class_weights=opts.get("class_weights"),
        eps=opts.get("label_smoothing", 0.0), mode=opts.get("label_smoothing_mode", "uniform"),
    )
    args = {k: (backend.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}
    got = DENSE(backend.asarray(z), backend.asarray(y), **args)
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-13, atol=1e-14)
    w = opts.get("class_weights")
    omega = (y if w is None else y * w).sum()
    mean = DENSE(backend.asarray(z), backend.asarray(y), reduction="mean", **args)
    np.testing.assert_allclose(backend.to_numpy(mean), expected.sum() / omega, rtol=1e-13)
    mean_n = DENSE(backend.asarray(z), backend.asarray(y), reduction="mean", mean_denominator="all", **args)
    np.testing.assert_allclose(backend.to_numpy(mean_n), expected.mean(), rtol=1e-13)


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("opts", OPTION_GRID, ids=lambda o: ",".join(sorted(o)) or "plain")
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_sparse_gradcheck(backend, rng, opts, reduction):
    shape = (2, 3, 5)
    opts = _materialise(opts, rng, shape)
    z = rng.standard_normal(shape)
    t = rng.integers(0, shape[-1], size=shape[:-1])
    if "where" in opts:
        t = np.where(np.take_along_axis(opts["where"], t[..., None], -1)[..., 0], t, 0)
    if opts.get("ignore_index") is not None:
        t[0, 0] = opts["ignore_index"]
    args = {k: (backend.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}
    rs.gradcheck(SPARSE, (backend.asarray(z), backend.asarray(t)), reduction=reduction, **args)


@pytest.mark.parametrize("opts", [o for o in OPTION_GRID if "ignore_index" not in o and "class_weighting" not in o],
                         ids=lambda o: ",".join(sorted(o)) or "plain")
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_dense_gradcheck(backend, rng, opts, reduction):
    shape = (3, 5)
    opts = _materialise(opts, rng, shape)
    z = rng.standard_normal(shape)
    y = _dist(rng, shape) + 0.05  # unnormalised, strictly positive: every label derivative is finite
    if "where" in opts:
        y = np.where(opts["where"], y, 0.0)
        # derivatives w.r.t. labels on masked classes are +inf (true); check the logits there
        wrt = ("logits",)
    else:
        wrt = ("logits", "labels")
    args = {k: (backend.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}
    rs.gradcheck(DENSE, (backend.asarray(z), backend.asarray(y)), wrt=wrt, reduction=reduction, **args)


def test_large_input_vjp_mode(backend, rng):
    z = rng.standard_normal((16, 40)) * 4
    t = rng.integers(0, 40, size=16)
    report = rs.gradcheck(SPARSE, (backend.asarray(z), backend.asarray(t)),
                          label_smoothing=0.1, reduction="mean")
    assert report.mode == "vjp"
    assert report.arguments["logits"].checked == 8


def test_gradient_against_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z = rng.standard_normal((6, 9))
    t = rng.integers(0, 9, size=6)
    t[1] = -100
    w = rng.uniform(0.5, 2.0, size=9)
    zt = torch.tensor(z, requires_grad=True)
    ref = F.cross_entropy(zt, torch.tensor(t), weight=torch.tensor(w), ignore_index=-100)
    ref.backward()
    value, grads = SPARSE.value_and_grad(z, t, class_weights=w, ignore_index=-100, reduction="mean")
    np.testing.assert_allclose(value, ref.item(), rtol=1e-13)
    np.testing.assert_allclose(grads["logits"], zt.grad.numpy(), rtol=1e-12, atol=1e-15)

    y = _dist(rng, (6, 9))
    zt = torch.tensor(z, requires_grad=True)
    yt = torch.tensor(y, requires_grad=True)
    ref = F.cross_entropy(zt, yt, reduction="sum", label_smoothing=0.2)
    ref.backward()
    value, grads = DENSE.value_and_grad(z, y, reduction="sum", label_smoothing=0.2)
    np.testing.assert_allclose(value, ref.item(), rtol=1e-13)
    np.testing.assert_allclose(grads["logits"], zt.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads["labels"], yt.grad.numpy(), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- edge values

def test_masked_class_without_label_mass(backend):
    z = backend.asarray([[-np.inf, 1.0, 2.0]])
    t = backend.asarray([2])
    value, grads = SPARSE.value_and_grad(z, t)
    p = special.softmax([1.0, 2.0])
    np.testing.assert_allclose(backend.to_numpy(value), [-np.log(p[1])], rtol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(grads["logits"]), [[0.0, p[0], p[1] - 1]], rtol=1e-14)
    y = backend.asarray([[0.0, 0.5, 0.5]])
    value, grads = DENSE.value_and_grad(z, y, label_smoothing=0.0)
    assert np.isfinite(backend.to_numpy(value)).all()
    assert np.isfinite(backend.to_numpy(grads["logits"])).all()
    assert backend.to_numpy(grads["logits"])[0, 0] == 0.0


def test_label_mass_on_minus_inf_logit_is_plus_inf(backend):
    z = backend.asarray([[-np.inf, 1.0, 2.0]])
    value, grads = SPARSE.value_and_grad(z, backend.asarray([0]))
    assert backend.to_numpy(value)[0] == np.inf
    assert not np.isnan(backend.to_numpy(grads["logits"])).any()
    value = DENSE(z, backend.asarray([[0.5, 0.5, 0.0]]))
    assert backend.to_numpy(value)[0] == np.inf
    # smoothing puts mass on the -inf class too: +inf, the true value
    assert backend.to_numpy(SPARSE(z, backend.asarray([1]), label_smoothing=0.1))[0] == np.inf


def test_where_false_is_like_minus_inf(backend, rng):
    z = rng.standard_normal((4, 5))
    where = np.ones((4, 5), bool)
    where[:, 3] = False
    t = np.array([0, 1, 2, 4])
    zinf = z.copy()
    zinf[:, 3] = -np.inf
    a = SPARSE.value_and_grad(backend.asarray(z), backend.asarray(t), where=backend.asarray(where))
    b = SPARSE.value_and_grad(backend.asarray(zinf), backend.asarray(t))
    # equal to rounding (on NumPy the -inf call takes the fused kernel, the where call does not)
    np.testing.assert_allclose(backend.to_numpy(a[0]), backend.to_numpy(b[0]), rtol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(a[1]["logits"]), backend.to_numpy(b[1]["logits"]),
                               rtol=1e-15, atol=1e-17)


def test_row_with_no_allowed_class(backend):
    z = backend.asarray([[1.0, 2.0], [0.5, 0.1]])
    where = backend.asarray([[False, False], [True, True]])
    value, grads = SPARSE.value_and_grad(z, backend.asarray([0, 1]), where=where)
    v = backend.to_numpy(value)
    assert v[0] == np.inf and np.isfinite(v[1])
    g = backend.to_numpy(grads["logits"])
    np.testing.assert_array_equal(g[0], [0.0, 0.0])
    # ignored rows with no allowed class contribute exactly 0
    value = SPARSE(z, backend.asarray([-1, 1]), where=where, ignore_index=-1)
    assert backend.to_numpy(value)[0] == 0.0
    # all -inf logits behave the same
    value = SPARSE(backend.asarray([[-np.inf, -np.inf]]), backend.asarray([1]))
    assert backend.to_numpy(value)[0] == np.inf


@pytest.mark.parametrize("empty_mean, expected", [("nan", np.nan), ("zero", 0.0)])
def test_fully_ignored_batch(backend, empty_mean, expected):
    z = backend.asarray([[1.0, 2.0], [0.5, 0.1]])
    t = backend.asarray([-100, -100])
    value, grads = SPARSE.value_and_grad(z, t, ignore_index=-100, reduction="mean", empty_mean=empty_mean)
    np.testing.assert_array_equal(backend.to_numpy(value), expected)
    np.testing.assert_array_equal(backend.to_numpy(grads["logits"]), np.zeros((2, 2)))
    assert backend.to_numpy(SPARSE(z, t, ignore_index=-100, reduction="sum")) == 0.0


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_extreme_magnitudes_are_exact():
    # losses of order 1 on top of logits of order 1e10: no cancellation through lse
    z = np.array([[1e10, 1e10 + 1.0, 1e10 - 2.0]])
    expected = -special.log_softmax(np.array([0.0, 1.0, -2.0]))
    for t in range(3):
        np.testing.assert_allclose(SPARSE(z, np.array([t])), [expected[t]], rtol=1e-15)
    # huge spread: the value overflows float64 only where it truly exceeds it
    z = np.array([[1e308, -1e308]])
    assert SPARSE(z, np.array([1]))[0] == np.inf
    assert SPARSE(z, np.array([0]))[0] == 0.0
    tiny = np.array([[5e-324, 0.0]])
    np.testing.assert_allclose(SPARSE(tiny, np.array([0])), [np.log(2.0)], rtol=1e-15)


def test_half_precision_never_overflows(backend):
    # true loss 1000 fits float16 (max 65504); a float16 computation of exp would overflow
    z = np.array([[0.0, 1000.0, -1000.0]], dtype=np.float16)
    try:
        zb = backend.asarray(z)
    except (TypeError, ValueError):
        pytest.skip("backend has no float16")
    value, grads = SPARSE.value_and_grad(zb, backend.asarray([0]))
    v = backend.to_numpy(value)
    assert v.dtype == np.float16
    assert v[0] == np.float16(1000.0)
    g = backend.to_numpy(grads["logits"])
    assert g.dtype == np.float16
    np.testing.assert_array_equal(g, np.array([[-1.0, 1.0, 0.0]], dtype=np.float16))


def test_bfloat16_torch():
    torch = pytest.importorskip("torch")
    z = torch.tensor([[0.0, 300.0, -5.0]], dtype=torch.bfloat16)
    value, grads = SPARSE.value_and_grad(z, torch.tensor([0]))
    assert value.dtype == torch.bfloat16 and grads["logits"].dtype == torch.bfloat16
    assert value.item() == 300.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(backend, dtype):
    z = backend.asarray(np.ones((2, 3), dtype))
    y = backend.asarray(np.full((2, 3), 1 / 3, dtype))
    value, grads = DENSE.value_and_grad(z, y)
    assert value.dtype == z.dtype and grads["logits"].dtype == z.dtype and grads["labels"].dtype == y.dtype


def test_nan_propagates(backend):
    z = backend.asarray([[np.nan, 1.0], [0.0, 1.0]])
    v = backend.to_numpy(SPARSE(z, backend.asarray([1, 1])))
    assert np.isnan(v[0]) and np.isfinite(v[1])
    v = backend.to_numpy(DENSE(backend.asarray([[0.0, 1.0]]), backend.asarray([[np.nan, 1.0]])))
    assert np.isnan(v[0])


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(labels=[0, 3]), ValueError, r"labels must be in \[0, 3\), got 3"),
        (dict(labels=[0, -1]), ValueError, r"got -1"),
        (dict(labels=[0, -1], ignore_index=-100), ValueError, r"or equal ignore_index=-100, got -1"),
        (dict(labels=[0.0, 1.0]), TypeError, "labels must have an integer dtype"),
        (dict(labels=[0, 1, 2]), ValueError, "labels must have shape"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing must be in"),
        (dict(label_smoothing=-0.1), ValueError, "label_smoothing must be in"),
        (dict(label_smoothing=float("nan")), ValueError, "label_smoothing must be in"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(label_smoothing_mode="x"), ValueError, "label_smoothing_mode must be one of"),
        (dict(class_weighting="x"), ValueError, "class_weighting must be one of"),
        (dict(mean_denominator="x"), ValueError, "mean_denominator must be one of"),
        (dict(empty_mean="x"), ValueError, "empty_mean must be one of"),
        (dict(class_weights=[1.0, 2.0]), ValueError, r"class_weights must have shape \(3,\)"),
        (dict(class_weights=[1.0, -2.0, 1.0]), ValueError, "class_weights must be finite and >= 0, got -2.0"),
        (dict(class_weights=[1.0, np.inf, 1.0]), ValueError, "class_weights must be finite"),
        (dict(ignore_index=1.5), TypeError, "ignore_index must be an integer"),
        (dict(axis=2), ValueError, "axis=2 is out of range"),
        (dict(where=np.ones((2, 3))), TypeError, "where must be a boolean array"),
        (dict(where=np.ones((4,), bool)), ValueError, "does not broadcast"),
        (dict(logits=[[1, 2, 3], [1, 2, 3]]), TypeError, "logits must have a real floating dtype"),
        (dict(logits=np.ones((2, 3), bool)), TypeError, "logits must have a real floating dtype"),
    ],
)
def test_sparse_bad_input(backend, kwargs, exc, match):
    args = dict(logits=np.zeros((2, 3)), labels=np.array([0, 1]))
    args.update(kwargs)
    args = {k: (backend.asarray(v) if isinstance(v, (np.ndarray, list)) else v) for k, v in args.items()}
    with pytest.raises(exc, match=match):
        SPARSE(args.pop("logits"), args.pop("labels"), **args)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(labels=np.array([[0.5, -0.5, 1.0]])), ValueError, "labels must be >= 0, got -0.5"),
        (dict(labels=np.array([[0, 1, 0]])), TypeError, "use sparse_softmax_cross_entropy"),
        (dict(labels=np.ones((1, 4))), ValueError, "labels must have the logits' shape"),
        (dict(label_smoothing=2), ValueError, "label_smoothing must be in"),
        (dict(label_smoothing="0.1"), TypeError, "label_smoothing must be a real number"),
        (dict(reduction=None), ValueError, "reduction must be one of"),
    ],
)
def test_dense_bad_input(backend, kwargs, exc, match):
    args = dict(logits=np.zeros((1, 3)), labels=np.array([[0.2, 0.3, 0.5]]))
    args.update(kwargs)
    args = {k: (backend.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    with pytest.raises(exc, match=match):
        DENSE(args.pop("logits"), args.pop("labels"), **args)


def test_cotangent_shape_is_checked(backend):
    _value, res = SPARSE.forward(backend.asarray(np.zeros((2, 3))), backend.asarray([0, 1]))
    with pytest.raises(ValueError, match=r"cotangent must have the value's shape \(2,\)"):
        SPARSE.backward(res, backend.asarray(np.ones(3)))


# ---------------------------------------------------------------- the worked example of the docs

def test_docs_worked_example():
    """docs/losses/sparse_softmax_cross_entropy.md: logits [2, 1, 0.1], target 0."""
    z = np.array([[2.0, 1.0, 0.1]])
    value, grads = SPARSE.value_and_grad(z, np.array([0]))
    s = np.exp(0.0) + np.exp(-1.0) + np.exp(-1.9)
    assert np.isclose(value[0], np.log(s) - 0.0, rtol=1e-15)
    p = np.array([1.0, np.exp(-1.0), np.exp(-1.9)]) / s
    np.testing.assert_allclose(grads["logits"][0], p - [1, 0, 0], rtol=1e-14)
    np.testing.assert_allclose(np.round(value, 4), [0.4170])
    np.testing.assert_allclose(np.round(grads["logits"][0], 4), [-0.3410, 0.2424, 0.0986])


def test_options_cross_product_gradcheck(rng):
    """Every combination of conventions keeps the gradient consistent with the value."""
    z = rng.standard_normal((4, 4))
    t = np.array([0, 1, -1, 3])
    w = rng.uniform(0.5, 2, size=4)
    for mode, weighting, den in itertools.product(("uniform", "others"), ("per_class", "target"),
                                                  ("weights", "count", "all")):
        rs.gradcheck(SPARSE, (z, t), ignore_index=-1, class_weights=w, label_smoothing=0.2,
                     label_smoothing_mode=mode, class_weighting=weighting, mean_denominator=den,
                     reduction="mean")

"""Every integer dtype of labels, candidates and class ids gives the int64 result on every backend.

PyTorch and JAX convert a Python integer to the array's dtype before comparing
(``uint8 != -100`` compares with 156), array-api-strict raises
``OverflowError``, and PyTorch has no comparisons for ``uint16``/``uint32``/
``uint64``; these tests pin what ``refsoftmax._labels`` does about it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import refsoftmax as rs
from refsoftmax.samplers import LogUniformSampler

INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
C = 300  # more classes than int8/uint8 can name


def _labels_for(dtype: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Valid labels in [0, C) that ``dtype`` can hold, including its largest such value."""
    top = min(C, int(np.iinfo(dtype).max) + 1)
    labels = rng.integers(0, top, size=n)
    labels[0] = top - 1  # the dtype's largest valid label: 127 (int8), 255 (uint8)
    labels[1] = min(156, top - 1)  # 156 is what uint8 wraps -100 to
    return labels


DENSE = {
    "sparse_softmax_cross_entropy": {},
    "as_softmax_cross_entropy": {"delta": 0.1},
    "temperature_softmax_cross_entropy": {"temperature": 2.0},
    "topk_softmax_cross_entropy": {"k": 5},
    "sparsemax_loss": {},
    "entmax15_loss": {},
}


def _supported(backend: Any, dtype: str) -> None:
    if backend.name == "jax" and dtype == "uint64":
        import jax

        if not jax.config.read("jax_enable_x64"):
            pytest.skip("JAX without x64 has no uint64")


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("name", sorted(DENSE))
def test_dense_losses_every_integer_dtype(backend: Any, name: str, dtype: str) -> None:
    _supported(backend, dtype)
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((6, C))
    labels = _labels_for(dtype, 6, rng)
    f = getattr(rs, name)
    kw = DENSE[name]
    z = backend.asarray(logits)
    ref_value, ref_grads = f.value_and_grad(z, backend.asarray(labels, np.int64), **kw)
    # ignore_index=-100 cannot be held by an unsigned dtype, so it must match nothing (not 156)
    for ignore_index in (None, -100):
        value, grads = f.value_and_grad(z, backend.asarray(labels, dtype), ignore_index=ignore_index, **kw)
        np.testing.assert_array_equal(backend.to_numpy(value), backend.to_numpy(ref_value))
        np.testing.assert_array_equal(
            backend.to_numpy(grads["logits"]), backend.to_numpy(ref_grads["logits"])
        )


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64"])
def test_ignore_index_in_signed_dtypes(backend: Any, dtype: str) -> None:
    rng = np.random.default_rng(3)
    logits = backend.asarray(rng.standard_normal((4, C)))
    labels = np.array([5, -100, 120, -100])
    value = rs.sparse_softmax_cross_entropy(logits, backend.asarray(labels, dtype), ignore_index=-100)
    ref = rs.sparse_softmax_cross_entropy(logits, backend.asarray(labels, np.int64), ignore_index=-100)
    got = backend.to_numpy(value)
    np.testing.assert_array_equal(got, backend.to_numpy(ref))
    assert got[1] == 0 and got[3] == 0 and got[0] > 0


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64"])
def test_ignore_index_in_unsigned_dtypes(backend: Any, dtype: str) -> None:
    """An unsigned ignore_index that the dtype holds (255) is ignored; one it cannot (-1) is not."""
    _supported(backend, dtype)
    rng = np.random.default_rng(4)
    logits = backend.asarray(rng.standard_normal((3, C)))
    labels = backend.asarray(np.array([255, 3, 255]), dtype)
    value = backend.to_numpy(rs.sparse_softmax_cross_entropy(logits, labels, ignore_index=255))
    assert value[0] == 0 and value[2] == 0 and value[1] > 0
    value = backend.to_numpy(rs.sparse_softmax_cross_entropy(logits, labels, ignore_index=-1))
    assert np.all(value > 0)


@pytest.mark.parametrize(
    ("dtype", "bad", "num_classes"),
    [("uint8", 250, 200), ("int8", -5, 200), ("int8", 100, 50), ("uint16", 60000, 300),
     ("uint32", 2**32 - 1, 300), ("uint64", 2**64 - 1, 300), ("int64", -(2**63), 300)],
)
def test_out_of_range_is_reported_with_its_true_value(
    backend: Any, dtype: str, bad: int, num_classes: int
) -> None:
    _supported(backend, dtype)
    logits = backend.asarray(np.zeros((2, num_classes)))
    labels = backend.asarray(np.array([1, bad], dtype=dtype))
    with pytest.raises(ValueError, match=rf"labels must be in \[0, {num_classes}\).*got {bad}$"):
        rs.sparse_softmax_cross_entropy(logits, labels, ignore_index=-100)


def test_valid_labels_near_the_dtype_limits_are_accepted(backend: Any) -> None:
    """uint8 250 with C = 300 and int8 5 with C = 200 are valid (they were once rejected)."""
    for dtype, label, num_classes in (("uint8", 250, 300), ("int8", 5, 200), ("int8", 127, 128)):
        logits = np.zeros((1, num_classes))
        logits[0, label] = 1.0
        value = rs.sparse_softmax_cross_entropy(
            backend.asarray(logits), backend.asarray(np.array([label]), dtype), ignore_index=-100
        )
        expected = np.log(num_classes - 1 + np.e) - 1.0
        np.testing.assert_allclose(backend.to_numpy(value), [expected], rtol=1e-15)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_linear_and_am_softmax_every_integer_dtype(backend: Any, dtype: str) -> None:
    _supported(backend, dtype)
    rng = np.random.default_rng(11)
    w = backend.asarray(rng.standard_normal((C, 4)))
    b = backend.asarray(rng.standard_normal(C))
    x = backend.asarray(rng.standard_normal((5, 4)))
    labels = _labels_for(dtype, 5, rng)
    for ignore_index in (None, -100):
        got = rs.linear_softmax_cross_entropy.value_and_grad(
            w, b, backend.asarray(labels, dtype), x, ignore_index=ignore_index, chunk_size=64)
        ref = rs.linear_softmax_cross_entropy.value_and_grad(
            w, b, backend.asarray(labels, np.int64), x, chunk_size=64)
        _assert_same(backend, got, ref)
        got = rs.am_softmax_loss.value_and_grad(x, w, backend.asarray(labels, dtype), ignore_index=ignore_index)
        ref = rs.am_softmax_loss.value_and_grad(x, w, backend.asarray(labels, np.int64))
        _assert_same(backend, got, ref)


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("name", ["sampled_softmax_loss", "nce_loss"])
def test_sampled_family_every_integer_dtype(backend: Any, name: str, dtype: str) -> None:
    """Labels and sampled candidates of any integer dtype."""
    _supported(backend, dtype)
    rng = np.random.default_rng(5)
    w = backend.asarray(rng.standard_normal((C, 4)))
    b = backend.asarray(rng.standard_normal(C))
    x = backend.asarray(rng.standard_normal((5, 4)))
    labels = _labels_for(dtype, 5, rng)[:, None]
    top = min(C, int(np.iinfo(dtype).max) + 1)
    cand = np.array([0, 3, top - 1, int(labels[1, 0])])  # one accidental hit
    true_ec = backend.asarray(np.full((5, 1), 0.25))
    sampled_ec = backend.asarray(np.full(4, 0.25))
    f = getattr(rs, name)

    def run(int_dtype: Any) -> Any:
        sv = (backend.asarray(cand, int_dtype), true_ec, sampled_ec)
        return f.value_and_grad(w, b, backend.asarray(labels, int_dtype), x, num_sampled=4,
                                num_classes=C, sampled_values=sv, remove_accidental_hits=True)

    _assert_same(backend, run(dtype), run(np.int64))


def test_sampler_classes_every_integer_dtype(backend: Any) -> None:
    sampler = LogUniformSampler(range_max=C)
    ref = backend.to_numpy(sampler.probability(backend.asarray(np.array([0, 5, 200, 255]), np.int64)))
    for dtype in ("int16", "uint8", "uint16", "uint32", "int32"):
        got = backend.to_numpy(sampler.probability(backend.asarray(np.array([0, 5, 200, 255]), dtype)))
        np.testing.assert_array_equal(got, ref)
    with pytest.raises(ValueError, match=r"classes must lie in \[0, range_max=300\), got 300"):
        sampler.probability(backend.asarray(np.array([300]), "uint16"))


def test_float_labels_are_a_type_error(backend: Any) -> None:
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        rs.sparse_softmax_cross_entropy(backend.asarray(np.zeros((2, 3))), backend.asarray(np.zeros(2)))


def _assert_same(backend: Any, got: Any, ref: Any) -> None:
    np.testing.assert_array_equal(backend.to_numpy(got[0]), backend.to_numpy(ref[0]))
    for key, value in ref[1].items():
        if value is None:
            continue
        g = got[1][key]
        if hasattr(value, "to_dense"):
            value, g = value.to_dense(), g.to_dense()
        np.testing.assert_array_equal(backend.to_numpy(g), backend.to_numpy(value))

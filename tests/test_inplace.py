"""``refsoftmax.backends.inplace``: the same numbers as the standard calls, in place where allowed."""

from __future__ import annotations

import numpy as np
import pytest

from refsoftmax.backends import inplace

WRITES_IN_PLACE = {"numpy", "torch", "cupy"}


def _data(backend):
    x = backend.asarray([[0.5, -1.0, 2.0], [-np.inf, 0.0, 3.0]], dtype=np.float64)
    mask = backend.asarray([[True, False, False], [False, False, True]])
    return x, mask


def test_exp_matches_standard_and_reuses_buffer(backend):
    x, _ = _data(backend)
    expected = backend.to_numpy(backend.xp.exp(x))
    out = inplace.exp_(x)
    np.testing.assert_array_equal(backend.to_numpy(out), expected)
    assert (out is x) == (backend.name in WRITES_IN_PLACE)


def test_fill_where_matches_standard_and_reuses_buffer(backend):
    x, mask = _data(backend)
    xp = backend.xp
    expected = backend.to_numpy(xp.where(mask, xp.asarray(-np.inf, dtype=x.dtype), x))
    out = inplace.fill_where_(x, mask, -np.inf)
    np.testing.assert_array_equal(backend.to_numpy(out), expected)
    assert (out is x) == (backend.name in WRITES_IN_PLACE)


def test_fill_where_broadcasts_a_row_mask(backend):
    x, _ = _data(backend)
    row = backend.asarray([[True], [False]])
    out = backend.to_numpy(inplace.fill_where_(x, row, 7.0))
    np.testing.assert_array_equal(out[0], 7.0)
    assert out[1, 2] == 3.0


def test_read_only_numpy_is_not_written():
    x = np.array([0.0, 1.0])
    x.setflags(write=False)
    out = inplace.exp_(x)
    assert out is not x and x[1] == 1.0
    out = inplace.fill_where_(x, np.array([True, False]), 5.0)
    assert out is not x and x[0] == 0.0 and out[0] == 5.0


def test_torch_tensor_that_requires_grad_is_not_written():
    torch = pytest.importorskip("torch")
    x = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    out = inplace.exp_(x)
    assert out is not x and float(x.detach()[1]) == 1.0


def test_scatter_add_accumulates_duplicates(backend):
    x = backend.asarray(np.arange(8.0).reshape(4, 2))
    idx = backend.asarray(np.array([1, 3, 1, 1]))
    vals = backend.asarray(np.ones((4, 2)))
    expected = np.arange(8.0).reshape(4, 2)
    expected[1] += 3
    expected[3] += 1
    out = inplace.scatter_add_(x, idx, vals)
    np.testing.assert_array_equal(backend.to_numpy(out), expected)
    assert (out is x) == (backend.name in WRITES_IN_PLACE)
    with pytest.raises(ValueError, match="one row per index"):
        inplace.scatter_add_(x, idx, backend.asarray(np.ones((3, 2))))

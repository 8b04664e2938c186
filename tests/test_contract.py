"""One contract for every public loss: the registry (``refsoftmax.registry``) is iterated, not re-typed.

Every entry is checked, on every installed backend, for: namespace, dtype and device
preservation; every integer dtype of its labels; the NaN policy (NaN in an example →
that example's loss NaN, the others untouched); an empty batch; one class; inputs left
unmodified; a backward linear in the cotangent; finite differences; equality with NumPy.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np
import pytest

import refsoftmax as rs
from refsoftmax.registry import LOSSES, Example, LossEntry

NAMES = sorted(LOSSES)
INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


def test_registry_covers_every_public_loss() -> None:
    public = {n for n in rs.__all__ if isinstance(getattr(rs, n), rs.Function)}
    assert set(LOSSES) == public


def _converter(backend: Any, dtype: Any = np.float64, int_dtype: Any = np.int64) -> Any:
    def convert(a: np.ndarray) -> Any:
        a = np.asarray(a)
        return backend.asarray(a, dtype if np.issubdtype(a.dtype, np.floating) else int_dtype)
    return convert


def _host(backend: Any, x: Any) -> np.ndarray:
    if hasattr(x, "to_dense"):  # a RowSparse gradient
        x = x.to_dense()
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


def _example(entry: LossEntry, batch: int = 4, classes: int = 6, seed: int = 0) -> Example:
    return entry.make(np.random.default_rng(seed), batch, max(classes, entry.min_classes))


@pytest.fixture(params=NAMES)
def entry(request: pytest.FixtureRequest) -> LossEntry:
    return LOSSES[request.param]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_namespace_dtype_and_device_are_preserved(backend: Any, entry: LossEntry, dtype: str) -> None:
    ex = _example(entry)
    args, _ = entry.args(ex, _converter(backend, dtype))
    value, grads = entry.value_and_grad(ex, _converter(backend, dtype))
    xp = backend.xp
    for name, out in [("value", value), *grads.items()]:
        out = out.to_dense() if hasattr(out, "to_dense") else out
        assert array_api_compat.array_namespace(out) is array_api_compat.array_namespace(args[0]), name
        assert out.dtype == getattr(xp, dtype), (name, out.dtype)
        assert array_api_compat.device(out) == array_api_compat.device(args[0]), name
    assert set(grads) == set(entry.differentiable)


def test_device_is_preserved_on_a_second_device(strict_device1: Any, entry: LossEntry) -> None:
    ex = _example(entry)
    value, grads = entry.value_and_grad(ex, _converter(strict_device1))
    for out in [value, *grads.values()]:
        out = out.to_dense() if hasattr(out, "to_dense") else out
        assert array_api_compat.device(out) == strict_device1.device


@pytest.mark.parametrize("int_dtype", INT_DTYPES)
def test_every_integer_dtype_gives_the_int64_result(backend: Any, entry: LossEntry, int_dtype: str) -> None:
    if not entry.integer:
        pytest.skip("no integer argument")
    if backend.name == "jax" and int_dtype == "uint64":
        import jax

        if not jax.config.read("jax_enable_x64"):
            pytest.skip("JAX without x64 has no uint64")
    ex = _example(entry)
    ref_value, ref_grads = entry.value_and_grad(ex, _converter(backend))
    value, grads = entry.value_and_grad(ex, _converter(backend, int_dtype=int_dtype))
    np.testing.assert_array_equal(_host(backend, value), _host(backend, ref_value))
    for name in ref_grads:
        np.testing.assert_array_equal(_host(backend, grads[name]), _host(backend, ref_grads[name]))


def test_nan_in_one_example_gives_nan_there_and_nowhere_else(backend: Any, entry: LossEntry) -> None:
    ex = _example(entry)
    arg, axis = next(iter(entry.examples_along.items()))
    x = np.array(ex.inputs[arg])
    np.moveaxis(x, axis, 0)[0, ...] = np.nan
    bad = Example({**ex.inputs, arg: x}, ex.options)
    ref = _host(backend, entry(ex, _converter(backend)))
    with np.errstate(invalid="ignore"):
        value, grads = entry.value_and_grad(bad, _converter(backend))
    got = _host(backend, value)
    assert np.all(np.isnan(got[0])), f"{entry.name}: NaN in example 0 gave {got[0]}"
    np.testing.assert_allclose(got[1:], ref[1:], rtol=1e-12, atol=0)
    if arg in grads:
        g = np.moveaxis(_host(backend, grads[arg]), axis, 0)
        assert np.all(np.isnan(g[0])), f"{entry.name}: the NaN example's gradient is {g[0]}, not NaN"


def test_empty_batch(backend: Any, entry: LossEntry) -> None:
    ex = _example(entry, batch=0)
    value, grads = entry.value_and_grad(ex, _converter(backend))
    assert _host(backend, value).shape[0] == 0
    for name, g in grads.items():
        assert _host(backend, g).shape == np.shape(ex.inputs[name]), name


def test_one_class(backend: Any, entry: LossEntry) -> None:
    ex = entry.make(np.random.default_rng(1), 3, entry.min_classes)
    value, grads = entry.value_and_grad(ex, _converter(backend))
    assert np.all(np.isfinite(_host(backend, value)))
    for name, g in grads.items():
        assert np.all(np.isfinite(_host(backend, g))), name


def test_inputs_are_left_unmodified(backend: Any, entry: LossEntry) -> None:
    ex = _example(entry)
    convert = _converter(backend)
    args, kwargs = entry.args(ex, convert)
    before = [_host(backend, a) for a in args]
    value, res = entry.function.forward(*args, **kwargs)
    entry.function.backward(res, backend.xp.ones_like(value))
    for name, a, b in zip(entry.positional, args, before, strict=True):
        np.testing.assert_array_equal(_host(backend, a), b, err_msg=f"{entry.name} modified {name}")


def test_backward_is_linear_in_the_cotangent(backend: Any, entry: LossEntry) -> None:
    ex = _example(entry)
    args, kwargs = entry.args(ex, _converter(backend))
    value, res = entry.function.forward(*args, **kwargs)
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=tuple(value.shape)), rng.normal(size=tuple(value.shape))
    gu = entry.function.backward(res, backend.asarray(u))
    gv = entry.function.backward(res, backend.asarray(v))
    gw = entry.function.backward(res, backend.asarray(2.5 * u - 0.75 * v))
    for name in gu:
        expect = 2.5 * _host(backend, gu[name]) - 0.75 * _host(backend, gv[name])
        scale = np.abs(2.5 * _host(backend, gu[name])) + np.abs(0.75 * _host(backend, gv[name]))
        err = np.abs(_host(backend, gw[name]) - expect)
        assert np.all(err <= 1e-12 * (scale + 1e-300)), f"{entry.name} d{name} is not linear in the cotangent"


def test_gradcheck(backend: Any, entry: LossEntry) -> None:
    ex = _example(entry, batch=3, classes=5)
    args, kwargs = entry.args(ex, _converter(backend))
    rs.gradcheck(entry.function, args, **kwargs)


def test_every_backend_gives_numpy_numbers(backend: Any, entry: LossEntry) -> None:
    if backend.name == "numpy":
        pytest.skip("the reference side")
    ex = _example(entry)
    ref_value, ref_grads = entry.value_and_grad(ex)
    value, grads = entry.value_and_grad(ex, _converter(backend))
    np.testing.assert_allclose(_host(backend, value), np.asarray(ref_value, np.float64), rtol=1e-12, atol=1e-300)
    for name, g in ref_grads.items():
        gh = g.to_dense() if hasattr(g, "to_dense") else g
        np.testing.assert_allclose(_host(backend, grads[name]), np.asarray(gh, np.float64),
                                   rtol=1e-11, atol=1e-15, err_msg=name)

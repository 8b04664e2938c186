"""The NumPy kernels: at most ~1× the input in extra memory, and the array-API path's numbers.

``refsoftmax.backends.numpy_kernels`` runs ``logsumexp``, ``log_softmax``, ``softmax`` and the
sparse cross-entropy (forward, backward, ``value_and_grad``) in row blocks.  Extra memory is
what the call allocates beyond the arrays it returns as results; residuals saved for the
backward pass count as extra.  ``benchmarks/bench_memory.py`` measures the same at full size.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import numpy as np
import pytest

import refsoftmax as rs
from refsoftmax.backends import numpy_kernels

SPARSE = rs.sparse_softmax_cross_entropy
MAPS = [rs.logsumexp, rs.log_softmax, rs.softmax]


def _nbytes(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(v) for v in obj)
    return 0


def extra_ratio(call: Any, input_bytes: int) -> float:
    """(peak traced memory during ``call()`` - bytes of the arrays it returns) / input bytes.

    ``call`` returns ``(results, kept)``: ``kept`` (residuals) is alive at the peak and counted.
    """
    call()  # warm-up (thread pool, imports)
    gc.collect()
    tracemalloc.start()
    try:
        results, kept = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return (peak - _nbytes(results)) / input_bytes


def _inputs(dtype: Any, shape: tuple[int, int] = (512, 4096)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape) * 3).astype(dtype), rng.integers(0, shape[1], shape[0])


def _calls(fn: Any, x: np.ndarray, t: np.ndarray) -> dict[str, Any]:
    """The ways of calling ``fn`` whose memory is bounded: ``() -> (results, kept)``."""
    sparse = fn is SPARSE
    args = (x, t) if sparse else (x,)
    rng = np.random.default_rng(1)
    ct = rng.standard_normal(x.shape[0] if sparse or fn is rs.logsumexp else x.shape)
    ct = ct.astype(x.dtype)

    def backward() -> Any:
        value, res = fn.forward(*args)
        return (value, fn.backward(res, ct)), None

    calls = {
        "call": lambda: ((fn(*args),), None),
        "forward": lambda: _forward_once(fn, args),
        "forward+backward": backward,
    }
    if sparse:
        calls["value_and_grad"] = lambda: (fn.value_and_grad(*args, cotangent=ct), None)
    return calls


def _forward_once(fn: Any, args: tuple[Any, ...]) -> Any:
    value, res = fn.forward(*args)
    return (value,), res


CASES = [(fn, what) for fn in [*MAPS, SPARSE] for what in
         ("call", "forward", "forward+backward", *(("value_and_grad",) if fn is SPARSE else ()))]


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("fn", "what"), CASES, ids=[f"{f.name}-{w}" for f, w in CASES])
def test_extra_memory_at_most_about_the_input(monkeypatch, fn, what, dtype, threads):
    monkeypatch.setenv("REFSOFTMAX_NUM_THREADS", threads)
    x, t = _inputs(dtype)
    call = _calls(fn, x, t)[what]
    ratio = extra_ratio(call, x.nbytes)
    assert ratio <= 1.3, f"{fn.name} {what} {np.dtype(dtype)}: {ratio:.2f}× the input"
    if what in ("call", "value_and_grad"):  # nothing kept: only block buffers
        assert ratio <= 0.3, f"{fn.name} {what} {np.dtype(dtype)}: {ratio:.2f}× the input"


def test_the_generic_path_needs_several_times_the_input(monkeypatch):
    """What the kernels are for (and proof that the measurement sees NumPy's allocations)."""
    x, _ = _inputs(np.float32, (256, 2048))
    monkeypatch.setattr(numpy_kernels, "ENABLED", False)
    assert extra_ratio(lambda: ((rs.logsumexp(x),), None), x.nbytes) > 3


# --------------------------------------------------------------------------- same numbers
#
# The reference is the array-API path run in float64 on the same numbers (for float64 inputs:
# the generic path itself).  float16/float32 results of the kernels are rounded once from
# float64, so they are within ~0.5 ulp of it; the generic path in float32 is less accurate
# than that (its float32 sums: up to ~9 ulp along a strided class axis), so it is not the
# yardstick there.


def _reference(run: Any, *arrays: np.ndarray) -> Any:
    """``run(*arrays)`` on the array-API path, in float64 (``arrays`` widened exactly)."""
    wide = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays]
    enabled = numpy_kernels.ENABLED
    numpy_kernels.ENABLED = False
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            return run(*wide)
    finally:
        numpy_kernels.ENABLED = enabled


def _ulps(a: np.ndarray, ref: np.ndarray, scale: np.ndarray | None = None) -> float:
    """Largest |a - ref| in ulps (of ``a``'s dtype) of ``scale`` (default: of ``|ref|``).

    NaN and ±inf must be at the same places; subnormal results count from the smallest
    normal number.
    """
    a, ref = np.asarray(a), np.asarray(ref, dtype=np.float64)
    assert a.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(ref))
    inf = np.isinf(a) | np.isinf(ref)
    np.testing.assert_array_equal(a[inf], ref[inf])
    ok = np.isfinite(a) & np.isfinite(ref)
    if not ok.any():
        return 0.0
    info = np.finfo(a.dtype)
    size = np.abs(ref[ok]) if scale is None else np.asarray(scale, np.float64)[ok]
    unit = np.maximum(size, float(info.smallest_normal)) * float(info.eps)
    return float(np.max(np.abs(a[ok].astype(np.float64) - ref[ok]) / unit))


def _grad_scale(fn: Any, p: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
    """The size of the terms a gradient is a sum of (its error is a few ulps of this)."""
    p = np.moveaxis(p, -1, axis)
    if fn is rs.logsumexp:
        return np.abs(np.expand_dims(g, axis) * p)
    if fn is rs.log_softmax:  # g - p Σg
        return np.abs(g) + p * np.sum(np.abs(g), axis=axis, keepdims=True)
    return p * (np.abs(g) + np.sum(np.abs(g) * p, axis=axis, keepdims=True))  # p (g - Σ g p)


def _edge_logits(dtype: Any) -> np.ndarray:
    """Rows every kernel handles: -inf classes, NaN, ties, masking logits, margins, magnitudes."""
    rng = np.random.default_rng(3)
    c = 12
    z = rng.standard_normal((14, c)) * 3
    z[0, ::3] = -np.inf  # masked classes
    z[1, 4] = np.nan  # a NaN row
    z[2, :5] = 2.0  # ties at the maximum
    z[2, 5:] = np.round(z[2, 5:])
    z[3, ::2] = -1e9 if dtype != np.float16 else -6e4  # masking logits
    z[4, 0] = z[4].max() + 40.0  # confident
    z[5, 0] = z[5].max() + (700.0 if dtype == np.float64 else 80.0)
    z[6, 1] = z[6].min() - 90.0  # far behind
    z[7] = 1e6 + rng.normal(0, 1e4, c) if dtype != np.float16 else 1e4 + rng.normal(0, 1e2, c)
    z[8] = rng.normal(0, 1e-30, c) if dtype != np.float16 else rng.normal(0, 1e-3, c)
    z[9] = 0.0  # all equal
    z[10, :] = -np.inf
    z[10, 3] = 5.0  # one allowed class
    return z.astype(dtype)


#: value / gradient bounds in ulps: float64 against the generic path, narrower dtypes
#: against the float64 one (the kernels round each value once)
VALUE_ULPS = {np.float64: 4.0, np.float32: 1.0, np.float16: 1.0}
GRAD_ULPS = {np.float64: 8.0, np.float32: 6.0, np.float16: 2.0}


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[bool]:
    """Record, for each call of the kernel ``name``, whether it ran (True) or declined."""
    calls: list[bool] = []
    real = getattr(numpy_kernels, name)

    def spy(*a: Any, **k: Any) -> Any:
        out = real(*a, **k)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(numpy_kernels, name, spy)
    return calls


def _check_map(fn: Any, x: np.ndarray, axis: int, ct: np.ndarray) -> None:
    """The kernel's value and gradient of ``fn`` against the float64 array-API path."""

    def run(x: np.ndarray, ct: np.ndarray, axis: int = axis) -> tuple[Any, Any, Any]:
        value, res = fn.forward(x, axis=axis)
        return value, fn.backward(res, ct)["x"], res.p

    def reference(x: np.ndarray, ct: np.ndarray) -> tuple[Any, Any, Any]:
        """On a contiguous copy with the classes last: the array-API sums are pairwise there."""
        last = np.ascontiguousarray(np.moveaxis(x, axis, -1))
        ct_last = ct if fn is rs.logsumexp else np.ascontiguousarray(np.moveaxis(ct, axis, -1))
        value, grad, p = run(last, ct_last, -1)
        back = value if fn is rs.logsumexp else np.moveaxis(value, -1, axis)
        return back, np.moveaxis(grad, -1, axis), p

    with np.errstate(invalid="ignore"):
        value, grad, _ = run(x, ct)
        ref_value, ref_grad, ref_p = _reference(reference, x, ct)
        plain = fn(x, axis=axis)
    dtype = x.dtype.type
    assert value.dtype == x.dtype and grad.dtype == x.dtype
    assert _ulps(value, ref_value) <= VALUE_ULPS[dtype], (fn.name, x.shape, axis)
    scale = _grad_scale(fn, ref_p, ct.astype(np.float64), axis)
    assert _ulps(grad, ref_grad, scale) <= GRAD_ULPS[dtype], (fn.name, x.shape, axis)
    np.testing.assert_array_equal(plain, value)  # the plain call: the same numbers


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("fn", MAPS, ids=lambda f: f.name)
@pytest.mark.parametrize("axis", [-1, 0])
def test_kernel_equals_generic_on_edge_rows(monkeypatch, fn, dtype, axis):
    z = _edge_logits(dtype)
    if axis == 0:
        z = np.ascontiguousarray(z.T)
    rng = np.random.default_rng(4)
    ct_shape = tuple(np.delete(z.shape, axis)) if fn is rs.logsumexp else z.shape
    ct = rng.standard_normal(ct_shape).astype(dtype)
    ran = _spy(monkeypatch, "fused_softmax")
    _check_map(fn, z, axis, ct)
    assert ran[0] is True
    value = fn(z, axis=axis)
    nan_row = value[1] if fn is rs.logsumexp or axis == -1 else value[:, 1]
    assert np.all(np.isnan(nan_row))


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("fn", MAPS, ids=lambda f: f.name)
def test_rows_with_an_infinite_maximum_take_the_generic_path(monkeypatch, fn):
    z = np.array([[0.0, 1.0, 2.0], [np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf]])
    ran = _spy(monkeypatch, "fused_softmax")
    (v1, r1), (v2, r2) = _both(monkeypatch, lambda: fn.forward(z))
    assert ran[0] is False
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(r1.p, r2.p)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fn", MAPS, ids=lambda f: f.name)
def test_strided_layouts(monkeypatch, rng, fn, dtype):
    """Class axis in the middle, non-contiguous inputs, a 1-D input, threads: read in place."""
    monkeypatch.setattr(numpy_kernels, "_THREADED_BYTES", 1 << 12)  # threads on small inputs
    monkeypatch.setenv("REFSOFTMAX_NUM_THREADS", "3")
    base = (rng.standard_normal((5, 300, 70)) * 4).astype(dtype)
    ran = _spy(monkeypatch, "fused_softmax")
    for x, axis in ((base, 1), (base[:, ::2, 1:], 1), (base[:, :, ::-3], 0), (base[0, 0], 0),
                    (np.broadcast_to(base[:1], base.shape), 2), (base, 2)):
        shape = tuple(np.delete(x.shape, axis)) if fn is rs.logsumexp else x.shape
        _check_map(fn, x, axis, rng.standard_normal(shape).astype(dtype))
    assert ran.count(True) == 2 * 6  # forward and the plain call of each case (not the reference)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_sparse_kernel_equals_generic(monkeypatch, dtype, reduction, axis):
    z = _edge_logits(dtype)
    t = np.array([0, 2, 0, 1, 0, 0, 1, 3, 5, 7, 3, 11, 2, 4])  # row 0: a label on a -inf class
    if axis == 0:
        z = np.ascontiguousarray(z.T)
    w = np.linspace(0.5, 2.0, 12)
    kw = dict(axis=axis, ignore_index=11, class_weights=w, reduction=reduction)
    ct = np.linspace(-1, 2, len(t)).astype(dtype) if reduction == "none" else np.asarray(0.7, dtype)
    if reduction == "none":
        ct[3] = 0.0  # a zero cotangent
    ran = _spy(monkeypatch, "fused_softmax")
    ran_b = _spy(monkeypatch, "fused_sparse_ce_backward")

    def run(z: np.ndarray, ct: np.ndarray) -> tuple[Any, ...]:
        value, res = SPARSE.forward(z, t, **kw)
        grad = SPARSE.backward(res, ct)["logits"]
        vg = SPARSE.value_and_grad(z, t, cotangent=ct, **kw)
        return value, grad, vg[0], vg[1]["logits"], SPARSE(z, t, **kw)

    with np.errstate(invalid="ignore"):
        fast = run(z, ct)
        ref = _reference(run, z, ct)
    assert ran[0] is True and ran_b[0] is True
    bound = VALUE_ULPS[dtype.type if hasattr(dtype, "type") else dtype]
    for name, a, b in zip(("forward", "backward", "value", "grad", "call"), fast, ref, strict=True):
        assert a.dtype == z.dtype
        assert _ulps(a, b) <= (2 if dtype == np.float32 else 1) * bound, name
    np.testing.assert_array_equal(fast[0], fast[4])
    if reduction == "none":
        np.testing.assert_array_equal(fast[0][11], 0.0)  # ignored: exactly 0
        assert np.isnan(fast[0][1]) and fast[0][0] == np.inf
    grad = np.moveaxis(fast[1], axis, -1)
    np.testing.assert_array_equal(grad[11], 0.0)
    if reduction == "none":
        np.testing.assert_array_equal(grad[3], 0.0)  # zero cotangent: exactly 0


def _both(monkeypatch: pytest.MonkeyPatch, f: Any) -> tuple[Any, Any]:
    """``f()`` with the kernels enabled, then disabled."""
    monkeypatch.setattr(numpy_kernels, "ENABLED", True)
    fast = f()
    monkeypatch.setattr(numpy_kernels, "ENABLED", False)
    plain = f()
    monkeypatch.setattr(numpy_kernels, "ENABLED", True)
    return fast, plain


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_sparse_rows_with_an_infinite_maximum_take_the_generic_path(monkeypatch):
    z = np.array([[0.0, 1.0, 2.0], [np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf]])
    t = np.array([2, 1, 0])
    ran = _spy(monkeypatch, "fused_softmax")

    def run() -> tuple[Any, ...]:
        value, res = SPARSE.forward(z, t)
        return value, SPARSE.backward(res, np.ones(3))["logits"]

    fast, plain = _both(monkeypatch, run)
    assert ran[0] is False
    for a, b in zip(fast, plain, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sparse_options_the_kernel_does_not_handle(monkeypatch, rng):
    z = rng.standard_normal((6, 5))
    t = rng.integers(0, 5, 6)
    ran = _spy(monkeypatch, "fused_softmax")
    for kw in (dict(label_smoothing=0.1), dict(where=np.arange(5) != 2)):
        fast, plain = _both(monkeypatch, lambda kw=kw: SPARSE.value_and_grad(z, t, **kw))
        np.testing.assert_array_equal(fast[0], plain[0])
        np.testing.assert_array_equal(fast[1]["logits"], plain[1]["logits"])
    assert ran == []


@pytest.mark.parametrize("fn", MAPS, ids=lambda f: f.name)
def test_inputs_are_not_modified_and_outputs_are_not_residuals(rng, fn):
    x = rng.standard_normal((4, 6))
    before = x.copy()
    ct = rng.standard_normal(4 if fn is rs.logsumexp else (4, 6))
    expected = fn.backward(fn.forward(x)[1], ct)["x"]
    value, res = fn.forward(x)
    value *= 0  # the caller may write into the result: the residual is not the result
    np.testing.assert_array_equal(fn.backward(res, ct)["x"], expected)
    np.testing.assert_array_equal(x, before)

"""Each fused kernel (NumPy, PyTorch) must give the plain array-API path's numbers, to rounding."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest

import refsoftmax as rs
from refsoftmax import backends
from refsoftmax.backends import numpy_kernels

SPARSE = rs.sparse_softmax_cross_entropy


def _kernel_params() -> list[Any]:
    params = [pytest.param("numpy")]
    torch_ok = "torch" in backends.available()
    params.append(pytest.param("torch", marks=[] if torch_ok else pytest.mark.skip(reason="torch not installed")))
    cuda_ok = torch_ok and __import__("torch").cuda.is_available()
    params.append(pytest.param("torch-cuda", marks=[] if cuda_ok else pytest.mark.skip(reason="no CUDA device")))
    return params


class Kernel:
    """A fused kernel under test: its module and how to move host arrays to its backend."""

    def __init__(self, name: str) -> None:
        self.name = name
        backend = "numpy" if name == "numpy" else "torch"
        self.module: ModuleType = __import__(
            f"refsoftmax.backends.{backend}_kernels", fromlist=["x"]
        )
        self.backend = backends.load(backend)
        self.device = "cuda" if name == "torch-cuda" else None

    def __call__(self, x: Any) -> Any:
        """Host data as this kernel's arrays (NumPy arrays stay NumPy)."""
        if self.name == "numpy" or not isinstance(x, np.ndarray):
            return x
        return self.backend.from_host(x, self.device)

    def host(self, x: Any) -> np.ndarray:
        return np.asarray(self.backend.to_numpy(x))


@pytest.fixture(params=_kernel_params())
def kernel(request: pytest.FixtureRequest) -> Kernel:
    return Kernel(request.param)


def both_paths(monkeypatch, kernel, *args, **kwargs):
    """``value_and_grad`` with the kernel enabled and disabled, results on the host."""
    module = kernel.module
    args = tuple(kernel(a) for a in args)
    kwargs = {k: kernel(v) for k, v in kwargs.items()}
    monkeypatch.setattr(module, "ENABLED", True)
    calls = []
    real = module.fused_sparse_softmax_cross_entropy

    def spy(*a):
        out = real(*a)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(module, "fused_sparse_softmax_cross_entropy", spy)
    fused = SPARSE.value_and_grad(*args, **kwargs)
    fused_calls = list(calls)
    monkeypatch.setattr(module, "ENABLED", False)
    plain = SPARSE.value_and_grad(*args, **kwargs)
    assert type(fused[0]) is type(args[0]) and type(fused[1]["logits"]) is type(args[0])
    if kernel.device is not None:
        assert fused[1]["logits"].device.type == "cuda"

    def host(result):
        return kernel.host(result[0]), {"logits": kernel.host(result[1]["logits"])}

    return host(fused), host(plain), fused_calls


def assert_same(fused, plain, rtol):
    np.testing.assert_allclose(fused[0], plain[0], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(fused[1]["logits"], plain[1]["logits"], rtol=rtol, atol=rtol * 1e-2)
    assert fused[0].dtype == plain[0].dtype and fused[1]["logits"].dtype == plain[1]["logits"].dtype


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-14), (np.float32, 2e-6)])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_fused_equals_plain(monkeypatch, kernel, rng, dtype, rtol, reduction, threads):
    monkeypatch.setenv("REFSOFTMAX_NUM_THREADS", threads)
    z = (rng.standard_normal((3, 40, 9000)) * 4).astype(dtype)  # 4.3 MB in float32: threaded
    t = rng.integers(0, 9000, size=(3, 40))
    t[0, :5] = -100
    w = rng.uniform(0.1, 2, size=9000)
    ct = rng.standard_normal((3, 40)).astype(dtype) if reduction == "none" else np.asarray(0.7, dtype)
    fused, plain, calls = both_paths(monkeypatch, kernel, z, t, ignore_index=-100, class_weights=w,
                                     reduction=reduction, cotangent=ct)
    assert calls == [True]
    assert_same(fused, plain, rtol)


def test_fused_other_axis_and_default_cotangent(monkeypatch, kernel, rng):
    z = rng.standard_normal((7, 5, 3))
    t = rng.integers(0, 5, size=(7, 3))
    fused, plain, calls = both_paths(monkeypatch, kernel, z, t, axis=1, reduction="mean")
    assert calls == [True]
    assert_same(fused, plain, 1e-14)


def test_fused_edge_rows(monkeypatch, kernel):
    z = np.array([
        [-np.inf, 1.0, 2.0],     # masked class, no mass
        [np.nan, 1.0, 2.0],      # NaN propagates
        [np.nan, 1.0, 2.0],      # ... unless the example is ignored
        [1e30, -1e30, 0.0],      # huge spread
    ])
    t = np.array([2, 1, -1, 1])
    fused, plain, calls = both_paths(monkeypatch, kernel, z, t, ignore_index=-1)
    assert calls == [True]
    np.testing.assert_allclose(fused[0], plain[0], rtol=1e-15)
    np.testing.assert_allclose(fused[1]["logits"], plain[1]["logits"], rtol=1e-15)
    np.testing.assert_array_equal(fused[1]["logits"][2], 0.0)
    assert fused[0][2] == 0.0 and np.isnan(fused[0][1])


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_fused_declines_rows_with_infinite_max(monkeypatch, kernel):
    z = np.array([[-np.inf, -np.inf], [np.inf, 0.0], [0.0, 1.0]])
    fused, plain, calls = both_paths(monkeypatch, kernel, z, np.array([0, 1, 1]))
    assert calls == [False]
    np.testing.assert_array_equal(fused[0], plain[0])


def test_fused_not_used_where_it_does_not_apply(monkeypatch, kernel, rng):
    z = rng.standard_normal((4, 6))
    t = rng.integers(0, 6, 4)
    for kwargs in (dict(label_smoothing=0.1), dict(where=np.ones(6, bool))):
        fused, plain, calls = both_paths(monkeypatch, kernel, z, t, **kwargs)
        assert calls == []
        assert_same(fused, plain, 0)


def test_half_precision_through_fused(monkeypatch, kernel):
    z = np.array([[0.0, 1000.0, -1000.0]], dtype=np.float16)
    fused, plain, calls = both_paths(monkeypatch, kernel, z, np.array([0]))
    assert calls == [True]
    assert fused[0].dtype == np.float16 and fused[0][0] == 1000.0
    assert_same(fused, plain, 1e-3)


def test_bad_thread_setting(monkeypatch):
    monkeypatch.setenv("REFSOFTMAX_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="REFSOFTMAX_NUM_THREADS='many'"):
        numpy_kernels.num_threads()


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-14), (np.float32, 2e-6)])
def test_fused_every_row_form(monkeypatch, kernel, rng, dtype, rtol):
    """Rows of each form of the torch kernel (direct, shifted, direct then re-done shifted), in one call.

    The direct form needs a row maximum in [0, M]; the rows it hands to the shifted form are
    those with r = s/e^m - 1 < 1 (confident rows, near-ties).  The spy proves each form ran.
    """
    c = 300
    z = rng.standard_normal((8, c)) * 3 + 2  # direct: max ~ 10, r >> 1
    z[1] = z[1] - 40  # negative maximum: the whole call takes the shifted form below
    z[2, 7] = z[2].max() + 30  # confident row (r ~ 1e-11 << 1)
    z[3, :2] = z[3].max() + 5  # a near-tie between two top classes, r ~ 1
    z[4, :50] = -np.inf  # masked classes in a direct row
    z[5, 11] = -np.inf  # a masked target
    t = rng.integers(0, c, size=8)
    t[2], t[3], t[5], t[6] = 7, 1, 11, -100
    for rows in (slice(None), [0, 2, 3, 4, 5, 6, 7]):  # with and without the negative-max row
        zs, ts = z[rows].astype(dtype), t[rows]
        seen = []
        if kernel.name != "numpy":
            def spy(zz, *a, real=kernel.module._shifted, seen=seen):
                seen.append(int(zz.shape[0]))
                return real(zz, *a)

            monkeypatch.setattr(kernel.module, "_shifted", spy)
        fused, plain, calls = both_paths(monkeypatch, kernel, zs, ts, ignore_index=-100,
                                         reduction="none", cotangent=np.linspace(0.5, 2, len(ts), dtype=dtype))
        monkeypatch.undo()
        assert calls == [True]
        if kernel.name != "numpy":  # all rows shifted, or the direct form then its r < 1 rows
            assert seen == ([8] if rows == slice(None) else [2]), seen
        assert np.isinf(fused[0][5 if rows == slice(None) else 4])
        finite = np.isfinite(plain[0])
        np.testing.assert_allclose(fused[0][finite], plain[0][finite], rtol=rtol, atol=0)
        np.testing.assert_allclose(fused[1]["logits"], plain[1]["logits"], rtol=rtol, atol=0)


def _exact_sparse_ce(z: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loss and gradient of float32 rows, in float64 without cancellation (errors ~1e-15).

    With ``d = z - z_t`` (exact in float64), ``q = e^d`` and ``o = Σ_{j≠t} q_j``: the loss is
    ``log1p(o)``, ``p_j = q_j / (1 + o)`` and ``p_t - 1 = -o / (1 + o)``.
    """
    rows = np.arange(len(t))
    d = z.astype(np.float64) - z[rows, t].astype(np.float64)[:, None]
    q = np.exp(d)
    q[rows, t] = 0.0
    o = q.sum(axis=1)
    grad = q / (1.0 + o)[:, None]
    grad[rows, t] = -o / (1.0 + o)
    return np.log1p(o), grad


def _ulps(computed: np.ndarray, exact: np.ndarray) -> float:
    """Worst ``|computed - exact|`` in float32 ulps of the correctly rounded value."""
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return float(np.max(np.abs(computed.astype(np.float64) - exact) / ulp))


#: The wide-row inputs: |N(0, 1)| · scale + shift, 192 rows of 6,000 classes (float32).
WIDE_SCALES = (0.3, 3.0, 10.0)
WIDE_SHIFTS = (0.0, -40.0)  # maxima >= 0: the direct form; < 0: the shifted form


def wide_rows(rng: np.random.Generator, scale: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
    z = (np.abs(rng.standard_normal((192, 6000))) * scale + shift).astype(np.float32)
    return z, rng.integers(0, 6000, 192)


def wide_rows_worst(to_backend: Any, seed: int = 12345) -> tuple[float, float]:
    """Worst (loss, gradient) ulps of ``sparse_softmax_cross_entropy`` over every wide-row input,
    the arrays made by ``to_backend`` (``docs/scripts/accuracy_table.py`` publishes them)."""
    rng = np.random.default_rng(seed)
    worst = [0.0, 0.0]
    for scale in WIDE_SCALES:
        for shift in WIDE_SHIFTS:
            z, t = wide_rows(rng, scale, shift)
            value, grads = SPARSE.value_and_grad(to_backend(z), to_backend(t), reduction="none")
            loss, grad = _exact_sparse_ce(z, t)
            worst[0] = max(worst[0], _ulps(np.asarray(value), loss))
            worst[1] = max(worst[1], _ulps(np.asarray(grads["logits"]), grad))
    return worst[0], worst[1]


@pytest.mark.parametrize("scale", WIDE_SCALES)
@pytest.mark.parametrize("shift", WIDE_SHIFTS)
def test_fused_float32_within_4_ulp_on_wide_rows(monkeypatch, kernel, rng, scale, shift):
    """The accuracy bound on rows as wide as a vocabulary (the accuracy suite's rows are short):
    every float32 loss and gradient entry within 4 ulp of the correctly rounded value, i.e. an
    error below 4.5 ulp of the exact one.  NumPy's float32 ``exp`` alone is off by up to 2.3
    ulp, so the kernel must round the rest once: ``e · (g κ / s)`` with a float32 row factor
    measured 4.6 ulp here, and the torch kernel's float32 row sums 4.6 (direct form) and 5.1
    (shifted form) before they were accumulated in float64."""
    z, t = wide_rows(rng, scale, shift)
    fused, _, calls = both_paths(monkeypatch, kernel, z, t, reduction="none")
    assert calls == [True]
    loss, grad = _exact_sparse_ce(z, t)
    assert _ulps(fused[0], loss) < 4.5
    assert _ulps(fused[1]["logits"], grad) < 4.5


@pytest.mark.parametrize("shape", [(3, 1), (3, 31), (3, 32), (3, 33), (0, 40), (5, 100)])
def test_torch_row_sums_are_float64_sums(shape):
    """The torch kernel's float32 row sums (float32 partials of 32 terms, added in float64) on
    every remainder of C mod 32, on row views at an offset and on a transposed array."""
    torch = pytest.importorskip("torch")
    from refsoftmax.backends.torch_kernels import _row_sums

    gen = torch.Generator().manual_seed(0)
    e = torch.rand(*shape, generator=gen)
    for x in (e, e[1:], torch.rand(shape[1], 4, generator=gen).T):
        s = _row_sums(x)
        assert s.dtype == torch.float64
        # a float32 partial of 32 terms is within ~log2(32)/2 units of 2**-24 (pairwise)
        torch.testing.assert_close(s, x.double().sum(dim=1), rtol=4 * 2.0**-24, atol=0.0)

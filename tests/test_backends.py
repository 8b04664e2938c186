"""refsoftmax.backends and the backend flag."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

import refsoftmax as rs
from refsoftmax import backends


def test_scatter_add_accumulates_duplicates(backend):
    x = backend.asarray(np.zeros((4, 2)))
    idx = backend.asarray(np.array([1, 3, 1, 1], dtype=np.int64))
    vals = backend.asarray(np.arange(8.0).reshape(4, 2))
    out = backend.to_numpy(backend.module.scatter_add(x, idx, vals))
    expected = np.zeros((4, 2))
    np.add.at(expected, [1, 3, 1, 1], np.arange(8.0).reshape(4, 2))
    np.testing.assert_array_equal(out, expected)
    assert expected[1, 0] == 0 + 4 + 6  # three rows landed on row 1
    np.testing.assert_array_equal(backend.to_numpy(x), 0.0)  # input untouched


def test_scatter_add_checks_shapes(backend):
    x = backend.asarray(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="one row per index"):
        backend.module.scatter_add(x, backend.asarray(np.array([0, 1])), backend.asarray(np.ones((3, 2))))


def test_generator_is_seeded(backend):
    a = backend.module.Generator(7, backend.device)
    b = backend.module.Generator(7, backend.device)
    ua, ub = backend.to_numpy(a.uniform((5,))), backend.to_numpy(b.uniform((5,)))
    np.testing.assert_array_equal(ua, ub)
    assert ((ua >= 0) & (ua < 1)).all()
    ia = backend.to_numpy(a.integers(3, 9, (100,)))
    assert ia.min() >= 3 and ia.max() < 9
    assert not np.array_equal(backend.to_numpy(a.uniform((5,))), ua)  # the stream advances


def test_strict_and_numpy_draw_the_same_numbers():
    pytest.importorskip("array_api_strict")
    a = backends.load("numpy").Generator(3)
    b = backends.load("array_api_strict").Generator(3)
    np.testing.assert_array_equal(a.uniform((4,)), backends.load("array_api_strict").to_numpy(b.uniform((4,))))


def test_unknown_backend_and_device():
    with pytest.raises(ValueError, match="is not a refsoftmax backend"):
        rs.set_backend("tensorflow")
    with pytest.raises(ValueError, match="not a NumPy device"):
        rs.set_backend("numpy", device="cuda:0")
    with pytest.raises(TypeError, match="backend name must be a string"):
        rs.use_backend(3).__enter__()


def test_use_backend_converts_host_data():
    torch = pytest.importorskip("torch")
    with rs.use_backend("torch"):
        value = rs.sparse_softmax_cross_entropy(np.zeros((2, 3)), [0, 2])
    assert isinstance(value, torch.Tensor) and value.dtype == torch.float64
    value = rs.sparse_softmax_cross_entropy(np.zeros((2, 3)), [0, 2])
    assert isinstance(value, np.ndarray)
    # lists follow the namespace of the arrays in the call, whatever the flag says
    value = rs.sparse_softmax_cross_entropy(torch.zeros(2, 3), [0, 2])
    assert isinstance(value, torch.Tensor) and value.dtype == torch.float32


def test_set_backend_is_process_wide_and_use_backend_wins():
    pytest.importorskip("array_api_strict")
    try:
        rs.set_backend("array_api_strict")
        assert rs.get_backend().name == "array_api_strict"
        with rs.use_backend("numpy"):
            assert rs.get_backend().name == "numpy"
        assert rs.get_backend().name == "array_api_strict"
        value = rs.logsumexp([0.0, 0.0])
        assert type(value).__module__.startswith("array_api_strict")
    finally:
        rs.set_backend("numpy")


def test_use_backend_is_thread_local():
    pytest.importorskip("array_api_strict")
    seen = {}
    barrier = threading.Barrier(2)

    def worker(name):
        with rs.use_backend(name):
            barrier.wait()
            seen[name] = rs.get_backend().name
            barrier.wait()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("numpy", "array_api_strict")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"numpy": "numpy", "array_api_strict": "array_api_strict"}


def test_environment_variable():
    pytest.importorskip("array_api_strict")
    code = "import refsoftmax as r; print(r.get_backend().name, r.get_backend().device)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"REFSOFTMAX_BACKEND": "array_api_strict:device1", "PATH": ""})
    assert out.stdout.split() == ["array_api_strict", "array_api_strict.Device('device1')"]
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"REFSOFTMAX_BACKEND": "nope", "PATH": ""})
    assert bad.returncode != 0 and "REFSOFTMAX_BACKEND='nope' is not usable" in bad.stderr


def test_mixing_namespaces_is_a_type_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="logits is a torch array but labels is a numpy array"):
        rs.sparse_softmax_cross_entropy(torch.zeros(2, 3), np.array([0, 1]))


def test_mixing_devices_is_a_type_error(strict_device1):
    xp = strict_device1.xp
    z = strict_device1.asarray(np.zeros((2, 3)))
    t = xp.asarray([0, 1])  # default device
    with pytest.raises(TypeError, match=r"logits is on device .*device1.* but labels is on device"):
        rs.sparse_softmax_cross_entropy(z, t)


def test_outputs_stay_on_the_inputs_device(strict_device1, rng):
    """A non-default device: every output and gradient must stay there."""
    b = strict_device1
    z = b.asarray(rng.standard_normal((3, 4)))
    t = b.asarray(np.array([0, 3, 1]))
    y = b.asarray(np.full((3, 4), 0.25))
    w = b.asarray(np.ones(4))
    for value, grads in (
        rs.sparse_softmax_cross_entropy.value_and_grad(z, t, class_weights=w, label_smoothing=0.1, reduction="mean"),
        rs.softmax_cross_entropy.value_and_grad(z, y, where=b.asarray(np.ones(4, bool)), reduction="sum"),
        rs.logsumexp.value_and_grad(z),
        rs.log_softmax.value_and_grad(z),
        rs.softmax.value_and_grad(z),
    ):
        assert value.device == z.device
        for g in grads.values():
            assert g.device == z.device
    # host data in the same call follows the arrays' device
    value = rs.sparse_softmax_cross_entropy(z, [0, 1, 2])
    assert value.device == z.device
    rs.gradcheck(rs.sparse_softmax_cross_entropy, (z, t), label_smoothing=0.2)


def test_available_lists_installed():
    names = backends.available()
    assert "numpy" in names
    with pytest.raises(TypeError, match="no refsoftmax backend serves"):
        backends.for_namespace(sys)


def test_torch_tensors_that_require_grad(rng):
    """A plain call records through the bridge (tests/test_autodiff_routing.py checks the
    gradients); the explicit API (forward/value_and_grad) uses the tensors detached."""
    torch = pytest.importorskip("torch")
    z = torch.tensor(rng.standard_normal((4, 5)), requires_grad=True)
    t = torch.tensor([0, 4, 2, 2])
    z_before = z.detach().clone()
    for fn in (rs.sparse_softmax_cross_entropy, rs.softmax, rs.logsumexp):
        args = (z, t) if fn is rs.sparse_softmax_cross_entropy else (z,)
        value = fn(*args)
        assert value.requires_grad and value.grad_fn is not None  # never silently detached
        value, grads = fn.value_and_grad(*args)
        assert not value.requires_grad and not grads[next(iter(grads))].requires_grad
    w = torch.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    x = torch.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    loss = rs.linear_softmax_cross_entropy(w, None, t, x)
    assert loss.grad_fn is not None
    with torch.no_grad():
        assert rs.linear_softmax_cross_entropy(w, None, t, x).grad_fn is None
    assert torch.equal(z.detach(), z_before) and z.grad is None

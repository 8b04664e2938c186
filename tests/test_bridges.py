"""refsoftmax.bridges: the hand-derived backward inside PyTorch's and JAX's autodiff, checked
against each framework's autodiff of an independent formula and inside a few training steps."""

from __future__ import annotations

import numpy as np
import pytest

import refsoftmax as rs
from refsoftmax.bridges import jax_custom_vjp, torch_autograd

# ----------------------------------------------------------------------------- torch

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_torch_sparse_ce_matches_autograd_of_cross_entropy(torch, rng):
    F = torch.nn.functional
    z = torch.tensor(rng.standard_normal((6, 7)) * 3, requires_grad=True)
    t = torch.tensor([0, 6, 2, -100, 4, 4])
    w = torch.tensor(rng.uniform(0.5, 2.0, 7))
    ce = torch_autograd(rs.sparse_softmax_cross_entropy)
    ours = ce(z, t, ignore_index=-100, class_weights=w, label_smoothing=0.1, reduction="mean")
    (g_ours,) = torch.autograd.grad(ours * 1.7, z)
    theirs = F.cross_entropy(z, t, weight=w, ignore_index=-100, label_smoothing=0.1)
    (g_theirs,) = torch.autograd.grad(theirs * 1.7, z)
    assert torch.allclose(ours, theirs, rtol=1e-13) and torch.allclose(g_ours, g_theirs, rtol=1e-12, atol=1e-15)
    assert ours.grad_fn is not None and not t.requires_grad


def test_torch_soft_labels_get_their_gradient(torch, rng):
    z = torch.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    a = torch.tensor(np.exp(rng.standard_normal((3, 4))))
    y = (a / a.sum(-1, keepdim=True)).requires_grad_(True)
    ce = torch_autograd(rs.softmax_cross_entropy)
    gz, gy = torch.autograd.grad(ce(z, y).sum(), (z, y))
    ez, ey = torch.autograd.grad((-(y * torch.log_softmax(z, -1)).sum(-1)).sum(), (z, y))
    assert torch.allclose(gz, ez, rtol=1e-12) and torch.allclose(gy, ey, rtol=1e-12)


def test_torch_linear_ce_gradients_of_weights_biases_inputs(torch, rng):
    W = torch.tensor(rng.standard_normal((9, 4)), requires_grad=True)
    b = torch.tensor(rng.standard_normal(9), requires_grad=True)
    x = torch.tensor(rng.standard_normal((5, 4)), requires_grad=True)
    t = torch.tensor([0, 8, 3, 3, 1])
    ours = torch_autograd(rs.linear_softmax_cross_entropy)(W, b, t, x, chunk_size=4, z_loss=1e-2)
    theirs = torch.nn.functional.cross_entropy(x @ W.T + b, t, reduction="none") + 1e-2 * torch.logsumexp(x @ W.T + b, -1) ** 2
    ct = torch.tensor(rng.standard_normal(5))
    for a, e in zip(torch.autograd.grad(ours, (W, b, x), ct), torch.autograd.grad(theirs, (W, b, x), ct), strict=True):
        assert torch.allclose(a, e, rtol=1e-12, atol=1e-14)


def test_torch_training_follows_the_autograd_trajectory(torch, rng):
    """Five SGD steps of a linear classifier: reference loss vs F.cross_entropy, same parameters."""
    x = torch.tensor(rng.standard_normal((32, 5)))
    t = torch.tensor(rng.integers(0, 4, 32))
    ce = torch_autograd(rs.sparse_softmax_cross_entropy)
    runs = []
    for loss_fn in (lambda z: ce(z, t, reduction="mean"), lambda z: torch.nn.functional.cross_entropy(z, t)):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 4).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = loss_fn(model(x))
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        runs.append((losses, [p.detach().clone() for p in model.parameters()]))
    (l1, p1), (l2, p2) = runs
    assert l1[-1] < l1[0]
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    for a, b in zip(p1, p2, strict=True):
        assert torch.allclose(a, b, rtol=1e-11, atol=1e-13)


def test_torch_bad_arguments(torch):
    ce = torch_autograd(rs.sparse_softmax_cross_entropy)
    with pytest.raises(TypeError, match="missing a required argument: 'labels'"):
        ce(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="refsoftmax Function"):
        torch_autograd(len)


# ----------------------------------------------------------------------------- jax

@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def test_jax_under_jit_and_grad_matches_autodiff(jax, rng):
    jnp = jax.numpy
    z = jnp.asarray(rng.standard_normal((6, 7)) * 3)
    t = jnp.asarray([0, 6, 2, 5, 4, 4])
    ce = jax_custom_vjp(rs.sparse_softmax_cross_entropy)

    def ours(z):
        return 1.3 * ce(z, t, reduction="mean", z_loss=1e-2)

    def theirs(z):
        logp = jax.nn.log_softmax(z, -1)
        nll = -jnp.take_along_axis(logp, t[:, None], -1)[:, 0]
        return 1.3 * jnp.mean(nll + 1e-2 * jax.nn.logsumexp(z, -1) ** 2)

    v1, g1 = jax.jit(jax.value_and_grad(ours))(z)
    v2, g2 = jax.value_and_grad(theirs)(z)
    np.testing.assert_allclose(v1, v2, rtol=1e-13)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-15)


def test_jax_vmap_and_shared_weights(jax, rng):
    jnp = jax.numpy
    W = jnp.asarray(rng.standard_normal((5, 3)))
    x = jnp.asarray(rng.standard_normal((4, 2, 3)))  # 4 independent batches of 2
    t = jnp.asarray(rng.integers(0, 5, (4, 2)))
    lin = jax_custom_vjp(rs.linear_softmax_cross_entropy)

    def per_batch(W, x, t):
        return lin(W, None, t, x, reduction="sum")

    def theirs(W, x, t):
        logp = jax.nn.log_softmax(x @ W.T, -1)
        return -jnp.sum(jnp.take_along_axis(logp, t[:, None], -1))

    gW = jax.grad(lambda W: jnp.sum(jax.vmap(per_batch, in_axes=(None, 0, 0))(W, x, t)))(W)
    eW = jax.grad(lambda W: jnp.sum(jax.vmap(theirs, in_axes=(None, 0, 0))(W, x, t)))(W)
    np.testing.assert_allclose(gW, eW, rtol=1e-12)


def test_jax_training_follows_the_autodiff_trajectory(jax, rng):
    jnp = jax.numpy
    x = jnp.asarray(rng.standard_normal((32, 5)))
    t = jnp.asarray(rng.integers(0, 4, 32))
    ce = jax_custom_vjp(rs.sparse_softmax_cross_entropy)

    def ours(params):
        return ce(x @ params["w"] + params["b"], t, reduction="mean")

    def theirs(params):
        logp = jax.nn.log_softmax(x @ params["w"] + params["b"], -1)
        return -jnp.mean(jnp.take_along_axis(logp, t[:, None], -1))

    init = {"w": jnp.asarray(rng.standard_normal((5, 4)) * 0.1), "b": jnp.zeros(4)}
    trajectories = []
    for fn in (ours, theirs):
        step = jax.jit(jax.value_and_grad(fn))
        params, losses = init, []
        for _ in range(5):
            loss, g = step(params)
            params = jax.tree_util.tree_map(lambda p, d: p - 0.5 * d, params, g)
            losses.append(float(loss))
        trajectories.append((losses, params))
    (l1, p1), (l2, p2) = trajectories
    assert l1[-1] < l1[0]
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    np.testing.assert_allclose(p1["w"], p2["w"], rtol=1e-11, atol=1e-13)

"""Calling a loss on arrays an autodiff framework records routes through the bridges.

``loss(tensor_that_requires_grad, ...)`` must return a value with a graph whose gradient
is refsoftmax's hand-derived ``backward`` — never a silently detached value — and
``jax.grad(loss)`` must differentiate with that backward too, not with JAX's autodiff of
the forward arithmetic.  Every loss must also run under ``jax.jit`` (tracers have no
values and no device).  Checked for every entry of the registry, with a spy on
``backward`` that proves which gradient ran.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import refsoftmax as rs
from refsoftmax.registry import LOSSES

NAMES = sorted(LOSSES)


def _dense(g: Any) -> np.ndarray:
    return np.asarray(g.to_dense() if hasattr(g, "to_dense") else g)


def _spy_backward(monkeypatch: pytest.MonkeyPatch, fn: Any) -> list[int]:
    calls: list[int] = []
    original = fn.backward

    def backward(residuals: Any, cotangent: Any) -> Any:
        calls.append(1)
        return original(residuals, cotangent)

    monkeypatch.setattr(fn, "backward", backward)  # an instance attribute: value_and_grad sees it
    return calls


def _example(name: str, seed: int = 3) -> Any:
    return LOSSES[name].make(np.random.default_rng(seed), 4, 6)


def _cotangent(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(11).normal(size=shape)


# ----------------------------------------------------------------------------- torch

@pytest.mark.parametrize("name", NAMES)
def test_torch_requires_grad_gets_the_hand_derived_gradient(name, monkeypatch):
    torch = pytest.importorskip("torch")
    entry = LOSSES[name]
    example = _example(name)
    inputs = {n: torch.tensor(example.inputs[n], requires_grad=n in entry.differentiable)
              for n in entry.positional}
    _, kwargs = entry.args(example, torch.tensor)
    calls = _spy_backward(monkeypatch, entry.function)
    value = entry.function(*inputs.values(), **kwargs)
    if value.grad_fn is None:
        pytest.fail(f"{name}: a tensor that requires grad gave a value with no graph")
    cotangent = _cotangent(tuple(value.shape))
    (value * torch.from_numpy(cotangent)).sum().backward()
    assert calls, f"{name}: the gradient did not come from refsoftmax's backward"
    _, expected = entry.value_and_grad(example, cotangent=cotangent)
    for arg, grad in expected.items():
        if grad is None or arg not in inputs:
            continue
        np.testing.assert_allclose(inputs[arg].grad.numpy(), _dense(grad), rtol=1e-12, atol=1e-300,
                                   err_msg=f"{name}: gradient of {arg}")


def test_torch_no_grad_and_detached_inputs_give_plain_values():
    torch = pytest.importorskip("torch")
    z = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 2])
    with torch.no_grad():
        assert rs.sparse_softmax_cross_entropy(z, t).grad_fn is None
    assert rs.sparse_softmax_cross_entropy(z.detach(), t).grad_fn is None
    # the explicit API never routes: forward/value_and_grad return refsoftmax's own values
    value, grads = rs.sparse_softmax_cross_entropy.value_and_grad(z, t)
    assert value.grad_fn is None and grads["logits"].grad_fn is None


def test_torch_gradient_asked_of_an_argument_refsoftmax_does_not_differentiate():
    torch = pytest.importorskip("torch")
    z = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(TypeError, match="class_weights requires grad"):
        rs.sparse_softmax_cross_entropy(z, torch.tensor([0, 2]), class_weights=w)


def test_torch_positional_arrays_by_keyword_and_defaults():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w = torch.tensor(rng.normal(size=(5, 3)), requires_grad=True)
    x = torch.tensor(rng.normal(size=(4, 3)), requires_grad=True)
    t = torch.tensor([0, 4, 1, 2])
    loss = rs.linear_softmax_cross_entropy(w, None, labels=t, inputs=x, reduction="sum")
    loss.backward()
    _, g = rs.linear_softmax_cross_entropy.value_and_grad(
        w.detach(), None, t, x.detach(), reduction="sum")
    np.testing.assert_allclose(w.grad.numpy(), g["weights"].numpy(), rtol=1e-13)
    np.testing.assert_allclose(x.grad.numpy(), g["inputs"].numpy(), rtol=1e-13)


# ----------------------------------------------------------------------------- jax

@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("name", NAMES)
def test_jax_jit_and_grad_use_the_hand_derived_backward(jax, name, monkeypatch):
    jnp = jax.numpy
    entry = LOSSES[name]
    example = _example(name)
    args, kwargs = entry.args(example, jnp.asarray)
    eager = np.asarray(entry.function(*args, **kwargs))
    cotangent = _cotangent(eager.shape)
    wrt = tuple(i for i, n in enumerate(entry.positional) if n in entry.differentiable)
    calls = _spy_backward(monkeypatch, entry.function)

    def weighted(*a: Any) -> Any:
        return jnp.sum(entry.function(*a, **kwargs) * cotangent)

    # one compilation: the value under jit and its gradient under jit(grad)
    jitted, grads = jax.jit(lambda *a: (entry.function(*a, **kwargs),
                                        jax.grad(weighted, argnums=wrt)(*a)))(*args)
    np.testing.assert_allclose(np.asarray(jitted), eager, rtol=1e-13, atol=0, equal_nan=True,
                               err_msg=f"{name} under jax.jit")
    assert calls, f"{name}: jax.grad did not use refsoftmax's backward"
    _, expected = entry.value_and_grad(example, cotangent=cotangent)
    for k, i in enumerate(wrt):
        np.testing.assert_allclose(np.asarray(grads[k]), _dense(expected[entry.positional[i]]),
                                   rtol=1e-12, atol=1e-300,
                                   err_msg=f"{name}: jax.grad of {entry.positional[i]}")


def test_jax_jit_mixed_traced_and_concrete_arrays(jax):
    """A traced argument next to a concrete one (a closed-over class_weights): one call."""
    jnp = jax.numpy
    z = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)))
    w = jnp.asarray([1.0, 2.0, 0.5, 1.0])
    t = jnp.asarray([0, 3, 1])
    f = jax.jit(lambda a: rs.sparse_softmax_cross_entropy(a, t, class_weights=w))
    np.testing.assert_allclose(np.asarray(f(z)),
                               np.asarray(rs.sparse_softmax_cross_entropy(z, t, class_weights=w)),
                               rtol=1e-14)


def test_jax_jit_skips_value_checks_but_keeps_shape_checks(jax):
    """docs/nan_policy.md: under jit a value check cannot run (the values do not exist yet)."""
    jnp = jax.numpy
    z = jnp.zeros((2, 3))
    bad = jnp.asarray([0, 7])  # 7 is out of range for 3 classes
    with pytest.raises(ValueError, match="labels must be in \\[0, 3\\)"):
        rs.sparse_softmax_cross_entropy(z, bad)  # eager: refused
    jax.jit(rs.sparse_softmax_cross_entropy)(z, bad)  # traced: the check is skipped
    with pytest.raises(ValueError, match="labels must have shape"):
        jax.jit(rs.sparse_softmax_cross_entropy)(z, jnp.asarray([0, 1, 2]))  # shapes: still checked

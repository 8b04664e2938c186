r"""Train with the reference: refsoftmax losses as differentiable PyTorch and JAX functions.

refsoftmax computes every gradient by hand (``Function.backward``); these bridges hand that
backward to a framework's autodiff, so a reference loss can sit at the end of a model trained
with ``loss.backward()`` or ``jax.grad`` — e.g. to check, step by step, that a training run
with a library's fused loss follows the reference's trajectory.  No autodiff runs inside
refsoftmax: the framework only chains the reference's vector-Jacobian product into the rest
of the graph.

* :func:`torch_autograd` wraps a loss in a ``torch.autograd.Function``: its ``forward`` is
  the loss's ``forward`` (on the tensors' own device, under ``no_grad``), its ``backward``
  the loss's hand-derived ``backward``.
* :func:`jax_custom_vjp` wraps a loss in a ``jax.custom_vjp`` function whose primal and VJP
  run refsoftmax on the host through ``jax.pure_callback``, so it works under ``jax.jit``,
  ``jax.grad`` and ``jax.vmap`` (refsoftmax's checks look at concrete values, which traced
  arrays do not have).  The backward recomputes the forward (the reference keeps no state
  between the two callbacks), so a step costs about two forward passes on the CPU.

Arguments are the loss's positional arrays; keyword options are passed through (array
options such as ``class_weights`` are not differentiated).  Gradients reach the positional
arguments the loss lists in ``differentiable``; the others (labels) get none.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["jax_custom_vjp", "torch_autograd"]


def _positional(loss: Any) -> tuple[str, ...]:
    """The names of ``loss``'s positional array arguments (those of ``forward`` before ``*``)."""
    if not (hasattr(loss, "forward") and hasattr(loss, "backward")):
        msg = f"loss must be a refsoftmax Function (forward and backward), got {loss!r}"
        raise TypeError(msg)
    params = inspect.signature(loss.forward).parameters.values()
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _check(loss: Any, args: tuple[Any, ...], names: tuple[str, ...]) -> None:
    if len(args) != len(names):
        msg = f"{loss!r} takes {len(names)} positional arrays {names}, got {len(args)}"
        raise TypeError(msg)


def _dense(g: Any) -> Any:
    return g.to_dense() if hasattr(g, "to_dense") else g


def torch_autograd(loss: Any) -> Callable[..., Any]:
    """``loss`` as a differentiable PyTorch function (a ``torch.autograd.Function``).

    Parameters
    ----------
    loss : refsoftmax Function
        E.g. ``refsoftmax.sparse_softmax_cross_entropy``.

    Returns
    -------
    callable
        ``f(*arrays, **options)`` returning the loss as a tensor whose ``.backward()`` (or
        ``torch.autograd.grad``) runs ``loss.backward``.  Not twice differentiable.

    Examples
    --------
    >>> import torch, refsoftmax
    >>> from refsoftmax.bridges import torch_autograd
    >>> ce = torch_autograd(refsoftmax.sparse_softmax_cross_entropy)
    >>> logits = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    >>> ce(logits, torch.tensor([2]), reduction="mean").backward()
    >>> [round(v, 6) for v in logits.grad[0].tolist()]
    [0.090031, 0.244728, -0.334759]
    """
    import torch

    names = _positional(loss)
    differentiable = set(getattr(loss, "differentiable", ()))

    class _Reference(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, options: dict[str, Any], *arrays: Any) -> Any:
            value, residuals = loss.forward(*arrays, **options)
            ctx.residuals = residuals
            return value

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx: Any, cotangent: Any) -> Any:
            grads = loss.backward(ctx.residuals, cotangent)
            out = [None]  # the options
            for i, name in enumerate(names):
                wanted = name in differentiable and ctx.needs_input_grad[i + 1]
                out.append(_dense(grads[name]) if wanted and grads.get(name) is not None else None)
            return tuple(out)

    def call(*arrays: Any, **options: Any) -> Any:
        _check(loss, arrays, names)
        return _Reference.apply(options, *arrays)

    call.__name__ = f"torch_autograd({loss!r})"
    call.__doc__ = f"{loss!r} as a torch.autograd.Function (refsoftmax.bridges.torch_autograd)."
    return call


def jax_custom_vjp(loss: Any) -> Callable[..., Any]:
    """``loss`` as a ``jax.custom_vjp`` function, usable under ``jax.jit``, ``jax.grad``, ``jax.vmap``.

    Parameters
    ----------
    loss : refsoftmax Function

    Returns
    -------
    callable
        ``f(*arrays, **options)``.  Options must be Python values or arrays (arrays are
        passed to the host with the inputs; they get no gradient).  The value's shape is
        found once per call by running ``loss`` on placeholder inputs of the same shapes
        (ones, and zeros for integer arrays).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, refsoftmax
    >>> from refsoftmax.bridges import jax_custom_vjp
    >>> ce = jax_custom_vjp(refsoftmax.sparse_softmax_cross_entropy)
    >>> grad = jax.jit(jax.grad(lambda z, t: ce(z, t, reduction="mean")))
    >>> g = grad(jnp.array([[0.0, 1.0, 2.0]]), jnp.array([2]))
    >>> [round(float(v), 6) for v in g[0]]
    [0.090031, 0.244728, -0.334759]
    """
    import jax
    import numpy as np

    names = _positional(loss)
    differentiable = set(getattr(loss, "differentiable", ()))

    def call(*arrays: Any, **options: Any) -> Any:
        _check(loss, arrays, names)
        present = [i for i, a in enumerate(arrays) if a is not None]  # e.g. biases=None
        array_keys = [k for k, v in options.items() if hasattr(v, "shape") and hasattr(v, "dtype")]
        static = {k: v for k, v in options.items() if k not in array_keys}
        operands = [arrays[i] for i in present] + [options[k] for k in array_keys]
        n_pos = len(present)

        def rebuild(ops: tuple[Any, ...]) -> tuple[list[Any], dict[str, Any]]:
            args: list[Any] = [None] * len(arrays)
            for j, i in enumerate(present):
                args[i] = np.asarray(ops[j])
            kw = {**static, **{k: np.asarray(v) for k, v in zip(array_keys, ops[n_pos:], strict=True)}}
            return args, kw

        def placeholder(x: Any) -> Any:
            dtype = np.dtype(x.dtype)
            return np.zeros(x.shape, dtype) if dtype.kind in "iub" else np.ones(x.shape, dtype)

        shape_args, shape_kw = rebuild(tuple(placeholder(o) for o in operands))
        value_struct = jax.ShapeDtypeStruct(np.shape(np.asarray(loss(*shape_args, **shape_kw))),
                                            np.result_type(*[o.dtype for o in operands[:n_pos]
                                                             if np.dtype(o.dtype).kind == "f"]))

        def host_value(*ops: Any) -> Any:
            args, kw = rebuild(ops)
            return np.asarray(loss(*args, **kw), dtype=value_struct.dtype)

        grad_structs = [jax.ShapeDtypeStruct(o.shape, o.dtype) for o in operands]

        def host_grads(g: Any, *ops: Any) -> Any:
            args, kw = rebuild(ops)
            _, grads = loss.value_and_grad(*args, cotangent=np.asarray(g), **kw)
            out = []
            for j, o in enumerate(ops):
                name = names[present[j]] if j < n_pos else None
                gk = grads.get(name) if name in differentiable else None
                out.append(np.zeros(np.shape(o), np.asarray(o).dtype) if gk is None
                           else np.asarray(_dense(gk), dtype=np.asarray(o).dtype))
            return tuple(out)

        @jax.custom_vjp
        def f(*ops: Any) -> Any:
            return jax.pure_callback(host_value, value_struct, *ops, vmap_method="sequential")

        def f_fwd(*ops: Any) -> Any:
            return f(*ops), ops

        def f_bwd(ops: tuple[Any, ...], g: Any) -> Any:
            grads = jax.pure_callback(host_grads, tuple(grad_structs), g, *ops, vmap_method="sequential")
            # integer operands (labels) take no cotangent: None is JAX's zero for them
            return tuple(None if np.dtype(o.dtype).kind in "iub" else gk
                         for o, gk in zip(ops, grads, strict=True))

        f.defvjp(f_fwd, f_bwd)
        return f(*operands)

    call.__name__ = f"jax_custom_vjp({loss!r})"
    call.__doc__ = f"{loss!r} as a jax.custom_vjp function (refsoftmax.bridges.jax_custom_vjp)."
    return call

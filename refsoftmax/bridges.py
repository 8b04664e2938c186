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
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["jax_custom_vjp", "recording", "route", "torch_autograd"]

#: The JAX tracers of a differentiation (``jax.grad``, ``jax.vjp``, ``jax.jvp``, ``jax.linearize``).
_JAX_AUTODIFF_TRACERS = frozenset({"JVPTracer", "LinearizeTracer"})


def _positional(loss: Any) -> tuple[str, ...]:
    """The names of ``loss``'s positional array arguments (those of ``forward`` before ``*``)."""
    if not (hasattr(loss, "forward") and hasattr(loss, "backward")):
        msg = f"loss must be a refsoftmax Function (forward and backward), got {loss!r}"
        raise TypeError(msg)
    params = inspect.signature(loss.forward).parameters.values()
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _split(loss: Any, names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
           ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(positional arrays in order, keyword options)`` of a call, as ``loss.forward`` binds them.

    Positional arrays may be passed by keyword; a missing one takes its default
    (``biases=None``).  A call ``forward`` would refuse raises the same ``TypeError``.
    """
    signature = inspect.signature(loss.forward)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        msg = f"{loss!r}: {exc}"
        raise TypeError(msg) from None
    arrays = tuple(bound.arguments.get(n, signature.parameters[n].default) for n in names)
    options: dict[str, Any] = {}
    for key, value in bound.arguments.items():
        if key in names:
            continue
        if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
            options.update(value)
        else:
            options[key] = value
    return arrays, options


def _leaves(values: Any) -> Iterator[Any]:
    for v in values:
        if isinstance(v, (tuple, list)):
            yield from _leaves(v)
        else:
            yield v


def _torch_records(v: Any) -> bool:
    if not (type(v).__module__.startswith("torch") and getattr(v, "requires_grad", False)):
        return False
    import torch

    return bool(torch.is_grad_enabled())


def _jax_differentiates(v: Any) -> bool:
    jax = sys.modules.get("jax")
    return (jax is not None and isinstance(v, jax.core.Tracer)
            and type(v).__name__ in _JAX_AUTODIFF_TRACERS)


def recording(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Which autodiff framework records this call: ``"torch"``, ``"jax"`` or ``None``.

    ``"torch"``: a tensor that requires grad, with grad mode on.  ``"jax"``: an array
    traced by ``jax.grad``/``vjp``/``jvp`` (``jax.jit`` alone records nothing).
    """
    for v in _leaves((*args, *kwargs.values())):
        if _torch_records(v):
            return "torch"
        if _jax_differentiates(v):
            return "jax"
    return None


def route(loss: Any, framework: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call ``loss`` through the bridge of ``framework`` (see :func:`recording`).

    This is what ``loss(*args, **kwargs)`` does when an autodiff framework records the
    call: the result then carries the framework's graph, and its gradient is the
    hand-derived ``backward`` — never a silently detached value, never the framework's
    own derivative of refsoftmax's forward arithmetic.
    """
    if framework == "torch":
        return torch_autograd(loss)(*args, **kwargs)
    return _jax_traced_vjp(loss)(*args, **kwargs)


def _check_not_differentiated(loss: Any, names: tuple[str, ...], arrays: tuple[Any, ...],
                              options: dict[str, Any], differentiable: set[str]) -> None:
    """``TypeError`` for a tensor that requires grad where refsoftmax gives no gradient."""
    named = [*zip(names, arrays, strict=True), *options.items()]
    for name, value in named:
        if name not in differentiable and any(_torch_records(v) for v in _leaves((value,))):
            msg = (f"{name} requires grad, but {loss!r} differentiates only "
                   f"{tuple(sorted(differentiable))}; detach it (refsoftmax would return no "
                   f"gradient for it)")
            raise TypeError(msg)


def _is_array_option(v: Any) -> bool:
    """An option that travels with the arrays (``class_weights``); scalars stay static."""
    import numbers

    import numpy as np

    return (hasattr(v, "shape") and hasattr(v, "dtype")
            and not isinstance(v, (numbers.Number, np.generic)))


@dataclass(frozen=True)
class _Operands:
    """A call's arrays as a flat tuple of JAX operands, and the way back.

    The positional arrays and the array options (``class_weights``) travel as operands;
    ``None`` (``biases=None``) and Python values stay fixed.
    """

    arrays: tuple[Any, ...]
    present: tuple[int, ...]  # which positional arguments are operands
    array_keys: tuple[str, ...]  # which options are
    static: dict[str, Any]

    @classmethod
    def of(cls, arrays: tuple[Any, ...], options: dict[str, Any]) -> _Operands:
        keys = tuple(k for k, v in options.items() if _is_array_option(v))
        return cls(arrays, tuple(i for i, a in enumerate(arrays) if _is_array_option(a)), keys,
                   {k: v for k, v in options.items() if k not in keys})

    def operands(self, options: dict[str, Any]) -> list[Any]:
        return [self.arrays[i] for i in self.present] + [options[k] for k in self.array_keys]

    def rebuild(self, ops: tuple[Any, ...], convert: Callable[[Any], Any] = lambda a: a
                ) -> tuple[list[Any], dict[str, Any]]:
        """``(positional arguments, options)`` with the operands ``ops`` (through ``convert``) put back."""
        positional: list[Any] = list(self.arrays)
        for j, i in enumerate(self.present):
            positional[i] = convert(ops[j])
        n = len(self.present)
        return positional, {**self.static, **{k: convert(v) for k, v in zip(self.array_keys, ops[n:], strict=True)}}

    def name_of(self, j: int, names: tuple[str, ...]) -> str | None:
        """The positional argument name of operand ``j`` (``None`` for an option)."""
        return names[self.present[j]] if j < len(self.present) else None


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

    def call(*args: Any, **kwargs: Any) -> Any:
        arrays, options = _split(loss, names, args, kwargs)
        _check_not_differentiated(loss, names, arrays, options, differentiable)
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

    def call(*args: Any, **kwargs: Any) -> Any:
        arrays, options = _split(loss, names, args, kwargs)
        plan = _Operands.of(arrays, options)
        operands = plan.operands(options)
        n_pos = len(plan.present)

        def rebuild(ops: tuple[Any, ...]) -> tuple[list[Any], dict[str, Any]]:
            return plan.rebuild(ops, np.asarray)

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
                name = plan.name_of(j, names)
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


def _jax_traced_vjp(loss: Any) -> Callable[..., Any]:
    """``loss`` as a ``jax.custom_vjp`` that runs refsoftmax on the traced arrays themselves.

    Unlike :func:`jax_custom_vjp` (host callbacks, every check on concrete values), the
    primal and the VJP are refsoftmax's forward and hand-derived backward traced by JAX,
    on the arrays' own device — what a plain ``jax.grad(loss)`` routes through.  Checks
    that need values are skipped while tracing (:mod:`refsoftmax._concrete`).
    """
    import jax
    import jax.numpy as jnp

    names = _positional(loss)
    differentiable = set(getattr(loss, "differentiable", ()))

    def call(*args: Any, **kwargs: Any) -> Any:
        arrays, options = _split(loss, names, args, kwargs)
        plan = _Operands.of(arrays, options)
        rebuild = plan.rebuild

        @jax.custom_vjp
        def f(*ops: Any) -> Any:
            positional, kw = rebuild(ops)
            return loss.forward(*positional, **kw)[0]

        def f_fwd(*ops: Any) -> Any:
            return f(*ops), ops

        def f_bwd(ops: tuple[Any, ...], g: Any) -> Any:
            positional, kw = rebuild(ops)
            _, grads = loss.value_and_grad(*positional, cotangent=g, **kw)
            out: list[Any] = []
            for j, o in enumerate(ops):
                name = plan.name_of(j, names)
                if jnp.issubdtype(o.dtype, jnp.integer) or jnp.issubdtype(o.dtype, jnp.bool_):
                    out.append(None)  # labels take no cotangent: None is JAX's zero for them
                elif name in differentiable and grads.get(name) is not None:
                    out.append(jnp.asarray(_dense(grads[name]), dtype=o.dtype))
                else:
                    out.append(jnp.zeros_like(o))  # an option array (class_weights): no gradient
            return tuple(out)

        f.defvjp(f_fwd, f_bwd)
        return f(*plan.operands(options))

    call.__name__ = f"jax_traced_vjp({loss!r})"
    return call

"""The protocol every refsoftmax function follows.

A :class:`Function` ``f`` is called like a function and carries its
hand-derived backward pass, the same pair as ``torch.autograd.Function`` or
``jax.custom_vjp``::

    value = f(*args, **kw)                      # the loss (per example by default)
    value, residuals = f.forward(*args, **kw)   # ... and what the backward needs
    grads = f.backward(residuals, cotangent)    # {"logits": dL/dlogits, ...}
    value, grads = f.value_and_grad(*args, cotangent=None, **kw)

``backward`` returns the vector-Jacobian product: for every differentiable
argument ``a``, ``grads[a] = sum(cotangent * d value / d a)`` with the sum over
the value's elements.  ``cotangent`` has the value's shape; ``None`` means
ones (so for a scalar loss the grads are the plain gradient).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

from refsoftmax._arrays import resolve

__all__ = ["Function", "Residuals"]


@dataclass
class Residuals:
    """What ``forward`` saves for ``backward``; every function extends it."""

    xp: Any
    value_shape: tuple[int, ...]
    compute_dtype: Any


class Function(abc.ABC):
    """Base class: ``__call__``, ``forward``, ``backward`` and ``value_and_grad``."""

    #: The function's public name, e.g. ``"sparse_softmax_cross_entropy"``.
    name: ClassVar[str]
    #: Names of the arguments ``backward`` returns gradients for.
    differentiable: ClassVar[tuple[str, ...]]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The value.  Recorded by an autodiff framework, the call goes through its bridge.

        A torch tensor that requires grad (grad mode on), or an array that ``jax.grad``
        traces, makes the call return a value whose gradient is this function's
        hand-derived ``backward`` (:func:`refsoftmax.bridges.route`) — never a
        silently detached value.  ``forward``/``value_and_grad`` never route.
        """
        from refsoftmax import bridges

        framework = bridges.recording(args, kwargs)
        if framework is not None:
            return bridges.route(self, framework, args, kwargs)
        return self._value(*args, **kwargs)

    def _value(self, *args: Any, **kwargs: Any) -> Any:
        """The value alone; functions override it to skip saving residuals."""
        value, _ = self.forward(*args, **kwargs)
        return value

    @abc.abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> tuple[Any, Residuals]:
        """Return ``(value, residuals)``."""

    @abc.abstractmethod
    def backward(self, residuals: Any, cotangent: Any) -> dict[str, Any]:
        """Return ``{argument name: vector-Jacobian product}`` for every differentiable argument."""

    def value_and_grad(
        self, *args: Any, cotangent: Any = None, **kwargs: Any
    ) -> tuple[Any, dict[str, Any]]:
        """``forward`` then ``backward``; ``cotangent=None`` means ones of the value's shape."""
        value, residuals = self.forward(*args, **kwargs)
        if cotangent is None:
            cotangent = residuals.xp.ones_like(value)
        return value, self.backward(residuals, cotangent)

    def __repr__(self) -> str:
        return f"refsoftmax.{self.name}"


def prepare_cotangent(residuals: Residuals, cotangent: Any, reference: Any) -> Any:
    """The cotangent as an array of the residuals' namespace, checked for shape.

    ``reference`` is any array of the call (its namespace and device are used).
    """
    xp = residuals.xp
    _, arrays = resolve(reference=reference, cotangent=cotangent)
    ct = arrays["cotangent"]
    if tuple(ct.shape) != tuple(residuals.value_shape):
        msg = (
            f"cotangent must have the value's shape {tuple(residuals.value_shape)}, "
            f"got {tuple(ct.shape)}"
        )
        raise ValueError(msg)
    if not xp.isdtype(ct.dtype, ("real floating", "integral")) and "bfloat16" not in str(ct.dtype):
        msg = f"cotangent must be real-valued, got dtype {ct.dtype}"
        raise TypeError(msg)
    return xp.astype(ct, residuals.compute_dtype, copy=False)

"""Drivers for the frameworks whose losses are certified: arrays in, value and VJP out.

Each driver converts NumPy inputs to the framework's arrays in a given dtype
and obtains gradients with **the framework's own autodiff**
(``torch.autograd``, ``tf.GradientTape``, ``jax.vjp``, ...).  This is the
one place in refsoftmax where autodiff is used: to measure other libraries.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["FRAMEWORKS", "Framework", "get_framework"]


class Framework:
    """Base driver: NumPy arrays, no autodiff (gradients need a ``grad_fn``)."""

    name = "numpy"
    module = "numpy"
    dtypes: tuple[str, ...] = ("float64", "float32", "float16")

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution())
        except importlib.metadata.PackageNotFoundError:
            return str(getattr(importlib.import_module(self.module), "__version__", "unknown"))

    def distribution(self) -> str:
        return self.module

    #: the import a reproducer needs for :meth:`source`
    import_line = "import numpy as np"

    def source(self, expr: str, dtype: str | None) -> str:
        """Python source turning the NumPy array ``expr`` into this framework's array (for reproducers)."""
        return f"np.asarray({expr}, dtype=np.{dtype})" if dtype else f"np.asarray({expr})"

    def to_array(self, x: np.ndarray, dtype: str | None) -> Any:
        """``x`` as this framework's array; float arrays in ``dtype``, integer arrays unchanged."""
        return np.asarray(x, dtype=dtype) if dtype else np.asarray(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def vjp(self, fn: Callable[..., Any], args: dict[str, Any], wrt: tuple[str, ...],
            cotangent: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        msg = f"the {self.name} driver has no autodiff: pass grad_fn"
        raise NotImplementedError(msg)


class TorchFramework(Framework):
    name = "torch"
    module = "torch"
    dtypes = ("float64", "float32", "float16", "bfloat16")
    import_line = "import torch"

    def source(self, expr: str, dtype: str | None) -> str:
        return f"torch.tensor({expr}, dtype=torch.{dtype})" if dtype else f"torch.as_tensor({expr})"

    def to_array(self, x: np.ndarray, dtype: str | None) -> Any:
        import torch

        if dtype is None:
            return torch.from_numpy(np.array(x, copy=True))
        return torch.tensor(np.asarray(x, np.float64), dtype=getattr(torch, dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.detach().to(dtype=__import__("torch").float64).cpu().numpy())

    def vjp(self, fn, args, wrt, cotangent):  # type: ignore[no-untyped-def,unused-ignore]
        import torch

        leaves = {k: (v.detach().clone().requires_grad_(True) if k in wrt else v) for k, v in args.items()}
        value = fn(**leaves)
        ct = torch.tensor(np.asarray(cotangent), dtype=value.dtype)
        grads = torch.autograd.grad(value, [leaves[k] for k in wrt], ct, allow_unused=True)
        out = {k: (np.zeros(tuple(leaves[k].shape)) if g is None else self.to_numpy(g)) for k, g in zip(wrt, grads, strict=True)}
        return self.to_numpy(value), out


class TensorFlowFramework(Framework):
    name = "tensorflow"
    module = "tensorflow"
    dtypes = ("float64", "float32", "float16", "bfloat16")
    import_line = "import tensorflow as tf"

    def source(self, expr: str, dtype: str | None) -> str:
        return f"tf.cast(tf.constant({expr}), tf.{dtype})" if dtype else f"tf.constant({expr})"

    def distribution(self) -> str:
        for dist in ("tensorflow-cpu", "tensorflow"):
            try:
                importlib.metadata.version(dist)
                return dist
            except importlib.metadata.PackageNotFoundError:
                continue
        return "tensorflow"

    def to_array(self, x: np.ndarray, dtype: str | None) -> Any:
        import tensorflow as tf

        if dtype is None:
            return tf.constant(np.asarray(x))
        return tf.cast(tf.constant(np.asarray(x, np.float64)), getattr(tf, dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        import tensorflow as tf

        return np.asarray(tf.cast(tf.convert_to_tensor(x), tf.float64).numpy())

    def vjp(self, fn, args, wrt, cotangent):  # type: ignore[no-untyped-def,unused-ignore]
        import tensorflow as tf

        watched = {k: (tf.Variable(v) if k in wrt else v) for k, v in args.items()}
        with tf.GradientTape() as tape:
            value = fn(**watched)
        ct = tf.cast(tf.constant(np.asarray(cotangent)), value.dtype)
        grads = tape.gradient(value, [watched[k] for k in wrt], output_gradients=ct)
        out = {}
        for k, g in zip(wrt, grads, strict=True):
            out[k] = np.zeros(tuple(watched[k].shape)) if g is None else self.to_numpy(tf.convert_to_tensor(g))
        return self.to_numpy(value), out


class JaxFramework(Framework):
    name = "jax"
    module = "jax"
    dtypes = ("float64", "float32", "float16", "bfloat16")
    import_line = "import jax; jax.config.update('jax_enable_x64', True); import jax.numpy as jnp"

    def source(self, expr: str, dtype: str | None) -> str:
        return f"jnp.asarray({expr}, dtype=jnp.{dtype})" if dtype else f"jnp.asarray({expr})"

    def _jax(self) -> Any:
        import jax

        jax.config.update("jax_enable_x64", True)
        return jax

    def to_array(self, x: np.ndarray, dtype: str | None) -> Any:
        # Cast on the host (bfloat16 via ml_dtypes, which JAX ships) and device_put: a cast
        # on the device, or jnp.asarray, compiles one XLA program per shape and dtype.
        jax = self._jax()
        if dtype is None:
            return jax.device_put(np.asarray(x))
        return jax.device_put(np.asarray(x, np.float64).astype(jax.numpy.dtype(dtype)))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(np.asarray(x, dtype=np.float32 if "bfloat16" in str(x.dtype) else None), dtype=np.float64)

    def vjp(self, fn, args, wrt, cotangent):  # type: ignore[no-untyped-def,unused-ignore]
        jax = self._jax()
        fixed = {k: v for k, v in args.items() if k not in wrt}

        def f(*diff: Any) -> Any:
            return fn(**fixed, **dict(zip(wrt, diff, strict=True)))

        value, pullback = jax.vjp(f, *[args[k] for k in wrt])
        grads = pullback(jax.device_put(np.asarray(cotangent).astype(value.dtype)))
        return self.to_numpy(value), {k: self.to_numpy(g) for k, g in zip(wrt, grads, strict=True)}


FRAMEWORKS: dict[str, Framework] = {
    f.name: f for f in (Framework(), TorchFramework(), TensorFlowFramework(), JaxFramework())
}


def register_framework(framework: Framework) -> None:
    """Add (or replace) a framework driver, so that ``certify(fn, framework=framework.name)`` works.

    Parameters
    ----------
    framework : Framework
        A subclass instance defining ``name``, ``module`` (the import that
        :meth:`Framework.available` looks for), ``dtypes``, ``to_array(x,
        dtype)``, ``to_numpy(x)`` and ``vjp(fn, args, wrt, cotangent) -> (value,
        {name: gradient})`` with the framework's own autodiff; ``source(expr,
        dtype)`` and ``import_line`` write reproducers.  See
        :class:`TorchFramework` for a complete driver in 30 lines, and
        ``refsoftmax/conformance/frameworks_extra.py`` (Paddle, tinygrad).
    """
    FRAMEWORKS[framework.name] = framework


def get_framework(name: str) -> Framework:
    if name not in FRAMEWORKS:
        msg = f"framework={name!r} is not known; choose one of {sorted(FRAMEWORKS)}"
        raise ValueError(msg)
    return FRAMEWORKS[name]

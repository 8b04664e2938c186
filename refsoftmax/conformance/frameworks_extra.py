"""Framework drivers for PaddlePaddle and tinygrad, registered with :func:`register_framework`.

Importing this module (``refsoftmax.conformance`` does) makes
``certify(fn, framework="paddle")`` and ``framework="tinygrad"`` work.  As in
:mod:`~refsoftmax.conformance.frameworks`, gradients come from **the
framework's own autodiff**: ``paddle.grad`` and tinygrad's
``Tensor.gradient`` (the engine behind ``Tensor.backward``).  Neither
library is imported until a case runs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np

from refsoftmax.conformance.frameworks import Framework, register_framework

__all__ = ["PaddleFramework", "TinygradFramework", "tinygrad_context", "tinygrad_device"]


class PaddleFramework(Framework):
    """PaddlePaddle on its default device; gradients by ``paddle.grad``.

    Paddle's CPU kernels of the softmax cross-entropy take float32 and
    float64 only; the Paddle adapter restricts its targets' dtypes there.
    """

    name = "paddle"
    module = "paddle"
    dtypes = ("float64", "float32", "float16", "bfloat16")

    def distribution(self) -> str:
        for dist in ("paddlepaddle", "paddlepaddle-gpu"):
            try:
                importlib.metadata.version(dist)
                return dist
            except importlib.metadata.PackageNotFoundError:
                continue
        return "paddlepaddle"

    def to_array(self, x: np.ndarray, dtype: str | None) -> Any:
        import paddle

        if dtype is None:
            return paddle.to_tensor(np.array(x, copy=True))
        tensor: Any = paddle.to_tensor(np.asarray(x, np.float64))
        return tensor.astype(dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.astype("float64").numpy(), dtype=np.float64)

    def vjp(self, fn, args, wrt, cotangent):  # type: ignore[no-untyped-def,unused-ignore]
        import paddle

        leaves = {}
        for k, v in args.items():
            if k in wrt:
                v = v.detach().clone()
                v.stop_gradient = False
            leaves[k] = v
        value = fn(**leaves)
        ct = paddle.to_tensor(np.asarray(cotangent, np.float64)).astype(value.dtype)
        grads = paddle.grad([value], [leaves[k] for k in wrt], grad_outputs=[ct], allow_unused=True)
        out = {k: (np.zeros(tuple(leaves[k].shape)) if g is None else self.to_numpy(g))
               for k, g in zip(wrt, grads, strict=True)}
        return self.to_numpy(value), out


def tinygrad_device() -> str | None:
    """The tinygrad device the driver uses.

    ``$DEV`` when set (tinygrad's own choice); else ``"CPU"`` when a ``clang``
    (or ``$CC``) is on the PATH, which tinygrad's CPU backend compiles with;
    else ``"PYTHON"``, tinygrad's pure-Python emulator (slow, needs nothing).
    ``None`` means tinygrad's default.
    """
    if os.environ.get("DEV"):
        return None
    return "CPU" if shutil.which(os.environ.get("CC", "clang")) else "PYTHON"


def tinygrad_context(*, optimise: bool = False) -> contextlib.AbstractContextManager[Any]:
    """A context in which tinygrad's default device is :func:`tinygrad_device` (constants, realisation).

    On the ``PYTHON`` emulator it also sets ``PARALLEL=0`` (lower kernels in
    this process, not in a pool of spawned workers) and, unless ``optimise``,
    ``NOOPT=1`` (no kernel optimisation: the same operations in plain loops,
    so sums may round differently in the last bits); together they make a
    certification several times faster there (from over two minutes to well
    under one on two cores).  Float16 kernels are realised with
    ``optimise=True``: under ``NOOPT=1`` tinygrad 0.14 fails to lower them
    ("UOp verification failed" on a float CAST).  With ``$DEV`` set,
    tinygrad's settings are left alone.
    """
    device = tinygrad_device()
    if device is None:
        return contextlib.nullcontext()
    from tinygrad.helpers import Context

    settings: dict[str, Any] = {"DEV": device}
    if device == "PYTHON":
        settings.update(PARALLEL=0, NOOPT=0 if optimise else 1)
    return Context(**settings)  # type: ignore[no-any-return,unused-ignore]


class TinygradFramework(Framework):
    """tinygrad on :func:`tinygrad_device`; gradients by ``Tensor.gradient`` (tinygrad's autograd)."""

    name = "tinygrad"
    module = "tinygrad"
    dtypes = ("float64", "float32", "float16", "bfloat16")

    def to_array(self, x: np.ndarray, dtype: str | None) -> Any:
        from tinygrad import Tensor, dtypes

        with tinygrad_context():
            if dtype is None:
                return Tensor(np.array(x, copy=True))
            return Tensor(np.asarray(x, np.float64), dtype=getattr(dtypes, dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        from tinygrad import dtypes

        # kernels are compiled here, when the lazy result is realised; NumPy has no bfloat16,
        # for which tinygrad returns float32 (exact)
        with tinygrad_context(optimise=x.dtype == dtypes.float16):
            return np.asarray(x.numpy(), dtype=np.float64)

    def vjp(self, fn: Callable[..., Any], args: dict[str, Any], wrt: tuple[str, ...],
            cotangent: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        from tinygrad import Tensor

        with tinygrad_context():
            value = fn(**args)
            ct = Tensor(np.asarray(cotangent, np.float64), device=value.device, dtype=value.dtype)
            grads = value.gradient(*[args[k] for k in wrt], gradient=ct)
            return self.to_numpy(value), {k: self.to_numpy(g) for k, g in zip(wrt, grads, strict=True)}


register_framework(PaddleFramework())
register_framework(TinygradFramework())

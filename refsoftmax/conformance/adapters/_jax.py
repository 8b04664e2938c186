"""Shared by the adapters of JAX libraries (optax, Keras on JAX): a loss as one jitted program.

Eager JAX compiles every primitive, and the linearised and transposed
pieces of ``jax.vjp``, for every new shape and dtype: that compilation, not
the arithmetic, was nearly all of a certification's time.  A :class:`Program`
wraps the library call once in ``jax.jit``: value and VJP are one XLA
program, what ``jax.value_and_grad`` under ``jit`` runs in a training step,
compiled once per shape and dtype.  The value alone (``Program.value``, used
for the value, for invalid inputs and for the finite differences) runs the
same compiled program with a zero cotangent, so nothing is compiled twice.

Under ``jit`` XLA may simplify the computation, and a few results differ
from eager execution: Keras's JAX ``sparse_categorical_crossentropy``
multiplies ``one_hot(label)`` by the log-probabilities, NaN eagerly at a
``-inf`` logit off the label (0 · −∞), while XLA rewrites that product into a
select and returns the finite, correct loss.  ``REFSOFTMAX_JAX_JIT=0`` in
the environment certifies eager execution instead (several times slower):
the value by calling the loss, the gradient by ``jax.vjp``, both eagerly.

**Compile time.**  A certification compiles one small program per case, and XLA's CPU code
generation was most of that time.  So, unless ``REFSOFTMAX_XLA_FAST_COMPILE=0``, the adapters
ask XLA for ``--xla_backend_optimization_level=0`` (LLVM's level) and
``--xla_cpu_use_fusion_emitters=false`` (the classic elemental emitters instead of the MLIR
fusion pipeline) (:func:`fast_compile_flags`) when JAX is not initialised yet, and always in
the Keras subprocesses; a flag already in ``XLA_FLAGS`` is left as the user set it.  Both are
*code generation* settings: XLA's own graph rewrites (the select above), and so the numbers,
are those of a normal ``jit`` — fast-math is off either way.  Measured on 2 cores:
``certify optax`` 58.6 s → 37.3 s (level 0) → 21.1 s (both), and ``certify keras`` 95 s →
63.3 s → 52.5 s, with every one of their 666 and 1,818 outcomes, messages included, unchanged.

Compilation can be reused across runs with JAX's own persistent cache, e.g.
``JAX_COMPILATION_CACHE_DIR=~/.cache/jax JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0``
in the environment (the Keras subprocesses inherit it): a repeated
``refsoftmax certify optax`` then takes about a third of the time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Program", "fast_compile_flags", "jitted", "mode", "use_fast_compile"]

#: XLA's CPU code generation at its fastest: LLVM at level 0, and the classic elemental
#: emitters instead of the MLIR fusion emitters (their compile pipeline was ~40% of a small
#: program's compile time).  Both leave XLA's graph rewrites, and fast-math (off), alone.
_FAST = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def fast_compile_flags(flags: str) -> str:
    """``XLA_FLAGS`` with the fast code-generation level added (unless opted out or already set)."""
    if os.environ.get("REFSOFTMAX_XLA_FAST_COMPILE", "1") == "0":
        return flags
    added = [f for f in _FAST if f.split("=")[0] not in flags]  # the user's own setting wins
    return " ".join([flags, *added]).strip()


def use_fast_compile() -> None:
    """Add :func:`fast_compile_flags` to ``XLA_FLAGS`` if JAX is not imported yet (it reads the
    flags once, when it starts its CPU backend); afterwards this does nothing."""
    if "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = fast_compile_flags(os.environ.get("XLA_FLAGS", ""))


use_fast_compile()


def jitted() -> bool:
    """False when ``REFSOFTMAX_JAX_JIT=0``: programs then run eagerly."""
    return os.environ.get("REFSOFTMAX_JAX_JIT", "1") != "0"


def mode() -> str:
    """How JAX targets run, for reports."""
    return "value and VJP as one jax.jit program" if jitted() else "eager (REFSOFTMAX_JAX_JIT=0)"


class Program:
    """``loss(**inputs)`` (a JAX function of arrays) as one jitted value-and-VJP program."""

    def __init__(self, loss: Callable[..., Any], wrt: tuple[str, ...]) -> None:
        import jax

        self.loss = loss
        self.wrt = wrt
        self.jit = jitted()
        self._run = jax.jit(self._value_and_vjp) if self.jit else self._value_and_vjp
        self._outputs: dict[tuple[Any, ...], Any] = {}

    def _value_and_vjp(self, inputs: dict[str, Any], cotangent: Any) -> tuple[Any, dict[str, Any]]:
        import jax

        fixed = {k: v for k, v in inputs.items() if k not in self.wrt}

        def f(*diff: Any) -> Any:
            return self.loss(**fixed, **dict(zip(self.wrt, diff, strict=True)))

        value, pullback = jax.vjp(f, *[inputs[k] for k in self.wrt])
        return value, dict(zip(self.wrt, pullback(cotangent), strict=True))

    def _cotangent(self, inputs: dict[str, Any], cotangent: Any | None) -> Any:
        """``cotangent`` (or zeros) in the shape and dtype of the loss's output."""
        import jax

        key = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(inputs.items()))
        if key not in self._outputs:  # trace once per signature; compiles nothing
            self._outputs[key] = jax.eval_shape(lambda kw: self.loss(**kw), inputs)
        out = self._outputs[key]
        ct = np.zeros(out.shape) if cotangent is None else np.asarray(cotangent, np.float64)
        return jax.device_put(ct.astype(out.dtype))

    def value(self, inputs: dict[str, Any]) -> Any:
        """The loss, from the compiled value-and-VJP program (zero cotangent)."""
        if not self.jit:
            return self.loss(**inputs)
        return self._run(inputs, self._cotangent(inputs, None))[0]

    def grads(self, inputs: dict[str, Any], cotangent: Any) -> dict[str, Any]:
        """``{name: VJP}`` for the names in ``wrt``, from the same compiled program."""
        return self._run(inputs, self._cotangent(inputs, cotangent))[1]

"""optax: ``softmax_cross_entropy``, ``safe_softmax_cross_entropy`` (+ ``smooth_labels``) and
``softmax_cross_entropy_with_integer_labels``, on JAX (``jax.vjp``, x64 enabled).

optax's losses return one loss per example and have no class weights, no
reduction and no ignore index.  The adapter does not add them: a case asking
for ``reduction="sum"``/``"mean"`` or ``class_weights`` is skipped
(:class:`Unsupported`), since summing or averaging in the adapter would
certify the adapter, not optax.  What optax *does* express is passed through:

- leading batch dims (classes on the last axis, optax's ``axis=-1``);
- ``ignore_index`` for integer labels, as optax's own per-example ``where``
  argument, ``where = labels != ignore_index`` (optax >= 0.2.4 documents a
  ``where`` of shape ``[batch]`` as the examples to include, and returns 0
  for the others); with an optax that has no ``where`` the case is skipped;
- ``label_smoothing`` as users write it, ``softmax_cross_entropy(logits,
  optax.smooth_labels(labels, eps))``: that composition is a target of its
  own (one per dense loss), run on the cases with smoothing only.

Each function runs as one ``jax.jit`` program computing the value and its
VJP (``adapters/_jax.py``), as in a training step, with the options static;
eager JAX compiles every primitive for every new shape and dtype, which
made a run several times slower (``REFSOFTMAX_JAX_JIT=0`` runs it eagerly;
on these cases optax gives the same results both ways).

Conventions (measured, ``docs/conventions.md``): ``smooth_labels`` spreads ε
uniformly over all classes, the reference default ``label_smoothing_mode=
"uniform"``; no other option applies, so no target declares a convention.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

from refsoftmax.conformance.adapters._jax import Program, mode
from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "optax"

_DOC = "docs/conventions.md, optax rows"
_IMPORTS = "import jax; jax.config.update('jax_enable_x64', True); import jax.numpy as jnp, optax"


def available() -> bool:
    return (
        importlib.util.find_spec("optax") is not None
        and importlib.util.find_spec("jax") is not None
    )


def version() -> str:
    import optax

    return str(optax.__version__)


def _check(inputs: dict[str, Any], options: dict[str, Any], allowed: set[str]) -> None:
    """Skip what optax cannot express; ``reduction`` is accepted only as ``"none"``."""
    if options.get("reduction", "none") != "none":
        raise Unsupported(
            f"optax returns per-example losses: no reduction={options['reduction']!r}"
        )
    if "class_weights" in inputs:
        raise Unsupported("optax has no class weights")
    extra = set(options) - allowed - {"reduction"}
    if extra:
        raise Unsupported(f"option(s) {sorted(extra)} not expressible in this function")


@functools.cache
def _program(name: str, ignore_index: int | None = None, eps: float | None = None) -> Program:
    """The jitted program of ``optax.losses.<name>`` with these (static) options."""
    import optax

    fn = getattr(optax.losses, name)
    if name == "softmax_cross_entropy_with_integer_labels":
        if ignore_index is None:
            return Program(fn, ("logits",))
        if "where" not in inspect.signature(fn).parameters:
            raise Unsupported(f"optax {optax.__version__} has no `where` to leave examples out")
        return Program(
            lambda logits, labels: fn(logits, labels, where=labels != ignore_index), ("logits",)
        )
    if eps is None:
        return Program(fn, ("logits", "labels"))
    return Program(
        lambda logits, labels: fn(logits, optax.smooth_labels(labels, eps)), ("logits", "labels")
    )


def _integer_labels(options: dict[str, Any], inputs: dict[str, Any]) -> Program:
    _check(inputs, options, {"ignore_index"})
    return _program(
        "softmax_cross_entropy_with_integer_labels", ignore_index=options.get("ignore_index")
    )


def _dense(name: str, smoothing: bool) -> Callable[[dict[str, Any], dict[str, Any]], Program]:
    def program(options: dict[str, Any], inputs: dict[str, Any]) -> Program:
        _check(inputs, options, {"label_smoothing"} if smoothing else set())
        if not smoothing:
            return _program(name)
        eps = float(options.get("label_smoothing", 0.0))
        if not eps:
            raise Unsupported(f"no label_smoothing: see optax.losses.{name} alone")
        return _program(name, eps=eps)

    return program


def _target(
    function: str,
    loss: str,
    program: Callable[[dict[str, Any], dict[str, Any]], Program],
    wrt: tuple[str, ...],
    expression: str,
) -> Target:
    def call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        return program(options, inputs).value(
            {"logits": inputs["logits"], "labels": inputs["labels"]}
        )

    def grad_fn(inputs: dict[str, Any], options: dict[str, Any], cotangent: Any) -> dict[str, Any]:
        chosen = program(options, inputs)
        return chosen.grads({"logits": inputs["logits"], "labels": inputs["labels"]}, cotangent)

    return Target(
        LIBRARY,
        function,
        loss,
        "jax",
        call,
        wrt=wrt,
        convention_doc=_DOC,
        imports=_IMPORTS,
        expression=expression,
        grad_fn=grad_fn,
        notes=mode(),
    )


def _jnp(name: str) -> str:
    return f"jnp.asarray({name}).astype(jnp.{{dtype}})"


def targets() -> list[Target]:
    import optax

    z, y = _jnp("logits"), _jnp("labels")
    out = [
        _target(
            "optax.losses.softmax_cross_entropy_with_integer_labels",
            "sparse_softmax_cross_entropy",
            _integer_labels,
            ("logits",),
            f"optax.losses.softmax_cross_entropy_with_integer_labels({z}, jnp.asarray(labels), "
            "where=None if options.get('ignore_index') is None "
            "else jnp.asarray(labels != options['ignore_index']))",
        ),
    ]
    dense = ["softmax_cross_entropy"]
    if hasattr(optax.losses, "safe_softmax_cross_entropy"):
        dense.append("safe_softmax_cross_entropy")
    for name in dense:
        out.append(
            _target(
                f"optax.losses.{name}",
                "softmax_cross_entropy",
                _dense(name, False),
                ("logits", "labels"),
                f"optax.losses.{name}({z}, {y})",
            )
        )
        out.append(
            _target(
                f"optax.losses.{name} + optax.smooth_labels",
                "softmax_cross_entropy",
                _dense(name, True),
                ("logits", "labels"),
                f"optax.losses.{name}({z}, optax.smooth_labels({y}, options['label_smoothing']))",
            )
        )
    return out

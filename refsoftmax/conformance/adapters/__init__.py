"""Adapters: each certifies one library's softmax losses through the reference signature.

An adapter module defines ``LIBRARY`` (the name used on the command line),
``available() -> bool``, ``version() -> str`` and ``targets() -> list[Target]``.
Every target declares the library's conventions (``docs/conventions.md``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["ADAPTERS", "load"]

#: Library name -> adapter module.
ADAPTERS: dict[str, str] = {
    "torch": "refsoftmax.conformance.adapters.torch",
    "tensorflow": "refsoftmax.conformance.adapters.tensorflow",
    "optax": "refsoftmax.conformance.adapters.optax",
    "keras": "refsoftmax.conformance.adapters.keras",
    "entmax": "refsoftmax.conformance.adapters.entmax",
    "paddle": "refsoftmax.conformance.adapters.paddle",
    "tinygrad": "refsoftmax.conformance.adapters.tinygrad",
    "keras_rs": "refsoftmax.conformance.adapters.keras_rs",
}


def load(library: str) -> ModuleType:
    """The adapter module of ``library`` (``ValueError`` for an unknown name)."""
    if library not in ADAPTERS:
        msg = f"no adapter for library={library!r}; known: {sorted(ADAPTERS)}"
        raise ValueError(msg)
    return importlib.import_module(ADAPTERS[library])


def available_adapters() -> list[str]:
    """Names of the adapters whose module exists and whose library is installed."""
    names = []
    for name in ADAPTERS:
        try:
            module = load(name)
        except ImportError:
            continue
        if module.available():
            names.append(name)
    return names

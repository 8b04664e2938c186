"""Adapters: each certifies one library's softmax losses through the reference signature.

An adapter module defines ``LIBRARY`` (the name used on the command line),
``available() -> bool``, ``version() -> str`` and ``targets() -> list[Target]``.
Every target declares the library's conventions (``docs/conventions.md``).

Besides the built-in adapters (:data:`ADAPTERS`), any installed distribution
can provide one through the entry-point group :data:`GROUP`: the entry
point's name is the library name, its value the adapter module, e.g.
``mylib = "mylib_refsoftmax.adapter"`` under
``[project.entry-points."refsoftmax.adapters"]`` in its ``pyproject.toml``
(``docs/conformance.md``, "Adapters from other packages").
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from types import ModuleType

__all__ = ["ADAPTERS", "GROUP", "available_adapters", "load", "registry"]

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
    "transformers": "refsoftmax.conformance.adapters.transformers",
    "pytorch_metric_learning": "refsoftmax.conformance.adapters.pytorch_metric_learning",
    # vocab-parallel losses, certified on 2 and 4 ranks of a gloo group (conformance/sharded.py)
    "megatron_core": "refsoftmax.conformance.adapters.megatron_core",
    "fairscale": "refsoftmax.conformance.adapters.fairscale",
    "torch_loss_parallel": "refsoftmax.conformance.adapters.torch_loss_parallel",
}

#: The entry-point group through which other distributions provide adapters.
GROUP = "refsoftmax.adapters"


def _describe(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" of {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ep.name} = {ep.value} (group {GROUP!r}{where})"


def _plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """The adapters of installed distributions, by name; a name taken already is warned about."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name in ADAPTERS:
            taken = f"the built-in adapter {ADAPTERS[ep.name]}"
        elif ep.name in found:
            taken = f"the {_describe(found[ep.name])}"
        else:
            found[ep.name] = ep
            continue
        warnings.warn(f"two adapters for library {ep.name!r}: {taken} and the {_describe(ep)}; "
                      f"using {taken}", stacklevel=3)
    return found


def registry() -> dict[str, str]:
    """Library name -> adapter module: the built-in adapters, then those of the entry points.

    A plugin whose name is a built-in adapter's (or an earlier plugin's) is
    ignored with a warning naming both.
    """
    return {**ADAPTERS, **{name: ep.value for name, ep in _plugins().items()}}


def load(library: str) -> ModuleType:
    """The adapter module of ``library`` (``ValueError`` for an unknown name).

    A plugin's module that fails to import is an ``ImportError`` naming the
    entry point and the module.
    """
    if library in ADAPTERS:
        return importlib.import_module(ADAPTERS[library])
    plugins = _plugins()
    if library not in plugins:
        msg = f"no adapter for library={library!r}; known: {sorted({*ADAPTERS, *plugins})}"
        raise ValueError(msg)
    return _import(plugins[library])


def _import(ep: importlib.metadata.EntryPoint) -> ModuleType:
    try:
        return importlib.import_module(ep.value)
    except Exception as exc:
        msg = f"the adapter of {ep.name!r}, {_describe(ep)}, failed to import: {type(exc).__name__}: {exc}"
        raise ImportError(msg, name=ep.value) from exc


def available_adapters() -> list[str]:
    """Names of the adapters whose module exists and whose library is installed.

    A plugin that fails to import, or whose ``available()`` raises, is left
    out with a warning.
    """
    names = []
    for name, module_name in ADAPTERS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if module.available():
            names.append(name)
    for name, ep in _plugins().items():
        try:
            if _import(ep).available():
                names.append(name)
        except Exception as exc:
            warnings.warn(f"{exc}; skipped" if isinstance(exc, ImportError)
                          else f"{_describe(ep)}: available() raised {type(exc).__name__}: {exc}; skipped",
                          stacklevel=2)
    return names

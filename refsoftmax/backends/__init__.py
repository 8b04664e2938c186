"""What the array API standard lacks, one small module per array library.

Loss code never imports an array library.  It asks its inputs for their
namespace (``array_api_compat.array_namespace``) and writes the mathematics
against that.  The few things the standard does not define live here:

* ``scatter_add(x, indices, values)``: ``x`` with ``values[k]`` added to row
  ``indices[k]``, **accumulating** repeated indices (``x[idx] += v`` in NumPy
  and ``array_api_extra.at(x)[idx].add(v)`` on NumPy do *not* accumulate).
* ``Generator(seed, device)``: a seeded random generator that draws on the
  backend's own device.
* ``from_host(obj, device)``: turn a Python list or NumPy array into an array
  of this backend on ``device``; ``to_numpy(x)`` the way back (tests and
  the gradient checker compare on the host); ``parse_device(device)`` and
  ``default_device()``.

Every backend module exposes the same names (see :class:`BackendModule`), so
``refsoftmax.backends.load("torch").scatter_add`` and
``refsoftmax.backends.load("numpy").scatter_add`` are interchangeable.

A backend may also provide ``loss_namespace(xp)``: the namespace loss code
computes with, when ``xp`` lacks a standard function it needs (Dask:
``take_along_axis``).

:data:`NAMES` are the backends the test suite runs every test on;
:data:`EXTRA_NAMES` (Dask) are served (``load``, ``for_namespace``) but tested
by their own test module, not by every test.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Protocol

__all__ = ["EXTRA_NAMES", "NAMES", "BackendModule", "available", "for_namespace", "load"]

#: Every backend refsoftmax knows, in the order ``available()`` lists them.
NAMES: tuple[str, ...] = ("numpy", "array_api_strict", "torch", "cupy", "jax")
#: Backends served like those of ``NAMES`` but left out of the suite-wide
#: ``backend`` test fixture (too slow for every test; ``tests/test_dask.py``).
EXTRA_NAMES: tuple[str, ...] = ("dask",)


class BackendModule(Protocol):
    """The interface every module in ``refsoftmax.backends`` provides."""

    NAME: str

    def is_available(self) -> bool: ...
    def namespace(self) -> ModuleType: ...
    def owns(self, xp: ModuleType) -> bool: ...
    def default_device(self) -> Any: ...
    def parse_device(self, device: Any) -> Any: ...
    def from_host(self, obj: Any, device: Any = None) -> Any: ...
    def to_numpy(self, x: Any) -> Any: ...
    def scatter_add(self, x: Any, indices: Any, values: Any) -> Any: ...
    def Generator(self, seed: int | None, device: Any = None) -> Any: ...


def load(name: str) -> BackendModule:
    """Return the backend module called ``name``.

    Raises ``ValueError`` for a name refsoftmax does not know and
    ``ImportError`` when the array library behind it is not installed.
    """
    if name not in NAMES + EXTRA_NAMES:
        msg = f"backend={name!r} is not a refsoftmax backend; choose one of {NAMES + EXTRA_NAMES}"
        raise ValueError(msg)
    module: Any = importlib.import_module(f"refsoftmax.backends.{name}")
    if not module.is_available():
        msg = f"backend {name!r} is not available: its array library is not installed"
        raise ImportError(msg)
    return module


def available() -> list[str]:
    """Names of the backends of :data:`NAMES` whose array library is installed."""
    names = []
    for name in NAMES:
        module: Any = importlib.import_module(f"refsoftmax.backends.{name}")
        if module.is_available():
            names.append(name)
    return names


def for_namespace(xp: ModuleType) -> BackendModule:
    """Return the backend module that serves the array namespace ``xp``."""
    for name in NAMES + EXTRA_NAMES:
        module: Any = importlib.import_module(f"refsoftmax.backends.{name}")
        if module.is_available() and module.owns(xp):
            return module
    msg = f"no refsoftmax backend serves the array namespace {getattr(xp, '__name__', xp)!r}"
    raise TypeError(msg)

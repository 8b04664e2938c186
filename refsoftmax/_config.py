"""The backend flag: which array library refsoftmax uses for data that has none.

Arrays that already belong to a namespace (a ``torch.Tensor``, a CuPy array,
an array-api-strict array) always keep it.  The flag decides only

* where Python lists, scalars and NumPy arrays go when they are passed in
  (converted once, onto the flag's device), and
* where arrays that refsoftmax creates itself (random samples) are made.

Three ways to set it, most local first: the context manager
:func:`use_backend` (a ``contextvars.ContextVar``, so each thread and each
asyncio task sees its own), the process-wide :func:`set_backend`, and the
environment variable ``REFSOFTMAX_BACKEND`` (read when no call has set one;
``name`` or ``name:device``, e.g. ``torch:cuda:0``).  The default is NumPy.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from refsoftmax import backends

__all__ = ["BackendSpec", "get_backend", "set_backend", "use_backend"]

ENV_VAR = "REFSOFTMAX_BACKEND"


@dataclass(frozen=True)
class BackendSpec:
    """A backend name with its parsed device; ``module`` is the backend module."""

    name: str
    device: Any

    @property
    def module(self) -> backends.BackendModule:
        return backends.load(self.name)


def _make(name: str, device: Any) -> BackendSpec:
    if not isinstance(name, str):
        msg = f"backend name must be a string, got {name!r}"
        raise TypeError(msg)
    module = backends.load(name)
    return BackendSpec(name, module.parse_device(device))


_lock = threading.Lock()
_process_default: BackendSpec | None = None
_context: contextvars.ContextVar[BackendSpec | None] = contextvars.ContextVar(
    "refsoftmax_backend", default=None
)


def _from_env() -> BackendSpec:
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return _make("numpy", None)
    name, _, device = text.partition(":")
    try:
        return _make(name, device or None)
    except (ValueError, ImportError) as exc:
        msg = f"environment variable {ENV_VAR}={text!r} is not usable: {exc}"
        raise ValueError(msg) from exc


def get_backend() -> BackendSpec:
    """The backend in force here: ``use_backend`` > ``set_backend`` > environment > NumPy."""
    spec = _context.get()
    if spec is not None:
        return spec
    if _process_default is not None:
        return _process_default
    return _from_env()


def set_backend(name: str, device: Any = None) -> BackendSpec:
    """Set the process-wide backend (and device) for data that has no namespace of its own.

    Returns the new :class:`BackendSpec`.  ``use_backend`` blocks still take
    precedence inside them.

    >>> import refsoftmax
    >>> refsoftmax.set_backend("numpy").name
    'numpy'
    """
    global _process_default
    spec = _make(name, device)
    with _lock:
        _process_default = spec
    return spec


@contextmanager
def use_backend(name: str, device: Any = None) -> Iterator[BackendSpec]:
    """Use backend ``name`` (on ``device``) inside a ``with`` block, in this context only.

    >>> import refsoftmax
    >>> with refsoftmax.use_backend("numpy") as spec:
    ...     spec.name
    'numpy'
    """
    token = _context.set(_make(name, device))
    try:
        yield _context.get()  # type: ignore[misc]
    finally:
        _context.reset(token)

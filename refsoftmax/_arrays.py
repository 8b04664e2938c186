"""Turning a call's arguments into arrays of one namespace, on one device.

Every public function passes its array arguments through :func:`resolve`,
which

1. converts Python lists/scalars (always) and NumPy arrays (when the backend
   flag is not NumPy) into the namespace in force, on its device;
2. refuses to mix namespaces or devices in one call (``TypeError`` naming the
   two arguments);
3. detaches torch tensors from autograd (refsoftmax's gradients are derived by
   hand; it records no graph);
4. returns the namespace ``xp`` that the loss code then uses exclusively.
"""

from __future__ import annotations

import numbers
from typing import Any

import array_api_compat
import numpy as np

from refsoftmax._config import get_backend

__all__ = ["resolve"]


def _is_host(obj: Any) -> bool:
    """Data without an array namespace of its own: Python scalars and sequences."""
    return isinstance(obj, (list, tuple, numbers.Number))


def _namespace_name(xp: Any) -> str:
    name = str(getattr(xp, "__name__", xp))
    return name.removeprefix("array_api_compat.")


def resolve(**named: Any) -> tuple[Any, dict[str, Any]]:
    """Return ``(xp, arrays)`` with every non-``None`` argument as an array of ``xp``.

    Arguments are converted once; arguments that are ``None`` stay ``None``.
    """
    spec = get_backend()
    arrays: dict[str, Any] = {}
    typed: dict[str, Any] = {}
    for name, obj in named.items():
        if obj is None:
            arrays[name] = None
        elif _is_host(obj):
            arrays[name] = obj  # converted below, once the namespace is known
        elif isinstance(obj, (np.ndarray, np.generic)) and spec.name != "numpy":
            arrays[name] = spec.module.from_host(obj, spec.device)
            typed[name] = arrays[name]
        elif array_api_compat.is_array_api_obj(obj):
            arrays[name] = obj
            typed[name] = obj
        else:
            msg = f"{name} must be an array, a list or a number, got {type(obj).__name__}"
            raise TypeError(msg)

    if typed:
        first_name, first = next(iter(typed.items()))
        xp = array_api_compat.array_namespace(first)
        device, device_name = array_api_compat.device(first), first_name
        for name, arr in typed.items():
            other = array_api_compat.array_namespace(arr)
            if other is not xp:
                msg = (
                    f"{first_name} is a {_namespace_name(xp)} array but {name} is a "
                    f"{_namespace_name(other)} array; pass arrays of one namespace "
                    "(lists, and NumPy arrays under a non-NumPy backend flag, are converted)"
                )
                raise TypeError(msg)
            # a JAX tracer has no device (None) until it is placed: it matches any device
            other_device = array_api_compat.device(arr)
            if device is None:
                device, device_name = other_device, name
            elif other_device is not None and other_device != device:
                msg = (
                    f"{device_name} is on device {device} but {name} is on device "
                    f"{other_device}; move them to one device"
                )
                raise TypeError(msg)
        from refsoftmax import backends

        module = backends.for_namespace(xp)
        extended = getattr(module, "loss_namespace", None)  # dask: xp plus take_along_axis
        if extended is not None:
            xp = extended(xp)
        untracked = getattr(module, "untracked", None)  # torch: detach from autograd
        if untracked is not None:
            for name, arr in typed.items():
                arrays[name] = untracked(arr)
    else:
        module = spec.module
        xp = module.namespace()
        device = spec.device

    for name, obj in arrays.items():
        if obj is not None and _is_host(obj):
            arrays[name] = module.from_host(np.asarray(obj), device)
            if not array_api_compat.is_array_api_obj(arrays[name]):  # pragma: no cover
                msg = f"could not convert {name} to a {_namespace_name(xp)} array"
                raise TypeError(msg)
    return xp, arrays

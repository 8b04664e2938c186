"""array-api-strict backend: the standard and nothing else.

Every test runs on it too: a loss that passes here uses only what the array
API standard defines.  It has a second device (``"device1"``), which the tests
use to catch code that drops an input's device.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

from refsoftmax.backends._generic import (
    NumpyDrawsMixin,
    check_scatter_args,
    scatter_add_onehot,
)

NAME = "array_api_strict"


def is_available() -> bool:
    return importlib.util.find_spec("array_api_strict") is not None


def namespace() -> ModuleType:
    import array_api_strict

    return array_api_strict


def owns(xp: ModuleType) -> bool:
    return getattr(xp, "__name__", "") == "array_api_strict"


def default_device() -> Any:
    import array_api_strict

    return array_api_strict.Device("CPU_DEVICE")


def parse_device(device: Any) -> Any:
    import array_api_strict

    if device is None:
        return default_device()
    if isinstance(device, array_api_strict.Device):
        return device
    names = [str(d._device) for d in array_api_strict.__array_namespace_info__().devices()]
    if str(device) not in names:
        msg = f"device={device!r} is not an array-api-strict device; choose one of {names}"
        raise ValueError(msg)
    return array_api_strict.Device(str(device))


def from_host(obj: Any, device: Any = None) -> Any:
    import array_api_strict
    import numpy as np

    arr = np.asarray(obj)
    return array_api_strict.asarray(arr, device=parse_device(device))


def to_numpy(x: Any) -> Any:
    import array_api_strict
    import numpy as np

    return np.from_dlpack(array_api_strict.asarray(x, device=default_device()))


def scatter_add(x: Any, indices: Any, values: Any) -> Any:
    """``x`` with ``values[k]`` added to row ``indices[k]``; duplicates accumulate."""
    check_scatter_args(x, indices, values)
    return scatter_add_onehot(x, indices, values, xp=namespace())


class Generator(NumpyDrawsMixin):
    """NumPy's PCG64 draws moved onto an array-api-strict device: same numbers as NumPy."""

    def __init__(self, seed: int | None, device: Any = None) -> None:
        super().__init__(seed)
        self._device = parse_device(device)

    def uniform(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        xp = namespace()
        out = xp.asarray(self._uniform_np(shape), device=self._device)
        return out if dtype is None else xp.astype(out, dtype)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> Any:
        xp = namespace()
        return xp.asarray(self._integers_np(low, high, shape), dtype=xp.int64, device=self._device)

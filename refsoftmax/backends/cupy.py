"""CuPy backend (NVIDIA GPUs).  Skipped cleanly where CuPy or a GPU is absent."""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

from refsoftmax.backends._generic import check_scatter_args

NAME = "cupy"


def is_available() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # no driver, no device: CuPy imports but cannot run
        return False


def namespace() -> ModuleType:
    import array_api_compat.cupy as xp

    return xp


def owns(xp: ModuleType) -> bool:
    import array_api_compat

    return array_api_compat.is_cupy_namespace(xp)


def default_device() -> Any:
    import cupy

    return cupy.cuda.Device()


def parse_device(device: Any) -> Any:
    import cupy

    if device is None:
        return default_device()
    if isinstance(device, cupy.cuda.Device):
        return device
    text = str(device)
    if text.startswith("cuda:"):
        text = text[5:]
    try:
        return cupy.cuda.Device(int(text))
    except ValueError as exc:
        msg = f"device={device!r} is not a CuPy device (use an integer or 'cuda:N')"
        raise ValueError(msg) from exc


def from_host(obj: Any, device: Any = None) -> Any:
    import cupy
    import numpy as np

    with parse_device(device):
        return cupy.asarray(np.asarray(obj))


def to_numpy(x: Any) -> Any:
    return x.get()


def scatter_add(x: Any, indices: Any, values: Any) -> Any:
    """``x`` with ``values[k]`` added to row ``indices[k]``; duplicates accumulate."""
    import cupyx

    check_scatter_args(x, indices, values)
    out = x.copy()
    cupyx.scatter_add(out, indices, values)
    return out


class Generator:
    """``cupy.random.default_rng`` on the requested device, seeded."""

    def __init__(self, seed: int | None, device: Any = None) -> None:
        import cupy

        self._device = parse_device(device)
        with self._device:
            self._rng = cupy.random.default_rng(seed)

    def uniform(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        import cupy

        with self._device:
            out = self._rng.random(shape, dtype=cupy.float64)
            return out if dtype is None else out.astype(dtype)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> Any:
        import cupy

        with self._device:
            return self._rng.integers(low, high, size=shape, dtype=cupy.int64)

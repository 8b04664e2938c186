"""JAX backend (CPU, GPU, TPU).  Float64 needs ``jax.config.update("jax_enable_x64", True)``."""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

from refsoftmax.backends._generic import check_scatter_args

NAME = "jax"


def is_available() -> bool:
    return importlib.util.find_spec("jax") is not None


def namespace() -> ModuleType:
    import jax.numpy as jnp

    return jnp


def owns(xp: ModuleType) -> bool:
    import array_api_compat

    return array_api_compat.is_jax_namespace(xp)


def default_device() -> Any:
    import jax

    return jax.devices()[0]


def parse_device(device: Any) -> Any:
    import jax

    if device is None:
        return default_device()
    if isinstance(device, jax.Device):
        return device
    text = str(device)
    platform, _, index = text.partition(":")
    try:
        return jax.devices(platform)[int(index or 0)]
    except (RuntimeError, IndexError, ValueError) as exc:
        msg = f"device={device!r} is not a JAX device: {exc}"
        raise ValueError(msg) from exc


def from_host(obj: Any, device: Any = None) -> Any:
    import jax
    import numpy as np

    return jax.device_put(np.asarray(obj), parse_device(device))


def to_numpy(x: Any) -> Any:
    import numpy as np

    return np.asarray(x)


def scatter_add(x: Any, indices: Any, values: Any) -> Any:
    """``x`` with ``values[k]`` added to row ``indices[k]``; duplicates accumulate (``.at[].add``)."""
    check_scatter_args(x, indices, values)
    return x.at[indices].add(values)


class Generator:
    """A splittable ``jax.random`` key, advanced on every draw."""

    def __init__(self, seed: int | None, device: Any = None) -> None:
        import jax
        import numpy as np

        self._device = parse_device(device)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self._key = jax.random.key(int(seed))

    def _next(self) -> Any:
        import jax

        self._key, sub = jax.random.split(self._key)
        return sub

    def uniform(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        import jax

        out = jax.random.uniform(self._next(), shape, dtype=dtype or float)
        return jax.device_put(out, self._device)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> Any:
        import jax

        return jax.device_put(jax.random.randint(self._next(), shape, low, high), self._device)

"""NumPy backend (CPU)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from refsoftmax.backends._generic import check_scatter_args

NAME = "numpy"


def is_available() -> bool:
    return True


def namespace() -> ModuleType:
    import array_api_compat.numpy as xp

    return xp


def owns(xp: ModuleType) -> bool:
    import array_api_compat

    return array_api_compat.is_numpy_namespace(xp)


def default_device() -> str:
    return "cpu"


def parse_device(device: Any) -> str:
    if device is None or str(device) == "cpu":
        return "cpu"
    msg = f"device={device!r} is not a NumPy device; NumPy arrays live on 'cpu'"
    raise ValueError(msg)


def from_host(obj: Any, device: Any = None) -> np.ndarray:
    parse_device(device)
    return np.asarray(obj)


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x)


def scatter_add(x: np.ndarray, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A copy of ``x`` with ``values[k]`` added to row ``indices[k]``; duplicates accumulate."""
    check_scatter_args(x, indices, values)
    out = np.array(x, copy=True)
    np.add.at(out, indices, values)
    return out


class Generator:
    """Seeded generator (PCG64) on the CPU."""

    def __init__(self, seed: int | None, device: Any = None) -> None:
        parse_device(device)
        self._rng = np.random.default_rng(seed)

    def uniform(self, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        """Draws from U[0, 1)."""
        return self._rng.random(shape, dtype=np.float64).astype(dtype, copy=False)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> np.ndarray:
        """Draws from the integers in [low, high), as int64."""
        return self._rng.integers(low, high, size=shape, dtype=np.int64)


def fused_sparse_softmax_cross_entropy(z: Any, target: Any, kappa: Any, g: Any) -> Any:
    """The fused kernel of :mod:`refsoftmax.backends.numpy_kernels` (``None`` if it does not apply)."""
    from refsoftmax.backends import numpy_kernels

    return numpy_kernels.fused_sparse_softmax_cross_entropy(z, target, kappa, g)


def fused_softmax(x: Any, axis: int = -1, **outputs: Any) -> Any:
    """The blocked forward kernel of :mod:`refsoftmax.backends.numpy_kernels` (``None`` if it does not apply)."""
    from refsoftmax.backends import numpy_kernels

    return numpy_kernels.fused_softmax(x, axis, **outputs)


def fused_softmax_backward(kind: str, p: Any, g: Any, axis: int, dtype: Any) -> Any:
    """The blocked ``log_softmax``/``softmax`` backward kernel (``None`` if it does not apply)."""
    from refsoftmax.backends import numpy_kernels

    return numpy_kernels.fused_softmax_backward(kind, p, g, axis, dtype)


def fused_sparse_ce_backward(p: Any, complement: Any, target: Any, kappa: Any, g: Any,
                             row_ok: Any, axis: int, dtype: Any) -> Any:
    """The blocked sparse cross-entropy backward kernel (``None`` if it does not apply)."""
    from refsoftmax.backends import numpy_kernels

    return numpy_kernels.fused_sparse_ce_backward(p, complement, target, kappa, g, row_ok, axis,
                                                  dtype)

"""Root conftest: doctests of ``refsoftmax/`` that need an optional framework skip without it."""

from __future__ import annotations

import importlib.util

import pytest

#: doctest item name -> the package its example imports
_DOCTEST_NEEDS = {
    "refsoftmax.bridges.torch_autograd": "torch",
    "refsoftmax.bridges.jax_custom_vjp": "jax",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        need = _DOCTEST_NEEDS.get(item.name)
        if need is not None and importlib.util.find_spec(need) is None:
            item.add_marker(pytest.mark.skip(reason=f"{need} is not installed"))

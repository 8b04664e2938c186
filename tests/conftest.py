"""Shared fixtures: one ``backend`` fixture parametrises every test over the installed backends."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from refsoftmax import backends
from refsoftmax.conformance.adapters._jax import use_fast_compile

# Eager JAX compiles every primitive for every new shape, most of the JAX tests' time: the
# conformance adapters' fast code generation (XLA's graph rewrites, and so the numbers,
# unchanged) makes them ~1/3 faster (tests/test_properties.py -k jax: 69 s -> 46 s).
# REFSOFTMAX_XLA_FAST_COMPILE=0 runs them as a user's default JAX does.
use_fast_compile()

settings.register_profile(
    "ci", derandomize=True, max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

#: Hypothesis examples per property test on eager JAX.  Every new shape compiles every
#: primitive there (0.1-1 s per example, ~50x NumPy), and the property is the same array-API
#: code the NumPy run checks with the full count; the cross-backend equality of every loss is
#: test_contract's.  So JAX runs a quarter of the examples.
JAX_MAX_EXAMPLES = 15


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    """Fewer Hypothesis examples for the ``backend="jax"`` instance of a property test."""
    fn = pyfuncitem.obj
    callspec = getattr(pyfuncitem, "callspec", None)
    chosen = getattr(fn, "_hypothesis_internal_use_settings", None)  # what @given/@settings set
    if chosen is None or callspec is None or callspec.params.get("backend") != "jax":
        yield
        return
    fn._hypothesis_internal_use_settings = settings(chosen, max_examples=min(chosen.max_examples,
                                                                              JAX_MAX_EXAMPLES))
    try:
        yield
    finally:
        fn._hypothesis_internal_use_settings = chosen


#: The test modules that read the session's shared ``certified`` fixture.  Under ``pytest -n``
#: (pytest-xdist) they all run in one worker, so that each library is still certified once per
#: session, not once per worker (:func:`pytest_xdist_make_scheduler`);
#: :func:`pytest_collection_modifyitems` fails the run if a module using it is missing here.
CERTIFYING_MODULES = frozenset({
    "tests/test_conformance.py",
    "tests/test_conformance_more.py",
    "tests/test_conformance_peers.py",
    "tests/test_conformance_reports.py",
    "tests/test_conformance_tensorflow.py",
})


def _scope(nodeid: str) -> str:
    """The xdist work unit of a test: its module, or ``"certified"`` (see above)."""
    module = nodeid.split("::", 1)[0]
    return "certified" if module in CERTIFYING_MODULES else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Whole modules per worker (a module-scoped fixture, e.g. the 4-process gloo group of
    ``test_distributed.py``, is built once), and the certifying modules together.

    (A scheduler, not ``xdist_group`` marks: those rename the test ids, which pytest 9.2's
    structured node ids no longer allow.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = sorted({item.nodeid.split("::", 1)[0] for item in items
                      if "certified" in getattr(item, "fixturenames", ())} - CERTIFYING_MODULES)
    if missing:
        msg = f"add {missing} to CERTIFYING_MODULES in tests/conftest.py (they use `certified`)"
        raise pytest.UsageError(msg)


def pytest_report_header() -> str:
    have = backends.available()
    missing = [n for n in backends.NAMES if n not in have]
    return f"refsoftmax backends under test: {', '.join(have)}; skipped (not installed or no device): {', '.join(missing) or 'none'}"


@dataclass
class Backend:
    """A backend under test: its namespace, module and the device arrays are made on."""

    name: str
    module: Any
    device: Any

    @property
    def xp(self) -> Any:
        return self.module.namespace()

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """Host data as an array of this backend on its device (dtype: a NumPy dtype)."""
        arr = np.asarray(obj) if dtype is None else np.asarray(obj, dtype=dtype)
        return self.module.from_host(arr, self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(self.module.to_numpy(x))


def _backend_params() -> list[Any]:
    params = []
    for name in backends.NAMES:
        module = __import__(f"refsoftmax.backends.{name}", fromlist=["x"])
        if not module.is_available():
            params.append(pytest.param(name, marks=pytest.mark.skip(reason=f"{name} not installed / no device")))
            continue
        params.append(pytest.param(name))
    return params


@pytest.fixture(scope="session", params=_backend_params())
def backend(request: pytest.FixtureRequest) -> Backend:
    name = request.param
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    module = backends.load(name)
    return Backend(name, module, module.default_device())


@pytest.fixture(scope="session")
def strict_device1() -> Backend:
    """array-api-strict on its second device, to catch code that drops an input's device."""
    pytest.importorskip("array_api_strict")
    module = backends.load("array_api_strict")
    return Backend("array_api_strict", module, module.parse_device("device1"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


#: The random cases per target of the shared peer certifications: the checked-in reports'
#: regression test (tests/test_conformance_reports.py) and each library's own outcome tests
#: read the same certification, so each library is certified once per test session.
CERTIFY_MAX_EXAMPLES = 3


@pytest.fixture(scope="session")
def certified() -> Any:
    """``certified(library)``: the library's certification (seed 0), computed once per session."""
    from refsoftmax import conformance

    cache: dict[str, Any] = {}

    def get(library: str) -> Any:
        from refsoftmax.conformance import adapters

        if library not in cache:
            # a vocab-parallel adapter: world size 2 only (its report holds 2 and 4; each world
            # size starts its own gloo group, and the outcomes agree across them)
            sharded = {"world_sizes": (2,)} if hasattr(adapters.load(library), "WORLD_SIZES") else {}
            cache[library] = conformance.certify_library(library, max_examples=CERTIFY_MAX_EXAMPLES, **sharded)
        return cache[library]

    return get


"""The Dask backend: every registered loss on chunked Dask arrays, lazily, equal to NumPy.

The suite-wide ``backend`` fixture leaves Dask out (``backends.EXTRA_NAMES``); this
module runs every entry of :data:`refsoftmax.registry.LOSSES` on Dask arrays chunked
along the batch axis, the class axis and both, forward and backward, and checks

* the value and every gradient are Dask arrays;
* nothing was computed before ``dask.compute`` except the value checks of
  validation (label ranges, ...: ``refsoftmax._concrete.flagged``), and those never
  read the logits (the features' and weights' norms of ``am_softmax_loss`` aside);
* the result equals NumPy's (float64, relative 1e-12).

A ``dask.distributed`` LocalCluster test computes ``linear_softmax_cross_entropy``
exactly for a weight matrix larger than the worker's memory limit.
"""

from __future__ import annotations

import itertools
import traceback
from typing import Any

import numpy as np
import pytest

from refsoftmax import backends
from refsoftmax.registry import LOSSES, LossEntry

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

BATCH, CLASSES = 6, 7  # distinct from every other axis length in the registry's examples
#: Block sizes per chunking: (batch, classes); -1 is one block.
CHUNKINGS = {"batch": (4, -1), "classes": (-1, 3), "both": (4, 3)}
#: Value checks that read a float input other than labels (listed in refsoftmax/backends/dask.py).
READS_FLOATS = {"am_softmax_loss": {"features", "weights"}}


class CountingScheduler:
    """A synchronous scheduler that records every compute: whether validation asked for it,
    and which input arrays (:class:`_Recorded`) it read."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, set[str]]] = []
        self._reading: set[str] | None = None

    def read(self, name: str) -> None:
        if self._reading is not None:
            self._reading.add(name)

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        from_validation = any(f.name == "flagged" and f.filename.endswith("_concrete.py")
                              for f in traceback.extract_stack())
        self._reading = set()
        try:
            return dask.get(dsk, keys, **kwargs)
        finally:
            self.calls.append((from_validation, self._reading))
            self._reading = None


class _Recorded:
    """A host array that tells the scheduler when a task reads a block of it."""

    _serial = itertools.count()  # a token of its own per array (ids are reused)

    def __init__(self, a: np.ndarray, name: str, scheduler: CountingScheduler) -> None:
        self.a, self.name, self.scheduler = a, name, scheduler
        self.shape, self.dtype, self.ndim = a.shape, a.dtype, a.ndim
        self.token = next(self._serial)

    def __getitem__(self, index: Any) -> np.ndarray:
        self.scheduler.read(self.name)
        return self.a[index]

    def __dask_tokenize__(self) -> Any:
        return (self.name, self.token)


def _chunked(a: Any, chunking: str, name: str = "", scheduler: CountingScheduler | None = None) -> Any:
    """``a`` as a Dask array: axes of length BATCH / CLASSES in blocks, the others whole."""
    a = np.asarray(a)
    size = dict(zip((BATCH, CLASSES), CHUNKINGS[chunking], strict=True))
    chunks = tuple(size.get(n, -1) for n in a.shape)
    if scheduler is None:
        return da.from_array(a, chunks=chunks)
    return da.from_array(_Recorded(a, name, scheduler), chunks=chunks, asarray=True,
                         meta=np.empty((0,) * a.ndim, a.dtype))


def _dense(g: Any) -> Any:
    return g.to_dense() if hasattr(g, "to_dense") else g  # a RowSparse gradient


def _close(got: Any, ref: Any, what: str) -> None:
    ref = np.asarray(ref, dtype=np.float64)
    scale = float(np.max(np.abs(ref), initial=0.0)) if np.all(np.isfinite(ref)) else 0.0
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12, atol=1e-12 * scale, err_msg=what)


@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_runs_lazily_on_dask_and_equals_numpy(name: str, chunking: str) -> None:
    entry: LossEntry = LOSSES[name]
    example = entry.make(np.random.default_rng(0), BATCH, max(CLASSES, entry.min_classes))
    cotangent = np.random.default_rng(1).normal(size=np.shape(entry(example)))
    ref_value, ref_grads = entry.value_and_grad(example, cotangent=cotangent)

    scheduler = CountingScheduler()
    args = tuple(_chunked(example.inputs[arg], chunking, arg, scheduler) for arg in entry.positional)
    _, kwargs = entry.args(example, lambda a: _chunked(a, chunking))
    with dask.config.set(scheduler=scheduler):
        value, grads = entry.function.value_and_grad(*args, cotangent=_chunked(cotangent, chunking),
                                                     **kwargs)
        eager = list(scheduler.calls)
        outputs = {"value": value, **{k: _dense(g) for k, g in grads.items()}}
        for what, out in outputs.items():
            assert isinstance(out, da.Array), f"{name}: {what} is a {type(out).__name__}"
        (computed,) = dask.compute(outputs)
    assert len(scheduler.calls) == len(eager) + 1  # one compute for the value and every gradient
    for from_validation, read in eager:
        assert from_validation, f"{name}: a compute outside validation (reads {sorted(read)})"
        floats = read & (set(entry.differentiable) - {"labels", "targets"})  # what is validated
        assert floats <= READS_FLOATS.get(name, set()), f"{name}: validation reads {sorted(floats)}"
    _close(computed["value"], ref_value, f"{name} value")
    for arg, g in ref_grads.items():
        _close(computed[arg], _dense(g), f"{name} d/d{arg}")


# ---------------------------------------------------------------- the backend module


def test_dask_is_served_but_not_in_the_suite_wide_fixture() -> None:
    import array_api_compat

    assert "dask" not in backends.NAMES and "dask" in backends.EXTRA_NAMES
    module = backends.load("dask")
    assert backends.for_namespace(module.namespace()) is module
    xp = module.loss_namespace(module.namespace())
    assert array_api_compat.is_dask_namespace(xp) and backends.for_namespace(xp) is module
    assert module.parse_device(None) == module.default_device() == "cpu"
    with pytest.raises(ValueError, match="not a Dask device"):
        module.parse_device("cuda:0")


@pytest.mark.parametrize("chunks", [1, 2, 4])
def test_scatter_add_accumulates_duplicates_across_blocks(chunks: int) -> None:
    module = backends.load("dask")
    x = np.arange(10.0).reshape(5, 2)
    idx = np.array([1, 4, 1, 1, 0, 4])
    vals = np.arange(12.0).reshape(6, 2)
    out = module.scatter_add(da.from_array(x, chunks=(chunks, 1)), da.from_array(idx, chunks=chunks),
                             da.from_array(vals, chunks=(chunks, 2)))
    expected = x.copy()
    np.add.at(expected, idx, vals)
    assert isinstance(out, da.Array) and out.chunks == ((chunks,) * (5 // chunks) + ((5 % chunks,) if 5 % chunks else ()), (1, 1))
    np.testing.assert_array_equal(module.to_numpy(out), expected)
    with pytest.raises(ValueError, match="one row per index"):
        module.scatter_add(da.from_array(x), da.from_array(idx[:2]), da.from_array(vals))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_take_along_axis_matches_numpy(axis: int) -> None:
    from refsoftmax.backends.dask import take_along_axis

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7))
    x[0, 0], x[1, 1] = -0.0, np.inf  # the block sum must select them exactly
    n = x.shape[axis]
    idx = rng.integers(-n, n, size=(5, 3) if axis == 1 or axis == -1 else (3, 7))
    got = take_along_axis(da.from_array(x, chunks=(2, 3)), da.from_array(idx, chunks=2), axis=axis)
    expected = np.take_along_axis(x, idx, axis=axis)
    np.testing.assert_array_equal(got.compute(), expected)
    np.testing.assert_array_equal(np.signbit(got.compute()), np.signbit(expected))


def test_generator_draws_the_numpy_backends_numbers() -> None:
    numpy_rng, dask_rng = backends.load("numpy").Generator(7), backends.load("dask").Generator(7)
    u = dask_rng.uniform((5,))
    assert isinstance(u, da.Array)
    np.testing.assert_array_equal(u.compute(), numpy_rng.uniform((5,)))
    np.testing.assert_array_equal(dask_rng.integers(0, 9, (6,)).compute(), numpy_rng.integers(0, 9, (6,)))


def test_out_of_range_labels_still_raise() -> None:
    import refsoftmax as rs

    logits = da.from_array(np.zeros((4, 3)), chunks=2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        rs.sparse_softmax_cross_entropy(logits, da.from_array(np.array([0, 1, 3, 2]), chunks=2))


def test_the_backend_flag_turns_host_data_into_dask_arrays() -> None:
    import refsoftmax as rs

    with rs.use_backend("dask"):
        value = rs.sparse_softmax_cross_entropy([[1.0, 2.0, 0.5]], [1])
    assert isinstance(value, da.Array)
    np.testing.assert_allclose(value.compute(), rs.sparse_softmax_cross_entropy(np.array([[1.0, 2.0, 0.5]]), [1]))


# ---------------------------------------------------------------- a LocalCluster


def test_linear_loss_on_a_local_cluster_with_weights_larger_than_a_worker() -> None:
    """The exact ``linear_softmax_cross_entropy`` for 235 MB of weights on a 200 MiB worker.

    ``processes=True``: the worker is a process of its own, so its ``memory_limit`` bounds
    what it holds (its nanny restarts a worker that passes 95 % of it; a restart would
    change the worker's address, which the test checks).  One worker, so the weights are
    larger than the whole cluster's memory, not only one worker's (a second worker would
    add seconds of start-up and nothing to the claim).  The weights are drawn on the worker
    block by block (``dask.array.random``), chunked along the classes like the loss's
    ``chunk_size``; the client never holds them.  The reference is NumPy, one class block
    at a time (each block drawn again on the client with the synchronous scheduler).
    """
    distributed = pytest.importorskip("distributed")
    import refsoftmax as rs

    classes, dim, batch, chunk = 14 * 32_768, 64, 8, 32_768
    limit = 200 * 2**20
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(batch, dim)), rng.integers(0, classes, batch)
    w = da.random.default_rng(0).random((classes, dim), chunks=(chunk, dim))  # lazy: never materialised
    assert w.nbytes > limit
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  memory_limit=limit, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        workers = set(client.scheduler_info()["workers"])
        loss = rs.linear_softmax_cross_entropy(w, None, da.from_array(y), da.from_array(x),
                                               chunk_size=chunk)
        assert isinstance(loss, da.Array)
        got = loss.compute()
        assert set(client.scheduler_info()["workers"]) == workers  # the worker was not restarted

    lse, z_t = [], np.zeros(batch)
    for block in range(w.numblocks[0]):
        z = x @ w.blocks[block].compute(scheduler="sync").T
        m = np.max(z, axis=1)
        lse.append(m + np.log(np.sum(np.exp(z - m[:, None]), axis=1)))  # shifted: no overflow
        here = (y >= block * chunk) & (y < (block + 1) * chunk)
        z_t[here] = z[here, y[here] - block * chunk]
    expected = np.logaddexp.reduce(np.stack(lse), axis=0) - z_t
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("loss", ["sampled_softmax_loss", "nce_loss"])
def test_sampled_losses_draw_the_numpy_backends_candidates(loss: str) -> None:
    import refsoftmax as rs

    fn = getattr(rs, loss)
    rng = np.random.default_rng(0)
    w, b, y, x = rng.normal(size=(50, 4)), rng.normal(size=50), rng.integers(0, 50, (6, 1)), rng.normal(size=(6, 4))
    value = fn(da.from_array(w, chunks=(20, 4)), da.from_array(b, chunks=20), da.from_array(y, chunks=(4, 1)),
               da.from_array(x, chunks=(4, 4)), num_sampled=5, num_classes=50, seed=3)
    assert isinstance(value, da.Array)
    _close(value.compute(), fn(w, b, y, x, num_sampled=5, num_classes=50, seed=3), loss)

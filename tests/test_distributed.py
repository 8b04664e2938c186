"""refsoftmax.distributed on a real 4-process gloo group (127.0.0.1): every case for world
sizes 1–4 and uneven (some empty) class blocks, against the dense reference.

One group is spawned for the whole module (~20 s of torch imports); the cases run inside it
(``tests/_distributed_worker.py``) and each test below reads its records.
"""

from __future__ import annotations

import json
import socket

import pytest

torch = pytest.importorskip("torch")
import _distributed_worker as worker  # noqa: E402
import torch.distributed as dist  # noqa: E402

if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

WORLD = 4


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "records.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(worker.worker, args=(WORLD, port, str(out)), nprocs=WORLD, join=True)
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", sorted(worker.cases()))
def test_sharded_equals_dense(records, case):
    mine = [r for r in records if r["case"] == case and r.get("family", "sparse") == "sparse"]
    assert len(mine) == sum(len(v) for v in worker.SPLITS.values())  # every world size and split ran
    for r in mine:
        assert not r["error"], (r["world"], r["split"], r["error"])
        assert r["same_on_every_rank"], r
        assert r["value_rel"] <= 1e-12, r
        assert r["grad_rel"] <= 1e-12, r


def test_without_an_initialised_group_it_says_so():
    from refsoftmax import distributed

    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a default group exists in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        distributed.sparse_softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_the_autograd_bridge_backpropagates_through_the_sharded_loss(records):
    bridged = [r for r in records if "bridge_grad_rel" in r]
    assert {r["case"] for r in bridged} == {"plain", "z-loss-softcap"}
    assert {r["world"] for r in bridged} == {1, 2, 3, 4}
    assert max(r["bridge_grad_rel"] for r in bridged) <= 1e-12


def test_records_show_real_comparisons(records):
    """The comparisons are not vacuous: the confident row's loss is tiny, the NaN row NaN."""
    sparse = [r for r in records if r.get("family", "sparse") == "sparse"]
    assert len(sparse) == len(worker.cases()) * sum(len(v) for v in worker.SPLITS.values())
    assert max(r["value_rel"] for r in sparse if not r["error"]) < 1e-12


@pytest.mark.parametrize("case", sorted(worker.more_cases()))
def test_other_sharded_functions_equal_dense(records, case):
    """Soft-label CE, logsumexp/log_softmax/softmax and the linear loss: every world size and split."""
    mine = [r for r in records if r["case"] == case and r.get("family") == "more"]
    assert len(mine) == sum(len(v) for v in worker.SPLITS.values())
    for r in mine:
        assert not r["error"], (r["world"], r["split"], r["error"])
        assert r["same_on_every_rank"], r
        assert r["value_rel"] <= 1e-12, r
        assert r["grad_rel"] <= 1e-12, r
    if case.startswith("linear"):  # every gradient was compared, the inputs' the same on every rank
        assert {"local_weights", "inputs", "inputs:same"} <= set(mine[0]["grads"])


def test_ordinary_sparse_ce_on_a_class_sharded_dtensor(records):
    mine = [r for r in records if r.get("family") == "dtensor"]
    assert {r["world"] for r in mine} == {2, WORLD}
    for r in mine:
        assert not r["error"], r["error"]
        assert r["value_type"] == "Tensor" and r["grad_type"] == "DTensor", r
        assert r["local_block"][1] < 11, r  # the loss really ran on a block
        assert max(r["value_rel"], r["grad_rel"], r["backward_rel"]) <= 1e-12, r

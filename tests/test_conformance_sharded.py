"""Certifying vocab-parallel losses (``refsoftmax.conformance.sharded``) on a real gloo group.

One group of 2 ranks on 127.0.0.1 serves the whole module (``sharded.pool``; ~5-10 s of
torch imports): refsoftmax's own sharded loss passes every case it is given, functions that
are wrong on one rank fail with the rank named, and the three adapters (Megatron-core,
fairscale, ``loss_parallel``) certify at world size 2 — or skip when their library is absent.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from refsoftmax import conformance  # noqa: E402
from refsoftmax.conformance import adapters, sharded  # noqa: E402
from refsoftmax.conformance.cases import generate  # noqa: E402

if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

WORLD = 2
CANDIDATES = "_sharded_candidates"
ALL_OPTIONS = ("reduction", "ignore_index", "label_smoothing", "class_weights", "mean_denominator",
               "empty_mean")


def _cases(*names: str, dtypes: tuple[str, ...] = ("float64",)) -> list[conformance.Case]:
    wanted = {f"{n}[{d}]" for n in names for d in dtypes}
    found = [c for c in generate(sharded.LOSS, max_examples=0, dtypes=dtypes) if c.name in wanted]
    assert len(found) == len(wanted), sorted(wanted - {c.name for c in found})
    return found


def _certify(fn: str, cases: list[conformance.Case], layout: str = "even") -> conformance.Report:
    sharding = sharded.Sharding(WORLD, layout)
    target = sharded.sharded_target(fn, sharding, library="test", function=fn)
    return sharded.certify_targets([target], sharding, library="test", version="0", cases=cases)


@pytest.fixture(scope="module")
def group():
    with sharded.pool(WORLD) as p:
        yield p


# ------------------------------------------------------------------ layouts (no processes)

def test_layouts():
    assert sharded.block_sizes(8, 4) == [2, 2, 2, 2]
    assert sharded.block_sizes(7, 4) is None
    assert sharded.block_sizes(7, 4, "chunk") == [2, 2, 2, 1]
    assert sharded.block_sizes(5, 4, "chunk") == [2, 2, 1, 0]
    assert sharded.block_sizes(1, 2, "uneven") == [0, 1]
    assert sharded.block_sizes(4, 4, "uneven") == [0, 1, 1, 2]
    assert sharded.Sharding(4, "chunk", empty_blocks=False).sizes(5) is None
    assert sharded.block_sizes(5, 2, lambda c, n: [c, 0]) == [5, 0]
    with pytest.raises(ValueError, match="layout must be one of"):
        sharded.Sharding(2, "random")
    with pytest.raises(ValueError, match="gave blocks"):
        sharded.Sharding(2, lambda c, n: [c, 1]).sizes(3)


def test_a_case_the_layout_cannot_hold_is_widened():
    by_name = {c.name: c for c in generate(sharded.LOSS, max_examples=0, dtypes=("float64",))}
    basic = sharded.Sharding(4, "even").prepare(by_name["basic[float64]"])  # C = 5 -> 8
    z = by_name["basic[float64]"].inputs["logits"]
    assert basic.name == "basic/C8[float64]"
    np.testing.assert_array_equal(basic.inputs["logits"], np.concatenate([z, z[:, :3]], axis=-1))
    np.testing.assert_array_equal(basic.inputs["labels"], by_name["basic[float64]"].inputs["labels"])
    too_large = sharded.Sharding(2, "even").prepare(by_name["label-too-large[float64]"])  # label 5 = C
    assert too_large.inputs["labels"].tolist() == [0, 6, 2, 1] and not too_large.valid
    weights = sharded.Sharding(2, "even").prepare(by_name["class-weights[float64]"])
    w = by_name["class-weights[float64]"].options["class_weights"]
    np.testing.assert_array_equal(weights.options["class_weights"], np.append(w, w[0]))
    ignored = sharded.Sharding(2, "even").prepare(by_name["ignore-index[float64]"])
    assert ignored.inputs["labels"].tolist() == [0, -100, 2, -100]
    one = sharded.Sharding(2, "chunk", empty_blocks=False).prepare(by_name["one-class[float64]"])
    assert one.name == "one-class/C2[float64]"
    same = sharded.Sharding(2, "uneven").prepare(by_name["one-class[float64]"])
    assert same is by_name["one-class[float64]"]  # blocks 0 and 1: an empty block is allowed


def test_certify_refuses_what_it_cannot_shard():
    with pytest.raises(ValueError, match="framework='torch'"):
        conformance.certify("m:f", framework="numpy", world_size=2)
    with pytest.raises(ValueError, match="module:function"):
        conformance.certify("no_colon", framework="torch", world_size=2)
    with pytest.raises(ValueError, match="cannot import"):
        conformance.certify(lambda z, t: z, framework="torch", world_size=2)


# ------------------------------------------------------------------ on the group

def test_refsoftmax_own_sharded_loss_passes_everything(group):
    report = conformance.certify(
        "refsoftmax.conformance.sharded:reference", framework="torch", world_size=WORLD,
        layout="uneven", options=ALL_OPTIONS, dtypes=("float64", "float32"), max_examples=1,
        library="refsoftmax.distributed", library_version="self-check")
    counts = report.counts()["refsoftmax.conformance.sharded:reference"]
    assert counts["fail"] == counts["error"] == 0, [
        (r.case, r.message) for r in report.results if r.status in ("fail", "error")]
    assert all(r.dtype in ("float16", "bfloat16") for r in report.results if r.status == "skipped")
    assert counts["pass"] >= 70
    ran = {r.case for r in report.results}
    assert {"one-class[float64]", "nan-logit[float32]", "label-negative[float64]"} <= ran
    assert any("started in" in n or "shared" in n for n in report.notes)


def test_ranks_returning_different_losses_fail_naming_the_ranks(group):
    report = _certify(f"{CANDIDATES}:loss_differs_on_rank_1", _cases("basic", "reduction-mean"))
    assert [r.status for r in report.results] == ["fail", "fail"]
    first = report.results[0]
    assert first.message.startswith("the ranks returned different losses: value[0] is ")
    assert "on rank 0" in first.message and "on rank 1" in first.message
    assert first.checks["ranks"] == "FAIL"
    assert "sharded.run('_sharded_candidates:loss_differs_on_rank_1'" in first.reproducer
    # the gradient is right: the rank disagreement is the only failure of the scalar case
    assert report.results[1].message.count("|") <= 1


def test_a_gradient_block_wrong_on_one_rank_fails_naming_the_rank(group):
    report = _certify(f"{CANDIDATES}:gradient_doubled_on_rank_1", _cases("basic"))
    (result,) = report.results
    assert result.status == "fail" and result.checks["gradient w.r.t. logits"] == "FAIL"
    assert "(rank 1's block)" in result.message and "(rank 0's block)" not in result.message
    assert "different losses" not in result.message  # the values agree


def test_a_rank_that_raises_alone_fails_naming_it(group):
    report = _certify(f"{CANDIDATES}:raises_on_rank_1", _cases("basic"))
    (result,) = report.results
    assert result.status == "fail"
    assert ("RuntimeError: rank 1 lost its way (on rank 1, in the forward), while rank 0 returned "
            "normally") in result.message


def test_a_function_that_overwrites_its_block_fails(group):
    report = _certify(f"{CANDIDATES}:scales_its_input", _cases("basic"))
    assert "modified its input local_logits in place on every rank" in report.results[0].message


def test_run_by_hand(group):
    z = np.random.default_rng(0).standard_normal((3, 5))
    t = np.array([0, 4, 2])
    out = sharded.run("refsoftmax.conformance.sharded:reference", z, t, world_size=WORLD, layout="uneven",
                      cotangent=np.ones(3))
    import refsoftmax

    value, grads = refsoftmax.sparse_softmax_cross_entropy.value_and_grad(z, t, cotangent=np.ones(3))
    assert len(out.values) == WORLD and not out.findings
    for v in out.values:
        np.testing.assert_allclose(v, value, rtol=1e-12)
    np.testing.assert_allclose(out.gradient, grads["logits"], rtol=1e-12)


def test_cli_world_size(group, capsys):
    from refsoftmax.conformance.cli import main

    code = main(["certify", "--impl", "refsoftmax.conformance.sharded:reference", "--framework", "torch",
                 "--world-size", str(WORLD), "--layout", "uneven", "--options", "reduction,ignore_index",
                 "--dtypes", "float64", "--max-examples", "0", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "refsoftmax.conformance.sharded:reference" in out


# ------------------------------------------------------------------ the adapters, at world size 2

ADAPTER_CASES = ("basic", "smoothing-0.1", "ignore-weights-mean", "label-too-large")


@pytest.mark.parametrize("library", ["megatron_core", "fairscale", "torch_loss_parallel"])
def test_adapter_at_world_size_2(group, library):
    module = adapters.load(library)
    if not module.available():
        pytest.skip(f"{library} is not installed")
    report = module.certify(world_sizes=(WORLD,), cases=_cases(*ADAPTER_CASES, dtypes=("float64",))
                            + _cases("basic", dtypes=("float32",)))
    status = {r.case.split("/")[0].split("[")[0] + ("[float32]" if "float32" in r.case else ""): r
              for r in report.results}
    assert status["label-too-large"].status == "fail"  # none of the three refuses label C
    if library == "megatron_core":
        assert status["basic"].status == "convention"  # float64 computed in float32
        assert status["smoothing-0.1"].message.startswith("the ranks returned different losses")
        assert status["ignore-weights-mean"].status == "skipped"
        assert "modified its input local_logits in place" in status["basic[float32]"].message
    elif library == "fairscale":
        assert "modified its input local_logits in place on every rank" in status["basic"].message
        assert status["smoothing-0.1"].status == "skipped"
    else:
        assert status["basic"].status == status["basic[float32]"].status == "pass"
        assert status["smoothing-0.1"].status == "skipped"
        assert "index -100 is out of bounds" in status["ignore-weights-mean"].message


def test_every_sharded_adapter_is_registered():
    for library in ("megatron_core", "fairscale", "torch_loss_parallel"):
        module = adapters.load(library)
        assert library == module.LIBRARY and module.WORLD_SIZES == (2, 4)
        if importlib.util.find_spec("torch") is not None:
            assert module.sharding(2).world_size == 2

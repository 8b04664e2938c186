"""Smoke test of ``experiments/as_softmax_reproduction.py`` (quick mode, tiny sizes, in-process).

Also checks the two things the experiment's conclusions rest on besides refsoftmax itself: the
hand-written backward pass through the linear and ReLU layers (against central differences),
and that AS-Softmax with δ ≥ 1 trains exactly like softmax cross-entropy.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "as_softmax_reproduction.py"


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location("as_softmax_reproduction", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(exp, tmp_path_factory):
    out = tmp_path_factory.mktemp("as_softmax_quick")
    result = exp.main(["--quick", "--seeds", "1", "--jobs", "0", "--datasets", "digits,syn5", "--epochs", "4",
                       "--output-dir", str(out)])
    return out, result


def test_quick_mode_writes_page_json_and_figures(quick_run):
    out, result = quick_run
    payload = json.loads((out / "as_softmax_reproduction_results.json").read_text())
    assert set(payload) == {"config", "meta", "verdicts", "cells", "runs"}
    assert payload["config"]["mode"] == "quick"
    runs = payload["runs"]
    assert len(runs) == 2 * 2 * 3  # datasets × models × objectives, one seed
    assert {(r["dataset"], r["model"], r["objective"]) for r in runs} == {
        (d, m, o) for d in ("digits", "syn5") for m in ("linear", "mlp")
        for o in ("softmax", "as", "as_accum")}
    for r in runs:
        h = r["history"]
        n = len(h["epoch"])
        assert h["epoch"] == list(range(n)) and n >= 2
        assert all(len(v) == n for v in h.values()), r["dataset"]
        assert all(0.0 <= a <= 1.0 for a in h["val_acc"] + h["test_acc"] + h["zero_share"])
        assert h["optimizer_steps"] == sorted(h["optimizer_steps"])
        if r["objective"] != "as_accum":  # one step per micro-batch
            assert h["optimizer_steps"] == h["micro_batches"]
        else:
            assert h["optimizer_steps"][-1] <= h["micro_batches"][-1]
    for cell in payload["cells"].values():
        assert 0.0 < cell["target"] <= 1.0
        assert set(cell["agg"]) == {"softmax", "as", "as_accum"}
    page = result["md_path"].read_text()
    for heading in ("## Summary", "## Setup", "### Test accuracy (claim 1)",
                    "### Validation loss vs validation accuracy (claim 2)",
                    "### Zero-loss share over training (claim 3)",
                    "### Time and optimizer steps to the target accuracy (claim 4)", "## Caveats"):
        assert heading in page
    assert "quick mode" in page
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == sorted(f"as_softmax_{n}.png" for n in (
        "val_loss_acc_linear", "val_loss_acc_mlp", "zero_loss_share", "val_acc_vs_steps",
        "val_acc_vs_time"))
    for name in names:
        assert (out / "images" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"images/{name}" in page


def test_page_can_be_rebuilt_from_stored_results(exp, quick_run, tmp_path):
    out, result = quick_run
    rebuilt = exp.main(["--from-results", str(out / "as_softmax_reproduction_results.json"),
                        "--output-dir", str(tmp_path), "--no-plots"])
    stored = json.loads((out / "as_softmax_reproduction_results.json").read_text())
    assert json.loads(rebuilt["json_path"].read_text())["runs"] == stored["runs"]

    def summary(page):
        return page[page.index("## Summary"):page.index("## Setup")]

    assert summary(rebuilt["md_path"].read_text()) == summary(result["md_path"].read_text())


def test_as_softmax_zero_loss_share_increases(quick_run):
    _, result = quick_run
    for r in result["payload"]["runs"]:
        if r["objective"] == "as" and r["dataset"] == "digits":
            share = r["history"]["zero_share"]
            assert share[-1] > share[1] > share[0], share
        if r["objective"] == "as_accum" and r["dataset"] == "digits":
            # the schedule saw zero-loss examples and accumulated: fewer steps than micro-batches
            assert r["history"]["accum_k"][-1] > 1
            assert r["history"]["optimizer_steps"][-1] < r["history"]["micro_batches"][-1]


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_hand_backprop_matches_finite_differences(exp, model):
    import array_api_compat.numpy as xp

    import refsoftmax as rs

    rng = np.random.default_rng(0)
    d, h, c, n = 4, 5, 3, 6
    params = exp.init_params(model, d, h, c, seed=1, to_dev=np.asarray)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}
    x = rng.standard_normal((n, d))
    y = rng.integers(0, c, n)

    def total_loss(p):
        logits, _ = exp.model_forward(p, x, xp)
        return float(rs.sparse_softmax_cross_entropy(logits, y, reduction="sum"))

    logits, cache = exp.model_forward(params, x, xp)
    _, g, _ = exp.loss_and_grad("softmax", logits, y, 1.0, "reference", xp)
    grads = exp.model_backward(params, x, cache, g, xp)
    eps = 1e-6
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            plus = {**params, name: value.copy()}
            minus = {**params, name: value.copy()}
            plus[name][i] += eps
            minus[name][i] -= eps
            numeric[i] = (total_loss(plus) - total_loss(minus)) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-7, err_msg=name)


def test_as_softmax_with_delta_one_trains_like_softmax(exp):
    spec = replace(exp.dataset_specs("quick")[0], epochs=2)
    cfg = exp.Config(mode="quick", seeds=(0,), datasets=(spec,), delta_min=1.0, jobs=0)
    runs = {o: exp.train_run(exp.Task(spec, "mlp", o, 0, cfg)) for o in ("softmax", "as")}
    a, b = runs["softmax"]["history"], runs["as"]["history"]
    for key in ("val_acc", "val_ce", "val_as", "test_acc", "zero_share", "optimizer_steps"):
        assert a[key] == b[key], key

"""Conformance adapters for entmax, PaddlePaddle and tinygrad, and the Fenchel–Young specs.

Each library's test certifies it with ``max_examples=2`` and asserts outcomes
verified by hand (the numbers are in the adapters' docstrings and the
report of the work that added them).  Libraries that are not installed are
skipped.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import refsoftmax
from refsoftmax import conformance
from refsoftmax.conformance.cases import generate
from refsoftmax.conformance.frameworks import get_framework
from refsoftmax.conformance.targets import SPECS


def _outcomes(report: conformance.Report) -> dict[tuple[str, str], conformance.CaseResult]:
    return {(r.function, r.case): r for r in report.results}


# ---------------------------------------------------------------- Fenchel–Young specs (no library)

@pytest.mark.parametrize("loss", ["sparsemax_loss", "entmax15_loss"])
def test_fenchel_young_specs_are_registered(loss):
    assert SPECS[loss].positional == ("logits", "labels")
    assert SPECS[loss].function is getattr(refsoftmax, loss)
    cases = generate(loss, max_examples=3)
    names = {c.name.split("[")[0] for c in cases}
    assert {"beyond-margin", "minus-inf-logit", "ignore-class-index-mean", "label-too-large", "random-2"} <= names
    # the gradient floor of the engine counts rows of inputs["logits"]: classes are last
    assert all(c.inputs["logits"].shape[:-1] == c.inputs["labels"].shape for c in cases)


def _numpy_fy(loss: str, bias: float = 0.0):
    fn = getattr(refsoftmax, loss)

    def value(logits, labels, reduction="none", ignore_index=None):
        return np.asarray(fn(logits, labels, reduction=reduction, ignore_index=ignore_index)) + bias

    def grad(inputs, options, cotangent):
        _, g = fn.value_and_grad(inputs["logits"], inputs["labels"], cotangent=cotangent, **options)
        return g

    value.__name__ = f"numpy_{loss}"
    return value, grad


@pytest.mark.parametrize("loss", ["sparsemax_loss", "entmax15_loss"])
def test_certify_fenchel_young_without_an_adapter(loss):
    fn, grad = _numpy_fy(loss)
    report = conformance.certify(fn, loss=loss, grad_fn=grad, options=("reduction", "ignore_index"),
                                 max_examples=2)
    statuses = {r.status for r in report.results}
    assert statuses <= {"pass", "skipped"}, [r.message for r in report.results if r.status != "pass"][:3]
    assert sum(r.status == "pass" for r in report.results) > 60
    # a planted bias is caught (the zero-loss margin rows make it visible everywhere)
    biased, grad = _numpy_fy(loss, bias=1e-6)
    report = conformance.certify(biased, loss=loss, grad_fn=grad, options=("reduction", "ignore_index"),
                                 max_examples=0, dtypes=("float64",))
    assert not report.ok
    assert _outcomes(report)[(biased.__name__, "beyond-margin[float64]")].status == "fail"


def test_extra_frameworks_are_registered():
    assert get_framework("paddle").dtypes == ("float64", "float32", "float16", "bfloat16")
    assert get_framework("tinygrad").name == "tinygrad"


# ---------------------------------------------------------------- entmax

ENTMAX_FUNCTIONS = [
    "entmax.sparsemax_loss", "entmax.sparsemax_loss(k=2)", "entmax.sparsemax_bisect_loss()", "entmax.SparsemaxLoss",
    "entmax.entmax15_loss", "entmax.entmax15_loss(k=2)", "entmax.entmax_bisect_loss(alpha=1.5)",
    "entmax.Entmax15Loss",
]
#: cases on which a Fenchel–Young loss behaves like a well-conditioned CE: all pass, every dtype
ENTMAX_CLEAN = ["basic", "one-class", "one-example", "wide-row", "dense-support", "sparse-support",
                "beyond-margin", "ties", "tied-maxima", "tiny-logits", "large-spread", "label-boundary",
                "label-on-minus-inf"]


@pytest.fixture(scope="module")
def entmax_report(certified):
    pytest.importorskip("torch")
    pytest.importorskip("entmax")
    return certified("entmax")


def test_entmax_targets(entmax_report):
    assert list(entmax_report.counts()) == ENTMAX_FUNCTIONS


@pytest.mark.parametrize("function", ENTMAX_FUNCTIONS)
def test_entmax_passes_the_ce_like_cases(entmax_report, function):
    out = _outcomes(entmax_report)
    for case in ENTMAX_CLEAN:
        for dtype in ("float64", "float32", "float16", "bfloat16"):
            r = out[(function, f"{case}[{dtype}]")]
            assert r.status == "pass", (case, dtype, r.message)
    for case in ("random-0", "random-1"):
        for dtype in ("float64", "float32"):
            assert out[(function, f"{case}[{dtype}]")].status == "pass"
    for case in ("label-too-large", "label-negative", "label-minus-100"):  # refused
        assert out[(function, f"{case}[float64]")].status == "pass"
    assert out[(function, "leading-dims[float64]")].status == "skipped"  # entmax documents 2-D X
    r = out[(function, "basic[float64]")]
    assert r.checks["self-consistency"] == "pass" and r.checks["reference-fd"] == "pass"


def test_entmax_disagreements(entmax_report):
    out = _outcomes(entmax_report)
    # 0 * (-inf) in the loss's <p - e_t, z>: NaN where the loss is finite
    r = out[("entmax.sparsemax_loss", "minus-inf-logit[float64]")]
    assert r.status == "fail" and "is nan where the true value is finite (0.99355564675408" in r.message
    # no max-shift in <p - e_t, z>: logits near +-1000 lose the loss to rounding in low precision
    assert out[("entmax.sparsemax_loss", "large-logits[float64]")].status == "pass"
    r = out[("entmax.sparsemax_loss", "large-logits[bfloat16]")]
    assert r.status == "fail" and "value[0] is 4.25, expected 0.33333" in r.message
    assert out[("entmax.entmax15_loss", "large-logits[float32]")].status == "fail"
    # a support of size 0 (all -inf, or NaN) gathers index -1: the call raises
    for case in ("all-minus-inf-row[float64]", "nan-logit[float64]"):
        r = out[("entmax.entmax15_loss", case)]
        assert r.status == "error" and "index -1 is out of bounds" in r.message
    # the loss modules apply ignore_index only when it is >= 0: -100 (their default) raises
    for module in ("entmax.SparsemaxLoss", "entmax.Entmax15Loss"):
        r = out[(module, "ignore-index-mean[float64]")]
        assert r.status == "error" and "index -100 is out of bounds" in r.message
        for case in ("ignore-class-index", "ignore-class-index-mean", "all-ignored-class-mean",
                     "reduction-mean", "reduction-sum"):
            assert out[(module, f"{case}[float64]")].status == "pass", case


# ---------------------------------------------------------------- PaddlePaddle

PADDLE_CE = "paddle.nn.functional.cross_entropy (integer labels)"
PADDLE_SOFT = "paddle.nn.functional.cross_entropy (soft_label=True)"
PADDLE_SWCE = "paddle.nn.functional.softmax_with_cross_entropy (integer labels)"


@pytest.fixture(scope="module")
def paddle_report(certified):
    # find_spec, not importorskip: importing paddle into a process that already imported
    # TensorFlow crashes it; certify_library runs paddle in a process of its own
    if importlib.util.find_spec("paddle") is None:
        pytest.skip("paddle is not installed")
    return certified("paddle")


def test_paddle_targets(paddle_report):
    assert list(paddle_report.counts()) == [
        PADDLE_CE, PADDLE_SOFT, PADDLE_SWCE, "paddle.nn.functional.softmax_with_cross_entropy (soft_label=True)"]


def test_paddle_outcomes(paddle_report):
    out = _outcomes(paddle_report)
    for function in (PADDLE_CE, PADDLE_SWCE):
        for case in ("basic", "one-class", "leading-dims", "wide-row", "minus-inf-logit", "ignore-index"):
            assert out[(function, f"{case}[float64]")].status == "pass", (function, case)
        # a label on a -inf logit costs 64.22 (logits clipped to max - 64), not +inf
        r = out[(function, "label-on-minus-inf[float64]")]
        assert r.status == "fail" and "value[1] is 64.2217702108874" in r.message
        # ... and so does any logit more than 64 below the max: loss 64 where it is 400
        r = out[(function, "large-spread[float64]")]
        assert r.status == "fail" and "value[0] is 64, expected 400" in r.message
        for case in ("label-too-large", "label-negative"):
            assert out[(function, f"{case}[float64]")].status == "pass"  # raises
    for case in ("class-weights", "weights-mean", "ignore-weights-mean", "reduction-mean"):
        assert out[(PADDLE_CE, f"{case}[float64]")].status == "pass", case
    # declared: a negative ignore_index without weights divides by all rows; 0 for an empty mean
    for case in ("ignore-index-mean", "all-ignored-mean"):
        r = out[(PADDLE_CE, f"{case}[float64]")]
        assert r.status == "convention" and "mean_denominator='all'" in r.message
    # label smoothing with an ignored label raises ValueError
    r = out[(PADDLE_CE, "smoothing-ignore-mean[float64]")]
    assert r.status == "error" and "ValueError" in r.message
    # the smoothed labels are computed in float32 even for float64 logits (~1e-8 off)
    r = out[(PADDLE_CE, "smoothing-0.1[float64]")]
    assert r.status == "fail" and 1e-9 < r.max_abs_error < 1e-6
    assert out[(PADDLE_CE, "smoothing-0.1[float32]")].status == "pass"
    # soft labels: the row weight is sum_c w_c q_c; mass on a -inf logit is finite; negative labels accepted
    assert out[(PADDLE_SOFT, "class-weights[float64]")].status == "fail"
    assert out[(PADDLE_SOFT, "mass-on-minus-inf[float64]")].status == "fail"
    assert out[(PADDLE_SOFT, "negative-label[float64]")].status == "fail"
    assert out[(PADDLE_SOFT, "one-hot[float64]")].status == "pass"


# ---------------------------------------------------------------- tinygrad

TINYGRAD = "tinygrad.Tensor.sparse_categorical_crossentropy"


@pytest.fixture(scope="module")
def tinygrad_report(certified):
    pytest.importorskip("tinygrad")
    return certified("tinygrad")


def test_tinygrad_outcomes(tinygrad_report):
    out = _outcomes(tinygrad_report)
    for case in ("basic", "one-class", "leading-dims", "ties", "large-spread", "minus-inf-logit",
                 "label-on-minus-inf", "reduction-mean", "ignore-index-mean", "smoothing-0.1", "smoothing-1.0",
                 "smoothing-ignore-mean"):
        for dtype in ("float64", "float32"):
            r = out[(TINYGRAD, f"{case}[{dtype}]")]
            assert r.status == "pass", (case, dtype, r.message)
    assert {r.status for r in tinygrad_report.results if "random" in r.tags} <= {"pass", "skipped"}
    assert out[(TINYGRAD, "class-weights[float64]")].status == "skipped"  # no class weights
    # labels outside [0, C) silently cost 0 (one-hot of an out-of-range index is all zeros)
    for case in ("label-too-large", "label-negative"):
        r = out[(TINYGRAD, f"{case}[float64]")]
        assert r.status == "fail" and "returned a result for invalid input" in r.message
    # an all-ignored mean is 0/0: NaN, with a NaN gradient (the reference: gradient 0)
    r = out[(TINYGRAD, "all-ignored-mean[float64]")]
    assert r.status == "fail" and "d/dlogits[0, 0] is nan" in r.message
    # half precision: 0 * (-inf) in the one-hot product gives NaN for a -inf logit that is not the label
    r = out[(TINYGRAD, "minus-inf-logit[float16]")]
    assert r.status == "fail" and "value[0] is nan" in r.message


def test_tinygrad_ignore_index_minus_one_is_skipped():
    pytest.importorskip("tinygrad")
    from refsoftmax.conformance.adapters import tinygrad as adapter
    from refsoftmax.conformance.targets import Unsupported

    with pytest.raises(Unsupported, match="no ignore index"):
        adapter.targets()[0].call({"logits": None, "labels": None}, {"ignore_index": -1})

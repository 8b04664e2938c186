"""The TensorFlow and keras-rs conformance adapters: exact outcomes of named cases.

The certifications need TensorFlow (and keras-rs); without them those tests
skip.  The references of the sampled-family specs are tested on their own
(NumPy only).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from refsoftmax import conformance
from refsoftmax.conformance import sampled
from refsoftmax.conformance.cases import generate
from refsoftmax.conformance.engine import CaseResult
from refsoftmax.conformance.targets import SPECS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SPARSE = "tf.nn.sparse_softmax_cross_entropy_with_logits"
DENSE = "tf.nn.softmax_cross_entropy_with_logits"
SSM = "tf.nn.sampled_softmax_loss"
NCE = "tf.nn.nce_loss"
HITS = "tf.nn.compute_accidental_hits"
SAMPLERS = [f"tf.random.{name} (expected counts)" for name in sampled.SAMPLER_SPECS]
CORRECTION = "keras_rs.layers.SamplingProbabilityCorrection"
REMOVE = "keras_rs.layers.RemoveAccidentalHits"


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def tf_report(tf: Any, certified) -> conformance.Report:
    return certified("tensorflow")


@pytest.fixture(scope="module")
def krs_report(tf: Any, certified) -> conformance.Report:
    pytest.importorskip("keras_rs")
    return certified("keras_rs")


def result(report: conformance.Report, function: str, case: str) -> CaseResult:
    found = [r for r in report.results if r.function == function and r.case == case]
    assert len(found) == 1, (function, case, len(found))
    return found[0]


def statuses(report: conformance.Report, function: str, prefix: str) -> dict[str, str]:
    return {
        r.dtype: r.status
        for r in report.results
        if r.function == function and r.case.split("[")[0] == prefix
    }


# ------------------------------------------------------------------ TensorFlow


def test_every_target_ran_without_errors(tf_report: conformance.Report) -> None:
    counts = tf_report.counts()
    assert set(counts) == {SPARSE, DENSE, SSM, NCE, HITS, *SAMPLERS}
    assert all(c["error"] == 0 for c in counts.values()), counts
    assert all(c["pass"] > 0 for c in counts.values()), counts


def test_cross_entropies(tf_report: conformance.Report) -> None:
    r = tf_report
    assert set(statuses(r, SPARSE, "basic").values()) == {"pass"}
    assert set(statuses(r, SPARSE, "leading-dims").values()) == {"pass"}
    assert statuses(r, SPARSE, "minus-inf-logit") == dict.fromkeys(conformance.cases.DTYPES, "pass")
    for case in ("label-too-large", "label-negative"):  # TF refuses them on CPU
        got = result(r, SPARSE, f"{case}[float64]")
        assert got.status == "pass" and "InvalidArgumentError" in got.message
    assert result(r, SPARSE, "reduction-mean[float32]").status == "skipped"
    assert result(r, SPARSE, "class-weights[float64]").status == "skipped"
    basic = result(r, DENSE, "basic[float64]")  # the label gradient is certified too
    assert basic.status == "pass" and basic.checks["self-consistency"] == "pass"
    # docs/conventions.md n2/n3: NaN for a -inf logit without label mass, the loss being finite
    for dtype in conformance.cases.DTYPES:
        got = result(r, DENSE, f"minus-inf-logit-no-mass[{dtype}]")
        assert got.status == "fail"
        assert "value[0] is nan where the true value is finite (2.0" in got.message
    assert result(r, DENSE, "mass-on-minus-inf[float64]").status == "pass"
    assert result(r, DENSE, "negative-label[float64]").status == "fail"  # not validated


@pytest.mark.parametrize("function", [SSM, NCE])
def test_sampled_losses(tf_report: conformance.Report, function: str) -> None:
    r = tf_report
    everywhere = dict.fromkeys(conformance.cases.DTYPES, "pass")
    for case in (
        "basic",
        "one-candidate",
        "accidental-hits-kept",
        "num-true-3-kept",
        "shared-label-kept",
        "duplicate-candidates-hit-kept",
        "duplicate-candidates-no-hit",
        "tiny-hidden-states",
        "small-expected-counts",
    ):
        assert statuses(r, function, case) == everywhere, case
    got = result(r, function, "basic[float64]")
    assert got.checks["gradient"] == "pass" and got.checks["self-consistency"] == "pass"
    # removing hits adds -FLT_MAX, -inf in half precision: NaN (TF's dense CE / sigmoid CE quirk)
    for case in (
        "accidental-hits-removed",
        "num-true-3-removed",
        "shared-label-removed",
        "all-candidates-hit",
        "label-repeated-in-row",
    ):
        assert statuses(r, function, case) == {
            "float64": "pass",
            "float32": "pass",
            "float16": "fail",
            "bfloat16": "fail",
        }, case
        assert (
            "is nan where the true value is finite"
            in result(r, function, f"{case}[float16]").message
        )
    # a repeated candidate that is a label: TF removes only its last copy
    assert set(statuses(r, function, "duplicate-candidates-hit-removed").values()) == {"fail"}
    assert result(r, function, "duplicate-candidates-hit-removed[float64]").message.startswith(
        "value: value[0] is "
    )
    assert result(r, function, "label-out-of-range[float64]").status == "pass"
    assert result(r, function, "candidate-out-of-range[float64]").status == "pass"
    zero = result(r, function, "zero-expected-count[float64]")
    assert zero.status == "fail" and "nan" in zero.message


def test_samplers_and_accidental_hits(tf_report: conformance.Report) -> None:
    for function in SAMPLERS:
        got = {r.case: r.status for r in tf_report.results if r.function == function}
        assert set(got.values()) == {"pass"}, function
        assert got["unique-many-rejections[float32]"] == "pass"
        assert got["more-than-range-unique[float32]"] == "pass"  # refused
    hits = {r.case: r.status for r in tf_report.results if r.function == HITS}
    assert hits.pop("per-example-candidates[float64]") == "skipped"
    assert set(hits.values()) == {"pass"}
    assert "repeated-candidate[float64]" in hits


def test_reproducer_runs(tf_report: conformance.Report) -> None:
    got = result(tf_report, DENSE, "minus-inf-logit-no-mass[float64]")
    out = subprocess.run(
        [sys.executable, "-c", got.reproducer],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "nan" in out.stdout


def test_duplicate_candidates_last_position_only(tf: Any) -> None:
    """TF's value is the loss with only the last copy of a repeated hit removed."""
    import refsoftmax as rs
    from refsoftmax.samplers import compute_accidental_hits

    rng = np.random.default_rng(3)
    w, b, x = rng.standard_normal((10, 4)), rng.standard_normal(10), rng.standard_normal((2, 4))
    y = np.array([[3], [1]])
    cand = np.array([3, 7, 3, 5])
    tq, sq = np.full((2, 1), 0.5), np.full(4, 0.5)
    theirs = tf.nn.sampled_softmax_loss(w, b, y, x, 4, 10, sampled_values=(cand, tq, sq)).numpy()
    ours = rs.sampled_softmax_loss(w, b, y, x, 4, 10, sampled_values=(cand, tq, sq))
    logits = np.concatenate(
        [np.sum(x * w[y[:, 0]], 1, keepdims=True) + b[y], x @ w[cand].T + b[cand]], 1
    )
    logits -= np.log(0.5)
    idx, ids, _ = compute_accidental_hits(y, cand, 1)
    assert ids.tolist() == [2]  # the last of the two 3s only
    tf_like = logits.copy()
    tf_like[idx, 1 + ids] = -np.inf
    expected = np.log(np.exp(tf_like).sum(1)) - tf_like[:, 0]
    np.testing.assert_allclose(theirs, expected, rtol=1e-12)
    assert abs(theirs[0] - ours[0]) > 0.1
    np.testing.assert_allclose(theirs[1], ours[1], rtol=1e-12)


# ------------------------------------------------------------------ keras-rs


def test_keras_rs(krs_report: conformance.Report) -> None:
    r = krs_report
    assert set(r.counts()) == {CORRECTION, REMOVE}
    assert all(c["error"] == 0 for c in r.counts().values())
    everywhere = dict.fromkeys(conformance.cases.DTYPES, "pass")
    for case in ("basic", "shared-probabilities", "leading-dims", "one-row"):
        assert statuses(r, CORRECTION, case) == everywhere, case
    for case in ("expected-counts-above-one", "probabilities-below-1e-6", "zero-probability"):
        got = statuses(r, CORRECTION, case)
        assert got == dict.fromkeys(conformance.cases.DTYPES, "convention"), case
    assert "clip=(1e-06, 1.0)" in result(r, CORRECTION, "zero-probability[float64]").message
    # float16: the gradient -c/q is computed as c * (1/q); 1/q overflows for q < 1/65504
    small = result(r, CORRECTION, "small-probabilities[float16]")
    assert small.status == "fail" and "is -inf where the true value is finite" in small.message
    assert (
        result(r, CORRECTION, "negative-probability[float64]").status == "fail"
    )  # clipped, not refused
    # RemoveAccidentalHits adds +1.2e-40 (float32's smallest normal / 100) instead of a large
    # negative number: nothing is removed
    for case in ("distinct-ids", "repeated-id-not-positive"):
        assert statuses(r, REMOVE, case) == everywhere, case
    for case in (
        "positive-id-repeated",
        "every-id-equal",
        "per-row-ids",
        "leading-dims",
        "one-row",
    ):
        assert set(statuses(r, REMOVE, case).values()) == {"fail"}, case
    got = result(r, REMOVE, "positive-id-repeated[float32]")
    assert got.message.startswith("value: value[0, 3] is 0.2098") and got.message.endswith(
        "expected -inf"
    )
    assert result(r, REMOVE, "no-positive[float64]").status == "fail"


# ------------------------------------------------------------------ references (NumPy only)


def test_reference_specs_are_registered() -> None:
    for name in (
        "sampled_softmax_loss",
        "nce_loss",
        "compute_accidental_hits",
        "log_q_correction",
        "accidental_hit_exclusion",
        *sampled.SAMPLER_SPECS,
    ):
        assert name in SPECS
        assert generate(name, max_examples=2)
    assert {c.dtype for c in generate("log_uniform_candidate_sampler", max_examples=2)} == {
        "float32"
    }
    assert {c.dtype for c in generate("compute_accidental_hits", max_examples=2)} == {"float64"}


def test_expected_counts_reference() -> None:
    ref = sampled.ExpectedCounts("log_uniform")
    tc = np.array([[0, 4], [9, 1]])
    classes = np.array([0, 4, 9, 1, 2, 3])  # the true classes, then the candidates
    p = np.log((classes + 2.0) / (classes + 1.0)) / np.log(31.0)
    with_replacement = ref(
        tc, num_true=2, num_sampled=2, unique=False, range_max=30, candidates=np.array([2, 3])
    )
    np.testing.assert_allclose(with_replacement, np.log(2 * p), rtol=1e-12)
    tries = ref(
        tc,
        num_true=2,
        num_sampled=2,
        unique=True,
        range_max=30,
        candidates=np.array([2, 3]),
        num_tries=5,
    )
    np.testing.assert_allclose(np.exp(tries), -np.expm1(5 * np.log1p(-p)), rtol=1e-12)
    assert ref.fit_num_tries(tc, [2, 3], np.exp(tries), num_sampled=2, range_max=30) == 5
    repeated = ref(
        tc,
        num_true=2,
        num_sampled=2,
        unique=True,
        range_max=30,
        candidates=np.array([2, 2]),
        num_tries=5,
    )
    assert np.isnan(repeated[-1]) and np.isfinite(repeated[:-1]).all()


def test_step_references() -> None:
    excl = sampled.AccidentalHitExclusion()
    z = np.arange(8.0).reshape(2, 4)
    y = np.eye(4)[[1, 3]]
    out = excl(z, y, np.array([[5, 6, 6, 7], [5, 7, 7, 5]]))
    assert out.tolist() == [[0.0, 1.0, -np.inf, 3.0], [-np.inf, 5.0, 6.0, 7.0]]
    with pytest.raises(ValueError, match="one-hot"):
        excl(z, np.zeros((2, 4)), np.arange(4))
    assert sampled.excluded_threshold("float32") == -1e30
    assert sampled.excluded_threshold("float16") == -32752.0
    assert sampled.canonical_excluded(np.array([-1e31, -1e29]), "float32").tolist() == [
        -np.inf,
        -1e29,
    ]

    corr = sampled.LogQCorrection()
    q = np.array([0.5, 2.0, 1e-9])
    value, grads = corr.value_and_grad(
        np.zeros((2, 3)), q, cotangent=np.ones((2, 3)), clip=(1e-6, 1.0)
    )
    np.testing.assert_allclose(value[0], -np.log([0.5, 1.0, 1e-6]))
    np.testing.assert_allclose(grads["candidate_sampling_probability"], [-4.0, 0.0, 0.0])
    np.testing.assert_allclose(grads["logits"], np.ones((2, 3)))

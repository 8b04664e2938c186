"""certify() on real calling conventions: reduced-only functions, stated preconditions, a
compute dtype, and the engine's own false alarms (finite-difference steps, rounding, the driver)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import refsoftmax
from refsoftmax import conformance
from refsoftmax.conformance import engine

torch = pytest.importorskip("torch")
F = torch.nn.functional


def statuses(report):
    return Counter(r.status for r in report.results)


def by_case(report):
    return {r.case: r for r in report.results}


# ----------------------------------------------------------------------------- functions under test

def ce_none(logits, labels, reduction="none"):
    flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction=reduction)
    return flat.reshape(labels.shape) if reduction == "none" else flat


def ce_mean(logits, labels):
    """Only a mean, over every leading dim."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def ce_sum(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")


def ce_mean_over_first_dim(logits, labels):
    """The bug of the issue: a mean that divides by logits.shape[0] (5.008 instead of 1.669)."""
    return ce_sum(logits, labels) / logits.shape[0]


def ce_float32(logits, labels, reduction="none"):
    """Computes in float32 whatever the input dtype (returns the input dtype)."""
    return ce_none(logits.float(), labels, reduction).to(logits.dtype)


def ce_refusing(logits, labels, reduction="none", label_smoothing=0.0):
    """States its preconditions by raising: finite logits, two classes, smoothing below one."""
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits must be finite")
    if logits.shape[-1] < 2:
        raise ValueError("need two classes")
    if label_smoothing >= 1:
        raise ValueError("label_smoothing must be < 1")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction=reduction,
                           label_smoothing=label_smoothing).reshape(labels.shape if reduction == "none" else ())


def ce_unvalidated(logits, labels, reduction="none"):
    """Never validates: a label out of range is wrapped (take_along_axis semantics)."""
    c = logits.shape[-1]
    logp = torch.log_softmax(logits, -1)
    out = -torch.gather(logp, -1, (labels % c).unsqueeze(-1)).squeeze(-1)
    return out if reduction == "none" else (out.mean() if reduction == "mean" else out.sum())


def ce_wrong_shape(logits, labels, reduction="none"):
    out = ce_none(logits, labels, reduction)
    return out.unsqueeze(-1) if reduction == "none" else out


def ce_numpy_inside(logits, labels, reduction="none"):
    """Returns a NumPy array: the value is right, but torch cannot differentiate it."""
    return ce_none(logits, labels, reduction).detach().numpy()


def ce_wrong_value_and_gradient(logits, labels, reduction="none"):
    return 1.5 * ce_none(logits, labels, reduction)


# ----------------------------------------------------------------------------- returns

def test_reduced_only_functions_run_every_case_a_per_example_function_runs():
    full = statuses(conformance.certify(ce_none, framework="torch", max_examples=6))
    for fn, returns in ((ce_mean, "mean"), (ce_sum, "sum")):
        got = statuses(conformance.certify(fn, framework="torch", options=(), returns=returns, max_examples=6))
        assert got == full, (returns, got, full)
        assert got["fail"] == got["error"] == 0


def test_reduced_only_case_runs_per_example_on_both_sides():
    report = conformance.certify(ce_mean, framework="torch", options=(), returns="mean", max_examples=0,
                                 dtypes=("float64",))
    basic = by_case(report)["leading-dims[float64]"]  # reduction "none": evaluated one example at a time
    assert basic.status == "pass" and basic.checks["self-consistency"] == "pass"


def test_a_mean_over_the_first_dim_fails_on_leading_dims():
    report = conformance.certify(ce_mean_over_first_dim, framework="torch", options=(), returns="mean",
                                 max_examples=0, dtypes=("float64",))
    failed = {r.case for r in report.results if r.status == "fail"}
    assert failed == {"leading-dims-mean[float64]"}, failed
    r = by_case(report)["leading-dims-mean[float64]"]
    assert "value" in r.message and "gradient w.r.t. logits" in r.message  # both checks reported


def test_per_example_reproducer_runs_and_calls_the_function():
    report = conformance.certify(ce_mean_over_first_dim, framework="torch", options=(), returns="mean",
                                 max_examples=0, dtypes=("float64",))
    r = by_case(report)["leading-dims-mean[float64]"]
    assert f"from {__name__} import ce_mean_over_first_dim as fn" in r.reproducer
    scope: dict = {}
    exec(compile(r.reproducer.replace("print(value, expected)", ""), "<reproducer>", "exec"), scope)
    assert float(scope["value"]) == pytest.approx(3 * float(scope["expected"]))  # shape[0] = 2 of 6 rows


def test_returns_is_validated():
    with pytest.raises(ValueError, match="returns must be one of"):
        conformance.certify(ce_mean, framework="torch", returns="average")


# ----------------------------------------------------------------------------- preconditions

def test_declared_preconditions_skip_with_the_reason():
    options = ("reduction", "label_smoothing")
    plain = by_case(conformance.certify(ce_refusing, framework="torch", options=options, max_examples=0))
    assert plain["nan-logit[float64]"].status == "error"
    assert plain["one-class[float64]"].status == "error"
    assert plain["smoothing-1.0[float64]"].status == "error"
    declared = by_case(conformance.certify(
        ce_refusing, framework="torch", options=options, max_examples=0,
        preconditions=("finite_inputs", "min_two_classes", "smoothing_below_one")))
    for case, name in (("nan-logit", "finite_inputs"), ("minus-inf-logit", "finite_inputs"),
                       ("one-class", "min_two_classes"), ("smoothing-1.0", "smoothing_below_one")):
        r = declared[f"{case}[float64]"]
        assert r.status == "skipped" and f"declared precondition {name}" in r.message, (case, r)
    assert not [r for r in declared.values() if r.status in ("fail", "error")]


def test_unvalidated_inputs_skips_the_invalid_cases():
    plain = statuses(conformance.certify(ce_unvalidated, framework="torch", max_examples=0))
    assert plain["fail"] == 2  # label-too-large, label-negative: silently wrapped
    declared = conformance.certify(ce_unvalidated, framework="torch", max_examples=0,
                                   preconditions=("unvalidated_inputs",))
    assert statuses(declared)["fail"] == 0
    assert by_case(declared)["label-negative[float64]"].status == "skipped"


def test_unknown_precondition_is_a_value_error():
    with pytest.raises(ValueError, match="preconditions \\['finite'\\] are not known"):
        conformance.certify(ce_none, framework="torch", preconditions=("finite",))


# ----------------------------------------------------------------------------- compute_dtype

def test_compute_dtype_turns_float32_accuracy_into_a_convention():
    plain = conformance.certify(ce_float32, framework="torch", max_examples=3)
    assert statuses(plain)["fail"] > 0
    declared = conformance.certify(ce_float32, framework="torch", max_examples=3, compute_dtype="float32")
    got = statuses(declared)
    assert got["fail"] == got["error"] == 0 and got["convention"] > 0
    r = next(r for r in declared.results if r.status == "convention")
    assert r.dtype == "float64" and "compute_dtype='float32'" in r.message
    assert all(r.status != "convention" for r in declared.results if r.dtype != "float64")


def test_compute_dtype_is_validated():
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        conformance.certify(ce_none, framework="torch", compute_dtype="float64")


# ----------------------------------------------------------------------------- no false alarms

def test_finite_difference_step_is_per_input_and_per_magnitude():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((3, 4)) * 1e20
    weights = rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1])
    ct = rng.standard_normal(3)
    f = refsoftmax.am_softmax_loss
    _, grads = f.value_and_grad(features, weights, labels, cotangent=ct)

    def loss(v):
        return f(v["features"], v["weights"], labels)

    inputs = {"features": features, "weights": weights}
    ok, err, tol, limited = engine._fd_check(loss, inputs, grads, ("features", "weights"), ct, rng)
    assert ok and not limited, (err, tol)
    # what one step for every input (1e-6 x the largest magnitude, 1e14) made of it
    d = {k: np.random.default_rng(1).standard_normal(v.shape) for k, v in inputs.items()}
    h = 1e-6 * 1e20 * np.abs(features).max() / 1e20
    plus = loss({k: v + h * d[k] for k, v in inputs.items()})
    minus = loss({k: v - h * d[k] for k, v in inputs.items()})
    numeric = float(ct @ (plus - minus)) / (2 * h)
    analytic = sum(float(np.sum(grads[k] * d[k])) for k in inputs)
    assert abs(numeric - analytic) > 1e-3 * abs(analytic)
    # a planted wrong weight gradient is still caught at that scale
    bad = {**grads, "weights": grads["weights"] * 1.01}
    assert not engine._fd_check(loss, inputs, bad, ("features", "weights"), ct, np.random.default_rng(0))[0]


def test_the_reference_certifies_itself_at_features_around_1e20():
    def am(features, weights, labels, scale=30.0, margin=0.35, reduction="none"):
        return refsoftmax.am_softmax_loss(features * 1e20, weights, labels, scale=scale, margin=margin,
                                          reduction=reduction)

    def grad(inputs, options, cotangent):
        f, w, y = inputs["features"], inputs["weights"], inputs["labels"]
        _, g = refsoftmax.am_softmax_loss.value_and_grad(f * 1e20, w, y, cotangent=cotangent, **options)
        return {"features": g["features"] * 1e20, "weights": g["weights"]}

    report = conformance.certify(am, loss="am_softmax_loss", grad_fn=grad, options=("scale", "margin", "reduction"),
                                 max_examples=3, dtypes=("float64",))
    assert statuses(report)["fail"] == 0, [r.message for r in report.results if r.status == "fail"]


def test_wrong_output_shape_is_reported_as_such():
    r = by_case(conformance.certify(ce_wrong_shape, framework="torch", max_examples=0))["basic[float64]"]
    assert r.status == "fail" and "returned a value of shape (4, 1), expected (4,)" in r.message


def test_driver_failures_are_not_the_candidates_errors():
    report = conformance.certify(ce_numpy_inside, framework="torch", max_examples=0, dtypes=("float64",))
    r = by_case(report)["basic[float64]"]
    assert r.status == "fail" and "torch could not differentiate the value it returned" in r.message
    assert statuses(report)["error"] == 0


def test_invalid_cases_kept_without_float64():
    report = conformance.certify(ce_unvalidated, framework="torch", max_examples=0, dtypes=("float32",))
    r = by_case(report)["label-negative[float32]"]
    assert r.status == "fail" and r.dtype == "float32"


def test_every_failing_comparison_is_reported():
    report = conformance.certify(ce_wrong_value_and_gradient, framework="torch", max_examples=0,
                                 conventions={"label_smoothing_mode": "others"}, options=("reduction",),
                                 dtypes=("float64",))
    r = by_case(report)["basic[float64]"]
    assert r.status == "fail"
    assert r.message.count("value:") == 2 and r.message.count("gradient w.r.t. logits:") == 2
    assert "with the declared conventions label_smoothing_mode='others'" in r.message


def test_rounding_that_makes_a_case_invalid_is_skipped_not_charged():
    # a weight row of norm 1e-10 is valid in float64 and rounds to 0 in float16, where the
    # cosine is undefined: the reference refuses the rounded case, so the candidate is not judged
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((4, 3))
    weights[2] = 1e-10
    case = conformance.Case("tiny-weight-row", "am_softmax_loss",
                            {"features": rng.standard_normal((2, 3)), "weights": weights,
                             "labels": np.array([0, 3])}, {}, dtype="float16")

    def call(inputs, options):
        return refsoftmax.am_softmax_loss(inputs["features"], inputs["weights"], inputs["labels"], **options)

    target = conformance.Target("lib", "am", "am_softmax_loss", "numpy", call, wrt=())
    result = engine.run_case(target, case)
    assert result.status == "skipped", result
    assert "rounding the inputs to float16 makes this case invalid" in result.message
    assert "nonzero rows" in result.message
    float64 = engine.run_case(target, conformance.Case(case.name, case.loss, case.inputs, {}, dtype="float64"))
    assert float64.status == "pass", float64

"""The gradient checker must catch wrong gradients and pass right ones."""

from __future__ import annotations

import dataclasses

import array_api_compat
import numpy as np
import pytest

import refsoftmax as rs
from refsoftmax import backends


class _Scaled(rs.Function):
    """sparse CE whose backward is off by a factor (a planted bug)."""

    name = "scaled"
    differentiable = ("logits",)

    def __init__(self, factor):
        self.factor = factor

    def forward(self, logits, labels, **kw):
        return rs.sparse_softmax_cross_entropy.forward(logits, labels, **kw)

    def backward(self, residuals, cotangent):
        g = rs.sparse_softmax_cross_entropy.backward(residuals, cotangent)
        return {"logits": g["logits"] * self.factor}


@pytest.mark.parametrize("mode", ["full", "vjp"])
def test_catches_a_wrong_gradient(backend, rng, mode):
    z = backend.asarray(rng.standard_normal((3, 4)))
    t = backend.asarray(np.array([0, 1, 3]))
    with pytest.raises(rs.GradcheckError, match="MISMATCH") as info:
        rs.gradcheck(_Scaled(1.01), (z, t), mode=mode)
    assert info.value.report.arguments["logits"].max_rel_error > 5e-3
    report = rs.gradcheck(_Scaled(1.0), (z, t), mode=mode)
    assert report.passed and report.arguments["logits"].max_abs_error < 1e-8


def test_non_strict_reports(rng):
    report = rs.gradcheck(_Scaled(2.0), (rng.standard_normal((2, 3)), np.array([0, 2])), strict=False)
    assert not report.passed
    assert "MISMATCH" in str(report)
    assert dataclasses.asdict(report.arguments["logits"])["checked"] == 12


def test_float32_inputs_are_checked_in_float64(rng):
    z = rng.standard_normal((2, 3)).astype(np.float32)
    report = rs.gradcheck(rs.sparse_softmax_cross_entropy, (z, np.array([0, 1])))
    assert report.arguments["logits"].max_abs_error < 1e-9


def test_plain_callable_with_grad_fn(rng):
    def square(x):
        return x * x

    def grad_fn(x, cotangent):
        return {"x": 2 * x * cotangent}

    assert rs.gradcheck(square, (rng.standard_normal(5),), wrt="x", grad_fn=grad_fn).passed
    with pytest.raises(rs.GradcheckError):
        rs.gradcheck(square, (rng.standard_normal(5),), wrt="x", grad_fn=lambda x, cotangent: {"x": x})


def test_bad_arguments():
    z, t = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match="mode must be one of"):
        rs.gradcheck(rs.sparse_softmax_cross_entropy, (z, t), mode="x")
    with pytest.raises(ValueError, match="wrt names 'labels2'"):
        rs.gradcheck(rs.sparse_softmax_cross_entropy, (z, t), wrt="labels2")
    with pytest.raises(TypeError, match="pass grad_fn"):
        rs.gradcheck(lambda x: x, (z,), wrt="x")


# ------------------------------------------------------------------ planted wrong backwards

EPS_CBRT = np.finfo(np.float64).eps ** (1 / 3)
BUGS = ("scale_1.01", "scale_2", "sign", "one_entry", "cotangent_ignored", "cotangent_squared", "transposed")


class _Planted(rs.Function):
    """A ``(logits, labels)`` loss whose backward has one planted bug in its first gradient."""

    def __init__(self, base, bug):
        self.base, self.bug = base, bug
        self.name = f"{base.name}[{bug}]"
        self.differentiable = base.differentiable

    def forward(self, logits, labels, **kw):
        return self.base.forward(logits, labels, **kw)

    def backward(self, residuals, cotangent):
        xp = residuals.xp
        if self.bug == "cotangent_ignored":
            cotangent = xp.ones_like(cotangent)
        elif self.bug == "cotangent_squared":
            cotangent = cotangent * cotangent
        grads = dict(self.base.backward(residuals, cotangent))
        key = self.differentiable[0]
        g = grads[key]
        if self.bug == "scale_1.01":
            g = g * 1.01
        elif self.bug == "scale_2":
            g = g * 2.0
        elif self.bug == "sign":
            g = -g
        elif self.bug == "one_entry":
            module = backends.for_namespace(xp)
            host = np.array(module.to_numpy(g))
            host.reshape(-1)[1] += 0.05
            g = module.from_host(host, array_api_compat.device(g))
        elif self.bug == "transposed":
            g = xp.permute_dims(g, (1, 0))
        grads[key] = g
        return grads


def _square_problem(rng):
    """4x4 logits (a transposed gradient has the right shape) with labels."""
    return rng.standard_normal((4, 4)), np.array([0, 3, 1, 1])


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("mode", ["full", "vjp"])
@pytest.mark.parametrize("bug", BUGS)
def test_planted_bugs_fail(rng, bug, mode, reduction):
    z, t = _square_problem(rng)
    fn = _Planted(rs.sparse_softmax_cross_entropy, bug)
    with pytest.raises(rs.GradcheckError, match="MISMATCH"):
        rs.gradcheck(fn, (z, t), mode=mode, reduction=reduction)
    # the unplanted function passes the same check
    assert rs.gradcheck(rs.sparse_softmax_cross_entropy, (z, t), mode=mode, reduction=reduction).passed


@pytest.mark.parametrize("mode", ["full", "vjp"])
@pytest.mark.parametrize("bug", ["cotangent_ignored", "cotangent_squared", "sign"])
def test_planted_cotangent_bugs_fail_on_dense_labels(rng, bug, mode):
    z, y = rng.standard_normal((3, 4)), rng.dirichlet(np.ones(4), size=3)
    with pytest.raises(rs.GradcheckError, match="MISMATCH"):
        rs.gradcheck(_Planted(rs.softmax_cross_entropy, bug), (z, y), mode=mode, reduction="sum")


def test_planted_and_correct_on_every_backend(backend, rng):
    t = backend.asarray(np.array([0, 2, 3]))
    z = 1e5 + rng.standard_normal((3, 4))  # large logits, O(1) apart: the curvature is O(1)
    report = rs.gradcheck(rs.sparse_softmax_cross_entropy, (backend.asarray(z), t), mode="full", reduction="mean")
    assert report.passed and report.arguments["logits"].step > 100 * EPS_CBRT
    planted = _Planted(rs.sparse_softmax_cross_entropy, "cotangent_squared")
    with pytest.raises(rs.GradcheckError, match="MISMATCH"):  # a scalar value: only a cotangent != 1 sees it
        rs.gradcheck(planted, (backend.asarray(rng.standard_normal((3, 4))), t), mode="vjp", reduction="mean")


def test_cotangents_are_random_and_never_one(rng):
    seen = []

    def f(x):
        return x * x

    def grad_fn(x, cotangent):
        seen.append(np.asarray(cotangent).reshape(-1))
        return {"x": 2 * x * cotangent}

    for mode in ("full", "vjp"):
        rs.gradcheck(f, (rng.standard_normal(3),), wrt="x", grad_fn=grad_fn, mode=mode)
        rs.gradcheck(lambda x: np.sum(x * x), (rng.standard_normal(3),), wrt="x",
                     grad_fn=lambda x, cotangent: {"x": 2 * x * cotangent}, mode=mode)
    values = np.concatenate(seen)
    nonzero = np.abs(values[values != 0])
    assert nonzero.size > 0 and np.all((nonzero >= 0.5) & (nonzero <= 2.0))
    assert np.all((nonzero <= 0.9) | (nonzero >= 1 / 0.9))
    assert np.any(values < 0) and np.any(values > 0)


# ------------------------------------------------------------------ right gradients at every scale

SCALES = [1.0, 1e3, 1e5, 1e6]


@pytest.mark.parametrize("mode", ["full", "vjp"])
@pytest.mark.parametrize("scale", SCALES)
def test_correct_gradients_pass_at_large_logits(rng, scale, mode):
    z = rng.standard_normal((3, 4)) * scale
    shifted = scale + rng.standard_normal((3, 4))  # shift-invariant losses: curvature stays O(1)
    t = rng.integers(0, 4, 3)
    y = rng.dirichlet(np.ones(4), size=3)
    for logits in (z, shifted):
        for reduction in ("none", "mean"):
            rs.gradcheck(rs.sparse_softmax_cross_entropy, (logits, t), mode=mode, reduction=reduction)
        rs.gradcheck(rs.softmax_cross_entropy, (logits, y), mode=mode, reduction="sum")
        rs.gradcheck(rs.logsumexp, (logits,), mode=mode)
    w = rng.standard_normal((4, 3)) * np.sqrt(scale)
    x = rng.standard_normal((3, 3)) * np.sqrt(scale)  # logits w @ x of size ~scale
    report = rs.gradcheck(rs.linear_softmax_cross_entropy, (w, None, t, x), wrt=("weights", "inputs"), mode=mode)
    assert set(report.arguments) == {"weights", "inputs"}


def test_step_adapts_to_the_function_not_to_the_largest_entry(rng):
    t = np.array([0, 2, 3])
    small = rs.gradcheck(rs.sparse_softmax_cross_entropy, (rng.standard_normal((3, 4)), t))
    assert small.arguments["logits"].step == pytest.approx(EPS_CBRT)
    shifted = 1e5 + rng.standard_normal((3, 4))
    report = rs.gradcheck(rs.sparse_softmax_cross_entropy, (shifted, t))
    h = report.arguments["logits"].step
    assert report.step == h
    assert 1e-5 < h < 0.1  # far below eps**(1/3) * 1e5 = 0.6, above eps**(1/3): rounding of f at 1e5
    # the old rule, eps**(1/3) * |x|_inf, leaves the quadratic regime (and step= overrides)
    old = rs.gradcheck(rs.sparse_softmax_cross_entropy, (shifted, t), step=EPS_CBRT * 1e5, strict=False)
    assert not old.passed
    assert old.step == old.arguments["logits"].step == EPS_CBRT * 1e5
    assert old.arguments["logits"].order == 2


def test_per_argument_steps(rng):
    z = 1e5 + rng.standard_normal((3, 4))
    y = rng.dirichlet(np.ones(4), size=3)
    report = rs.gradcheck(rs.softmax_cross_entropy, (z, y))
    steps = {n: a.step for n, a in report.arguments.items()}
    assert steps["labels"] == pytest.approx(EPS_CBRT)  # linear in the labels: the base step
    assert steps["logits"] > steps["labels"]
    assert report.step == max(steps.values())
    assert "h=" in str(report).splitlines()[1]


# ------------------------------------------------------------------ None and non-array arguments

def test_none_arguments_pass_through(rng):
    w, x, y = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)), rng.integers(0, 5, 4)
    fn = rs.linear_softmax_cross_entropy
    for mode in ("full", "vjp"):
        report = rs.gradcheck(fn, (w, None, y, x), wrt=("weights", "inputs"), mode=mode, reduction="sum")
        assert set(report.arguments) == {"weights", "inputs"}
    with pytest.raises(ValueError, match=r"'biases', which is None"):
        rs.gradcheck(fn, (w, None, y, x), wrt=("weights", "biases"))
    with pytest.raises(ValueError, match=r"'biases', which is None"):
        rs.gradcheck(fn, (w, None, y, x))  # the default wrt includes biases


def test_non_array_positional_arguments_pass_through(rng):
    def power(x, n, c):
        assert isinstance(n, int) and isinstance(c, float)
        return c * x**n

    def grad_fn(x, n, c, cotangent):
        return {"x": cotangent * c * n * x ** (n - 1)}

    x = rng.standard_normal(4)
    assert rs.gradcheck(power, (x, 3, 0.5), wrt="x", grad_fn=grad_fn).passed
    with pytest.raises(rs.GradcheckError):
        rs.gradcheck(power, (x, 3, 0.5), wrt="x", grad_fn=lambda x, n, c, cotangent: {"x": c * n * x ** (n - 1)})


def test_non_finite_inputs_are_refused():
    with pytest.raises(ValueError, match="logits has non-finite entries"):
        rs.gradcheck(rs.sparse_softmax_cross_entropy, (np.array([[0.0, -np.inf]]), np.array([0])))

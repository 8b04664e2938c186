"""The gradient checker must catch wrong gradients and pass right ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import refsoftmax as rs


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

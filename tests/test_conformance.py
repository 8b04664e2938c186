"""The conformance engine: planted faults are caught, correct implementations pass, CLI and reports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from refsoftmax import conformance
from refsoftmax.conformance.cli import main

OPTIONS = ("reduction", "ignore_index", "label_smoothing")


def make_ce(fault: str | None = None):
    """A NumPy sparse CE with hand-written gradient, optionally with one planted fault."""

    def parts(logits, labels, ignore_index, eps):
        z = np.asarray(logits, np.float64)
        c = z.shape[-1]
        t = np.asarray(labels)
        valid = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
        if fault != "silent-out-of-range" and (((t < 0) | (t >= c)) & valid).any():
            raise ValueError("label out of range")
        t_safe = np.where(valid & (t >= 0) & (t < c), t, 0)
        if fault == "no-max-shift":
            with np.errstate(over="ignore", invalid="ignore"):
                e = np.exp(z)
                logp = z - np.log(e.sum(-1, keepdims=True))
        else:
            m = z.max(-1, keepdims=True)
            logp = (z - m) - np.log(np.exp(z - m).sum(-1, keepdims=True))
        onehot = np.eye(c)[t_safe]
        spread = 1.0 / (c - 1) if fault == "smoothing-c-minus-1" and c > 1 else 1.0 / c
        if fault == "smoothing-c-minus-1" and c > 1:
            q = (1 - eps) * onehot + eps * spread * (1 - onehot)
        else:
            q = (1 - eps) * onehot + eps * spread
        with np.errstate(invalid="ignore"):
            losses = -(q * np.where(q == 0, 0, logp)).sum(-1)
        if fault == "silent-out-of-range":
            losses = np.where((t < 0) | (t >= c), 0.0, losses)
        losses = np.where(valid, losses, 0.0)
        return z, logp, q, valid, losses

    def denominator(valid):
        if fault == "mean-denominator":
            return float(valid.size)  # counts ignored rows too
        return float(valid.sum())

    def loss(logits, labels, reduction="none", ignore_index=None, label_smoothing=0.0):
        _, _, _, valid, losses = parts(logits, labels, ignore_index, label_smoothing)
        if reduction == "sum":
            return losses.sum()
        if reduction == "mean":
            d = denominator(valid)
            return losses.sum() / d if d else np.nan
        return losses

    def grad(inputs, options, cotangent):
        _z, logp, q, valid, _ = parts(inputs["logits"], inputs["labels"], options.get("ignore_index"),
                                     options.get("label_smoothing", 0.0))
        red = options.get("reduction", "none")
        g = np.asarray(cotangent, np.float64)
        if red == "mean":
            d = denominator(valid)
            g = np.full(valid.shape, g / d if d else 0.0)
        elif red == "sum":
            g = np.full(valid.shape, g)
        p = np.exp(logp)
        out = (g * valid)[..., None] * (p * q.sum(-1, keepdims=True) - q)
        if fault == "gradient-factor":
            out = out * 1.05
        return {"logits": np.where(np.isnan(out), 0.0, out) if fault is None else out}

    loss.__name__ = f"ce_{fault or 'correct'}"
    return loss, grad


def _certify(fault, seed=0, max_examples=6):
    loss, grad = make_ce(fault)
    return conformance.certify(loss, "sparse_softmax_cross_entropy", "numpy", grad, options=OPTIONS,
                               dtypes=("float64", "float32"), seed=seed, max_examples=max_examples)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correct_implementation_has_no_false_alarm(seed):
    report = _certify(None, seed=seed)
    bad = [(r.case, r.message) for r in report.results if r.status in ("fail", "error")]
    # the one legitimate difference: a NaN logit row (this implementation zeroes NaN gradients)
    assert all(case.startswith("nan-logit") for case, _ in bad), bad
    assert sum(r.status == "pass" for r in report.results) > 40


@pytest.mark.parametrize(
    "fault, caught_by",
    [
        ("mean-denominator", "ignore-index-mean"),
        ("gradient-factor", "basic"),
        ("smoothing-c-minus-1", "smoothing-0.1"),
        ("no-max-shift", "large-logits"),
        ("silent-out-of-range", "label-too-large"),
    ],
)
def test_planted_fault_is_caught(fault, caught_by):
    report = _certify(fault)
    failed = {r.case.split("[")[0] for r in report.results if r.status == "fail"}
    assert caught_by in failed, sorted(failed)
    for r in report.results:
        if r.status == "fail":
            assert r.reproducer.startswith("import numpy as np")
            assert "expected = refsoftmax.sparse_softmax_cross_entropy(" in r.reproducer


def test_reproducer_runs_and_shows_the_difference():
    report = _certify("mean-denominator")
    r = next(r for r in report.results if r.status == "fail" and r.case.startswith("ignore-index-mean"))
    scope: dict = {}
    exec(compile(r.reproducer.replace("print(expected)", ""), "<reproducer>", "exec"), scope)
    assert np.isfinite(scope["expected"])


def test_declared_convention_is_reported_as_convention():
    loss, grad = make_ce("mean-denominator")
    report = conformance.certify(loss, "sparse_softmax_cross_entropy", "numpy", grad, options=OPTIONS,
                                 conventions={"mean_denominator": "all"}, dtypes=("float64",), max_examples=2)
    statuses = {r.case: r.status for r in report.results}
    assert statuses["ignore-index-mean[float64]"] == "convention"
    assert statuses["ignore-index-mean[float32]"] == "skipped"  # dtypes=("float64",)
    conv = next(r for r in report.results if r.status == "convention")
    assert "mean_denominator='all'" in conv.message


def test_report_json_schema(tmp_path):
    report = _certify("gradient-factor", max_examples=1)
    data = json.loads(report.to_json())
    assert {"library", "version", "backend", "results"} <= set(data)
    entry = data["results"][0]
    assert {"library", "function", "case", "status", "message", "max_abs_error", "max_rel_error"} <= set(entry)
    assert {r["status"] for r in data["results"]} <= {"pass", "fail", "convention", "error", "skipped"}
    md = report.to_markdown()
    assert "## Failures" in md and "```python" in md


def test_torch_certification(tmp_path, certified):
    pytest.importorskip("torch")
    report = certified("torch")
    by_case = {(r.function, r.case): r.status for r in report.results}
    cls = "torch.nn.functional.cross_entropy (class indices)"
    prob = "torch.nn.functional.cross_entropy (probabilities)"
    assert by_case[(cls, "basic[float64]")] == "pass"
    assert by_case[(cls, "label-too-large[float64]")] == "pass"  # torch raises: refusal is right
    assert by_case[(prob, "minus-inf-logit-no-mass[float64]")] == "fail"  # NaN where the loss is finite
    assert by_case[(prob, "negative-label[float64]")] == "fail"  # accepts invalid soft labels silently
    assert by_case[(prob, "weights-mean[float64]")] == "convention"  # divides by N


def test_cli_exit_codes(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["certify", "nope"]) == 2
    assert main(["certify", "--impl", "nomodule", "--quiet"]) == 2
    (tmp_path / "goodloss.py").write_text(
        "import numpy as np\n"
        "def loss(logits, labels, reduction='none'):\n"
        "    m = logits.max(-1, keepdims=True)\n"
        "    if ((labels < 0) | (labels >= logits.shape[-1])).any(): raise ValueError('label')\n"
        "    out = (m[..., 0] + np.log(np.exp(logits - m).sum(-1))) - np.take_along_axis(logits, labels[..., None], -1)[..., 0]\n"
        "    return out.sum() if reduction == 'sum' else out.mean() if reduction == 'mean' else out\n"
    )
    code = subprocess.run(
        [sys.executable, "-m", "refsoftmax", "certify", "--impl", "goodloss:loss", "--max-examples", "2",
         "--json", str(tmp_path / "r.json"), "--quiet"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    data = json.loads((tmp_path / "r.json").read_text())
    fails = [r for r in data["results"] if r["status"] in ("fail", "error")]
    assert code.returncode == (1 if fails else 0), code.stderr
    assert all(r["case"].startswith(("nan-logit", "large-spread", "large-logits")) or "float16" in r["case"]
               for r in fails), fails


SAMPLED_OPTIONS = ("num_sampled", "num_classes", "num_true", "sampled_values", "remove_accidental_hits",
                   "reduction")


def _sampled_candidate(fault):
    import refsoftmax as rs

    def loss(weights, biases, labels, inputs, remove_accidental_hits=True, **kw):
        if fault == "no-log-q":
            kw["subtract_log_q"] = False
        if fault == "hits-kept":
            remove_accidental_hits = False
        return rs.sampled_softmax_loss(weights, biases, labels, inputs,
                                       remove_accidental_hits=remove_accidental_hits, **kw)

    loss.__name__ = f"sampled_{fault or 'correct'}"
    return loss


@pytest.mark.parametrize("fault", [None, "no-log-q", "hits-kept"])
def test_sampled_softmax_planted_faults(fault):
    report = conformance.certify(_sampled_candidate(fault), loss="sampled_softmax_loss", framework="numpy",
                                 options=SAMPLED_OPTIONS, dtypes=("float64",), max_examples=4)
    failed = {r.case.split("[")[0] for r in report.results if r.status == "fail"}
    ran = [r for r in report.results if r.status != "skipped"]
    assert len(ran) > 10
    if fault is None:
        assert not failed, failed
    elif fault == "no-log-q":
        assert failed  # every case with expected counts != 1 disagrees
    else:
        assert any("hit" in name for name in failed), failed

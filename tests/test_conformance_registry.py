"""Every public loss can be certified: specs and cases built from ``refsoftmax.registry``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import refsoftmax as rs
from refsoftmax import conformance
from refsoftmax.conformance import specs_registry
from refsoftmax.conformance.cases import generate
from refsoftmax.conformance.targets import SPECS
from refsoftmax.registry import LOSSES

OPTIONS = ("reduction", "delta", "scale", "margin", "num_sampled", "num_classes", "sampled_values",
           "temperature", "k", "ignore_index", "class_weights")
BUILT = sorted(n for n in LOSSES if n not in {
    "sparse_softmax_cross_entropy", "softmax_cross_entropy", "sampled_softmax_loss", "nce_loss",
    "sparsemax_loss", "entmax15_loss"})


def test_every_public_loss_has_a_spec_and_cases() -> None:
    public = {n for n in rs.__all__ if isinstance(getattr(rs, n), rs.Function)}
    assert public <= set(SPECS)
    for name in public:
        assert generate(name, max_examples=1), name


def test_registry_cases_include_a_non_negative_ignore_index() -> None:
    cases = generate("am_softmax_loss", max_examples=0, dtypes=("float64",))
    assert any(c.options.get("ignore_index") == 1 for c in cases)


def test_register_all_is_idempotent() -> None:
    before = dict(SPECS)
    specs_registry.register_all()
    assert before == SPECS


def _options(name: str) -> tuple[str, ...]:
    """The options of ``OPTIONS`` that loss ``name`` has (certify refuses the others)."""
    from refsoftmax.conformance import _reference_options

    known = _reference_options(SPECS[name])
    return tuple(o for o in OPTIONS if o in known)


def _wrap(fn: Any, factor: float = 1.0) -> Any:
    def candidate(*args: Any, **kwargs: Any) -> Any:
        return np.asarray(fn(*args, **kwargs)) * factor
    return candidate


@pytest.mark.parametrize("name", BUILT)
def test_the_reference_certifies_itself(name: str) -> None:
    report = conformance.certify(_wrap(getattr(rs, name)), loss=name, framework="numpy",
                                 max_examples=3, options=_options(name))
    bad = [(r.case, r.status, r.message) for r in report.results if r.status in ("fail", "error")]
    assert not bad, bad
    assert sum(r.status == "pass" for r in report.results) >= 10


@pytest.mark.parametrize("name", ["am_softmax_loss", "multilabel_categorical_cross_entropy", "logsumexp"])
def test_a_planted_error_is_caught(name: str) -> None:
    report = conformance.certify(_wrap(getattr(rs, name), 1.0 + 1e-6), loss=name, framework="numpy",
                                 max_examples=3, options=_options(name))
    assert any(r.status == "fail" for r in report.results)


def test_a_candidate_that_overwrites_its_input_fails_naming_it() -> None:
    def in_place(logits: Any, labels: Any, reduction: str = "none") -> Any:
        logits -= logits.max(axis=-1, keepdims=True)  # "saves memory": the caller's array changes
        return rs.sparse_softmax_cross_entropy(logits, labels, reduction=reduction)

    report = conformance.certify(in_place, loss="sparse_softmax_cross_entropy", framework="numpy",
                                 max_examples=2)
    failed = [r for r in report.results if r.status == "fail" and "modified its input" in r.message]
    assert failed and all("logits" in r.message for r in failed)
    assert not any("labels" in r.message for r in failed)


def test_unknown_options_conventions_wrt_and_dtypes_are_refused() -> None:
    fn = rs.sparse_softmax_cross_entropy
    for kwargs, word in [({"options": ("reduction", "smoothing")}, "smoothing"),
                         ({"conventions": {"label_smothing_mode": "others"}}, "label_smothing_mode"),
                         ({"conventions": {"label_smoothing_mode": "sideways"}}, "sideways"),
                         ({"wrt": ("labels", "weights")}, "weights"),
                         ({"dtypes": ("float64", "float8")}, "float8")]:
        with pytest.raises(ValueError, match=word):
            conventions_kw: dict[str, Any] = dict(kwargs)
            conformance.certify(fn, loss="sparse_softmax_cross_entropy", **conventions_kw)

"""The transformers and pytorch-metric-learning adapters: named outcomes, and their findings by hand.

Each library's tests skip when it is not installed.  Only a handful of cases
run (``engine.run_case`` on cases picked by name), so the file stays fast;
the full certification is ``conformance/reports/{transformers,pytorch_metric_learning}.*``.
The hand-written checks reproduce the findings of ``conformance/findings.md``
in plain torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

import refsoftmax
from refsoftmax.conformance.cases import Case, generate, round_to_dtype
from refsoftmax.conformance.engine import run_case
from refsoftmax.conformance.targets import Target

torch = pytest.importorskip("torch")


def _cases(loss: str, names: set[str], dtypes: tuple[str, ...] = ("float64", "float32")) -> list[Case]:
    out = [c for c in generate(loss, max_examples=0, dtypes=dtypes) if c.name.split("[")[0] in names]
    assert {c.name.split("[")[0] for c in out} == names
    return out


def _statuses(target: Target, cases: list[Case]) -> dict[str, str]:
    return {c.name: run_case(target, c).status for c in cases}


# ------------------------------------------------------------------ transformers

CORE = {"basic", "leading-dims", "leading-dims-mean", "leading-dims-sum", "reduction-sum",
        "ignore-index-mean", "ignore-index-1", "ignore-index-0-mean", "all-ignored-mean",
        "label-too-large", "label-negative"}


@pytest.fixture(scope="module")
def hf() -> Any:
    pytest.importorskip("transformers.loss.loss_utils")
    from refsoftmax.conformance.adapters import transformers as adapter

    return adapter


@pytest.fixture(scope="module")
def hf_targets(hf: Any) -> dict[str, Target]:
    return {t.function: t for t in hf.targets()}


def test_transformers_targets_pass_on_core_cases(hf: Any, hf_targets: dict[str, Target]) -> None:
    cases = _cases("sparse_softmax_cross_entropy", CORE)
    for name, target in hf_targets.items():
        got = _statuses(target, cases)
        # ForCausalLMLoss computes in float32: float64 inputs pass at float32's tolerance only
        # (an all-ignored mean is NaN, and invalid labels are refused, at any precision)
        exact = {"all-ignored-mean", "label-too-large", "label-negative"}
        want = {c.name: ("convention" if target.compute_dtype == "float32" and c.dtype == "float64"
                         and c.name.split("[")[0] not in exact else "pass") for c in cases}
        assert got == want, name


def test_transformers_skips_what_it_cannot_express(hf_targets: dict[str, Target]) -> None:
    cases = _cases("sparse_softmax_cross_entropy", {"class-weights", "smoothing-0.1"}, ("float64",))
    for target in hf_targets.values():
        assert set(_statuses(target, cases).values()) == {"skipped"}


def test_the_label_shift_mapping_is_checked(hf: Any, hf_targets: dict[str, Target]) -> None:
    """A target that feeds ForCausalLMLoss unshifted labels (or a wrong count) fails."""
    import torch.nn.functional as F
    from transformers.loss.loss_utils import ForCausalLMLoss

    def unshifted(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        z, y = inputs["logits"], inputs["labels"]
        z, y = z.reshape(-1, *z.shape[-2:]), y.reshape(-1, y.shape[-1])
        return ForCausalLMLoss(F.pad(z, (0, 0, 0, 1)), F.pad(y, (0, 1)), z.shape[-1],
                               ignore_index=options.get("ignore_index", -100))

    causal = hf_targets["transformers.loss.loss_utils.ForCausalLMLoss"]
    wrong = dataclasses.replace(causal, call=unshifted)
    cases = _cases("sparse_softmax_cross_entropy", {"leading-dims-mean"}, ("float32",))
    assert _statuses(wrong, cases) == {"leading-dims-mean[float32]": "fail"}

    n = hf.NUM_ITEMS
    counted = hf_targets[f"transformers.loss.loss_utils.fixed_cross_entropy(num_items_in_batch={n})"]
    off = dataclasses.replace(counted, call=lambda i, o: counted.call(i, o) * (n + 1) / n)
    cases = _cases("sparse_softmax_cross_entropy", {"reduction-sum"}, ("float32",))
    assert _statuses(off, cases) == {"reduction-sum[float32]": "fail"}


def test_transformers_findings_by_hand(hf: Any) -> None:
    import torch.nn.functional as F
    from transformers.loss.loss_utils import ForCausalLMLoss, fixed_cross_entropy

    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 4, 5))
    y = np.array([[1, 4, -100, 0], [2, 2, 3, -100]])
    ref = refsoftmax.sparse_softmax_cross_entropy(z, y, ignore_index=-100, reduction="sum")
    zt, yt = torch.tensor(z), torch.tensor(y)
    # num_items_in_batch divides the sum by the count it is given, not by the batch's own count
    v = fixed_cross_entropy(zt.reshape(-1, 5), yt.reshape(-1), num_items_in_batch=torch.tensor(13))
    assert v.dtype == torch.float64 and abs(float(v) - ref / 13) < 1e-12
    # ForCausalLMLoss scores position t on label t + 1 and computes in float32 (the convention)
    logits, labels = F.pad(zt, (0, 0, 0, 1)), F.pad(yt, (1, 0))
    v = ForCausalLMLoss(logits, labels, 5, num_items_in_batch=torch.tensor(13))
    assert v.dtype == torch.float32
    assert abs(float(v) * 13 - ref) / ref < 2e-5
    # **kwargs swallows options it does not know: label smoothing and class weights are ignored
    plain = fixed_cross_entropy(zt.reshape(-1, 5), yt.reshape(-1))
    assert float(fixed_cross_entropy(zt.reshape(-1, 5), yt.reshape(-1), label_smoothing=0.5)) == float(plain)
    assert float(fixed_cross_entropy(zt.reshape(-1, 5), yt.reshape(-1), weight=torch.rand(5))) == float(plain)


# ------------------------------------------------------------------ pytorch-metric-learning

COS = "pytorch_metric_learning.losses.CosFaceLoss"
COS_PML = "pytorch_metric_learning.losses.CosFaceLoss (am_softmax_loss/pml cases)"
NORM = "pytorch_metric_learning.losses.NormalizedSoftmaxLoss"


@pytest.fixture(scope="module")
def pml() -> Any:
    pytest.importorskip("pytorch_metric_learning")
    from refsoftmax.conformance.adapters import pytorch_metric_learning as adapter

    return adapter


@pytest.fixture(scope="module")
def pml_targets(pml: Any) -> dict[str, Target]:
    return {t.function: t for t in pml.targets()}


def test_pml_targets_pass_on_core_cases(pml: Any, pml_targets: dict[str, Target]) -> None:
    cases = _cases("am_softmax_loss", {"basic", "one-class", "large-scores"})
    assert set(_statuses(pml_targets[COS], cases).values()) == {"pass"}
    cases = _cases(pml.SPEC, {"basic-mean", "basic-none", "basic-scale-20-mean", "one-example-mean",
                              "label-too-large", "label-negative"})
    for name in (COS_PML, NORM):
        assert set(_statuses(pml_targets[name], cases).values()) == {"pass"}, name
    margin = _cases(pml.SPEC, {"basic-margin-0.35-scale-64-mean"}, ("float64",))
    assert _statuses(pml_targets[COS_PML], margin) == {"basic-margin-0.35-scale-64-mean[float64]": "pass"}
    assert _statuses(pml_targets[NORM], margin) == {"basic-margin-0.35-scale-64-mean[float64]": "skipped"}


def test_pml_findings_in_the_certification(pml: Any, pml_targets: dict[str, Target]) -> None:
    invalid = _cases(pml.SPEC, {"label-minus-100", "zero-feature", "zero-weight-row"}, ("float64",))
    assert _statuses(pml_targets[COS_PML], invalid) == {
        "label-minus-100[float64]": "pass", "zero-feature[float64]": "fail", "zero-weight-row[float64]": "fail"}
    assert set(_statuses(pml_targets[NORM], invalid).values()) == {"fail"}
    half = _cases(pml.SPEC, {"basic-margin-0.35-scale-64-mean"}, ("float16",))
    result = run_case(pml_targets[COS_PML], half[0])
    assert result.status == "fail" and "gradient w.r.t. weights" in result.message


def _pml_loss(name: str, f: Any, w: Any, y: Any, scale: float, margin: float = 0.0) -> Any:
    from pytorch_metric_learning import losses
    from torch.func import functional_call

    c, d = w.shape
    if name == "cosface":
        module = losses.CosFaceLoss(num_classes=c, embedding_size=d, margin=margin, scale=scale)
    else:
        module = losses.NormalizedSoftmaxLoss(num_classes=c, embedding_size=d, temperature=1 / scale)
    return functional_call(module, {"W": w.T}, (f, y))


def test_pml_findings_by_hand(pml: Any) -> None:
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    f, w = rng.standard_normal((4, 5)), rng.standard_normal((5, 5))
    y = np.array([1, 4, 1, 1])
    # 1. a label -100: NormalizedSoftmaxLoss scores it 0 and still divides by all 4 rows
    y100 = np.array([0, -100, 2, 1])
    keep = [0, 2, 3]
    rest = refsoftmax.am_softmax_loss(f[keep], w, y100[keep], scale=8.0, margin=0.0)
    got = float(_pml_loss("norm", torch.tensor(f), torch.tensor(w), torch.tensor(y100), 8.0))
    assert abs(got - rest.sum() / 4) < 1e-12
    with pytest.raises(IndexError):  # CosFaceLoss indexes its target mask with the label
        _pml_loss("cosface", torch.tensor(f), torch.tensor(w), torch.tensor(y100), 8.0)
    # 2. a zero embedding: F.normalize's eps=1e-12 makes its gradient ~1e12 (NaN loss in float16)
    f0 = f.copy()
    f0[1] = 0.0
    ft = torch.tensor(f0, requires_grad=True)
    _pml_loss("cosface", ft, torch.tensor(w), torch.tensor(y), 8.0).backward()
    assert ft.grad is not None and float(ft.grad[1].abs().max()) > 1e11
    assert float(ft.grad[[0, 2, 3]].abs().max()) < 10
    half = _pml_loss("norm", torch.tensor(f0, dtype=torch.float16), torch.tensor(w, dtype=torch.float16),
                     torch.tensor(y), 8.0)
    assert bool(torch.isnan(half))
    # 3. half precision at scale 64: the cosines are rounded to float16 before the x64;
    #    the same formula computed in float32 is ~20x closer to the reference
    fq, wq = round_to_dtype(f, "float16"), round_to_dtype(w, "float16")
    _, ref = refsoftmax.am_softmax_loss.value_and_grad(fq, wq, y, scale=64.0, margin=0.35, reduction="mean",
                                                        cotangent=np.array(1.0))

    def weight_grad(upcast: bool, library: bool) -> np.ndarray:
        ft, wt = torch.tensor(fq, dtype=torch.float16), torch.tensor(wq, dtype=torch.float16, requires_grad=True)
        if library:
            loss = _pml_loss("cosface", ft, wt, torch.tensor(y), 64.0, 0.35)
        else:
            a, b = (ft.float(), wt.float()) if upcast else (ft, wt)
            cos = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
            psi = 64.0 * (cos - 0.35 * F.one_hot(torch.tensor(y), 5).to(cos.dtype))
            loss = F.cross_entropy(psi, torch.tensor(y))
        loss.backward()
        assert wt.grad is not None
        return np.asarray(wt.grad.double().numpy()) - ref["weights"]

    library, by_hand, upcast = (np.abs(weight_grad(u, lib)).max() for u, lib in
                                ((False, True), (False, False), (True, False)))
    assert library == by_hand  # PML is exactly that formula in float16
    assert library > 10 * upcast

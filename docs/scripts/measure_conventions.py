"""Measure which refsoftmax options reproduce other libraries' softmax cross-entropy.

Every installed library (PyTorch, TensorFlow, Keras 3 on each of its backends,
optax, PaddlePaddle) is run on small float64 inputs, one library per
subprocess.  For every convention question the library's value and gradient
are compared with ``refsoftmax`` evaluated under every combination of the
options that question is about; the combinations that reproduce the library
(to a relative 1e-12) are its convention.  Where none does, the numbers are
reported as they are.

Usage (from the repository root, with the peer libraries installed)::

    python docs/scripts/measure_conventions.py

writes ``docs/conventions.md`` and ``docs/scripts/conventions.json``.  A
library that is not installed is reported as such.  ``--date`` overrides the
date written into the page.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import importlib.metadata
import itertools
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent
MD_PATH = DOCS / "conventions.md"
JSON_PATH = HERE / "conventions.json"

SEED = 20261122
N, K = 6, 5  # examples, classes
EPS = 0.1
IGN = -100  # the ignore index used by most cases (PyTorch's and Paddle's default)
IGN_POS = 255  # a non-negative ignore index (Paddle treats the two signs differently)
CLASS_WEIGHTS = (0.5, 2.0, 1.5, 3.0, 0.25)
RTOL = 1e-12
LOOSE_RTOL = 1e-6  # "agrees only to float32 precision"

AXES: dict[str, tuple[Any, ...]] = {
    "label_smoothing_mode": ("uniform", "others"),
    "class_weighting": ("per_class", "target"),
    "mean_denominator": ("weights", "count", "all"),
    "empty_mean": ("nan", "zero"),
    "ignore_index": (None, IGN),
}


# ----------------------------------------------------------------------------- inputs


#: a hand-written section (sources read, not measured), kept on the regenerated page
Z_LOSS_SECTION = '''\
## z-loss and logit soft-capping

Not measured by this script (none of the libraries above has these options); read from the
sources, and what refsoftmax's `z_loss=` / `logit_softcap=` options of
`sparse_softmax_cross_entropy`, `softmax_cross_entropy` and `linear_softmax_cross_entropy`
do about each point:

| | refsoftmax | Liger-Kernel (`lse_square_scale`, `softcap`) | OLMo-core `cross_entropy_loss` | OLMo (v1 trainer) | Gemma 2 (HF `final_logit_softcapping`) |
|---|---|---|---|---|---|
| z-term per example | λ (log Z)², log Z over the allowed, capped logits | λ lse² | λ lse² (`z_loss_multiplier`, default 1e-4) | 1e-4 · lse² | — |
| ignored examples | no z-term | no z-term | masked out (`reduction="none"` returns it unmasked) | **included**: every position of the model's logits (padding, and the last position that predicts nothing) | — |
| class weights | do not multiply the z-term | do not | — | — | — |
| `"mean"` divides by | the cross-entropy's Ω (count of non-ignored examples without class weights) | the number of non-ignored tokens | the number of non-ignored tokens | **all** positions (`logits.logsumexp(-1).pow(2).mean()`) | — |
| returned | inside the loss | inside the loss (and separately with `return_z_loss`) | separately from the loss | separately | — |
| soft-cap | c·tanh(z/c) before everything; gradient × sech²(z/c) | the same, in the kernel | — | — | c·tanh(z/c) on the final logits (c = 30) |

Sources read: Liger `src/liger_kernel/ops/cross_entropy.py`, OLMo-core's
`cross_entropy_loss(..., compute_z_loss=True)`, OLMo `olmo/train.py` (`Trainer.train_batch`),
HF transformers' Gemma 2 model.  The OLMo v1 trainer's z-term is not refsoftmax's (no option
reproduces an unmasked mean over positions that carry no label).  In the
Liger kernel version read (`src/liger_kernel/ops/cross_entropy.py`, commit 02e90db), the
z-loss gradient with label smoothing ε is 2λ lse (p − ε/V) rather than 2λ lse p (the ε/V
term of the smoothing gradient is scaled along): a finite-difference check of its own value
would show it.
'''


def make_data() -> dict[str, np.ndarray]:
    """The inputs every library sees (float64 logits, int64 labels)."""
    rng = np.random.default_rng(SEED)
    z = rng.normal(scale=1.5, size=(N, K))
    y = rng.dirichlet(np.ones(K), size=N)
    t = np.array([0, 3, 1, 4, 2, 3], dtype=np.int64)
    ignored = np.array([False, True, False, False, True, False])

    z_inf = z.copy()
    z_inf[0, 2] = -np.inf  # row 0 (label 0): class 2 impossible
    y_inf = y.copy()
    y_inf[0, 2] = 0.0
    y_inf /= y_inf.sum(axis=1, keepdims=True)
    t_on_inf = t.copy()
    t_on_inf[0] = 2

    def with_row1(value: int) -> np.ndarray:
        out = t.copy()
        out[1] = value
        return out

    return {
        "z": z,
        "z_inf": z_inf,
        "y": y,
        "y_inf": y_inf,
        "w": np.asarray(CLASS_WEIGHTS, dtype=np.float64),
        "w_zero": np.asarray([0.0, 2.0, 0.0, 3.0, 0.25]),  # labels of t_zero_w weigh 0
        "t_zero_w": np.array([0, 2, 0, 2, 0, 2], dtype=np.int64),
        "t": t,
        "t_ign": np.where(ignored, IGN, t),
        "t_ign_pos": np.where(ignored, IGN_POS, t),
        "t_all_ign": np.full(N, IGN, dtype=np.int64),
        "t_all_ign_pos": np.full(N, IGN_POS, dtype=np.int64),
        "t_on_inf": t_on_inf,
        "t_oor": with_row1(K),
        "t_neg": with_row1(-1),
        "t_m100": with_row1(-100),
    }


@dataclass(frozen=True)
class Case:
    """One measurement: a loss call, and the refsoftmax options it is compared over."""

    id: str
    question: str
    tag: str
    family: str  # "sparse" (integer labels) or "dense" (a distribution per example)
    labels: str
    logits: str = "z"
    weights: bool = False
    ignore: int | None = None
    eps: float = 0.0
    reduction: str = "none"
    axes: tuple[str, ...] = ()
    row: int | None = None  # the row an edge case is about
    weights_key: str = "w"


_S, _D = "sparse", "dense"
_MODE, _WEIGHTING, _DENOM, _EMPTY = AXES_NAMES = (
    "label_smoothing_mode", "class_weighting", "mean_denominator", "empty_mean"
)

CASES: tuple[Case, ...] = (
    # -- how the smoothing mass is spread
    Case("s_smooth", "spread", "labels", _S, "t", eps=EPS, axes=(_MODE,)),
    Case("d_smooth", "spread", "soft labels", _D, "y", eps=EPS, axes=(_MODE,)),
    # -- smoothing combined with class weights
    Case("s_smooth_w", "smooth_weights", "per example", _S, "t", weights=True, eps=EPS,
         axes=(_MODE, _WEIGHTING)),
    Case("s_smooth_w_mean", "smooth_weights", "mean", _S, "t", weights=True, eps=EPS,
         reduction="mean", axes=(_MODE, _WEIGHTING, _DENOM)),
    Case("d_smooth_w", "smooth_weights", "soft labels", _D, "y", weights=True, eps=EPS,
         axes=(_MODE,)),
    Case("d_smooth_w_mean", "smooth_weights", "soft labels, mean", _D, "y", weights=True,
         eps=EPS, reduction="mean", axes=(_MODE, _DENOM)),
    # -- smoothing combined with ignored rows, under the mean
    Case("s_smooth_ign", "smooth_ignore", "ε=0.1", _S, "t_ign", ignore=IGN, eps=EPS,
         reduction="mean", axes=(_MODE, _DENOM)),
    Case("s_smooth_w_ign", "smooth_ignore", "ε=0.1, weights", _S, "t_ign", ignore=IGN,
         weights=True, eps=EPS, reduction="mean", axes=(_MODE, _WEIGHTING, _DENOM)),
    Case("s_smoothterm_ign", "smooth_ignore", "ε=1 (smoothing term alone)", _S, "t_ign",
         ignore=IGN, eps=1.0, reduction="mean", axes=(_MODE, _DENOM)),
    Case("s_smoothterm_w_ign", "smooth_ignore", "ε=1, weights", _S, "t_ign", ignore=IGN,
         weights=True, eps=1.0, reduction="mean", axes=(_MODE, _WEIGHTING, _DENOM)),
    # -- mean denominator with class weights
    Case("s_w_mean", "denom_weights", "labels", _S, "t", weights=True, reduction="mean",
         axes=(_DENOM,)),
    Case("d_w_mean", "denom_weights", "soft labels", _D, "y", weights=True, reduction="mean",
         axes=(_DENOM,)),
    # -- mean denominator with ignored rows
    Case("s_ign_mean", "denom_ignore", f"ignore {IGN}", _S, "t_ign", ignore=IGN,
         reduction="mean", axes=(_DENOM,)),
    Case("s_ign_pos_mean", "denom_ignore", f"ignore {IGN_POS}", _S, "t_ign_pos",
         ignore=IGN_POS, reduction="mean", axes=(_DENOM,)),
    Case("s_w_ign_mean", "denom_ignore", f"ignore {IGN}, weights", _S, "t_ign", ignore=IGN,
         weights=True, reduction="mean", axes=(_DENOM,)),
    Case("s_w_ign_pos_mean", "denom_ignore", f"ignore {IGN_POS}, weights", _S, "t_ign_pos",
         ignore=IGN_POS, weights=True, reduction="mean", axes=(_DENOM,)),
    # -- every row ignored
    Case("s_empty", "empty", f"ignore {IGN}", _S, "t_all_ign", ignore=IGN, reduction="mean",
         axes=(_EMPTY,)),
    Case("s_empty_pos", "empty", f"ignore {IGN_POS}", _S, "t_all_ign_pos", ignore=IGN_POS,
         reduction="mean", axes=(_EMPTY,)),
    Case("s_empty_w_smooth", "empty", "weights, ε=0.1", _S, "t_all_ign", ignore=IGN,
         weights=True, eps=EPS, reduction="mean", axes=(_EMPTY,)),
    Case("s_zero_weight", "empty", "Σ w[label] = 0, no row ignored", _S, "t_zero_w",
         weights=True, weights_key="w_zero", reduction="mean", axes=(_EMPTY,)),
    # -- edge inputs (per-example losses; compared with refsoftmax's defaults)
    Case("s_neginf", "neginf", "labels", _S, "t", logits="z_inf", row=0),
    Case("s_neginf_smooth", "neginf", "labels, ε=0.1", _S, "t", logits="z_inf", eps=EPS, row=0),
    Case("d_neginf", "neginf", "soft labels", _D, "y_inf", logits="z_inf", row=0),
    Case("s_label_on_neginf", "label_on_neginf", "labels", _S, "t_on_inf", logits="z_inf",
         row=0),
    Case("d_label_on_neginf", "label_on_neginf", "soft labels", _D, "y", logits="z_inf", row=0),
    Case("s_oor", "out_of_range", "label = C", _S, "t_oor", row=1),
    Case("s_negative", "negative", "label −1", _S, "t_neg", row=1),
    Case("s_m100", "default_ignore", "label −100", _S, "t_m100", axes=("ignore_index",), row=1),
)
CASE_BY_ID = {c.id: c for c in CASES}

QUESTIONS = {
    "spread": "Smoothing spread",
    "smooth_weights": "Smoothing × class weights",
    "smooth_ignore": "Smoothing × ignored rows (mean)",
    "denom_weights": "Mean denominator, class weights",
    "denom_ignore": "Mean denominator, ignored rows",
    "empty": "Zero denominator (mean): value, gradient",
    "neginf": "−∞ logit (not the label)",
    "label_on_neginf": "Label on a −∞ logit",
    "out_of_range": "Label = C (out of range)",
    "negative": "Label −1 (no ignore set)",
    "default_ignore": "Label −100 (no ignore set)",
}
CONVENTION_QUESTIONS = ("spread", "smooth_weights", "smooth_ignore", "denom_weights",
                        "denom_ignore", "empty")
EDGE_QUESTIONS = ("neginf", "label_on_neginf", "out_of_range", "negative", "default_ignore")

# -- the library APIs: id -> (subprocess group, row label, how class weights are passed)
APIS: dict[str, tuple[str, str]] = {
    "torch_index": ("torch", "PyTorch `F.cross_entropy`, class-index targets"),
    "torch_prob": ("torch", "PyTorch `F.cross_entropy`, probability targets"),
    "tf_nn_sparse": ("tf", "TF `tf.nn.sparse_softmax_cross_entropy_with_logits`"),
    "tf_nn_dense": ("tf", "TF `tf.nn.softmax_cross_entropy_with_logits`"),
    "tf_v1": ("tf", "TF `tf.compat.v1.losses.softmax_cross_entropy`"),
    "keras_scce": ("keras", "Keras `SparseCategoricalCrossentropy`, `sum_over_batch_size`"),
    "keras_scce_mws": ("keras",
                       "Keras `SparseCategoricalCrossentropy`, `mean_with_sample_weight`"),
    "keras_cce": ("keras", "Keras `CategoricalCrossentropy`, `sum_over_batch_size`"),
    "keras_cce_mws": ("keras", "Keras `CategoricalCrossentropy`, `mean_with_sample_weight`"),
    "optax_int": ("optax", "optax `softmax_cross_entropy_with_integer_labels`"),
    "optax_dense": ("optax", "optax `softmax_cross_entropy` (+ `smooth_labels`)"),
    "optax_safe": ("optax", "optax `safe_softmax_cross_entropy` (+ `smooth_labels`)"),
    "paddle_index": ("paddle", "Paddle `F.cross_entropy`, integer labels"),
    "paddle_soft": ("paddle", "Paddle `F.cross_entropy`, `soft_label=True`"),
}
KERAS_BACKENDS = ("tensorflow", "jax", "torch")


# ----------------------------------------------------------------------------- probes
# Everything below up to "comparison" runs inside one subprocess per library.


class NotApplicable(Exception):
    """The API has no way to express this case."""


def dense_labels(case: Case, data: dict[str, np.ndarray]) -> np.ndarray:
    """The case's labels as a distribution per row (one-hot for integer labels)."""
    if case.family == _D:
        return data[case.labels]
    if case.ignore is not None:
        raise NotApplicable("no ignore index for distribution labels")
    labels = data[case.labels]
    if np.any((labels < 0) | (labels >= K)):
        raise NotApplicable("an invalid integer label has no one-hot form")
    return np.eye(K)[labels]


def sample_weights(case: Case, data: dict[str, np.ndarray]) -> np.ndarray:
    """Class weights passed per example, as ``Model.fit(class_weight=...)`` does: w[label].

    Ignored rows get 0.
    """
    if case.family != _S:
        raise NotApplicable("class weights for distribution labels")
    labels = data[case.labels]
    valid = (labels >= 0) & (labels < K)
    return np.where(valid, data[case.weights_key][np.where(valid, labels, 0)], 0.0)


def _reject(case: Case, *, eps: bool = False, weights: bool = False, ignore: bool = False,
            mean: bool = False, what: str = "") -> None:
    if eps and case.eps:
        raise NotApplicable(f"no label smoothing{what}")
    if weights and case.weights:
        raise NotApplicable(f"no class weights{what}")
    if ignore and case.ignore is not None:
        raise NotApplicable(f"no ignore index{what}")
    if mean and case.reduction != "none":
        raise NotApplicable(f"per-example losses only{what}")


def probe_torch(data: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    def run(api: str, case: Case) -> tuple[Any, Any]:
        z = torch.tensor(data[case.logits], requires_grad=True)
        kw: dict[str, Any] = {"reduction": case.reduction, "label_smoothing": case.eps}
        if case.weights:
            kw["weight"] = torch.tensor(data[case.weights_key])
        if api == "torch_index":
            if case.family != _S:
                raise NotApplicable("class-index targets")
            if case.ignore is not None:
                kw["ignore_index"] = case.ignore
            target = torch.tensor(data[case.labels])
        else:
            target = torch.tensor(dense_labels(case, data))
        out = F.cross_entropy(z, target, **kw)
        out.sum().backward()
        return out.detach().numpy(), z.grad.numpy()

    return {"versions": {"torch": torch.__version__},
            "runner": run, "apis": ["torch_index", "torch_prob"]}


def probe_tf(data: dict[str, np.ndarray]) -> dict[str, Any]:
    import tensorflow as tf

    def value_and_grad(fn: Any, z: np.ndarray) -> tuple[Any, Any]:
        v = tf.Variable(z)
        with tf.GradientTape() as tape:
            out = fn(v)
            total = tf.reduce_sum(out)
        g = tape.gradient(total, v)
        return out.numpy(), None if g is None else g.numpy()

    def run(api: str, case: Case) -> tuple[Any, Any]:
        if api == "tf_nn_sparse":
            if case.family != _S:
                raise NotApplicable("integer labels")
            _reject(case, eps=True, weights=True, ignore=True, mean=True)
            labels = tf.constant(data[case.labels])
            return value_and_grad(
                lambda v: tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=v),
                data[case.logits])
        if api == "tf_nn_dense":
            _reject(case, eps=True, weights=True, mean=True)
            labels = tf.constant(dense_labels(case, data))
            return value_and_grad(
                lambda v: tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=v),
                data[case.logits])
        # tf.compat.v1.losses.softmax_cross_entropy: per-example weights, default reduction
        labels = tf.constant(dense_labels(case, data))
        weights = sample_weights(case, data) if case.weights else 1.0
        red = tf.compat.v1.losses.Reduction
        reduction = red.NONE if case.reduction == "none" else red.SUM_BY_NONZERO_WEIGHTS
        return value_and_grad(
            lambda v: tf.compat.v1.losses.softmax_cross_entropy(
                labels, v, weights=weights, label_smoothing=case.eps, reduction=reduction),
            data[case.logits])

    versions = {"tensorflow": tf.__version__}
    try:
        import keras

        if tf.keras.__name__.startswith("keras"):
            versions["tf.keras"] = f"Keras {keras.__version__} (tf.keras is Keras 3)"
    except ImportError:
        pass
    return {"versions": versions, "runner": run, "apis": ["tf_nn_sparse", "tf_nn_dense", "tf_v1"]}


def probe_keras(data: dict[str, np.ndarray]) -> dict[str, Any]:
    backend = os.environ["KERAS_BACKEND"]
    __import__(backend)  # ImportError (reported as "not measured") if the backend is missing
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    import keras

    keras.config.set_floatx("float64")

    def value_and_grad(fn: Any, z: np.ndarray) -> tuple[Any, Any]:
        if backend == "tensorflow":
            import tensorflow as tf

            v = tf.Variable(z)
            with tf.GradientTape() as tape:
                out = fn(v)
                total = tf.reduce_sum(out)
            g = tape.gradient(total, v)
            return out.numpy(), None if g is None else g.numpy()
        if backend == "jax":
            import jax
            import jax.numpy as jnp

            zj = jnp.asarray(z)
            return np.asarray(fn(zj)), np.asarray(jax.grad(lambda a: jnp.sum(fn(a)))(zj))
        import torch

        zt = torch.tensor(z, requires_grad=True)
        out = fn(zt)
        out.sum().backward()
        return out.detach().cpu().numpy(), zt.grad.cpu().numpy()

    def run(api: str, case: Case) -> tuple[Any, Any]:
        mean = "mean_with_sample_weight" if api.endswith("_mws") else "sum_over_batch_size"
        reduction = {"none": None, "sum": "sum", "mean": mean}[case.reduction]
        sw = sample_weights(case, data) if case.weights else None
        if api.startswith("keras_scce"):
            if case.family != _S:
                raise NotApplicable("integer labels")
            _reject(case, eps=True)
            labels = data[case.labels]
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, ignore_class=case.ignore, reduction=reduction, dtype="float64")
        else:
            labels = dense_labels(case, data)
            loss = keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=case.eps, reduction=reduction, dtype="float64")
        return value_and_grad(lambda v: loss(labels, v, sample_weight=sw), data[case.logits])

    return {"versions": {"keras": keras.__version__},
            "runner": run, "apis": ["keras_scce", "keras_scce_mws", "keras_cce", "keras_cce_mws"]}


def probe_optax(data: dict[str, np.ndarray]) -> dict[str, Any]:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    def value_and_grad(fn: Any, z: np.ndarray) -> tuple[Any, Any]:
        zj = jnp.asarray(z)
        return np.asarray(fn(zj)), np.asarray(jax.grad(lambda a: jnp.sum(fn(a)))(zj))

    def run(api: str, case: Case) -> tuple[Any, Any]:
        _reject(case, weights=True, ignore=True, mean=True, what=" (optax)")
        if api == "optax_int":
            if case.family != _S:
                raise NotApplicable("integer labels")
            _reject(case, eps=True)
            labels = jnp.asarray(data[case.labels])
            return value_and_grad(
                lambda v: optax.softmax_cross_entropy_with_integer_labels(v, labels),
                data[case.logits])
        labels = jnp.asarray(dense_labels(case, data))
        if case.eps:
            labels = optax.smooth_labels(labels, case.eps)
        fn = optax.softmax_cross_entropy if api == "optax_dense" else (
            optax.safe_softmax_cross_entropy)
        return value_and_grad(lambda v: fn(v, labels), data[case.logits])

    return {"versions": {"optax": optax.__version__, "jax": jax.__version__},
            "runner": run, "apis": ["optax_int", "optax_dense", "optax_safe"]}


def probe_paddle(data: dict[str, np.ndarray]) -> dict[str, Any]:
    import warnings

    warnings.filterwarnings("ignore")
    import paddle
    import paddle.nn.functional as F

    paddle.set_device("cpu")

    def run(api: str, case: Case) -> tuple[Any, Any]:
        z = paddle.to_tensor(data[case.logits], stop_gradient=False)
        kw: dict[str, Any] = {"reduction": case.reduction, "label_smoothing": case.eps}
        if case.weights:
            kw["weight"] = paddle.to_tensor(data[case.weights_key])
        if api == "paddle_index":
            if case.family != _S:
                raise NotApplicable("integer labels")
            if case.ignore is not None:
                kw["ignore_index"] = case.ignore
            labels = paddle.to_tensor(data[case.labels])
        else:
            labels = paddle.to_tensor(dense_labels(case, data))
            kw["soft_label"] = True
        out = F.cross_entropy(z, labels, **kw)
        out.sum().backward()
        return out.numpy(), z.grad.numpy()

    return {"versions": {"paddlepaddle": paddle.__version__},
            "runner": run, "apis": ["paddle_index", "paddle_soft"]}


PROBES = {"torch": probe_torch, "tf": probe_tf, "keras": probe_keras, "optax": probe_optax,
          "paddle": probe_paddle}


def _jsonable(x: Any) -> Any:
    """Arrays and floats as JSON: lists, with NaN/±inf as the strings "nan"/"inf"/"-inf"."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))
    if isinstance(x, np.integer):
        return int(x)
    return x


def _from_json(x: Any) -> Any:
    """Inverse of ``_jsonable`` for a value or gradient: a float64 array (or None)."""
    if x is None:
        return None
    fix = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}

    def walk(v: Any) -> Any:
        return [walk(u) for u in v] if isinstance(v, list) else fix.get(v, v)

    return np.asarray(walk(x), dtype=np.float64)


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    first = next((line.strip() for line in msg if line.strip()), "")
    return f"{type(exc).__name__}: {first[:220]}"


def run_probe(group: str, out_path: str) -> None:
    """Subprocess entry point: run every case on every API of ``group``; write JSON."""
    data = make_data()
    result: dict[str, Any] = {"group": group, "backend": os.environ.get("KERAS_BACKEND")}
    try:
        probe = PROBES[group](data)
    except ImportError as exc:
        result["unavailable"] = _error_text(exc)
        Path(out_path).write_text(json.dumps(result))
        return
    result["versions"] = probe["versions"]
    measured: dict[str, dict[str, Any]] = {}
    for api in probe["apis"]:
        measured[api] = {}
        for case in CASES:
            entry: dict[str, Any]
            try:
                with np.errstate(all="ignore"):
                    value, grad = probe["runner"](api, case)
                value = np.asarray(value)
                entry = {"dtype": str(value.dtype), "shape": list(value.shape)}
                if value.shape == (N, 1):  # Paddle's soft-label path keeps a trailing 1
                    value = value[:, 0]
                entry["value"] = _jsonable(value.astype(np.float64))
                entry["grad"] = None if grad is None else _jsonable(np.asarray(grad, np.float64))
            except NotApplicable as exc:
                entry = {"na": str(exc)}
            except Exception as exc:  # the library's own error is a measurement
                entry = {"error": _error_text(exc)}
            measured[api][case.id] = entry
    result["measured"] = measured
    Path(out_path).write_text(json.dumps(result))


# ----------------------------------------------------------------------------- comparison


def ref_call(case: Case, data: dict[str, np.ndarray], opts: dict[str, Any]) -> dict[str, Any]:
    """refsoftmax on the case's inputs with ``opts``: value and gradient w.r.t. the logits."""
    import refsoftmax

    kw: dict[str, Any] = {"reduction": case.reduction, "label_smoothing": case.eps}
    if case.weights:
        kw["class_weights"] = data[case.weights_key]
    if case.family == _S:
        fn = refsoftmax.sparse_softmax_cross_entropy
        if case.ignore is not None:
            kw["ignore_index"] = case.ignore
    else:
        fn = refsoftmax.softmax_cross_entropy
    kw.update(opts)
    try:
        with np.errstate(all="ignore"):
            value, grads = fn.value_and_grad(data[case.logits], data[case.labels], **kw)
    except Exception as exc:
        return {"error": _error_text(exc)}
    return {"value": np.asarray(value, np.float64), "grad": np.asarray(grads["logits"])}


def candidates(case: Case) -> list[dict[str, Any]]:
    """Every combination of the case's option axes (dense losses have no class_weighting)."""
    axes = [a for a in case.axes if not (case.family == _D and a == _WEIGHTING)]
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*(AXES[a] for a in axes))]


def close(a: Any, b: Any, rtol: float) -> bool:
    """Equal shapes and values within ``rtol`` (atol alike); NaN equals NaN, inf equals inf."""
    if a is None or b is None:
        return False
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=rtol, equal_nan=True))


def fmt(x: Any, digits: int = 10) -> str:
    if x is None:
        return "—"
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        v = float(arr)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "+inf" if v > 0 else "−inf"
        if v == 0:
            return "0"
        return f"{v:.{digits}g}"
    return "[" + ", ".join(fmt(v, digits) for v in arr.ravel()) + "]"


def fmt_val(axis: str, value: Any) -> str:
    return f"`ignore_index={value}`" if axis == "ignore_index" else f"`{value}`"


def fmt_opts(opts: dict[str, Any]) -> str:
    return " · ".join(fmt_val(k, v) for k, v in opts.items())


def summarize(matches: list[dict[str, Any]]) -> str:
    """Matched option combinations, per axis when they form a product ('a/b' = both fit)."""
    if not matches:
        return ""
    keys = list(matches[0])
    if not keys:
        return "same as refsoftmax"
    per_axis = [[] for _ in keys]
    for m in matches:
        for i, k in enumerate(keys):
            if m[k] not in per_axis[i]:
                per_axis[i].append(m[k])
    if math.prod(len(s) for s in per_axis) == len(matches):
        return " · ".join("/".join(fmt_val(k, v) for v in s) for k, s in zip(keys, per_axis, strict=True))
    return " or ".join(fmt_opts(m) for m in matches)


# -- hypotheses that explain a number no refsoftmax option reproduces (value only)


def _ce(z: np.ndarray, q: np.ndarray) -> np.ndarray:
    import refsoftmax

    with np.errstate(all="ignore"):
        return np.asarray(refsoftmax.softmax_cross_entropy(z, q), np.float64)


def _paddle_smooth(q: np.ndarray, eps: float, *, in_float32: bool) -> np.ndarray:
    """Paddle's ``label_smooth``: ε enters as float32 (1 − ε and ε/C rounded to float32).

    With ``in_float32`` the labels themselves are float32 (the one-hot that
    ``cross_entropy`` builds from integer labels) and so is the result.
    """
    one_minus = np.float32(1.0) - np.float32(eps)
    share = np.float32(eps) / np.float32(q.shape[-1])
    if in_float32:
        return (q.astype(np.float32) * one_minus + share).astype(np.float64)
    return q * np.float64(one_minus) + np.float64(share)


def hypothesis_paddle_soft(case: Case, data: dict[str, np.ndarray], *,
                           from_integers: bool = False) -> tuple[str, Any]:
    """Paddle's soft-label path (also taken for integer labels when label_smoothing > 0)."""
    z = data[case.logits]
    q = dense_labels(case, data)
    parts = []
    if np.isinf(z).any():
        z = np.maximum(z - z.max(axis=-1, keepdims=True), -64.0)
        parts.append("logits more than 64 below the row's max are clipped to max − 64 (a −∞ "
                     "logit gets p = e^−64/s > 0)")
    if case.eps:
        q = _paddle_smooth(q, case.eps, in_float32=from_integers)
        if from_integers:
            parts.append("q = float32(onehot·f32(1−ε) + f32(ε/C)) computed in float32 "
                         "(Σq ≠ 1 by ~1e-8)")
        else:
            parts.append("q = y·f32(1−ε) + f32(ε/C) with 1−ε and ε/C rounded to float32 "
                         "(Σq ≠ 1 by ~1e-8)")
    losses = _ce(z, q)
    g = None
    if case.weights:
        g = q @ data[case.weights_key]
        losses = losses * g
        parts.append("ℓ_i = (Σ_c w_c q_ic) · Σ_c q_ic(−log p_ic) (the row's weight is w·q)")
    if case.reduction == "none":
        value = losses
    elif case.reduction == "sum":
        value = losses.sum()
    elif g is not None:
        value = losses.sum() / g.sum()
        parts.append("mean = Σ_i ℓ_i / Σ_i w·q_i")
    else:
        value = losses.mean()
        parts.append("mean over all rows")
    return "; ".join(parts), value


def hypothesis_paddle_index(case: Case, data: dict[str, np.ndarray]) -> tuple[str, Any]:
    if case.eps or np.isinf(data[case.logits]).any():
        return hypothesis_paddle_soft(case, data, from_integers=True)
    raise NotApplicable("")


HYPOTHESES = {"paddle_index": hypothesis_paddle_index, "paddle_soft": hypothesis_paddle_soft}


def evaluate(api: str, case: Case, lib: dict[str, Any], data: dict[str, np.ndarray],
             ref_cache: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """Compare one measurement with every refsoftmax candidate; produce a verdict."""
    out: dict[str, Any] = {"api": api, "case": case.id}
    if "na" in lib:
        return {**out, "kind": "na", "verdict": f"n/a ({lib['na']})"}
    cands = []
    for opts in candidates(case):
        key = (case.id, json.dumps(opts, default=str))
        if key not in ref_cache:
            ref_cache[key] = ref_call(case, data, opts)
        cands.append({"options": opts, **ref_cache[key]})
    out["candidates"] = cands
    if "error" in lib:
        out["library"] = lib
        ref_errors = [c for c in cands if "error" in c]
        if len(ref_errors) == len(cands):
            also = "refsoftmax raises too"
        elif ref_errors:
            also = "refsoftmax raises with " + ", ".join(fmt_opts(c["options"]) for c in ref_errors)
        else:
            also = "refsoftmax returns a value"
        kind = "error" if ref_errors else "error_differs"
        return {**out, "kind": kind, "verdict": f"raises {lib['error'].split(':')[0]} ({also})"}
    value, grad = _from_json(lib["value"]), _from_json(lib.get("grad"))
    out["library"] = {"value": value, "grad": grad, "dtype": lib.get("dtype"),
                      "shape": lib.get("shape")}

    def fits(c: dict[str, Any], rtol: float, with_grad: bool = True) -> bool:
        return "value" in c and close(value, c["value"], rtol) and (
            not with_grad or grad is None or close(grad, c["grad"], rtol))

    full = [c["options"] for c in cands if fits(c, RTOL)]
    value_only = [c["options"] for c in cands if fits(c, RTOL, with_grad=False)]
    loose = [c for c in cands if fits(c, LOOSE_RTOL)]
    out.update(matches=full, value_matches=value_only,
               loose_matches=[c["options"] for c in loose])

    hyp = None
    if not full and api in HYPOTHESES:
        try:
            text, hval = HYPOTHESES[api](case, data)
            if close(value, np.asarray(hval, np.float64), RTOL):
                hyp = text
        except NotApplicable:
            pass
    out["hypothesis"] = hyp
    if case.row is not None and not full:  # an edge input: describe what happens
        ref = cands[0]
        out["kind"] = "edge_differs"
        if "error" in ref and len(cands) == 1:
            out["verdict"] = f"returns {describe_row(case, value, grad)} (refsoftmax raises)"
        elif loose and not case.axes:
            out["kind"] = "approx"
            out["verdict"] = (f"≈ refsoftmax ({describe_row(case, value, grad)}; agrees to "
                              f"{rel_diff(value, loose[0]['value']):.0e} only)")
        else:
            ref = next((c for c in cands if "value" in c), ref)
            out["verdict"] = edge_difference(case, value, grad, ref)
        return out
    if full:
        out["kind"] = "match"
        out["verdict"] = summarize(full)
        if case.row is not None:
            out["verdict"] = (f"ignored (as {out['verdict']})" if case.axes else
                              f"= refsoftmax ({describe_row(case, value, grad)})")
        if case.question == "empty":
            out["verdict"] += f", grad {grad_word(grad)}"
        return out
    if loose:
        rel = max(rel_diff(value, c["value"]) for c in loose)
        out["kind"] = "approx"
        out["verdict"] = f"≈ {summarize(out['loose_matches'])} (agrees to {rel:.0e} only)"
    elif value_only:
        out["kind"] = "value_only"
        out["verdict"] = (f"value: {summarize(value_only)}; gradient matches none "
                          f"(library grad {grad_word(grad)})")
    else:
        out["kind"] = "none"
        out["verdict"] = "matches none"
    return out


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest relative difference over the entries where both are finite."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return 0.0
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300)))


def grad_word(grad: np.ndarray | None) -> str:
    if grad is None:
        return "not available"
    if np.isnan(grad).any():
        return "NaN"
    if not np.any(grad):
        return "0"
    return "finite" if np.isfinite(grad).all() else "has ±inf"


def describe_row(case: Case, value: Any, grad: Any) -> str:
    r = case.row if case.row is not None else 0
    v = np.asarray(value, np.float64)
    text = f"loss[{r}] {fmt(v[r] if v.ndim else v, 6)}"
    if grad is not None:
        text += f", grad[{r}] {grad_word(np.asarray(grad, np.float64)[r])}"
    return text


def edge_difference(case: Case, value: Any, grad: Any, ref: dict[str, Any]) -> str:
    """How the library's edge-case row differs from refsoftmax's (short, for a table cell)."""
    r = case.row if case.row is not None else 0
    v, rv = np.asarray(value, np.float64), ref["value"]
    parts = []
    if v.shape != rv.shape:
        parts.append(f"shape {v.shape} vs refsoftmax {rv.shape}")
    elif not close(v[r], rv[r], LOOSE_RTOL):
        parts.append(f"loss[{r}] {fmt(v[r], 6)} (refsoftmax {fmt(rv[r], 6)})")
    else:
        parts.append(f"loss[{r}] {fmt(v[r], 6)} as refsoftmax")
    if grad is not None:
        g, rg = np.asarray(grad, np.float64), ref["grad"]
        if g.shape == rg.shape and close(g[r], rg[r], LOOSE_RTOL):
            parts.append(f"grad[{r}] as refsoftmax ({grad_word(g[r])})")
        else:
            parts.append(f"grad[{r}] {grad_word(g[r])} differs from refsoftmax's")
    if v.shape == rv.shape:
        others = [i for i in range(len(v)) if i != r and not close(v[i], rv[i], LOOSE_RTOL)]
        if others:
            parts.append(f"rows {others} differ too")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- driver


def run_groups() -> list[dict[str, Any]]:
    """Run each library's probe in its own subprocess (Keras once per backend)."""
    jobs = [("torch", None), ("tf", None), ("optax", None), ("paddle", None)]
    jobs += [("keras", b) for b in KERAS_BACKENDS]

    def launch(job: tuple[str, str | None]) -> dict[str, Any]:
        group, backend = job
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
        if backend:
            env["KERAS_BACKEND"] = backend
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "out.json")
            proc = subprocess.run(
                [sys.executable, __file__, "--probe", group, "--out", path],
                env=env, capture_output=True, text=True, timeout=110, check=False)
            if proc.returncode != 0 or not os.path.exists(path):
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                return {"group": group, "backend": backend,
                        "unavailable": f"probe failed (exit {proc.returncode}): {' | '.join(tail)}"}
            return json.loads(Path(path).read_text())

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(launch, jobs))


def versions_of(groups: list[dict[str, Any]]) -> dict[str, str]:
    import refsoftmax

    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "refsoftmax": refsoftmax.__version__}
    for g in groups:
        versions.update(g.get("versions", {}))
    for dist in ("jaxlib", "tensorflow-cpu", "tensorflow"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.setdefault(dist, importlib.metadata.version(dist))
    keras_backends = [g["backend"] for g in groups if g["group"] == "keras" and "measured" in g]
    if keras_backends:
        versions["keras backends measured"] = ", ".join(keras_backends)
    return versions


def main(date: str) -> None:
    data = make_data()
    groups = run_groups()
    ref_cache: dict[tuple[str, str], dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    for g in groups:
        label = g["group"] + (f" [{g['backend']}]" if g.get("backend") else "")
        if "measured" not in g:
            unavailable[label] = g.get("unavailable", "unknown")
            continue
        for api, per_case in g["measured"].items():
            for case in CASES:
                res = evaluate(api, case, per_case[case.id], data, ref_cache)
                res["backend"] = g.get("backend")
                results.append(res)
    versions = versions_of(groups)
    write_json(date, versions, unavailable, results, data, ref_cache)
    MD_PATH.write_text(render_md(date, versions, unavailable, results))
    print(f"wrote {MD_PATH} and {JSON_PATH} ({len(results)} measurements)")


def write_json(date: str, versions: dict[str, str], unavailable: dict[str, str],
               results: list[dict[str, Any]], data: dict[str, np.ndarray],
               ref_cache: dict[tuple[str, str], dict[str, Any]]) -> None:
    refs: dict[str, list[dict[str, Any]]] = {}
    for (case_id, opts), ref in ref_cache.items():
        refs.setdefault(case_id, []).append({"options": json.loads(opts), **ref})
    slim = [{k: v for k, v in r.items() if k != "candidates"} for r in results]
    payload = {
        "generated": date,
        "generator": "docs/scripts/measure_conventions.py",
        "tolerance": {"rtol": RTOL, "atol": RTOL},
        "versions": versions,
        "unavailable": unavailable,
        "inputs": {"seed": SEED, "examples": N, "classes": K, "label_smoothing": EPS,
                   "ignore_index": IGN, "nonnegative_ignore_index": IGN_POS,
                   "arrays": data},
        "option_axes": AXES,
        "cases": {c.id: asdict(c) for c in CASES},
        "apis": {k: v[1] for k, v in APIS.items()},
        "refsoftmax": refs,
        "results": slim,
    }
    text = json.dumps(_jsonable(payload), indent=1, ensure_ascii=False)
    # one line per innermost list of numbers/strings keeps the file readable and small
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    text = re.sub(r"\{\s+([^\[\]{}]*?)\s+\}",
                  lambda m: "{" + ", ".join(x.strip() for x in m.group(1).split(",\n")) + "}",
                  text)
    JSON_PATH.write_text(text + "\n")


# ----------------------------------------------------------------------------- markdown

FLAGGED = ("none", "value_only", "approx", "edge_differs", "error_differs")


def _cell(results: list[dict[str, Any]], question: str) -> str:
    """One table cell: every case of ``question`` measured on one API (and backend)."""
    rows = [r for r in results if CASE_BY_ID[r["case"]].question == question]
    if not rows or all(r["kind"] == "na" for r in rows):
        return "n/a"
    lines = []
    for r in rows:
        if r["kind"] == "na":
            continue
        verdict = r["verdict"]
        if r["kind"] in FLAGGED:
            verdict = f"**{verdict}** [{r['note']}]"
        tag = CASE_BY_ID[r["case"]].tag
        lines.append(verdict if len(rows) == 1 else f"{tag}: {verdict}")
    return "<br>".join(lines)


def render_md(date: str, versions: dict[str, str], unavailable: dict[str, str],
              results: list[dict[str, Any]]) -> str:
    notes: list[str] = []
    texts: dict[str, int] = {}
    for r in results:
        if r["kind"] in FLAGGED:
            text = note_text(r)
            # one note for the same finding on several Keras backends / reductions
            key = text.split(": ", 1)[1]
            if key not in texts:
                notes.append(text)
                texts[key] = len(notes)
            else:
                notes[texts[key] - 1] = _merge_note_labels(notes[texts[key] - 1], text)
            r["note"] = f"n{texts[key]}"
    by_row: dict[str, dict[str | None, list[dict[str, Any]]]] = {}
    for r in results:
        by_row.setdefault(r["api"], {}).setdefault(r["backend"], []).append(r)

    def table(questions: tuple[str, ...]) -> list[str]:
        out = ["| Library / API | " + " | ".join(QUESTIONS[q] for q in questions) + " |",
               "|---" * (len(questions) + 1) + "|"]
        for api, (_, label) in APIS.items():
            if api not in by_row:
                continue
            per_backend = by_row[api]
            cells = []
            for q in questions:
                texts_q = {b: _cell(rs, q) for b, rs in per_backend.items()}
                if len(set(texts_q.values())) == 1:
                    cells.append(next(iter(texts_q.values())))
                else:
                    cells.append("<br>".join(f"*{b}:* {t}" for b, t in texts_q.items()))
            if len(per_backend) > 1:
                label += " [" + ", ".join(str(b) for b in per_backend) + "]"
            if all(c == "n/a" for c in cells):
                continue
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        return out

    lines = [
        "# Softmax cross-entropy conventions of other libraries, measured",
        "",
        "Where libraries disagree, refsoftmax makes the convention an option "
        "(`label_smoothing_mode`, `class_weighting`, `mean_denominator`, `empty_mean`); this "
        "page records which option values reproduce each library's numbers, found by running "
        "the library and refsoftmax on the same float64 inputs.",
        "",
        f"*Generated on {date} by `docs/scripts/measure_conventions.py`; the raw numbers are in "
        "`docs/scripts/conventions.json`.*",
        "",
        "## How to read the tables",
        "",
        f"Inputs: {N} examples, C = {K} classes, logits ~ N(0, 1.5²) (seed {SEED}), class "
        f"weights w = {list(CLASS_WEIGHTS)}, ε = {EPS}; in the \"ignored rows\" cases two of "
        f"the six rows carry the ignore index ({IGN}, or {IGN_POS} where the cell says so).",
        "",
        "- A cell lists the refsoftmax option values whose value **and** gradient (w.r.t. the "
        "logits, of the summed output) agree with the library's to rtol = atol = "
        f"{RTOL:g}, in the order label_smoothing_mode · class_weighting · mean_denominator "
        "(or empty_mean).",
        "- `a/b`: both values reproduce the number on that input (the input cannot tell them "
        "apart, e.g. `weights/count` without class weights, `count/all` without ignored rows).",
        f"- **≈ …** (agrees to ~1e-8 only): no option matches to {RTOL:g}, but these do to "
        f"{LOOSE_RTOL:g}: the convention is that one, with part of the computation done in "
        "float32 (the note says where, when that is known).",
        "- **matches none**: no option reproduces the number; the note gives the numbers and, "
        "where one was found, the formula that does reproduce them.",
        "- TF v1 and Keras have no per-class weights; there class weights are passed per "
        "example, `sample_weight = w[label]` (0 on ignored rows), which is what Keras' "
        "`Model.fit(class_weight=...)` does.  optax has neither weights nor reductions nor an "
        "ignore index; `tf.nn.*` have no options at all.",
        "- Case tags: *labels* = integer labels (one-hot rows for APIs that take "
        "distributions), *soft labels* = random distributions; the Cases table at the end "
        "lists every case.",
        "- *n/a*: the API cannot express the case.  [nK] points to note K below.",
        "",
        "## Conventions",
        "",
        *table(CONVENTION_QUESTIONS),
        "",
        "## Edge inputs",
        "",
        "Per-example losses (`reduction=\"none\"`) compared with refsoftmax's defaults; "
        "`loss[r]`/`grad[r]` is the row the case is about.  refsoftmax: a −∞ logit is an "
        "impossible class (probability 0, gradient 0 on it, and no NaN from 0·(−∞) when it "
        "carries no label mass); label mass on it gives loss +∞; an integer label outside "
        "[0, C) that is not `ignore_index` raises `ValueError` (`ignore_index` defaults to "
        "`None`).",
        "",
        *table(EDGE_QUESTIONS),
        "",
    ]
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- **n{i}.** {n}" for i, n in enumerate(notes, 1)]
        lines.append("")
    lines += ["## Cases", "", "| Case | Column | Inputs |", "|---|---|---|"]
    for c in CASES:
        bits = [f"{c.family} labels `{c.labels}`", f"logits `{c.logits}`"]
        if c.weights:
            bits.append(f"class weights `{c.weights_key}`")
        if c.ignore is not None:
            bits.append(f"ignore {c.ignore}")
        if c.eps:
            bits.append(f"ε = {c.eps:g}")
        bits.append(f"reduction `{c.reduction}`")
        if c.axes:
            bits.append("compared over " + ", ".join(c.axes))
        lines.append(f"| `{c.id}` | {QUESTIONS[c.question]} ({c.tag}) | {', '.join(bits)} |")
    lines += ["", *Z_LOSS_SECTION.rstrip().splitlines()]
    lines += ["", "## Versions", "", "| Package | Version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in versions.items()]
    if unavailable:
        lines += ["", "Not measured (not installed, or failed to run):", ""]
        lines += [f"- {k}: {v}" for k, v in unavailable.items()]
    lines += [
        "",
        "## Regenerating",
        "",
        "Install the libraries to compare (`torch`, `tensorflow` or `tensorflow-cpu`, `keras`, "
        "`jax` with `optax`, `paddlepaddle`) next to refsoftmax, then from the repository root "
        "run",
        "",
        "```sh",
        "python docs/scripts/measure_conventions.py",
        "```",
        "",
        "It runs each library in its own subprocess (Keras once per backend, "
        "`KERAS_BACKEND` = tensorflow, jax, torch; JAX with `jax_enable_x64`), takes under a "
        "minute, and rewrites this page and `docs/scripts/conventions.json`.  Missing "
        "libraries are listed as not measured.  `--date` sets the date written above.",
        "",
    ]
    return "\n".join(lines)


def _merge_note_labels(existing: str, new: str) -> str:
    """Add the new note's API label to an identical earlier note."""
    head_old, body = existing.split(": ", 1)
    head_new = new.split(": ", 1)[0]
    return f"{head_old}; {head_new}: {body}"


def note_text(r: dict[str, Any]) -> str:
    case = CASE_BY_ID[r["case"]]
    label = APIS[r["api"]][1] + (f" [{r['backend']}]" if r.get("backend") else "")
    head = f"{label}, case `{case.id}`"
    lib = r["library"]
    if r["kind"] == "error_differs":
        return f"{head}: raises `{lib['error']}` where refsoftmax returns a value."
    ref = ", ".join(
        f"{fmt_opts(c['options']) or 'defaults'} → " + (c["error"] if "error" in c else fmt(c["value"]))
        for c in r["candidates"])
    text = f"{head}: library value {fmt(lib['value'])}"
    if lib.get("dtype") and lib["dtype"] != "float64":
        text += f" (returned as {lib['dtype']})"
    if lib.get("shape") is not None and list(lib["shape"]) != list(np.shape(lib["value"])):
        text += f" (returned with shape {tuple(lib['shape'])})"
    row = case.row if case.row is not None else slice(None)
    where = f" row {case.row}" if case.row is not None else ""
    if r["kind"] in ("value_only", "edge_differs") and lib["grad"] is not None:
        text += f", gradient{where} {fmt(lib['grad'][row], 6)}"
    text += f"; refsoftmax: {ref}"
    if r["kind"] in ("value_only", "edge_differs"):
        grads = [fmt(c["grad"][row], 6) for c in r["candidates"] if "grad" in c]
        if grads:
            text += f"; refsoftmax gradient{where} {' / '.join(grads)}"
    if r["kind"] == "approx":
        rel = max(rel_diff(lib["value"], c["value"]) for c in r["candidates"]
                  if c["options"] in r["loose_matches"])
        text += f".  Largest relative difference to the nearest option: {rel:.1e}"
    if r.get("hypothesis"):
        text += f".  Reproduced exactly by: {r['hypothesis']}"
    return text + "."


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", choices=sorted(PROBES), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--date", default=datetime.date.today().isoformat(),
                        help="date written into the page (default: today)")
    args = parser.parse_args()
    if args.probe:
        try:
            run_probe(args.probe, args.out)
        except Exception:
            traceback.print_exc()
            sys.exit(1)
    else:
        main(args.date)

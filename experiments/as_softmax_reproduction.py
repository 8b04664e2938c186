"""Reproduce the claims of the AS-Softmax paper on small models, with refsoftmax's own gradients.

"Adaptive Sparse Softmax: An Effective and Efficient Softmax Variant" (Lv et al., IEEE TASLP
2025, arXiv 2508.03175) claims that

1. AS-Softmax improves test accuracy over softmax cross-entropy;
2. the validation loss of AS-Softmax is strongly (negatively) correlated with validation
   accuracy, while that of softmax is not;
3. the share of zero-loss training examples grows over training;
4. adaptive gradient accumulation gives about 1.2x training speed-up at equal effectiveness.

This script trains the same small models -- softmax regression and a one-hidden-layer ReLU
MLP, written against the Python array API standard (namespace from ``array_api_compat``), with
the backward pass through the layers derived by hand and the loss gradient from refsoftmax's
hand-derived ``forward``/``backward`` (no autodiff anywhere) -- with three objectives:

* ``softmax``: ``refsoftmax.sparse_softmax_cross_entropy``;
* ``as``: ``refsoftmax.as_softmax_cross_entropy`` with δ from ``refsoftmax.delta_schedule``;
* ``as_accum``: the same plus ``refsoftmax.AccumulationSchedule`` fed with every micro-batch's
  ``ZeroLossStats`` (an optimizer step only when it says so).

on scikit-learn's digits and on synthetic Gaussian-mixture problems with 5, 50, 500 and 5,000
classes, over several seeds, and writes ``docs/as_softmax_reproduction.md`` (setup, tables,
verdicts), ``docs/images/as_softmax_*.png`` and the raw per-epoch results
(``experiments/as_softmax_reproduction_results.json``).

Usage, from the repository root::

    .venv/bin/python experiments/as_softmax_reproduction.py            # default (minutes)
    .venv/bin/python experiments/as_softmax_reproduction.py --quick    # < 1 min, smoke sizes
    .venv/bin/python experiments/as_softmax_reproduction.py --full     # larger, slower

See ``experiments/README.md`` for every option and the exact protocol.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import functools
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: use this checkout's refsoftmax
    sys.path.insert(0, str(ROOT))

import refsoftmax  # noqa: E402
from refsoftmax import (  # noqa: E402
    AccumulationSchedule,
    as_softmax_cross_entropy,
    backends,
    delta_schedule,
    sparse_softmax_cross_entropy,
)

OBJECTIVES = ("softmax", "as", "as_accum")
OBJECTIVE_LABELS = {
    "softmax": "(a) softmax CE",
    "as": "(b) AS-Softmax",
    "as_accum": "(c) AS-Softmax + accum.",
}
MODELS = ("linear", "mlp")
MODEL_LABELS = {"linear": "softmax regression", "mlp": "MLP (1 hidden ReLU layer)"}
MODES = ("quick", "default", "full")

DEFAULT_MD = ROOT / "docs" / "as_softmax_reproduction.md"
DEFAULT_IMAGES = ROOT / "docs" / "images"
DEFAULT_JSON = ROOT / "experiments" / "as_softmax_reproduction_results.json"
QUICK_DIR = ROOT / "experiments" / "quick_output"
DPI = 90

# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class DatasetSpec:
    """One classification problem and the training budget used on it."""

    name: str
    kind: str  # "digits" or "synthetic"
    num_classes: int
    dim: int  # input features (digits: 64)
    n_train: int
    n_val: int
    n_test: int
    modes_per_class: int = 1  # synthetic: Gaussian components per class
    sigma: float = 1.0  # synthetic: within-component standard deviation (centroids ~ N(0, I))
    label_noise: float = 0.0  # synthetic: probability that a label is replaced by a random class
    hidden: int = 64
    epochs: int = 20
    batch: int = 64
    lr: float = 1e-3  # Adam learning rate, both models, all objectives
    data_seed: int = 0


@dataclass(frozen=True)
class Config:
    """Everything that is the same for every dataset."""

    mode: str = "default"
    seeds: tuple[int, ...] = (0, 1, 2)
    datasets: tuple[DatasetSpec, ...] = ()
    models: tuple[str, ...] = MODELS
    objectives: tuple[str, ...] = OBJECTIVES
    optimizer: str = "adam"  # or "sgd" (plain, no momentum)
    sgd_lr_scale: float = 100.0  # SGD learning rate = lr * this
    delta_min: float = 0.1
    warmup_fraction: float = 0.1
    accum_lam: float = 1.0
    accum_max_steps: int = 8
    accum_norm: str = "examples"  # or "nonzero"
    loss_path: str = "reference"  # or "fused" (softmax CE through value_and_grad's fused kernel)
    target_fraction: float = 0.95
    diag_train_examples: int = 1000  # training subsample for the end-of-epoch zero-loss share
    eval_chunk: int = 1024
    backend: str = "numpy"
    dtype: str = "float32"
    jobs: int = 1


def _synthetic(name: str, c: int, dim: int, n_train: int, n_val: int, n_test: int, **kw: Any) -> DatasetSpec:
    return DatasetSpec(name=name, kind="synthetic", num_classes=c, dim=dim, n_train=n_train,
                       n_val=n_val, n_test=n_test, data_seed=1000 + c, **kw)


def dataset_specs(mode: str) -> tuple[DatasetSpec, ...]:
    """The datasets and their budgets for ``mode`` (quick / default / full)."""
    digits = DatasetSpec(name="digits", kind="digits", num_classes=10, dim=64, n_train=1078,
                         n_val=359, n_test=360, hidden=64, epochs=40, batch=32, lr=2e-3)
    if mode == "quick":
        return (
            replace(digits, epochs=8, hidden=32, lr=3e-3),
            _synthetic("syn5", 5, 16, 600, 300, 300, modes_per_class=3, sigma=1.15,
                       label_noise=0.05, hidden=32, epochs=8, batch=32, lr=3e-3),
            _synthetic("syn50", 50, 32, 1500, 500, 500, modes_per_class=2, sigma=1.3,
                       label_noise=0.05, hidden=32, epochs=8, batch=64, lr=3e-3),
            _synthetic("syn500", 500, 48, 2000, 500, 500, sigma=1.4, label_noise=0.05,
                       hidden=32, epochs=6, batch=128, lr=1e-2),
        )
    if mode == "default":
        return (
            digits,
            _synthetic("syn5", 5, 16, 3000, 1000, 1000, modes_per_class=3, sigma=1.15,
                       label_noise=0.05, hidden=64, epochs=25, batch=32, lr=2e-3),
            _synthetic("syn50", 50, 32, 4000, 1000, 1000, modes_per_class=2, sigma=1.3,
                       label_noise=0.05, hidden=64, epochs=25, batch=64, lr=3e-3),
            _synthetic("syn500", 500, 48, 6000, 1500, 1500, sigma=1.4, label_noise=0.05,
                       hidden=64, epochs=20, batch=128, lr=3e-3),
            _synthetic("syn5000", 5000, 64, 5000, 1000, 1000, sigma=0.6, label_noise=0.05,
                       hidden=64, epochs=8, batch=256, lr=1e-2),
        )
    if mode == "full":
        return (
            replace(digits, epochs=80, hidden=128, lr=1e-3),
            _synthetic("syn5", 5, 16, 10000, 2500, 2500, modes_per_class=3, sigma=1.15,
                       label_noise=0.05, hidden=128, epochs=50, batch=32, lr=1e-3),
            _synthetic("syn50", 50, 32, 20000, 5000, 5000, modes_per_class=2, sigma=1.3,
                       label_noise=0.05, hidden=128, epochs=50, batch=64, lr=2e-3),
            _synthetic("syn500", 500, 48, 40000, 5000, 5000, sigma=1.4, label_noise=0.05,
                       hidden=128, epochs=40, batch=128, lr=2e-3),
            _synthetic("syn5000", 5000, 64, 25000, 5000, 5000, sigma=0.9, label_noise=0.05,
                       hidden=128, epochs=20, batch=256, lr=5e-3),
        )
    msg = f"unknown mode {mode!r}"
    raise ValueError(msg)


# ----------------------------------------------------------------------------- data


@dataclass
class HostData:
    """A dataset on the host (NumPy), features standardised with the training statistics."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    diag_idx: np.ndarray  # fixed training subsample for the zero-loss diagnostic


def _standardise(x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu = x_train.mean(axis=0)
    sd = x_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return [(a - mu) / sd for a in (x_train, *others)]


def _make_digits(spec: DatasetSpec) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, train_size=spec.n_train, stratify=y, random_state=spec.data_seed)
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, train_size=spec.n_val, stratify=y_rest, random_state=spec.data_seed)
    return x_train, y_train, x_val, y_val, x_test, y_test


def _make_synthetic(spec: DatasetSpec) -> tuple[np.ndarray, ...]:
    """Gaussian mixture: ``modes_per_class`` centroids ~ N(0, I_D) per class, noise σ, flips ρ."""
    rng = np.random.default_rng(spec.data_seed)
    c, d, m = spec.num_classes, spec.dim, spec.modes_per_class
    centroids = rng.standard_normal((c, m, d))
    n = spec.n_train + spec.n_val + spec.n_test
    # every class appears in the training set as evenly as possible; val/test labels uniform
    y_train = rng.permutation(np.arange(spec.n_train) % c)
    y_rest = rng.integers(0, c, spec.n_val + spec.n_test)
    y_true = np.concatenate([y_train, y_rest])
    mode = rng.integers(0, m, n)
    x = centroids[y_true, mode] + spec.sigma * rng.standard_normal((n, d))
    flip = rng.random(n) < spec.label_noise
    y = np.where(flip, rng.integers(0, c, n), y_true)  # a flip may land on the true class
    a, b = spec.n_train, spec.n_train + spec.n_val
    return x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:]


def bayes_test_accuracy(spec: DatasetSpec) -> float | None:
    """Test accuracy of the Bayes classifier (true centres, σ and ρ known); None for digits.

    Uniform label flips do not move the arg-max of the posterior, so the Bayes rule is the
    Gaussian-mixture posterior of the clean class: ``argmax_c logsumexp_m -|x - μ_cm|² / 2σ²``.
    """
    if spec.kind != "synthetic":
        return None
    c, d, m = spec.num_classes, spec.dim, spec.modes_per_class
    centres = np.random.default_rng(spec.data_seed).standard_normal((c, m, d)).reshape(c * m, d)
    *_, x_test, y_test = _make_synthetic(spec)  # its first draw is the same centres
    correct = 0
    for start in range(0, len(y_test), 512):
        xb = x_test[start:start + 512]
        d2 = (xb * xb).sum(1)[:, None] - 2.0 * xb @ centres.T + (centres * centres).sum(1)[None]
        ll = (-d2 / (2.0 * spec.sigma**2)).reshape(len(xb), c, m)
        top = ll.max(axis=2, keepdims=True)
        score = (top + np.log(np.exp(ll - top).sum(axis=2, keepdims=True)))[..., 0]
        correct += int((score.argmax(axis=1) == y_test[start:start + 512]).sum())
    return correct / len(y_test)


@functools.lru_cache(maxsize=8)
def load_dataset(spec: DatasetSpec, diag_train_examples: int) -> HostData:
    """The dataset of ``spec``: fixed split (same for every seed), standardised features."""
    parts = _make_digits(spec) if spec.kind == "digits" else _make_synthetic(spec)
    x_train, y_train, x_val, y_val, x_test, y_test = parts
    x_train, x_val, x_test = _standardise(x_train, x_val, x_test)
    rng = np.random.default_rng(spec.data_seed + 7)
    n_diag = min(diag_train_examples, len(y_train))
    diag_idx = np.sort(rng.choice(len(y_train), n_diag, replace=False))
    return HostData(x_train, y_train.astype(np.int64), x_val, y_val.astype(np.int64),
                    x_test, y_test.astype(np.int64), diag_idx)


# ----------------------------------------------------------------------------- model
# Everything below works on arrays of any array-API namespace ``xp`` (NumPy is what runs).


def init_params(model: str, d: int, h: int, c: int, seed: int, to_dev: Any) -> dict[str, Any]:
    """Softmax regression: W ~ N(0, 0.01²); MLP: He-normal W1, N(0, 1/H) W2; zero biases."""
    rng = np.random.default_rng([seed, 0])
    if model == "linear":
        return {"W": to_dev(0.01 * rng.standard_normal((d, c))), "b": to_dev(np.zeros(c))}
    return {
        "W1": to_dev(rng.standard_normal((d, h)) * math.sqrt(2.0 / d)),
        "b1": to_dev(np.zeros(h)),
        "W2": to_dev(rng.standard_normal((h, c)) * math.sqrt(1.0 / h)),
        "b2": to_dev(np.zeros(c)),
    }


def model_forward(params: dict[str, Any], x: Any, xp: Any) -> tuple[Any, Any]:
    """Logits and what the backward needs."""
    if "W" in params:
        return x @ params["W"] + params["b"], None
    pre = x @ params["W1"] + params["b1"]
    hidden = xp.where(pre > 0, pre, xp.zeros_like(pre))  # ReLU
    return hidden @ params["W2"] + params["b2"], (pre, hidden)


def model_backward(params: dict[str, Any], x: Any, cache: Any, g: Any, xp: Any) -> dict[str, Any]:
    r"""Parameter gradients from ``g = dL/dlogits`` (hand-derived; no autodiff).

    Linear layer :math:`y = xW + b`: :math:`\partial W = x^\top g`, :math:`\partial b = \sum_i
    g_i`, :math:`\partial x = g W^\top`.  ReLU: :math:`\partial\,\mathrm{pre} = [\mathrm{pre} >
    0]\,\partial h`.
    """
    if cache is None:
        return {"W": x.T @ g, "b": xp.sum(g, axis=0)}
    pre, hidden = cache
    g_hidden = g @ params["W2"].T
    g_pre = xp.where(pre > 0, g_hidden, xp.zeros_like(g_hidden))
    return {
        "W1": x.T @ g_pre,
        "b1": xp.sum(g_pre, axis=0),
        "W2": hidden.T @ g,
        "b2": xp.sum(g, axis=0),
    }


class Adam:
    """Adam (Kingma & Ba), bias-corrected, β = (0.9, 0.999), ε = 1e-8, no weight decay."""

    def __init__(self, params: dict[str, Any], lr: float, xp: Any) -> None:
        self.lr, self.xp, self.t = lr, xp, 0
        self.m = {k: xp.zeros_like(v) for k, v in params.items()}
        self.v = {k: xp.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict[str, Any], grads: dict[str, Any]) -> dict[str, Any]:
        xp, b1, b2 = self.xp, 0.9, 0.999
        self.t += 1
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        out = {}
        for k, p in params.items():
            g = grads[k]
            self.m[k] = b1 * self.m[k] + (1.0 - b1) * g
            self.v[k] = b2 * self.v[k] + (1.0 - b2) * (g * g)
            out[k] = p - self.lr * (self.m[k] / c1) / (xp.sqrt(self.v[k] / c2) + 1e-8)
        return out


class SGD:
    """Plain SGD: ``p - lr * g``."""

    def __init__(self, params: dict[str, Any], lr: float, xp: Any) -> None:
        self.lr = lr

    def step(self, params: dict[str, Any], grads: dict[str, Any]) -> dict[str, Any]:
        return {k: p - self.lr * grads[k] for k, p in params.items()}


def loss_and_grad(objective: str, logits: Any, labels: Any, delta: float, loss_path: str,
                  xp: Any) -> tuple[Any, Any, Any]:
    """Summed loss, d(sum)/d(logits) and the AS ``ZeroLossStats`` (None for softmax CE).

    ``forward`` then ``backward`` with a cotangent of ones is exactly what
    ``Function.value_and_grad`` does; it is spelled out so that AS-Softmax's residuals (and
    their ``.stats``) are at hand, and so that softmax CE runs the same array-API code as
    AS-Softmax unless ``loss_path="fused"``.
    """
    if objective == "softmax":
        if loss_path == "fused":
            value, grads = sparse_softmax_cross_entropy.value_and_grad(logits, labels,
                                                                       reduction="sum")
            return value, grads["logits"], None
        value, res = sparse_softmax_cross_entropy.forward(logits, labels, reduction="sum")
        return value, sparse_softmax_cross_entropy.backward(res, xp.ones_like(value))["logits"], None
    value, res = as_softmax_cross_entropy.forward(logits, labels, delta=delta, reduction="sum")
    grad = as_softmax_cross_entropy.backward(res, xp.ones_like(value))["logits"]
    return value, grad, res.stats


# ----------------------------------------------------------------------------- one run


@dataclass
class Task:
    spec: DatasetSpec
    model: str
    objective: str
    seed: int
    cfg: Config


@dataclass
class History:
    """Per-epoch record (epoch 0 = before training)."""

    epoch: list[int] = field(default_factory=list)
    micro_batches: list[int] = field(default_factory=list)
    optimizer_steps: list[int] = field(default_factory=list)
    train_wall_s: list[float] = field(default_factory=list)  # cumulative, training steps only
    train_cpu_s: list[float] = field(default_factory=list)
    loss_wall_s: list[float] = field(default_factory=list)  # the part spent in refsoftmax
    delta: list[float] = field(default_factory=list)  # δ of the last micro-batch
    accum_k: list[int] = field(default_factory=list)  # schedule's k (1 without accumulation)
    val_acc: list[float] = field(default_factory=list)
    val_ce: list[float] = field(default_factory=list)  # mean softmax CE on val
    val_as: list[float] = field(default_factory=list)  # mean AS-Softmax loss (δ_min) on val
    test_acc: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)  # on the diagnostic subsample
    zero_share: list[float] = field(default_factory=list)  # AS loss == 0 at δ_min, subsample
    zero_share_in_training: list[float | None] = field(default_factory=list)  # .stats, epoch


def _evaluate(params: dict[str, Any], x: Any, y: Any, n: int, cfg: Config, xp: Any,
              to_dev: Any, *, ce: bool = False, as_loss: bool = False) -> dict[str, float]:
    """Accuracy, and optionally the mean softmax CE and the AS-Softmax loss / zero share at δ_min."""
    correct = zero = 0
    ce_sum = as_sum = 0.0
    for start in range(0, n, cfg.eval_chunk):
        idx = to_dev(np.arange(start, min(n, start + cfg.eval_chunk)))
        xb, yb = xp.take(x, idx, axis=0), xp.take(y, idx, axis=0)
        logits, _ = model_forward(params, xb, xp)
        correct += int(xp.sum(xp.astype(xp.argmax(logits, axis=-1) == yb, xp.int32)))
        if ce:
            ce_sum += float(sparse_softmax_cross_entropy(logits, yb, reduction="sum"))
        if as_loss:
            value, res = as_softmax_cross_entropy.forward(logits, yb, delta=cfg.delta_min,
                                                          reduction="sum")
            as_sum += float(value)
            zero += res.stats.num_zero_loss
    return {"acc": correct / n, "ce": ce_sum / n, "as": as_sum / n, "zero": zero / n}


def train_run(task: Task) -> dict[str, Any]:
    """Train one (dataset, model, objective, seed) and return its per-epoch history."""
    spec, cfg = task.spec, task.cfg
    backend = backends.load(cfg.backend)
    xp = backend.namespace()
    host = load_dataset(spec, cfg.diag_train_examples)
    dtype = np.dtype(cfg.dtype)

    def to_dev(a: np.ndarray) -> Any:
        a = np.asarray(a)
        return backend.from_host(a.astype(dtype) if a.dtype.kind == "f" else a)

    x_train, y_train = to_dev(host.x_train), to_dev(host.y_train)
    x_val, y_val = to_dev(host.x_val), to_dev(host.y_val)
    x_test, y_test = to_dev(host.x_test), to_dev(host.y_test)
    x_diag = xp.take(x_train, to_dev(host.diag_idx), axis=0)
    y_diag = xp.take(y_train, to_dev(host.diag_idx), axis=0)

    params = init_params(task.model, spec.dim, spec.hidden, spec.num_classes, task.seed, to_dev)
    if cfg.optimizer == "adam":
        opt: Adam | SGD = Adam(params, spec.lr, xp)
    else:
        opt = SGD(params, spec.lr * cfg.sgd_lr_scale, xp)
    shuffle_rng = np.random.default_rng([task.seed, 1])  # same order for every objective/model

    n, batch = len(host.y_train), spec.batch
    per_epoch = math.ceil(n / batch)
    total_micro = spec.epochs * per_epoch
    sched = (AccumulationSchedule(lam=cfg.accum_lam, max_steps=cfg.accum_max_steps)
             if task.objective == "as_accum" else None)
    hist = History()
    micro = opt_steps = 0
    wall = cpu = loss_wall = 0.0
    delta = 1.0 if task.objective != "softmax" else float("nan")
    acc_grads: dict[str, Any] | None = None
    acc_examples = acc_nonzero = 0

    def record(epoch: int, in_training: float | None) -> None:
        val = _evaluate(params, x_val, y_val, len(host.y_val), cfg, xp, to_dev, ce=True,
                        as_loss=True)
        test = _evaluate(params, x_test, y_test, len(host.y_test), cfg, xp, to_dev)
        diag = _evaluate(params, x_diag, y_diag, len(host.diag_idx), cfg, xp, to_dev,
                         as_loss=True)
        hist.epoch.append(epoch)
        hist.micro_batches.append(micro)
        hist.optimizer_steps.append(opt_steps)
        hist.train_wall_s.append(wall)
        hist.train_cpu_s.append(cpu)
        hist.loss_wall_s.append(loss_wall)
        hist.delta.append(delta)
        hist.accum_k.append(sched.steps if sched is not None else 1)
        hist.val_acc.append(val["acc"])
        hist.val_ce.append(val["ce"])
        hist.val_as.append(val["as"])
        hist.test_acc.append(test["acc"])
        hist.train_acc.append(diag["acc"])
        hist.zero_share.append(diag["zero"])
        hist.zero_share_in_training.append(in_training)

    record(0, None)
    for epoch in range(1, spec.epochs + 1):
        order = shuffle_rng.permutation(n)
        seen = zero_seen = 0
        for start in range(0, n, batch):
            idx = to_dev(order[start:start + batch])
            xb, yb = xp.take(x_train, idx, axis=0), xp.take(y_train, idx, axis=0)
            t0, c0 = time.perf_counter(), time.process_time()
            logits, cache = model_forward(params, xb, xp)
            if task.objective != "softmax":
                delta = delta_schedule(micro, total_micro, delta_min=cfg.delta_min,
                                       warmup_fraction=cfg.warmup_fraction)
            t_loss = time.perf_counter()
            _, g_logits, stats = loss_and_grad(task.objective, logits, yb, delta, cfg.loss_path, xp)
            loss_wall += time.perf_counter() - t_loss
            grads = model_backward(params, xb, cache, g_logits, xp)
            count = int(yb.shape[0])
            if sched is None:  # mean over the micro-batch, one step
                params = opt.step(params, {k: g / count for k, g in grads.items()})
                opt_steps += 1
            else:
                acc_grads = grads if acc_grads is None else {
                    k: acc_grads[k] + g for k, g in grads.items()}
                acc_examples += stats.num_examples
                acc_nonzero += stats.num_examples - stats.num_zero_loss
                if sched.observe(stats.num_examples, stats.num_zero_loss):
                    denom = acc_examples if cfg.accum_norm == "examples" else max(1, acc_nonzero)
                    params = opt.step(params, {k: g / denom for k, g in acc_grads.items()})
                    opt_steps += 1
                    acc_grads, acc_examples, acc_nonzero = None, 0, 0
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
            micro += 1
            if stats is not None:
                seen += stats.num_examples
                zero_seen += stats.num_zero_loss
        record(epoch, zero_seen / seen if seen else None)
    return {
        "dataset": spec.name,
        "model": task.model,
        "objective": task.objective,
        "seed": task.seed,
        "pending_micro_batches": (sched.pending if sched is not None else 0),
        "history": asdict(hist),
    }


def single_thread() -> None:
    """One thread per process (BLAS and refsoftmax's fused kernel): small matrices, shared cores."""
    os.environ["REFSOFTMAX_NUM_THREADS"] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """:func:`single_thread` for the current process, undone on exit."""
    old = os.environ.get("REFSOFTMAX_NUM_THREADS")
    os.environ["REFSOFTMAX_NUM_THREADS"] = "1"
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            yield
        else:
            with threadpool_limits(1):
                yield
    finally:
        if old is None:
            del os.environ["REFSOFTMAX_NUM_THREADS"]
        else:
            os.environ["REFSOFTMAX_NUM_THREADS"] = old


def _task_cost(t: Task) -> float:
    s = t.spec
    return s.epochs * s.n_train * (s.num_classes + s.hidden) * (2.0 if t.objective != "softmax" else 1.0)


# glibc: keep NumPy's large temporaries on the heap instead of mapping and unmapping them on
# every call (page faults were ~20 % of the CPU time); set for the worker processes only.
_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def run_all(cfg: Config, log: Any = print) -> list[dict[str, Any]]:
    """Every run of ``cfg``: in this process (``jobs=0``) or in ``jobs`` worker processes."""
    tasks = [Task(spec, model, obj, seed, cfg) for spec in cfg.datasets for model in cfg.models
             for seed in cfg.seeds for obj in cfg.objectives]
    results: list[dict[str, Any]] = []
    start = time.perf_counter()

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        h = r["history"]
        log(f"[{time.perf_counter() - start:7.1f}s] {len(results):3d}/{len(tasks)} "
            f"{r['dataset']:8s} {r['model']:6s} {r['objective']:8s} seed={r['seed']} "
            f"val_acc={h['val_acc'][-1]:.3f} steps={h['optimizer_steps'][-1]} "
            f"train={h['train_wall_s'][-1]:.1f}s (cpu {h['train_cpu_s'][-1]:.1f}s)")

    if cfg.jobs <= 0:
        with single_threaded():
            for t in tasks:
                done(train_run(t))
    else:
        ordered = sorted(tasks, key=_task_cost, reverse=True)  # largest first: balance workers
        ctx = multiprocessing.get_context("spawn")
        saved = {k: os.environ.get(k) for k in _WORKER_ENV}
        os.environ.update(_WORKER_ENV)  # inherited by the spawned workers
        try:
            with concurrent.futures.ProcessPoolExecutor(cfg.jobs, mp_context=ctx,
                                                        initializer=single_thread) as pool:
                futures = [pool.submit(train_run, t) for t in ordered]
                for fut in concurrent.futures.as_completed(futures):
                    done(fut.result())
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    key = {(t.spec.name, t.model, t.objective, t.seed): i for i, t in enumerate(tasks)}
    results.sort(key=lambda r: key[(r["dataset"], r["model"], r["objective"], r["seed"])])
    return results


# ----------------------------------------------------------------------------- analysis


def pearson(a: list[float], b: list[float]) -> float:
    """Pearson r; NaN when fewer than 3 points or either series is constant."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / math.sqrt(float(x @ x) * float(y @ y)))


def own_val_loss(run: dict[str, Any]) -> list[float]:
    h = run["history"]
    return h["val_ce"] if run["objective"] == "softmax" else h["val_as"]


def report_epochs(epochs: int) -> list[int]:
    return sorted({1, max(1, round(epochs / 4)), max(1, round(epochs / 2)), epochs})


def first_reaching(h: dict[str, Any], target: float) -> int | None:
    """Index (into the history) of the first epoch ≥ 1 whose val accuracy reaches ``target``."""
    for i, (e, acc) in enumerate(zip(h["epoch"], h["val_acc"], strict=True)):
        if e >= 1 and acc >= target - 1e-12:
            return i
    return None


def run_metrics(run: dict[str, Any], target: float) -> dict[str, Any]:
    h = run["history"]
    e = np.asarray(h["epoch"])
    ep = e >= 1
    val_acc = np.asarray(h["val_acc"])[ep]
    best = int(np.argmax(val_acc))  # first epoch of the best val accuracy
    late = e > e.max() / 2
    own = np.asarray(own_val_loss(run))
    hit = first_reaching(h, target)
    loss_total = h["train_wall_s"][-1]
    return {
        "test_at_best": float(np.asarray(h["test_acc"])[ep][best]),
        "best_epoch": int(e[ep][best]),
        "best_val": float(val_acc[best]),
        "final_val": float(h["val_acc"][-1]),
        "r_own": pearson(own[ep], val_acc),
        "r_own_late": pearson(own[late], np.asarray(h["val_acc"])[late]),
        "r_ce": pearson(np.asarray(h["val_ce"])[ep], val_acc),
        "r_as": pearson(np.asarray(h["val_as"])[ep], val_acc),
        "zero_share": {int(k): float(v) for k, v in zip(h["epoch"], h["zero_share"], strict=True)},
        "zero_in_training": {int(k): v for k, v in zip(h["epoch"], h["zero_share_in_training"], strict=True)},
        "hit_epoch": None if hit is None else int(h["epoch"][hit]),
        "hit_steps": None if hit is None else int(h["optimizer_steps"][hit]),
        "hit_wall": None if hit is None else float(h["train_wall_s"][hit]),
        "hit_wall_noloss": None if hit is None else float(
            h["train_wall_s"][hit] - h["loss_wall_s"][hit]),
        "hit_cpu": None if hit is None else float(h["train_cpu_s"][hit]),
        "total_wall": float(loss_total),
        "total_cpu": float(h["train_cpu_s"][-1]),
        "loss_share": float(h["loss_wall_s"][-1] / loss_total) if loss_total > 0 else float("nan"),
        "total_steps": int(h["optimizer_steps"][-1]),
        "final_k": int(h["accum_k"][-1]),
    }


def _mean_std(values: list[float | None]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def analyse(results: list[dict[str, Any]], cfg: Config) -> dict[str, Any]:
    """Targets, per-run metrics and the per-cell aggregates the page is made of."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for spec in cfg.datasets:
        for model in cfg.models:
            runs = {o: sorted((r for r in results if r["dataset"] == spec.name
                               and r["model"] == model and r["objective"] == o),
                              key=lambda r: r["seed"]) for o in cfg.objectives}
            base = runs.get("softmax") or next(iter(runs.values()))
            target = cfg.target_fraction * float(np.mean([r["history"]["val_acc"][-1]
                                                          for r in base]))
            metrics = {o: [run_metrics(r, target) for r in rs] for o, rs in runs.items()}
            cell: dict[str, Any] = {"target": target, "metrics": metrics, "agg": {},
                                    "epochs": spec.epochs}
            for o, ms in metrics.items():
                agg = {k: _mean_std([m[k] for m in ms]) for k in (
                    "test_at_best", "best_epoch", "final_val", "r_own", "r_own_late", "r_ce",
                    "r_as", "hit_epoch", "hit_steps", "hit_wall", "hit_wall_noloss", "hit_cpu",
                    "total_wall", "total_cpu", "loss_share", "total_steps", "final_k")}
                agg["reached"] = sum(m["hit_epoch"] is not None for m in ms)
                agg["n"] = len(ms)
                agg["zero_share"] = {e: _mean_std([m["zero_share"].get(e) for m in ms])
                                     for e in range(spec.epochs + 1)}
                agg["zero_in_training"] = {e: _mean_std([m["zero_in_training"].get(e) for m in ms])
                                           for e in range(1, spec.epochs + 1)}
                cell["agg"][o] = agg
            # speed-ups over softmax, paired by seed (only seeds where both reached the target)
            cell["speedup"] = {}
            if "softmax" in metrics:
                for o in cfg.objectives:
                    if o == "softmax":
                        continue
                    sp: dict[str, tuple[float, float, int]] = {}
                    for key in ("hit_steps", "hit_wall", "hit_wall_noloss", "hit_cpu"):
                        ratios = [a[key] / b[key] for a, b in zip(metrics["softmax"], metrics[o], strict=True)
                                  if a[key] is not None and b[key] is not None and b[key] > 0]
                        sp[key] = _mean_std(ratios)
                    for clock in ("wall", "cpu"):
                        sp[f"per_epoch_{clock}"] = _mean_std([
                            a[f"total_{clock}"] / b[f"total_{clock}"]
                            for a, b in zip(metrics["softmax"], metrics[o], strict=True)
                            if b[f"total_{clock}"] > 0])
                    sp["test_diff"] = _mean_std([b["test_at_best"] - a["test_at_best"]
                                                 for a, b in zip(metrics["softmax"], metrics[o], strict=True)])
                    sp["test_wins"] = sum(b["test_at_best"] > a["test_at_best"]
                                          for a, b in zip(metrics["softmax"], metrics[o], strict=True))
                    cell["speedup"][o] = sp
            cells[(spec.name, model)] = cell
    return {"cells": cells}


# ----------------------------------------------------------------------------- formatting


def fmt(ms: tuple[float, float, int], scale: float = 1.0, digits: int = 3, pm: bool = True) -> str:
    mean, std, n = ms
    if n == 0 or math.isnan(mean):
        return "–"
    if not pm or n == 1:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _cell_rows(cfg: Config) -> list[tuple[DatasetSpec, str]]:
    return [(s, m) for s in cfg.datasets for m in cfg.models]


def verdicts(analysis: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """Counts behind the claim-by-claim summary (thresholds stated on the page)."""
    cells = analysis["cells"]
    out: dict[str, Any] = {"n_cells": len(cells)}
    if not {"softmax", "as"} <= set(cfg.objectives):
        return out
    acc_better = acc_clear = 0
    corr_as_strong = corr_sm_small = corr_as_more = 0
    zero_grows = zero_holds = 0
    receded: list[str] = []
    faster = faster12 = equal_eff = reached_both = fewer_steps = faster_cpu = 0
    for key, cell in cells.items():
        sp = cell["speedup"]["as"]
        d = sp["test_diff"][0]
        acc_better += d > 0
        acc_clear += d > 0 and sp["test_wins"] == cell["agg"]["as"]["n"]
        r_as = cell["agg"]["as"]["r_own"][0]
        r_sm = cell["agg"]["softmax"]["r_own"][0]
        corr_as_strong += r_as <= -0.7
        corr_sm_small += abs(r_sm) < 0.3
        corr_as_more += r_as < r_sm
        zs = cell["agg"]["as"]["zero_share"]
        zero_grows += zs[cell["epochs"]][0] > zs[1][0]
        shares = [zs[e][0] for e in range(1, cell["epochs"] + 1)]
        peak = int(np.argmax(shares)) + 1
        if shares[-1] >= max(shares) - 0.02:
            zero_holds += 1
        else:
            receded.append(f"{key[0]}/{key[1]}: {100 * max(shares):.0f} % at epoch {peak}, "
                           f"{100 * shares[-1]:.0f} % at the end")
        if "as_accum" in cell["speedup"]:
            spc = cell["speedup"]["as_accum"]
            ratio = spc["hit_wall"]
            if ratio[2] > 0:
                reached_both += 1
                faster += ratio[0] > 1.0
                faster12 += ratio[0] >= 1.15 and spc["hit_cpu"][0] >= 1.15  # on both clocks
                fewer_steps += spc["hit_steps"][0] > 1.0
                faster_cpu += spc["hit_cpu"][0] > 1.0
            equal_eff += spc["test_diff"][0] > -0.005
    out.update(acc_better=acc_better, acc_clear=acc_clear, corr_as_strong=corr_as_strong,
               corr_sm_small=corr_sm_small, corr_as_more=corr_as_more, zero_grows=zero_grows,
               zero_holds=zero_holds, zero_receded=receded,
               faster=faster, faster12=faster12, equal_eff=equal_eff, reached_both=reached_both,
               fewer_steps=fewer_steps, faster_cpu=faster_cpu)
    return out


def write_page(path: Path, images: dict[str, str], analysis: dict[str, Any], cfg: Config,
               meta: dict[str, Any], compare: list[dict[str, Any]] | None = None) -> None:
    cells = analysis["cells"]
    objs = cfg.objectives
    lines: list[str] = []
    add = lines.append
    add("# AS-Softmax: a small-scale reproduction")
    add("")
    if cfg.mode != "default":
        add(f"!!! warning \"{cfg.mode} mode\"")
        add(f"    Generated with `--{cfg.mode}`; the published page is made by the default mode.")
        add("")
    add("*Generated by `experiments/as_softmax_reproduction.py`; do not edit by hand.*")
    add("")
    add("This page trains small models with the three objectives below and checks four claims of "
        "*Adaptive Sparse Softmax: An Effective and Efficient Softmax Variant* (Lv et al., "
        "IEEE TASLP 2025, [arXiv 2508.03175](https://arxiv.org/abs/2508.03175)):")
    add("")
    add("1. AS-Softmax improves test accuracy over softmax cross-entropy;")
    add("2. the validation loss of AS-Softmax is strongly (negatively) correlated with validation "
        "accuracy, while that of softmax is nearly uncorrelated;")
    add("3. the share of zero-loss training examples grows over training;")
    add("4. adaptive gradient accumulation gives about a 1.2× training speed-up at equal "
        "effectiveness.")
    add("")
    add("Every gradient is hand-derived: the loss gradient comes from refsoftmax's `forward`/"
        "`backward` (what `value_and_grad` runs), the backward pass through the linear and ReLU "
        "layers is written out in the script, and the optimizer is implemented there too. There is "
        "no autodiff anywhere. The models are written against the Python array API standard "
        f"(namespace from `array_api_compat`); the runs on this page use the `{cfg.backend}` "
        f"backend in {cfg.dtype}.")
    add("")
    v = verdicts(analysis, cfg)
    add("## Summary")
    add("")
    add(_summary(analysis, cfg, v))
    add("")
    add("## Setup")
    add("")
    add("**Objectives** (same model, initialisation, data order and learning rate for all three; "
        "seed *s* fixes the initialisation and the shuffling):")
    add("")
    add("* **(a) softmax CE**: `sparse_softmax_cross_entropy(logits, labels, reduction=\"sum\")`, "
        "gradient divided by the micro-batch size, one optimizer step per micro-batch.")
    add(f"* **(b) AS-Softmax**: `as_softmax_cross_entropy(..., delta=δ)` with "
        f"`δ = delta_schedule(i, I, delta_min={cfg.delta_min}, warmup_fraction="
        f"{cfg.warmup_fraction})`, where *i* is the micro-batch index and *I* the number of "
        f"micro-batches of the whole run: δ falls linearly from 1 (plain softmax) to "
        f"δ_min = {cfg.delta_min} over the first {cfg.warmup_fraction:.0%} of training, then "
        "stays. Gradient divided by the micro-batch size (zero-loss examples included), one "
        "optimizer step per micro-batch.")
    norm = ("the total number of examples of the micro-batches in the cycle (zero-loss ones "
            "included), i.e. the mean gradient of one large batch made of the accumulated "
            "micro-batches" if cfg.accum_norm == "examples" else
            "the number of examples with non-zero loss in the cycle")
    add(f"* **(c) AS-Softmax + adaptive accumulation**: as (b), and every micro-batch's "
        f"`ZeroLossStats` (`forward(...)[1].stats`) goes to `AccumulationSchedule(lam="
        f"{cfg.accum_lam}, max_steps={cfg.accum_max_steps}).observe(N, N0)`. The parameter "
        "gradients (sums over examples) are added up over the micro-batches of a cycle; when "
        f"`observe` returns True the sum is divided by {norm}, the optimizer steps once and the "
        "sum is reset. Until the schedule asks for k > 1, (c) is step-for-step identical to (b). "
        "A cycle may straddle an epoch boundary; evaluation uses the parameters as they are "
        "(pending gradients not applied); a cycle still open at the end of training is dropped.")
    add("")
    opt = ("Adam (β = 0.9, 0.999, ε = 1e-8, no weight decay)" if cfg.optimizer == "adam"
           else f"plain SGD (learning rate = {cfg.sgd_lr_scale} × the table's)")
    add(f"**Models**: softmax regression (`x @ W + b`, W ~ N(0, 0.01²)) and a one-hidden-layer "
        f"ReLU MLP (He-normal first layer, N(0, 1/H) second layer, zero biases). **Optimizer**: "
        f"{opt}, constant learning rate, implemented in the script.")
    add("")
    add("**Loss path.** The softmax CE of (a) is run as `forward` + `backward`, the same array-API "
        "code that AS-Softmax uses (refsoftmax's NumPy backend also has a fused, threaded kernel "
        "behind `sparse_softmax_cross_entropy.value_and_grad`; " + (
            "it is used here (`--loss-path fused`)" if cfg.loss_path == "fused" else
            "it is *not* used here, so that wall times compare the methods rather than the "
            "kernels; `--loss-path fused` switches it on") + "). AS-Softmax's reference "
        "implementation computes a full softmax for the mask and another over the kept classes, so "
        "with many classes one AS-Softmax loss evaluation costs more than one softmax CE "
        "evaluation; the tables give the share of training time spent in the loss.")
    add("")
    add("**Datasets** (fixed split, the same for every seed; features standardised with the "
        "training mean and standard deviation). Digits: `sklearn.datasets.load_digits` (1,797 "
        "8×8 images), stratified split. Synthetic: each class has *m* Gaussian components with "
        "centres drawn from N(0, I_D) and standard deviation σ; every class appears in the "
        "training set (as evenly as possible); each label (train, val and test alike) is "
        "replaced by a uniformly drawn class with probability ρ. The components overlap, so the "
        "problems are not separable even without the flips: the table gives the test accuracy "
        "of the Bayes classifier (true centres and σ), the ceiling for any model.")
    add("")
    rows = []
    for s in cfg.datasets:
        src = ("sklearn digits" if s.kind == "digits" else
               f"m={s.modes_per_class}, σ={s.sigma}, ρ={s.label_noise}")
        bayes = bayes_test_accuracy(s)
        rows.append([s.name, str(s.num_classes), str(s.dim),
                     f"{s.n_train:,}/{s.n_val:,}/{s.n_test:,}", src,
                     "–" if bayes is None else f"{100 * bayes:.1f}", str(s.hidden), str(s.epochs),
                     str(s.batch), f"{s.lr:g}"])
    add(_table(["dataset", "classes C", "features D", "train/val/test", "generation",
                "Bayes test acc. %", "hidden H", "epochs", "micro-batch", "lr (Adam)"], rows))
    add("")
    add("**Measurements** (every number is the mean ± sample standard deviation over the "
        f"seeds {', '.join(map(str, cfg.seeds))}):")
    add("")
    add("* *Test accuracy* at the epoch with the best validation accuracy (the first such epoch).")
    add("* *Correlation*: Pearson r between the validation loss and the validation accuracy over "
        "epochs 1…E, where the validation loss is that of the objective being trained (softmax CE "
        f"for (a); AS-Softmax at δ_min = {cfg.delta_min} for (b) and (c), a fixed yardstick even "
        "while training's δ is still warming up). \"Late\" uses only the epochs after E/2.")
    add(f"* *Zero-loss share*: at the end of every epoch, the share of a fixed subsample of at "
        f"most {cfg.diag_train_examples:,} training examples whose AS-Softmax loss at δ_min is "
        "exactly 0 (for every objective, so softmax-trained models are measured with the same "
        "yardstick). The share seen by the accumulation schedule (the micro-batches' `.stats` "
        "at the δ in use, over the epoch) is in the plot and the JSON.")
    add(f"* *Time to target*: the target is {cfg.target_fraction:.0%} of softmax CE's final "
        "validation accuracy (mean over seeds), per dataset and model. Validation accuracy is "
        "measured at the end of each epoch, so the time and the optimizer steps to the target are "
        "those at the end of the first epoch that reaches it. Time is the wall-clock (and CPU) "
        "time of the training steps only (forward, loss, backward, optimizer), evaluation "
        "excluded. *Speed-up* of X over (a) = time of (a) / time of X, paired by seed, over the "
        "seeds where both reached the target.")
    add("")
    add("## Results")
    add("")
    add("### Test accuracy (claim 1)")
    add("")
    header = ["dataset", "model"] + [OBJECTIVE_LABELS[o] for o in objs]
    if "as" in objs and "softmax" in objs:
        header += ["(b) − (a)", "(b) > (a) in seeds"]
    if "as_accum" in objs and "softmax" in objs:
        header += ["(c) − (a)"]
    rows = []
    for s, m in _cell_rows(cfg):
        c = cells[(s.name, m)]
        row = [s.name, m] + [fmt(c["agg"][o]["test_at_best"], 100, 2) for o in objs]
        if "as" in c["speedup"]:
            sp = c["speedup"]["as"]
            row += [fmt(sp["test_diff"], 100, 2), f"{sp['test_wins']}/{c['agg']['as']['n']}"]
        if "as_accum" in c["speedup"]:
            row += [fmt(c["speedup"]["as_accum"]["test_diff"], 100, 2)]
        rows.append(row)
    add("Test accuracy (%) at the epoch of best validation accuracy.")
    add("")
    add(_table(header, rows))
    add("")
    add("### Validation loss vs validation accuracy (claim 2)")
    add("")
    add("Pearson r between each objective's own validation loss and the validation accuracy, "
        "over all epochs and over the late epochs (> E/2). Strongly negative = the loss tracks the "
        "accuracy.")
    add("")
    header = ["dataset", "model"] + [f"{OBJECTIVE_LABELS[o]} r (all / late)" for o in objs]
    rows = []
    for s, m in _cell_rows(cfg):
        c = cells[(s.name, m)]
        rows.append([s.name, m] + [f"{fmt(c['agg'][o]['r_own'], digits=2)} / "
                                   f"{fmt(c['agg'][o]['r_own_late'], digits=2)}" for o in objs])
    add(_table(header, rows))
    add("")
    add("Is it the loss used for *training* or the loss used as a *yardstick*? The same r (all "
        "epochs) with both validation losses measured on every model:")
    add("")
    header = ["dataset", "model"] + [f"{OBJECTIVE_LABELS[o]}: r(CE) / r(AS)" for o in objs]
    rows = []
    for s, m in _cell_rows(cfg):
        c = cells[(s.name, m)]
        rows.append([s.name, m] + [f"{fmt(c['agg'][o]['r_ce'], digits=2, pm=False)} / "
                                   f"{fmt(c['agg'][o]['r_as'], digits=2, pm=False)}" for o in objs])
    add(_table(header, rows))
    add("")
    add(f"![validation loss and accuracy over epochs]({images['loss_acc_mlp']})")
    add("")
    add(f"![validation loss and accuracy over epochs, softmax regression]({images['loss_acc_linear']})")
    add("")
    add("### Zero-loss share over training (claim 3)")
    add("")
    add(f"Share (%) of the training subsample with AS-Softmax loss exactly 0 at δ_min = "
        f"{cfg.delta_min}, at the end of the given epochs (E = last epoch).")
    add("")
    rows = []
    for s, m in _cell_rows(cfg):
        c = cells[(s.name, m)]
        eps = report_epochs(s.epochs)
        for o in objs:
            zs = c["agg"][o]["zero_share"]
            rows.append([s.name, m, OBJECTIVE_LABELS[o]] +
                        [f"e{e}: {fmt(zs[e], 100, 1)}" for e in eps])
    add(_table(["dataset", "model", "objective", "", "", "", ""], rows))
    add("")
    add(f"![zero-loss share over training]({images['zero']})")
    add("")
    add("### Time and optimizer steps to the target accuracy (claim 4)")
    add("")
    add("Per objective: epochs, optimizer steps and training wall time (s) to reach the target "
        "validation accuracy (mean over the seeds that reached it; `n/N` = seeds that did), and "
        "the whole run's training wall time and steps. Loss share = fraction of the training time "
        "spent inside refsoftmax.")
    add("")
    rows = []
    for s, m in _cell_rows(cfg):
        c = cells[(s.name, m)]
        for o in objs:
            a = c["agg"][o]
            rows.append([s.name, m, f"{100 * c['target']:.1f}", OBJECTIVE_LABELS[o],
                         f"{a['reached']}/{a['n']}", fmt(a["hit_epoch"], digits=1),
                         fmt(a["hit_steps"], digits=0), fmt(a["hit_wall"], digits=2),
                         fmt(a["total_wall"], digits=2), fmt(a["total_steps"], digits=0),
                         fmt(a["loss_share"], 100, 0, pm=False),
                         fmt(a["final_k"], digits=1, pm=False)])
    add(_table(["dataset", "model", "target val acc %", "objective", "reached", "epochs",
                "steps", "wall s", "total wall s", "total steps", "loss share %", "final k"], rows))
    add("")
    if "softmax" in objs and len(objs) > 1:
        add("Speed-up over (a) softmax CE in reaching the target (time of (a) / time of X, paired "
            "by seed; > 1 = faster than softmax). *Steps* counts optimizer steps; *wall* is the "
            "training wall time; *wall w/o loss* leaves out the time inside the loss (what a "
            "faster AS-Softmax kernel could not remove); *CPU* is the training CPU time, less "
            "disturbed than wall time by other jobs on the machine; *per epoch* compares whole "
            "runs (same epochs), i.e. throughput. Accuracy Δ = test accuracy of X − (a), in "
            "points.")
        add("")
        rows = []
        for s, m in _cell_rows(cfg):
            c = cells[(s.name, m)]
            for o, sp in c["speedup"].items():
                rows.append([s.name, m, OBJECTIVE_LABELS[o], fmt(sp["hit_steps"], digits=2),
                             fmt(sp["hit_wall"], digits=2), fmt(sp["hit_wall_noloss"], digits=2),
                             fmt(sp["hit_cpu"], digits=2), fmt(sp["per_epoch_wall"], digits=2),
                             fmt(sp["per_epoch_cpu"], digits=2), fmt(sp["test_diff"], 100, 2)])
        add(_table(["dataset", "model", "objective", "steps", "wall", "wall w/o loss", "CPU",
                    "per epoch (wall)", "per epoch (CPU)", "accuracy Δ"], rows))
        add("")
    add(f"![validation accuracy vs optimizer steps]({images['steps']})")
    add("")
    add(f"![validation accuracy vs training wall time]({images['time']})")
    add("")
    if {"softmax", "as"} <= set(objs):
        add("## Discussion")
        add("")
        add(_discussion(analysis, cfg))
        add("")
    if compare:
        _sensitivity_section(add, analysis, cfg, compare)
    add("## Caveats")
    add("")
    add(f"* **Noisy timings.** The runs share a {meta['cpu_count']}-core machine with other "
        "jobs, and with `--jobs 2` two runs train at the same time; wall times can move by tens "
        "of percent between runs of the same configuration. The optimizer-step counts are "
        "deterministic (given the seed) and are the robust part of claim 4; CPU time is given as "
        "a second clock, and the summary counts a speed-up only when both clocks show it. "
        f"Load average at the start / end of this run: {meta['load_start']} / "
        f"{meta['load_end']}.")
    add("* **Resolution.** Time to target is read at epoch ends, so it is quantised to one epoch.")
    add("* **Scale.** These are small models trained for tens of epochs on small data, not the "
        "paper's pre-trained encoders; a claim that fails here may still hold at the paper's "
        "scale, and one that holds here is only supported, not established, for it.")
    add("* **Hyper-parameters** (learning rate, δ_min, warm-up, λ, batch) were not tuned per "
        "objective: one setting per dataset, shared by all three objectives.")
    add("* **Synthetic data** has overlapping classes and label noise in every split, so "
        "accuracy is capped by the Bayes column of the dataset table; digits has no label noise.")
    add("")
    add("## Reproduce")
    add("")
    add("```bash")
    add(".venv/bin/pip install scikit-learn matplotlib")
    for payload in compare or []:  # the sensitivity runs first: this page reads their JSON
        add(f".venv/bin/python experiments/as_softmax_reproduction.py {payload['meta']['argv']}")
    add(f".venv/bin/python experiments/as_softmax_reproduction.py {meta['argv']}".rstrip())
    add("```")
    add("")
    add(f"This run: {meta['date']}, {meta['runtime_s']:.0f} s in total ({meta['n_runs']} training "
        f"runs, `--jobs {cfg.jobs}`), Python {meta['python']}, NumPy {meta['numpy']}, "
        f"refsoftmax {meta['refsoftmax']}, {meta['machine']}. Raw per-epoch results: "
        f"`{meta['json']}`. Accuracies, losses, zero-loss shares and step counts are "
        "reproducible bit for bit (fixed seeds, one thread per run); times are not.")
    add("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))

_OUTPUT_FLAGS = {"--output-dir", "--json", "--jobs", "--compare"}


def variant_label(payload: dict[str, Any]) -> str:
    """The command-line options of a stored run, without the ones that only say where to write."""
    words = str(payload["meta"].get("argv", "")).split()
    kept: list[str] = []
    skip = False
    for w in words:
        if skip:
            skip = False
            continue
        name = w.split("=", 1)[0]
        if name in _OUTPUT_FLAGS:
            skip = "=" not in w
            continue
        if name in {"--results-only", "--no-plots"}:
            continue
        kept.append(w)
    return " ".join(kept) or "(defaults)"


def _sensitivity_section(add: Any, analysis: dict[str, Any], cfg: Config,
                         compare: list[dict[str, Any]]) -> None:
    add("## Sensitivity: other settings (separate runs)")
    add("")
    add("The same measurements with one setting changed, read from the JSON files of separate "
        "runs of this script (listed below; their seeds may be fewer). Test accuracy difference "
        "to softmax CE of the same run, in points (mean ± std over seeds), and the mean Pearson r "
        "of AS-Softmax's own validation loss with validation accuracy (all epochs).")
    add("")
    variants = [("this page", {f"{k[0]}/{k[1]}": c for k, c in analysis["cells"].items()},
                 len(cfg.seeds))]
    for payload in compare:
        variants.append((f"`{variant_label(payload)}`", payload["cells"],
                         len(payload["config"]["seeds"])))
    header = ["dataset", "model"]
    for label, _, n in variants:
        header += [f"{label} ({n} seed{'s' if n != 1 else ''}): (b) − (a)", "(c) − (a)", "AS r"]
    rows = []
    for s, m in _cell_rows(cfg):
        row = [s.name, m]
        for _, cells, _ in variants:
            c = cells.get(f"{s.name}/{m}")
            if c is None or "as" not in c["speedup"]:
                row += ["–", "–", "–"]
                continue
            row += [fmt(tuple(_nan(x) for x in c["speedup"]["as"]["test_diff"]), 100, 2),
                    fmt(tuple(_nan(x) for x in c["speedup"]["as_accum"]["test_diff"]), 100, 2)
                    if "as_accum" in c["speedup"] else "–",
                    fmt(tuple(_nan(x) for x in c["agg"]["as"]["r_own"]), digits=2, pm=False)]
        rows.append(row)
    add(_table(header, rows))
    add("")
    if any("--label-noise" in label for label, _, _ in variants[1:]):
        add("`--label-noise` changes only the synthetic datasets; its digits rows repeat this "
            "page's.")
        add("")
    for label, cells, _ in variants[1:]:
        n = len(cells)
        better = sum(_nan(c["speedup"]["as"]["test_diff"][0]) > 0 for c in cells.values()
                     if "as" in c["speedup"])
        add(f"* {label}: (b) beat (a) in {better}/{n} cells.")
    add("")


def _nan(x: Any) -> Any:
    """JSON stores NaN as null; turn it back."""
    return float("nan") if x is None else x

def _discussion(analysis: dict[str, Any], cfg: Config) -> str:
    """Numbers-driven reading of the tables (every sentence is computed from the results)."""
    cells = analysis["cells"]
    keys = list(cells)
    n = len(keys)
    out: list[str] = []

    def agg(key: tuple[str, str], obj: str, name: str) -> float:
        return cells[key]["agg"][obj][name][0]

    diffs = sorted((cells[k]["speedup"]["as"]["test_diff"][0] * 100, k) for k in keys)
    worse = sum(d < 0 for d, _ in diffs)
    worst = ", ".join(f"{k[0]}/{k[1]} ({d:+.1f})" for d, k in diffs[:2])
    final_zero = [cells[k]["agg"]["as"]["zero_share"][cells[k]["epochs"]][0] * 100 for k in keys]
    earlier = sum(agg(k, "as", "best_epoch") < agg(k, "softmax", "best_epoch") for k in keys)
    sm_higher = sum(cells[k]["agg"]["softmax"]["zero_share"][cells[k]["epochs"]][0]
                    >= cells[k]["agg"]["as"]["zero_share"][cells[k]["epochs"]][0] for k in keys)
    out.append(
        f"**Accuracy.** AS-Softmax (b) had a lower test accuracy than softmax CE in {worse}/{n} "
        "cells; the largest "
        f"gaps (points) are {worst}. By the last epoch {min(final_zero):.0f}–"
        f"{max(final_zero):.0f} % of the training subsample has AS loss exactly 0 under (b), and "
        "such an example contributes exactly no gradient. A reading consistent with these "
        "numbers (not a proof): once most training examples are separated by δ, (b) learns only "
        "from the remaining hard or mislabelled ones, while softmax CE keeps enlarging every "
        f"margin. {'In line with that, ' if earlier > n / 2 else 'Only partly in line: '}"
        f"(b)'s best validation epoch came earlier than (a)'s in {earlier}/{n} cells; and the "
        "softmax-trained model itself ends with at least as large a share of examples that "
        f"AS-Softmax would count as solved in {sm_higher}/{n} cells.")
    out.append("")
    sm_all = sum(agg(k, "softmax", "r_own") <= -0.7 for k in keys)
    yard_sm = sum(agg(k, "softmax", "r_as") <= -0.7 for k in keys)
    yard_as = sum(agg(k, "as", "r_as") <= -0.7 for k in keys)
    late_sm = [agg(k, "softmax", "r_own_late") for k in keys]
    late_as = [agg(k, "as", "r_own_late") for k in keys]
    late_better = sum(a < b for a, b in zip(late_as, late_sm, strict=True)
                      if not (math.isnan(a) or math.isnan(b)))
    late_n = sum(not (math.isnan(a) or math.isnan(b))
                 for a, b in zip(late_as, late_sm, strict=True))
    out.append(
        f"**Loss–accuracy correlation.** Over all epochs softmax CE's validation loss is itself "
        f"strongly anti-correlated with accuracy (r ≤ −0.7 in {sm_all}/{n} cells): most epochs "
        "fall in the phase where the model is still improving, and the validation CE falls with "
        "the error. The paper's contrast needs a long over-fitting phase, in which softmax's "
        "validation loss rises while its accuracy holds; over the late epochs (after E/2) AS-"
        f"Softmax's r is below softmax's in {late_better}/{late_n} cells with both defined. Used "
        "as a yardstick on the softmax-trained models, the AS-Softmax validation loss has r ≤ "
        f"−0.7 in {yard_sm}/{n} cells, against {yard_as}/{n} on the AS-trained ones" + (
            ": the correlation belongs to the loss as a measurement at least as much as to "
            "training with it." if yard_sm >= yard_as else
            ": training with AS-Softmax does strengthen it."))
    out.append("")
    if "as_accum" in cfg.objectives:
        step_ratio = [agg(k, "as_accum", "total_steps") / agg(k, "as", "total_steps") for k in keys]
        time_ratio = [agg(k, "as_accum", "total_cpu") / agg(k, "as", "total_cpu") for k in keys
                      if agg(k, "as", "total_cpu") > 0]
        k_max = sum(agg(k, "as_accum", "final_k") >= cfg.accum_max_steps for k in keys)
        fewer_steps = sum(
            1 for k in keys if cells[k]["speedup"]["as_accum"]["hit_steps"][2] > 0
            and cells[k]["speedup"]["as_accum"]["hit_steps"][0] > 1.0)
        both = sum(1 for k in keys if cells[k]["speedup"]["as_accum"]["hit_steps"][2] > 0)
        acc_vs_b = sum(agg(k, "as_accum", "test_at_best") < agg(k, "as", "test_at_best")
                       for k in keys)
        out.append(
            f"**Adaptive accumulation.** Over a whole run (c) took {100 * min(step_ratio):.0f}–"
            f"{100 * max(step_ratio):.0f} % of (b)'s optimizer steps (k reached max_steps = "
            f"{cfg.accum_max_steps} in {k_max}/{n} cells), but every micro-batch still needs its "
            "forward and backward pass, so the whole run's CPU time was "
            f"{100 * float(np.median(time_ratio)):.0f} % of (b)'s (median over cells): an "
            "optimizer step is cheap next to the forward and backward passes of these models. "
            f"To reach the target, (c) needed fewer optimizer steps than (a) in {fewer_steps}/"
            f"{both} cells where both reached it, yet fewer steps per epoch at the same learning "
            f"rate also means slower progress per epoch; (c)'s test accuracy was below (b)'s in "
            f"{acc_vs_b}/{n} cells. A 1.2× wall-clock gain needs a setting where the optimizer "
            "step (or a gradient all-reduce between devices) is a large part of the step time.")
    return "\n".join(out)


def _summary(analysis: dict[str, Any], cfg: Config, v: dict[str, Any]) -> str:
    n = v["n_cells"]
    if "acc_better" not in v:
        return "Softmax CE and AS-Softmax were not both run; no verdicts."
    cells = analysis["cells"]
    diffs = [c["speedup"]["as"]["test_diff"][0] * 100 for c in cells.values()]
    out = []
    out.append(_table(["claim", "what we measured", "verdict here"], [
        ["1. AS-Softmax improves test accuracy",
         f"(b) − (a) > 0 in {v['acc_better']}/{n} dataset×model cells (in every seed: "
         f"{v['acc_clear']}/{n}); mean Δ from {min(diffs):+.2f} to {max(diffs):+.2f} points",
         _verdict(v["acc_better"], n)],
        ["2. AS val loss strongly anti-correlated with val accuracy; softmax's is not",
         f"AS r ≤ −0.7 in {v['corr_as_strong']}/{n}; softmax \\|r\\| < 0.3 in "
         f"{v['corr_sm_small']}/{n}; AS r below softmax r in {v['corr_as_more']}/{n}",
         _verdict(min(v["corr_as_strong"], v["corr_sm_small"]), n)],
        ["3. Zero-loss share grows over training",
         f"share of (b) at the last epoch > after epoch 1 in {v['zero_grows']}/{n}; still "
         f"within 2 points of its maximum at the end in {v['zero_holds']}/{n}" + (
             f" (it receded in {'; '.join(v['zero_receded'])})" if v["zero_receded"] else ""),
         _verdict(min(v["zero_grows"], v["zero_holds"]), n)],
        ["4. Adaptive accumulation: ~1.2× faster at equal effectiveness",
         f"of the {v['reached_both']} cells where both reached the target, (c) needed fewer "
         f"optimizer steps than (a) in {v['fewer_steps']}, less CPU time in {v['faster_cpu']}, "
         f"less wall time in {v['faster']}, ≥ 1.15× less on both clocks in {v['faster12']}; "
         f"test accuracy of (c) within 0.5 points of (a) or better in {v['equal_eff']}/{n}",
         _verdict(min(v["faster12"], v["equal_eff"]), n)],
    ]))
    out.append("")
    out.append("Verdicts: *holds* = in every cell, *mostly* = in more than half, *partly* = in "
               "some, *does not hold* = in none. The tables below give the numbers behind each "
               "count; the timings behind claim 4 are noisy (see Caveats).")
    return "\n".join(out)


def _verdict(k: int, n: int) -> str:
    if n == 0:
        return "–"
    if k == n:
        return "holds"
    if k > n / 2:
        return "mostly holds"
    if k > 0:
        return "partly holds"
    return "does not hold"


# ----------------------------------------------------------------------------- plots


def make_plots(results: list[dict[str, Any]], analysis: dict[str, Any], cfg: Config,
               images_dir: Path) -> dict[str, str]:
    """Write the figures; return {key: path relative to the page}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images_dir.mkdir(parents=True, exist_ok=True)
    colors = {"softmax": "tab:blue", "as": "tab:orange", "as_accum": "tab:green"}
    names = [s.name for s in cfg.datasets]
    out: dict[str, str] = {}

    def runs(ds: str, model: str, obj: str) -> list[dict[str, Any]]:
        return [r for r in results if r["dataset"] == ds and r["model"] == model
                and r["objective"] == obj]

    def mean_curve(rs: list[dict[str, Any]], key: str) -> np.ndarray:
        return np.mean([np.asarray(r["history"][key], dtype=float) for r in rs], axis=0)

    # 1. validation loss and accuracy over epochs, per dataset (rows) and objective (columns)
    for model in cfg.models:
        fig, axes = plt.subplots(len(names), len(cfg.objectives), squeeze=False,
                                 figsize=(3.6 * len(cfg.objectives), 2.4 * len(names)))
        for i, ds in enumerate(names):
            cell = analysis["cells"][(ds, model)]
            for j, obj in enumerate(cfg.objectives):
                ax = axes[i][j]
                rs = runs(ds, model, obj)
                ep = np.asarray(rs[0]["history"]["epoch"])[1:]
                loss = np.mean([np.asarray(own_val_loss(r))[1:] for r in rs], axis=0)
                acc = mean_curve(rs, "val_acc")[1:]
                ax.plot(ep, loss, color="tab:red", lw=1.5)
                ax.set_ylabel("val loss", color="tab:red", fontsize=8)
                ax2 = ax.twinx()
                ax2.plot(ep, 100 * acc, color="black", lw=1.2, ls="--")
                ax2.set_ylabel("val acc %", fontsize=8)
                r = cell["agg"][obj]["r_own"][0]
                ax.set_title(f"{ds}: {OBJECTIVE_LABELS[obj]}  r={r:.2f}", fontsize=8)
                ax.tick_params(labelsize=7)
                ax2.tick_params(labelsize=7)
                if i == len(names) - 1:
                    ax.set_xlabel("epoch", fontsize=8)
        fig.suptitle(f"{MODEL_LABELS[model]}: own validation loss (red, solid) and validation "
                     "accuracy (black, dashed), mean over seeds", fontsize=9)
        fig.subplots_adjust(left=0.07, right=0.93, bottom=0.3 / len(names), top=1 - 0.35 / len(names),
                            wspace=0.55, hspace=0.6)
        fname = f"as_softmax_val_loss_acc_{model}.png"
        fig.savefig(images_dir / fname, dpi=DPI)
        plt.close(fig)
        out[f"loss_acc_{model}"] = f"images/{fname}"

    # 2. zero-loss share over training
    width, height = max(10.0, 3.2 * len(names)), 2.6 * len(cfg.models) + 0.9
    fig, axes = plt.subplots(len(cfg.models), len(names), squeeze=False, figsize=(width, height))
    for i, model in enumerate(cfg.models):
        for j, ds in enumerate(names):
            ax = axes[i][j]
            for obj in cfg.objectives:
                rs = runs(ds, model, obj)
                ep = np.asarray(rs[0]["history"]["epoch"])
                ax.plot(ep, 100 * mean_curve(rs, "zero_share"), color=colors[obj],
                        label=f"{OBJECTIVE_LABELS[obj]} (δ_min, end of epoch)")
                if obj != "softmax":
                    vals = np.asarray([[np.nan if v is None else v for v in
                                        r["history"]["zero_share_in_training"]] for r in rs])
                    ax.plot(ep[1:], 100 * np.mean(vals[:, 1:], axis=0), color=colors[obj],
                            ls=":", label=f"{OBJECTIVE_LABELS[obj]} (in training, δ in use)")
            ax.set_title(f"{ds} / {model}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("epoch", fontsize=7)
            if j == 0:
                ax.set_ylabel("zero-loss share %", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7)
    fig.subplots_adjust(left=0.6 / width, right=0.98, bottom=1.2 / height, top=1 - 0.3 / height,
                        wspace=0.3, hspace=0.5)
    fig.savefig(images_dir / "as_softmax_zero_loss_share.png", dpi=DPI)
    plt.close(fig)
    out["zero"] = "images/as_softmax_zero_loss_share.png"

    # 3./4. validation accuracy vs optimizer steps and vs training wall time
    for key, xkey, xlabel in (("steps", "optimizer_steps", "optimizer steps"),
                              ("time", "train_wall_s", "training wall time (s)")):
        width, height = max(10.0, 3.2 * len(names)), 2.6 * len(cfg.models) + 0.7
        fig, axes = plt.subplots(len(cfg.models), len(names), squeeze=False,
                                 figsize=(width, height))
        for i, model in enumerate(cfg.models):
            for j, ds in enumerate(names):
                ax = axes[i][j]
                for obj in cfg.objectives:
                    for k, r in enumerate(runs(ds, model, obj)):
                        h = r["history"]
                        ax.plot(h[xkey], 100 * np.asarray(h["val_acc"]), color=colors[obj],
                                alpha=0.8, lw=1, label=OBJECTIVE_LABELS[obj] if k == 0 else None)
                ax.axhline(100 * analysis["cells"][(ds, model)]["target"], color="grey", ls="--",
                           lw=0.8, label="target")
                ax.set_title(f"{ds} / {model}", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.set_xlabel(xlabel, fontsize=7)
                if j == 0:
                    ax.set_ylabel("val acc %", fontsize=8)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
        fig.subplots_adjust(left=0.6 / width, right=0.98, bottom=1.0 / height,
                            top=1 - 0.3 / height, wspace=0.3, hspace=0.5)
        fname = f"as_softmax_val_acc_vs_{key}.png"
        fig.savefig(images_dir / fname, dpi=DPI)
        plt.close(fig)
        out[key] = f"images/{fname}"
    return out


# ----------------------------------------------------------------------------- main


def _load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) else float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def build_config(args: argparse.Namespace) -> Config:
    mode = "quick" if args.quick else "full" if args.full else "default"
    specs = dataset_specs(mode)
    if args.datasets:
        wanted = [d.strip() for d in args.datasets.split(",") if d.strip()]
        unknown = set(wanted) - {s.name for s in specs}
        if unknown:
            msg = f"unknown datasets {sorted(unknown)}; choose from {[s.name for s in specs]}"
            raise SystemExit(msg)
        specs = tuple(s for s in specs if s.name in wanted)
    if args.epochs is not None:
        specs = tuple(replace(s, epochs=args.epochs) for s in specs)
    if args.label_noise is not None:
        specs = tuple(replace(s, label_noise=args.label_noise) if s.kind == "synthetic" else s
                      for s in specs)
    n_seeds = args.seeds if args.seeds is not None else (5 if mode == "full" else
                                                         2 if mode == "quick" else 3)
    jobs = args.jobs if args.jobs is not None else min(2, os.cpu_count() or 1)
    return Config(
        mode=mode, seeds=tuple(range(n_seeds)), datasets=specs,
        models=tuple(args.models.split(",")) if args.models else MODELS,
        optimizer=args.optimizer, delta_min=args.delta_min,
        warmup_fraction=args.warmup_fraction, accum_lam=args.lam,
        accum_max_steps=args.max_steps, accum_norm=args.accum_norm, loss_path=args.loss_path,
        target_fraction=args.target_fraction, backend=args.backend, dtype=args.dtype, jobs=jobs,
    )


def config_from_dict(d: dict[str, Any]) -> Config:
    """The :class:`Config` stored (``asdict``) in a results JSON."""
    d = dict(d)
    d["datasets"] = tuple(DatasetSpec(**spec) for spec in d["datasets"])
    for key in ("seeds", "models", "objectives"):
        d[key] = tuple(d[key])
    return Config(**d)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny sizes (< 1 min; smoke test)")
    size.add_argument("--full", action="store_true", help="larger sizes, 5 seeds (slow)")
    p.add_argument("--seeds", type=int, default=None,
                   help="number of seeds (0..N-1); default 2 quick, 3 default, 5 full")
    p.add_argument("--datasets", default=None, help="comma-separated subset, e.g. digits,syn50")
    p.add_argument("--models", default=None, help="comma-separated subset of linear,mlp")
    p.add_argument("--epochs", type=int, default=None, help="override every dataset's epochs")
    p.add_argument("--label-noise", type=float, default=None,
                   help="override ρ of every synthetic dataset (default 0.1)")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes (one thread each; 0 = in this process); "
                        "default min(2, cores)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--delta-min", type=float, default=0.1)
    p.add_argument("--warmup-fraction", type=float, default=0.1)
    p.add_argument("--lam", type=float, default=1.0, help="AccumulationSchedule λ")
    p.add_argument("--max-steps", type=int, default=8, help="AccumulationSchedule max_steps")
    p.add_argument("--accum-norm", choices=("examples", "nonzero"), default="examples",
                   help="divide the accumulated gradient sum by all examples or non-zero-loss ones")
    p.add_argument("--loss-path", choices=("reference", "fused"), default="reference",
                   help="softmax CE through forward+backward (as AS-Softmax) or the fused kernel")
    p.add_argument("--target-fraction", type=float, default=0.95)
    p.add_argument("--backend", default="numpy", help="refsoftmax backend name (numpy, torch, ...)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="write the page, images/ and the JSON here instead of docs/ and "
                        "experiments/ (default for --quick: experiments/quick_output)")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--json", type=Path, default=None, help="where to write the raw results")
    p.add_argument("--results-only", action="store_true",
                   help="write only the raw results JSON (no page, no figures)")
    p.add_argument("--from-results", type=Path, default=None,
                   help="rebuild the page, figures and JSON analysis from a results JSON of an "
                        "earlier run (no training; its configuration and timings are kept)")
    p.add_argument("--compare", type=Path, action="append", default=[],
                   help="results JSON of another run (e.g. --delta-min 0.5) to add to the page's "
                        "sensitivity section; repeatable")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cfg = build_config(args)
    out_dir = args.output_dir if args.output_dir is not None else (
        QUICK_DIR if cfg.mode == "quick" else None)
    if out_dir is None:
        md_path, images_dir, json_path = DEFAULT_MD, DEFAULT_IMAGES, DEFAULT_JSON
    else:
        md_path = out_dir / "as_softmax_reproduction.md"
        images_dir = out_dir / "images"
        json_path = out_dir / "as_softmax_reproduction_results.json"
    if args.json is not None:
        json_path = args.json
    compare = [json.loads(Path(p).read_text()) for p in args.compare]
    stored = json.loads(args.from_results.read_text()) if args.from_results else None
    if stored is not None:
        cfg = config_from_dict(stored["config"])
    load_start = _load_average()
    t0 = time.perf_counter()
    print(f"mode={cfg.mode} seeds={list(cfg.seeds)} datasets={[s.name for s in cfg.datasets]} "
          f"models={list(cfg.models)} jobs={cfg.jobs} backend={cfg.backend} dtype={cfg.dtype}",
          flush=True)
    if stored is None:
        results = run_all(cfg, log=functools.partial(print, flush=True))
    else:
        results = stored["runs"]
        for r in results:  # JSON stores NaN (δ of softmax runs) as null
            r["history"]["delta"] = [_nan(x) for x in r["history"]["delta"]]
    analysis = analyse(results, cfg)
    plots = not (args.no_plots or args.results_only)
    images = make_plots(results, analysis, cfg, images_dir) if plots else {
        k: "" for k in ("loss_acc_mlp", "loss_acc_linear", "zero", "steps", "time")}
    runtime = time.perf_counter() - t0
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runtime_s": runtime,
        "n_runs": len(results),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "refsoftmax": refsoftmax.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "cpu_count": os.cpu_count(),
        "load_start": load_start,
        "load_end": _load_average(),
        "argv": " ".join(str(a) for a in (argv if argv is not None else sys.argv[1:])),
        "json": _display_path(json_path),
        "compare": [_display_path(Path(p)) for p in args.compare],
    }
    if stored is not None:  # the run being reported is the stored one
        meta = {**stored["meta"], "json": _display_path(json_path),
                "compare": [_display_path(Path(p)) for p in args.compare]}
    if not args.results_only:
        write_page(md_path, images, analysis, cfg, meta, compare)
    cells_json = {f"{ds}/{m}": {k: v for k, v in c.items() if k != "metrics"}
                  for (ds, m), c in analysis["cells"].items()}
    payload = {
        "config": asdict(cfg),
        "meta": meta,
        "verdicts": verdicts(analysis, cfg),
        "cells": cells_json,
        "runs": results,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_jsonable(payload)))
    wrote = [str(json_path)] + ([] if args.results_only else [str(md_path)])
    print(f"wrote {', '.join(wrote)} and {sum(bool(v) for v in images.values())} figures "
          f"in {runtime:.1f} s", flush=True)
    return {"payload": payload, "md_path": None if args.results_only else md_path,
            "json_path": json_path,
            "images": {k: images_dir / Path(v).name for k, v in images.items() if v}}


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    main()

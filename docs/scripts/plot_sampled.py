"""Draw the sampled-softmax figures of the docs from values computed with refsoftmax.

Writes, next to this script's parent folder:

* ``docs/images/sampled_spike_forest.png``: for one example with 20 classes,
  the full-softmax gradient with respect to the logits ("spike and forest")
  next to one sampled-softmax gradient of each estimator (5 samples), with
  the mean of many sampled gradients on top.
* ``docs/images/sampled_bias_variance.png``: relative bias and variance of
  the sampled gradient with respect to the inputs, against ``num_sampled``,
  for both estimators (and both without their correction), 1000 classes.

Every gradient is computed by ``refsoftmax.sampled_softmax_loss.value_and_grad``
and every exact one by ``refsoftmax.linear_softmax_cross_entropy``; the samples
come from ``refsoftmax.samplers.LogUniformSampler``.  The gradient with respect
to the logits is read off the gradient with respect to the inputs: with
``weights = I`` and ``inputs = z`` the logit of class ``c`` is ``z_c`` and
``dL/dinputs = sum_c dL/dz_c e_c`` is that gradient, candidates drawn twice
summed.  Independent samples are the rows of one ``per_example=True`` call.

Run from the repository root (about 25 s of CPU time)::

    python docs/scripts/plot_sampled.py

Uses Matplotlib's Agg canvas (no display needed); the output is deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import refsoftmax as rs
from refsoftmax.samplers import LogUniformSampler

IMAGES = Path(__file__).resolve().parent.parent / "images"
PNG_METADATA = {"Software": None}  # no Matplotlib version: re-running gives identical files

TARGET_COLOR = "#c0392b"
OTHER_COLOR = "#2e86c1"
FULL_COLOR = "#bbbbbb"
ESTIMATORS = {  # estimator -> (unique sampling, colour, label)
    "logq": (True, "#2e86c1", '"logq" (TF): unique samples'),
    "target_excluded": (False, "#d35400", '"target_excluded": with replacement'),
}

# ---------------------------------------------------------------- figure 1

SPIKE_LOGITS = np.array([
    1.0, 2.2, 0.4, 1.8, 0.0, -0.3, 0.9, -0.5, -0.2, -0.8,
    -0.6, -1.0, -0.4, -1.2, -0.9, -1.1, -1.4, -1.3, -1.5, -1.6,
])
SPIKE_TARGET = 3
SPIKE_SAMPLES = 5
SPIKE_SEEDS = {"logq": 5, "target_excluded": 2}
SPIKE_DRAWS = 20_000


def sampled_logit_grads(estimator: str, z: np.ndarray, target: int, num_sampled: int, rows: int,
                        seed: int) -> tuple[np.ndarray, object]:
    """``rows`` independent sampled gradients w.r.t. the logits ``z`` (W = I, inputs = z)."""
    num_classes = z.size
    unique = ESTIMATORS[estimator][0]
    sampler = LogUniformSampler(num_classes)
    labels = np.full((rows, 1), target)
    sv = sampler.sample(labels, num_sampled, unique=unique, seed=seed, per_example=True)
    _, grads = rs.sampled_softmax_loss.value_and_grad(
        np.eye(num_classes), np.zeros(num_classes), labels, np.tile(z, (rows, 1)), num_sampled,
        num_classes, sampled_values=sv, estimator=estimator, sampler=sampler,
    )
    return grads["inputs"], sv


def spike_forest_figure(path: Path) -> dict[str, np.ndarray]:
    z, t, num_classes = SPIKE_LOGITS, SPIKE_TARGET, SPIKE_LOGITS.size
    x = z[None, :]
    _, full = rs.linear_softmax_cross_entropy.value_and_grad(
        np.eye(num_classes), np.zeros(num_classes), np.array([t]), x)
    g_full = full["inputs"][0]
    classes = np.arange(num_classes)

    fig = Figure(figsize=(9.0, 8.2), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 1, sharex=True, sharey=True)
    colors = [TARGET_COLOR if c == t else OTHER_COLOR for c in classes]
    axes[0].bar(classes, g_full, color=colors)
    axes[0].set_title(f"full softmax: p - e_t over all {num_classes} classes (target t = {t})",
                      fontsize=10)
    out = {"full": g_full}
    for ax, estimator in zip(axes[1:], ESTIMATORS, strict=True):
        one, sv = sampled_logit_grads(estimator, z, t, SPIKE_SAMPLES, 1, SPIKE_SEEDS[estimator])
        many, _ = sampled_logit_grads(estimator, z, t, SPIKE_SAMPLES, SPIKE_DRAWS, 0)
        mean = many.mean(axis=0)
        out[estimator], out[estimator + "_mean"] = one[0], mean
        out[estimator + "_candidates"] = np.asarray(sv.candidates[0])
        ax.bar(classes, g_full, color=FULL_COLOR, width=0.8, label="full softmax")
        ax.bar(classes, one[0], color=colors, width=0.45, label="this sample")
        ax.plot(classes, mean, "k.", markersize=7,
                label=f"mean over {SPIKE_DRAWS:,} samples".replace(",", " "))
        drawn = ", ".join(str(c) for c in out[estimator + "_candidates"])
        ax.set_title(f"{ESTIMATORS[estimator][2]}; {SPIKE_SAMPLES} samples drawn: {drawn}",
                     fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    for ax in axes:
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylabel(r"$\partial\ell/\partial z_j$")
    axes[-1].set_xticks(classes)
    axes[-1].set_xlabel("class j (log-uniform sampler: class 0 most likely)")
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)
    return out


# ---------------------------------------------------------------- figure 2

BV_CLASSES, BV_DIM, BV_TARGET = 1000, 32, 10
BV_NUM_SAMPLED = (4, 16, 64, 256, 1000)
BV_DRAWS = 3000
BV_CHUNK = 250  # rows per call: [rows, num_sampled, dim] gathered weights stay small


def bias_variance(estimator: str, w: np.ndarray, b: np.ndarray, x: np.ndarray,
                  g: np.ndarray) -> dict[bool, tuple[list[float], list[float]]]:
    """Relative bias and variance of the input gradient for each num_sampled.

    Keyed by ``subtract_log_q``: the corrected and the uncorrected estimator
    see the same samples.  Also prints the mean sampled loss (corrected) and
    the mean of the target's log expected count, for the docs' text.
    """
    unique = ESTIMATORS[estimator][0]
    sampler = LogUniformSampler(BV_CLASSES)
    labels = np.full((BV_CHUNK, 1), BV_TARGET)
    inputs = np.tile(x, (BV_CHUNK, 1))
    norm2 = float(g @ g)
    out: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    for num_sampled in BV_NUM_SAMPLED:
        grads: dict[bool, list[np.ndarray]] = {True: [], False: []}
        losses, log_q_true = [], []
        for chunk in range(BV_DRAWS // BV_CHUNK):
            sv = sampler.sample(labels, num_sampled, unique=unique, seed=1000 * num_sampled + chunk,
                                per_example=True)
            log_q_true.append(np.log(np.asarray(sv.true_expected_count, np.float64)))
            for corrected in (True, False):
                value, gr = rs.sampled_softmax_loss.value_and_grad(
                    w, b, labels, inputs, num_sampled, BV_CLASSES, sampled_values=sv,
                    estimator=estimator, sampler=sampler, subtract_log_q=corrected,
                )
                grads[corrected].append(gr["inputs"])
                if corrected:
                    losses.append(value)
        print(f"{estimator:16s} num_sampled={num_sampled:5d}: mean sampled loss "
              f"{np.mean(np.concatenate(losses)):.4f}, mean log Q_t "
              f"{np.mean(np.concatenate(log_q_true)):.4f}")
        for corrected, parts in grads.items():
            ghat = np.concatenate(parts)
            mean = ghat.mean(axis=0)
            out[corrected][0].append(float(np.linalg.norm(mean - g)) / norm2**0.5)
            out[corrected][1].append(float(np.mean(np.sum((ghat - mean) ** 2, axis=1))) / norm2)
    return out


def bias_variance_figure(path: Path) -> dict[tuple[str, bool], tuple[list[float], list[float]]]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((BV_CLASSES, BV_DIM)) / BV_DIM**0.5
    b = -np.log1p(np.arange(BV_CLASSES))  # Zipf-like: p_c roughly proportional to 1/(c + 1)
    x = rng.standard_normal((1, BV_DIM))
    exact_loss, exact = rs.linear_softmax_cross_entropy.value_and_grad(
        w, b, np.array([BV_TARGET]), x)
    g = exact["inputs"][0]
    print(f"full softmax loss {float(exact_loss[0]):.4f}, p_t = {float(np.exp(-exact_loss[0])):.4f}")

    results = {}
    fig = Figure(figsize=(9.0, 3.9), dpi=110)
    FigureCanvasAgg(fig)
    ax_bias, ax_var = fig.subplots(1, 2)
    for estimator, (_, color, label) in ESTIMATORS.items():
        measured = bias_variance(estimator, w, b, x, g)
        for corrected in (True, False):
            bias, var = measured[corrected]
            results[estimator, corrected] = (bias, var)
            style = "o-" if corrected else "s--"
            name = label if corrected else f'{estimator}, subtract_log_q=False'
            ax_bias.plot(BV_NUM_SAMPLED, bias, style, color=color, label=name,
                         alpha=1.0 if corrected else 0.6)
            ax_var.plot(BV_NUM_SAMPLED, np.maximum(var, 1e-12), style, color=color, label=name,
                        alpha=1.0 if corrected else 0.6)
            if corrected:  # a bias below this cannot be told apart from Monte Carlo noise
                floor = np.sqrt(np.asarray(var) / BV_DRAWS)
                ax_bias.plot(BV_NUM_SAMPLED, np.maximum(floor, 1e-12), ":", color=color,
                             linewidth=1)
    ax_bias.set_title(r"bias $\|E[\hat g] - g\| / \|g\|$ (dotted: noise floor)", fontsize=10)
    ax_var.set_title(r"variance $E\|\hat g - E[\hat g]\|^2 / \|g\|^2$", fontsize=10)
    for ax in (ax_bias, ax_var):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(BV_NUM_SAMPLED, [str(s) for s in BV_NUM_SAMPLED])
        ax.set_xlabel(f"num_sampled (C = {BV_CLASSES})")
        ax.grid(alpha=0.3, which="both")
    ax_bias.set_ylim(1e-5, 1.0)
    ax_var.set_ylim(1e-6, 1.0)
    ax_var.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)
    return results


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with rs.use_backend("numpy"):
        spike = spike_forest_figure(IMAGES / "sampled_spike_forest.png")
        bv = bias_variance_figure(IMAGES / "sampled_bias_variance.png")
    np.set_printoptions(precision=4, suppress=True, linewidth=120)
    for key, value in spike.items():
        print(key, value)
    print("num_sampled", BV_NUM_SAMPLED)
    for (estimator, corrected), (bias, var) in bv.items():
        print(f"{estimator:16s} corrected={corrected!s:5s} bias", " ".join(f"{v:.2e}" for v in bias))
        print(f"{estimator:16s} corrected={corrected!s:5s} var ", " ".join(f"{v:.2e}" for v in var))
        floor = np.sqrt(np.asarray(var) / BV_DRAWS)
        print(f"{estimator:16s} corrected={corrected!s:5s} floor", " ".join(f"{v:.2e}" for v in floor))
    for name in ("sampled_spike_forest.png", "sampled_bias_variance.png"):
        print(IMAGES / name)


if __name__ == "__main__":
    main()

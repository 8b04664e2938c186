"""Draw the figures of the docs from values computed with refsoftmax.

Writes, next to this script's parent folder:

* ``docs/images/sparse_ce_gradient.png``: the gradient of the sparse softmax
  cross-entropy with respect to the logits, ``p - e_t``, for one example with
  10 classes ("spike and forest": one negative bar at the target, a positive
  bar ``p_j`` at every other class, all summing to zero).
* ``docs/images/label_smoothing_targets.png``: the smoothed target
  distribution ``q`` for ``label_smoothing_mode="uniform"`` and ``"others"``.

Both are computed with ``refsoftmax.sparse_softmax_cross_entropy.value_and_grad``;
the smoothed targets are read off the gradient, ``q = p - dl/dz`` (valid here
because without class weights the gradient is ``p - q``).

Run from the repository root::

    python docs/scripts/plot_gradients.py

Uses Matplotlib's Agg canvas (no display needed); the output is deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

import refsoftmax as rs

IMAGES = Path(__file__).resolve().parent.parent / "images"
# PNG metadata without the Matplotlib version, so that re-running gives identical files.
PNG_METADATA = {"Software": None}

TARGET_COLOR = "#c0392b"
OTHER_COLOR = "#2e86c1"
PROB_COLOR = "#bbbbbb"


def gradient_figure(path: Path) -> None:
    """The spike-and-forest picture of ``p - e_t`` for one 10-class example."""
    logits = np.array([[1.2, -0.3, 2.1, 0.4, -1.0, 0.9, 0.0, -0.6, 1.6, 0.2]])
    target = 2
    loss, grads = rs.sparse_softmax_cross_entropy.value_and_grad(logits, np.array([target]))
    grad = grads["logits"][0]
    p = rs.softmax(logits)[0]
    classes = np.arange(logits.shape[1])

    fig = Figure(figsize=(8.0, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(classes, p, width=0.8, color=PROB_COLOR, zorder=1)
    colors = [TARGET_COLOR if c == target else OTHER_COLOR for c in classes]
    ax.bar(classes, grad, width=0.5, color=colors, zorder=2)
    ax.axhline(0.0, color="black", linewidth=0.8)
    handles = [
        Patch(color=PROB_COLOR, label=r"$p_j$ (softmax)"),
        Patch(color=OTHER_COLOR, label=r"$\partial\ell/\partial z_j = p_j$ ($j \neq t$)"),
        Patch(color=TARGET_COLOR, label=r"$\partial\ell/\partial z_t = p_t - 1$"),
    ]
    ax.annotate(
        f"spike: $p_t - 1 = {grad[target]:.4f}$",
        xy=(target, grad[target]),
        xytext=(target + 1.2, grad[target] + 0.05),
        arrowprops={"arrowstyle": "->"},
    )
    forest = float(np.sum(np.delete(grad, target)))
    ax.set_title(
        f"sparse softmax cross-entropy, target t = {target}: loss {loss[0]:.4f}\n"
        f"forest: sum over j != t = {forest:.4f} = 1 - p_t;  "
        f"sum of all entries = {float(np.sum(grad)):.1e} (0 up to rounding)",
        fontsize=10,
    )
    ax.set_xticks(classes)
    ax.set_xlabel("class j")
    ax.set_ylabel("gradient w.r.t. logit $z_j$")
    ax.legend(handles=handles, loc="lower right", fontsize=9)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)


def smoothing_figure(path: Path) -> None:
    """Smoothed targets q for both label_smoothing_mode values, K = 5, eps = 0.3, t = 1."""
    num_classes, target, eps = 5, 1, 0.3
    logits = np.zeros((1, num_classes))  # any logits work: q = p - grad
    classes = np.arange(num_classes)

    fig = Figure(figsize=(8.0, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, mode in zip(axes, ("uniform", "others"), strict=True):
        _, grads = rs.sparse_softmax_cross_entropy.value_and_grad(
            logits, np.array([target]), label_smoothing=eps, label_smoothing_mode=mode
        )
        q = rs.softmax(logits)[0] - grads["logits"][0]
        colors = [TARGET_COLOR if c == target else OTHER_COLOR for c in classes]
        ax.bar(classes, q, color=colors)
        if mode == "uniform":
            text = (
                rf"$q_t = 1-\varepsilon+\varepsilon/K = {q[target]:.4f}$"
                "\n"
                rf"$q_j = \varepsilon/K = {q[(target + 1) % num_classes]:.4f}$"
            )
        else:
            text = (
                rf"$q_t = 1-\varepsilon = {q[target]:.4f}$"
                "\n"
                rf"$q_j = \varepsilon/(K-1) = {q[(target + 1) % num_classes]:.4f}$"
            )
        ax.text(0.97, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize=9)
        ax.set_title(f'label_smoothing_mode="{mode}"', fontsize=10)
        ax.set_xticks(classes)
        ax.set_xlabel("class j")
        ax.set_ylim(0.0, 1.0)
        ax.grid(axis="y", alpha=0.3)
        ax.text(
            0.97,
            0.70,
            f"sum = {float(np.sum(q)):.4f}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
        )
    axes[0].set_ylabel(rf"smoothed target $q_j$ ($K = {num_classes}$, $\varepsilon = {eps}$)")
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with rs.use_backend("numpy"):
        gradient_figure(IMAGES / "sparse_ce_gradient.png")
        smoothing_figure(IMAGES / "label_smoothing_targets.png")
    for name in ("sparse_ce_gradient.png", "label_smoothing_targets.png"):
        print(IMAGES / name)


if __name__ == "__main__":
    main()

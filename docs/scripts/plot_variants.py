"""Draw the Fenchel–Young figures of the docs from values computed with refsoftmax.

Writes, next to this script's parent folder:

* ``docs/images/variants_2class.png``: a two-class slice, logits ``(d, 0)``.
  Left, the probability of class 0 as a function of ``d = z_0 - z_1`` under
  softmax, sparsemax and 1.5-entmax; right, the loss for label 0 (softmax
  cross-entropy, sparsemax loss, 1.5-entmax loss), with the margins at
  ``d = 1`` and ``d = 2`` where the Fenchel–Young losses reach exactly 0.
* ``docs/images/variants_3class.png``: a three-class example.  Top, the
  three probabilities as ``z_0`` sweeps with ``z_1 = 0.5`` and ``z_2 = -1``
  fixed, one panel per map; bottom, the three maps at
  ``z = (1, 0.5, -1)`` (the sparsemax worked example of the docs).

Every curve is computed with ``refsoftmax.softmax``, ``refsoftmax.sparsemax``,
``refsoftmax.entmax15`` and the matching losses.  The two-class curves are
also checked against their closed forms before anything is drawn.

Run from the repository root::

    python docs/scripts/plot_variants.py

Uses Matplotlib's Agg canvas (no display needed); the output is deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import refsoftmax as rs

IMAGES = Path(__file__).resolve().parent.parent / "images"
PNG_METADATA = {"Software": None}  # no Matplotlib version: re-running gives identical files

MAP_COLORS = {"softmax": "#7f8c8d", "sparsemax": "#c0392b", "1.5-entmax": "#2e86c1"}
CLASS_COLORS = ("#c0392b", "#2e86c1", "#27ae60")


def maps() -> dict[str, object]:
    return {"softmax": rs.softmax, "sparsemax": rs.sparsemax, "1.5-entmax": rs.entmax15}


def two_class_closed_forms(d: np.ndarray) -> dict[str, np.ndarray]:
    """p_0 for logits (d, 0), from the formulas on the docs page."""
    inner = np.sqrt(np.maximum(2.0 - d * d / 4.0, 0.0))
    entmax = np.where(d >= 2.0, 1.0, np.where(d <= -2.0, 0.0, ((d / 2.0 + inner) / 2.0) ** 2))
    return {
        "softmax": 1.0 / (1.0 + np.exp(-d)),
        "sparsemax": np.clip((1.0 + d) / 2.0, 0.0, 1.0),
        "1.5-entmax": entmax,
    }


def two_class_figure(path: Path) -> None:
    d = np.linspace(-3.0, 3.0, 601)
    z = np.stack([d, np.zeros_like(d)], axis=-1)
    labels = np.zeros(d.shape, dtype=np.int64)
    probs = {name: np.asarray(fn(z))[:, 0] for name, fn in maps().items()}
    for name, expected in two_class_closed_forms(d).items():
        np.testing.assert_allclose(probs[name], expected, rtol=1e-12, atol=1e-14)
    losses = {
        "softmax cross-entropy": np.asarray(rs.sparse_softmax_cross_entropy(z, labels)),
        "sparsemax loss": np.asarray(rs.sparsemax_loss(z, labels)),
        "1.5-entmax loss": np.asarray(rs.entmax15_loss(z, labels)),
    }
    sparsemax_closed = np.where(d >= 1.0, 0.0, np.where(d <= -1.0, -d, (1.0 - d) ** 2 / 4.0))
    np.testing.assert_allclose(losses["sparsemax loss"], sparsemax_closed, rtol=1e-12, atol=1e-14)

    fig = Figure(figsize=(10.0, 3.9), dpi=110)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for name, p in probs.items():
        left.plot(d, p, color=MAP_COLORS[name], linewidth=2.0, label=name)
    for x in (-2.0, -1.0, 1.0, 2.0):
        left.axvline(x, color="black", linewidth=0.6, linestyle=":")
    left.set_xlabel(r"$d = z_0 - z_1$")
    left.set_ylabel(r"$p_0$")
    left.set_title("two classes, logits $(d, 0)$: probability of class 0", fontsize=10)
    left.legend(loc="upper left", fontsize=9)
    left.grid(alpha=0.3)

    for (name, value), color in zip(losses.items(), MAP_COLORS.values(), strict=True):
        right.plot(d, value, color=color, linewidth=2.0, label=name)
    for x in (1.0, 2.0):
        right.axvline(x, color="black", linewidth=0.6, linestyle=":")
    right.annotate(
        "sparsemax loss = 0\nfor $d \\geq 1$",
        xy=(1.0, 0.0),
        xytext=(0.9, 1.2),
        fontsize=9,
        arrowprops={"arrowstyle": "->"},
        ha="right",
    )
    right.annotate(
        "1.5-entmax loss = 0\nfor $d \\geq 2$",
        xy=(2.0, 0.0),
        xytext=(2.45, 0.9),
        fontsize=9,
        arrowprops={"arrowstyle": "->"},
        ha="center",
    )
    right.set_xlabel(r"$d = z_0 - z_1$")
    right.set_ylabel("loss for label $t = 0$")
    right.set_title("the losses on the same slice", fontsize=10)
    right.legend(loc="upper right", fontsize=9)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)


def three_class_figure(path: Path) -> None:
    z0 = np.linspace(-3.0, 3.0, 601)
    z = np.stack([z0, np.full_like(z0, 0.5), np.full_like(z0, -1.0)], axis=-1)
    example = np.array([1.0, 0.5, -1.0])

    fig = Figure(figsize=(10.0, 6.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplot_mosaic(
        [["softmax", "sparsemax", "1.5-entmax"], ["bars", "bars", "bars"]], sharey=False
    )
    for name, fn in maps().items():
        ax = axes[name]
        p = np.asarray(fn(z))
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)
        for c in range(3):
            ax.plot(z0, p[:, c], color=CLASS_COLORS[c], linewidth=2.0, label=f"$p_{c}$")
        ax.axvline(example[0], color="black", linewidth=0.6, linestyle=":")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(r"$z_0$  (with $z_1 = 0.5$, $z_2 = -1$)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes["softmax"].set_ylabel("probability")
    axes["softmax"].legend(loc="center left", fontsize=9)

    ax = axes["bars"]
    width = 0.26
    classes = np.arange(3)
    for i, (name, fn) in enumerate(maps().items()):
        p = np.asarray(fn(example))
        x = classes + (i - 1) * width
        ax.bar(x, p, width=width, color=MAP_COLORS[name], label=name)
        for xi, pi in zip(x, p, strict=True):
            ax.text(xi, pi + 0.015, f"{pi:.4f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(classes)
    ax.set_xticklabels([f"class {c}\n$z_{c} = {v:g}$" for c, v in enumerate(example)])
    ax.set_ylabel("probability")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(r"$z = (1, 0.5, -1)$ (the dotted line above)", fontsize=10)
    ax.legend(loc="upper right", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with rs.use_backend("numpy"):
        two_class_figure(IMAGES / "variants_2class.png")
        three_class_figure(IMAGES / "variants_3class.png")
    for name in ("variants_2class.png", "variants_3class.png"):
        print(IMAGES / name)


if __name__ == "__main__":
    main()

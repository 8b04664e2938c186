"""Draw the AS-Softmax figures of the docs from values computed with refsoftmax.

Writes, next to this script's parent folder:

* ``docs/images/as_softmax_mask.png``: for one 8-class example, the softmax
  probabilities with the band :math:`[p_t - \\delta, p_t]` below the target's
  probability (classes under the band are excluded, drawn grey), and the
  gradient with respect to the logits of softmax cross-entropy and of
  AS-Softmax side by side.
* ``docs/images/as_softmax_loss.png``: the loss of the same example as a
  function of the target logit :math:`z_t` (the other logits fixed), for
  softmax cross-entropy and for AS-Softmax with two values of δ.

Everything is computed with ``refsoftmax.as_softmax_cross_entropy`` and
``refsoftmax.sparse_softmax_cross_entropy``; the mask is the ``kept`` array
of the AS-Softmax residuals.

Run from the repository root::

    python docs/scripts/plot_as_softmax.py

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
PNG_METADATA = {"Software": None}  # no Matplotlib version: re-running gives identical files

TARGET_COLOR = "#c0392b"
KEPT_COLOR = "#2e86c1"
EXCLUDED_COLOR = "#cccccc"
BAND_COLOR = "#f5b041"

LOGITS = np.array([2.0, 1.9, 0.3, 1.6, -0.5, 0.8, 1.75, -1.0])
TARGET = 0
DELTA = 0.1


def mask_figure(path: Path) -> dict[str, np.ndarray]:
    z, t = LOGITS[None, :], np.array([TARGET])
    p = rs.softmax(z)[0]
    loss, res = rs.as_softmax_cross_entropy.forward(z, t, delta=DELTA)
    kept = np.asarray(res.kept)[0]
    _, g_as = rs.as_softmax_cross_entropy.value_and_grad(z, t, delta=DELTA)
    full_loss, g_full = rs.sparse_softmax_cross_entropy.value_and_grad(z, t)
    classes = np.arange(z.shape[1])
    colors = [TARGET_COLOR if c == TARGET else KEPT_COLOR if kept[c] else EXCLUDED_COLOR
              for c in classes]

    fig = Figure(figsize=(10.0, 3.9), dpi=110)
    FigureCanvasAgg(fig)
    ax_p, ax_g = fig.subplots(1, 2)
    p_t = p[TARGET]
    ax_p.axhspan(p_t - DELTA, p_t, color=BAND_COLOR, alpha=0.35, zorder=0)
    ax_p.axhline(p_t, color=TARGET_COLOR, linewidth=0.8, linestyle="--")
    ax_p.axhline(p_t - DELTA, color=BAND_COLOR, linewidth=1.0)
    ax_p.bar(classes, p, color=colors, zorder=2)
    ax_p.text(4.5, p_t - DELTA / 2,
              rf"band: $p_i \geq p_t - \delta = {p_t - DELTA:.4f}$", ha="center", va="center",
              fontsize=9)
    ax_p.set_ylim(0.0, 1.5 * p_t)
    ax_p.set_title(f"softmax probabilities, target t = {TARGET}, δ = {DELTA}", fontsize=10)
    ax_p.set_xticks(classes)
    ax_p.set_xlabel("class i")
    ax_p.set_ylabel(r"$p_i$")
    ax_p.legend(handles=[
        Patch(color=TARGET_COLOR, label="target"),
        Patch(color=KEPT_COLOR, label=r"kept: $p_t - p_i \leq \delta$"),
        Patch(color=EXCLUDED_COLOR, label=r"excluded: $p_t - p_i > \delta$"),
    ], fontsize=8, loc="upper right", ncols=3)

    width = 0.38
    ax_g.bar(classes - width / 2, g_full["logits"][0], width, color="#888888",
             label=f"softmax CE (loss {full_loss[0]:.4f})")
    ax_g.bar(classes + width / 2, g_as["logits"][0], width, color=colors,
             label=f"AS-Softmax (loss {loss[0]:.4f})")
    ax_g.axhline(0.0, color="black", linewidth=0.8)
    ax_g.set_title(r"gradient $\partial\ell/\partial z_i$ (left bar: softmax, right: AS)",
                   fontsize=10)
    ax_g.set_xticks(classes)
    ax_g.set_xlabel("class i")
    ax_g.legend(fontsize=8, loc="lower right")
    for ax in (ax_p, ax_g):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)
    return {"p": p, "kept": kept, "as_loss": loss, "as_grad": g_as["logits"][0],
            "full_loss": full_loss, "full_grad": g_full["logits"][0]}


def loss_figure(path: Path) -> dict[str, float]:
    z_t = np.linspace(-1.0, 6.0, 1401)
    z = np.tile(LOGITS, (z_t.size, 1))
    z[:, TARGET] = z_t
    labels = np.full(z_t.size, TARGET)
    fig = Figure(figsize=(8.0, 3.9), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(z_t, rs.sparse_softmax_cross_entropy(z, labels), color="black",
            label="softmax cross-entropy")
    out = {}
    for delta, color in ((0.1, KEPT_COLOR), (0.3, TARGET_COLOR)):
        loss = np.asarray(rs.as_softmax_cross_entropy(z, labels, delta=delta))
        # break the line where the mask changes, so the jumps are not drawn as steep slopes
        jumps = np.flatnonzero(np.abs(np.diff(loss)) > 0.02)
        shown = loss.copy()
        shown[jumps + 1] = np.nan
        ax.plot(z_t, shown, color=color, label=f"AS-Softmax, δ = {delta}")
        zero_from = float(z_t[np.flatnonzero(loss == 0.0)[0]])
        out[f"zero_from_delta_{delta}"] = zero_from
        out[f"jumps_delta_{delta}"] = [round(float(v), 3) for v in z_t[jumps + 1]]
        ax.axvline(zero_from, color=color, linewidth=0.8, linestyle=":")
    ax.set_xlabel(rf"target logit $z_t$ (t = {TARGET}; the other logits as in the bar chart)")
    ax.set_ylabel("loss")
    ax.set_title("loss vs the target logit: AS-Softmax drops classes, then reaches exactly 0",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)
    return out


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with rs.use_backend("numpy"):
        mask = mask_figure(IMAGES / "as_softmax_mask.png")
        curve = loss_figure(IMAGES / "as_softmax_loss.png")
    np.set_printoptions(precision=4, suppress=True, linewidth=120)
    for key, value in {**mask, **curve}.items():
        print(key, value)
    for name in ("as_softmax_mask.png", "as_softmax_loss.png"):
        print(IMAGES / name)


if __name__ == "__main__":
    main()

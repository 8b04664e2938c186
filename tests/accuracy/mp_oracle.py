"""mpmath oracles (≥ 50 correct digits) for the accuracy suite, written without refsoftmax.

Each oracle takes float64 NumPy inputs (read exactly) and returns, for every
output element, the exact value rounded to float64 *and* a scale: the largest
magnitude among the terms whose sum forms that element (for example
``W p_j`` and ``c_j`` in a cross-entropy gradient ``W p_j - c_j``).  An
element that is a difference of terms can only be computed to an absolute
accuracy of a few ulps of its scale — that is the condition of the problem,
not of the code — so the suite measures

    error in ulps = |computed - exact| / ulp(max(|exact|, scale, smallest normal)).

For an element formed without cancellation the scale is ``|exact|`` itself and
this is the plain relative error in ulps.
"""

from __future__ import annotations

from collections.abc import Sequence

import mpmath
import numpy as np

mp = mpmath.mp
# 400 working digits: a result such as 1 − p_t = e^{−700} (≈ 1e-304) is formed by a
# cancellation of ~304 digits, and must still come out with ≥ 50 correct ones.
mp.dps = 400


def _row(values: Sequence[float]) -> list[mpmath.mpf]:
    return [mpmath.mpf(float(v)) for v in values]


def lse(row: Sequence[mpmath.mpf]) -> mpmath.mpf:
    """log Σ exp over the finite entries (``-inf`` entries excluded)."""
    live = [v for v in row if mpmath.isfinite(v)]
    m = max(live)
    return m + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in live))


def probs(row: Sequence[mpmath.mpf]) -> list[mpmath.mpf]:
    top = lse(row)
    return [mpmath.exp(v - top) if mpmath.isfinite(v) else mpmath.mpf(0) for v in row]


def as_float(values: Sequence[mpmath.mpf]) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)


# --------------------------------------------------------------------- building blocks


def logsumexp(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(value, value_scale, grad, grad_scale)`` per row of ``x`` ``[N, C]``; grad = softmax."""
    vals, vscale, grads = [], [], []
    for row in x:
        r = _row(row)
        top = lse(r)
        m = max(r)
        vals.append(float(top))
        vscale.append(max(abs(float(m)), abs(float(top - m))))  # lse = m + log s
        grads.append(as_float(probs(r)))
    g = np.array(grads)
    return np.array(vals), np.array(vscale), g, np.abs(g)


def log_softmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for row in x:
        r = _row(row)
        top = lse(r)
        out.append(as_float([v - top for v in r]))
    v = np.array(out)
    return v, np.abs(v)


# --------------------------------------------------------------------- cross-entropy family


def _ce_row(r: list[mpmath.mpf], c: list[mpmath.mpf], ok: np.ndarray, scale: float
            ) -> tuple[float, np.ndarray, np.ndarray]:
    """One row: loss Σ c (lse − z), gradient scale (W p − c) and its scale."""
    p = probs(r)
    top = lse(r)
    w = mpmath.fsum(c)
    loss = float(mpmath.fsum(cc * (top - v) for cc, v in zip(c, r, strict=True) if cc != 0))
    grad = as_float([scale * (w * pj - cj) if a else mpmath.mpf(0)
                     for pj, cj, a in zip(p, c, ok, strict=True)])
    gscale = as_float([abs(scale) * max(w * pj, cj) for pj, cj in zip(p, c, strict=True)])
    return loss, grad, gscale


def _masked(row: np.ndarray, ok: np.ndarray, scale: float = 1.0) -> list[mpmath.mpf]:
    return [mpmath.mpf(float(v)) * mpmath.mpf(scale) if a else mpmath.mpf("-inf")
            for v, a in zip(row, ok, strict=True)]


def dense_ce(z: np.ndarray, y: np.ndarray, allowed: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft-label CE, no smoothing or weights: ``(loss, grad, grad_scale)`` per row."""
    out = []
    for i, row in enumerate(z):
        ok = np.ones(row.shape, bool) if allowed is None else allowed[i]
        out.append(_ce_row(_masked(row, ok), _row(np.where(ok, y[i], 0.0)), ok, 1.0))
    return _stack(out)


def sparse_ce(z: np.ndarray, t: np.ndarray, *, eps: float = 0.0, mode: str = "uniform",
              class_weights: np.ndarray | None = None, allowed: np.ndarray | None = None,
              temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse CE of ``z / temperature`` over the allowed classes, with exact coefficients.

    ``c_c = w_c q_c`` ("per_class"), ``q = (1−ε) e_t + ε u`` with ``u`` uniform
    over the K allowed classes ("uniform") or over the K − 1 others ("others").
    """
    out = []
    inv_t = 1 / mpmath.mpf(temperature)
    for i, row in enumerate(z):
        ok = np.ones(row.shape, bool) if allowed is None else allowed[i]
        k = int(ok.sum())
        e = mpmath.mpf(eps)
        spread_over = k if mode == "uniform" else k - 1
        q = [mpmath.mpf(0)] * len(row)
        for c in range(len(row)):
            if ok[c] and spread_over > 0 and (mode == "uniform" or c != t[i]):
                q[c] = e / spread_over
        q[t[i]] += 1 - e if spread_over > 0 else 1
        w = [mpmath.mpf(1)] * len(row) if class_weights is None else _row(class_weights)
        c = [qc * wc for qc, wc in zip(q, w, strict=True)]
        r = [mpmath.mpf(float(v)) * inv_t if a else mpmath.mpf("-inf")
             for v, a in zip(row, ok, strict=True)]
        out.append(_ce_row(r, c, ok, float(inv_t)))
    return _stack(out)


def _stack(rows: list[tuple[float, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
            np.array([r[2] for r in rows]))


def dense_label_grad(z: np.ndarray, class_weights: np.ndarray | None, eps: float,
                     mode: str) -> np.ndarray:
    """∂ℓ/∂y of the dense CE: (1−ε) w_c(−log p_c) [+ ε/(C−1) Σ_{j≠c} w_j(−log p_j) for "others"]."""
    out = []
    num = z.shape[1]
    w = np.ones(num) if class_weights is None else class_weights
    for row in z:
        r = _row(row)
        top = lse(r)
        wl = [mpmath.mpf(float(wc)) * (top - v) for wc, v in zip(w, r, strict=True)]
        g = [(1 - mpmath.mpf(eps)) * t for t in wl]
        if mode == "others" and eps:
            u = mpmath.mpf(eps) / (num - 1)
            total = mpmath.fsum(wl)
            g = [gc + u * (total - t) for gc, t in zip(g, wl, strict=True)]
        out.append(as_float(g))
    return np.array(out)

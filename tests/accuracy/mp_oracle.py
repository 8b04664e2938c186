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
DIGITS = 400
mp.dps = DIGITS


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


def sparse_ce_z_cap(z: np.ndarray, t: np.ndarray, *, z_loss: float = 0.0, cap: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""Sparse CE of the soft-capped logits plus the z-loss: ``(loss, loss_scale, grad, grad_scale)``.

    :math:`\tilde z = c\tanh(z/c)`, :math:`\ell = \log Z - \tilde z_t + \lambda(\log Z)^2`,
    :math:`\partial\ell/\partial z_j = g_j\operatorname{sech}^2(z_j/c)` with
    :math:`g_j = (1 + 2\lambda\log Z)\,p_j - \delta_{jt}`.  Without a cap the scales are the
    terms' own (no intermediate is rounded; the target entry's two terms may cancel).  With a
    cap, the capped logits are an intermediate every implementation rounds, and the loss of a
    confident row, :math:`e^{-(\tilde z_t - \tilde z_j)}`, has the relative error of that
    difference's absolute one (an ulp of :math:`|\tilde z| \approx 30` is ~16 ulp of the
    loss): as for the sampled logits, the scale is then the first-order effect of a relative
    error :math:`u` in every :math:`\tilde z_k`: :math:`u\sum_k |g_k \tilde z_k|` on the loss
    and :math:`u\,f\,p_j((1 - p_j)|\tilde z_j| + \sum_{k\ne j} p_k|\tilde z_k|)` (times the slope)
    on entry :math:`j`, :math:`f = |1 + 2\lambda\log Z|`.
    The argument :math:`z/c` of :math:`\tanh` and :math:`\operatorname{sech}^2` is
    rounded too: a relative error :math:`u` in it moves the slope by :math:`2|z_j/c|\,u` relative.
    """
    losses, vscale, grads, gscales = [], [], [], []
    lam = mpmath.mpf(z_loss)
    for i, row in enumerate(z):
        raw = [mpmath.mpf(float(v)) for v in row]
        if cap is None:
            capped, slope = raw, [mpmath.mpf(1)] * len(raw)
        else:
            c = mpmath.mpf(cap)
            capped = [c * mpmath.tanh(v / c) for v in raw]
            slope = [mpmath.sech(v / c) ** 2 for v in raw]
        top = lse(capped)
        p = probs(capped)
        factor = 1 + 2 * lam * top
        tt = int(t[i])
        g = [factor * pj - (1 if j == tt else 0) for j, pj in enumerate(p)]
        loss = (top - capped[tt]) + lam * top * top
        losses.append(loss)
        grads.append([gj * sj for gj, sj in zip(g, slope, strict=True)])
        terms = [max(abs(factor * pj), 1 if j == tt else 0) * sj for j, (pj, sj) in enumerate(zip(p, slope, strict=True))]
        if cap is None:
            vscale.append(abs(loss))
            gscales.append(terms)
        else:
            mags = [abs(v) for v in capped]
            vscale.append(mpmath.fsum(abs(gk) * m for gk, m in zip(g, mags, strict=True)))
            spread = mpmath.fsum(pk * m for pk, m in zip(p, mags, strict=True))
            # ... and the cap's argument z/c, rounded before tanh and sech² see it: a relative
            # error u in it moves sech²(z/c) by 2|z/c| u relative (|d log sech²(v)/dv| <= 2)
            args = [abs(v / mpmath.mpf(cap)) for v in raw]
            gscales.append([max(tj, abs(factor) * pj * ((1 - pj) * mj + (spread - pj * mj)) * sj,
                                abs(gj) * sj * 2 * aj)
                            for tj, pj, mj, sj, gj, aj in zip(terms, p, mags, slope, g, args, strict=True)])
    return (as_float(losses), as_float(vscale), np.array([as_float(r) for r in grads]),
            np.array([as_float(r) for r in gscales]))


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


# --------------------------------------------------------------------- losses over computed logits
#
# Each returns ``{quantity: (exact, scale)}`` with ``scale`` as in the module docstring
# (``None``: the exact value's own magnitude, i.e. plain relative error).


def _mpm(a: np.ndarray) -> list[list[mpmath.mpf]]:
    return [[mpmath.mpf(float(v)) for v in row] for row in np.atleast_2d(a)]


def _matmul_t(x: list[list[mpmath.mpf]], w: list[list[mpmath.mpf]]) -> list[list[mpmath.mpf]]:
    """``x @ w.T`` exactly."""
    return [[mpmath.fsum(a * b for a, b in zip(xi, wc, strict=True)) for wc in w] for xi in x]


def _chain_linear(g: list[list[mpmath.mpf]], x: list[list[mpmath.mpf]], w: list[list[mpmath.mpf]],
                  cols: list[list[int]], num_classes: int,
                  gscale: list[list[mpmath.mpf]] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Gradients of ``o[i, k] = x_i · W[cols[i][k]] + b[cols[i][k]]`` given ``g = ∂ℓ/∂o``.

    ``dW[c] = Σ g[i,k] x_i``, ``db[c] = Σ g[i,k]``, ``dx_i = Σ_k g[i,k] W[cols]``, with the
    sums of absolute terms as scales (the terms have mixed signs); ``gscale`` (default
    ``|g|``) is the scale of each ``g`` entry.
    """
    if gscale is None:
        gscale = [[abs(v) for v in row] for row in g]
    dim = len(x[0])
    dw = [[mpmath.mpf(0)] * dim for _ in range(num_classes)]
    sw = [[mpmath.mpf(0)] * dim for _ in range(num_classes)]
    db = [mpmath.mpf(0)] * num_classes
    sb = [mpmath.mpf(0)] * num_classes
    dx = [[mpmath.mpf(0)] * dim for _ in x]
    sx = [[mpmath.mpf(0)] * dim for _ in x]
    for i, row in enumerate(g):
        for k, gk in enumerate(row):
            c = cols[i][k]
            sk = gscale[i][k]
            db[c] += gk
            sb[c] += sk
            for j in range(dim):
                dw[c][j] += gk * x[i][j]
                sw[c][j] += sk * abs(x[i][j])
                dx[i][j] += gk * w[c][j]
                sx[i][j] += sk * abs(w[c][j])
    f = np.array
    return {
        "weights": (f([as_float(r) for r in dw]), f([as_float(r) for r in sw])),
        "biases": (as_float(db), as_float(sb)),
        "inputs": (f([as_float(r) for r in dx]), f([as_float(r) for r in sx])),
    }


def linear_ce(w: np.ndarray, b: np.ndarray, t: np.ndarray, x: np.ndarray
              ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Exact softmax CE of the logits ``x W^T + b`` (computed exactly), and its gradients."""
    wm, xm, bm = _mpm(w), _mpm(x), _row(b)
    z = [[v + bc for v, bc in zip(row, bm, strict=True)] for row in _matmul_t(xm, wm)]
    losses, g = [], []
    for i, row in enumerate(z):
        top = lse(row)
        losses.append(top - row[int(t[i])])
        g.append([mpmath.exp(v - top) - (1 if c == int(t[i]) else 0) for c, v in enumerate(row)])
    cols = [list(range(len(w)))] * len(x)
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"value": (as_float(losses), None)}
    out.update(_chain_linear(g, xm, wm, cols, len(w)))
    return out


def _sampled_columns(w: np.ndarray, b: np.ndarray, labels: np.ndarray, x: np.ndarray,
                     cands: np.ndarray, true_ec: np.ndarray, samp_ec: np.ndarray,
                     subtract_log_q: bool = True) -> tuple[list[list[mpmath.mpf]], list[list[int]]]:
    """The corrected logits ``[true..., sampled...]`` per row, and the class of every column."""
    wm, xm, bm = _mpm(w), _mpm(x), _row(b)
    rows, cols = [], []
    for i, xi in enumerate(xm):
        classes = [int(c) for c in labels[i]] + [int(c) for c in cands]
        counts = [float(q) for q in true_ec[i]] + [float(q) for q in samp_ec]
        o = []
        for c, q in zip(classes, counts, strict=True):
            v = mpmath.fsum(a * bb for a, bb in zip(xi, wm[c], strict=True)) + bm[c]
            o.append(v - mpmath.log(mpmath.mpf(q)) if subtract_log_q else v)
        rows.append(o)
        cols.append(classes)
    return rows, cols


def sampled_softmax(w: np.ndarray, b: np.ndarray, labels: np.ndarray, x: np.ndarray,
                    cands: np.ndarray, true_ec: np.ndarray, samp_ec: np.ndarray
                    ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """TF's sampled softmax (log Q subtracted, accidental hits removed), label 1/T per true column."""
    o, cols = _sampled_columns(w, b, labels, x, cands, true_ec, samp_ec)
    num_true = labels.shape[1]
    losses, vscale, g, gcond = [], [], [], []
    for i, row in enumerate(o):
        truth = {int(c) for c in labels[i]}
        kept = [k < num_true or cols[i][k] not in truth for k in range(len(row))]
        live = [v if a else mpmath.mpf("-inf") for v, a in zip(row, kept, strict=True)]
        top = lse(live)
        losses.append(mpmath.fsum(top - live[k] for k in range(num_true)) / num_true)
        p = [mpmath.exp(v - top) if a else mpmath.mpf(0) for v, a in zip(live, kept, strict=True)]
        gi = [pk - (mpmath.mpf(1) / num_true if k < num_true else 0) for k, pk in enumerate(p)]
        g.append(gi)
        # the logits o = x·w + b - log Q are rounded to the dtype by any implementation: the
        # first-order effect of a relative error u in every o_k is u Σ_k |g_k o_k| on the loss
        # and u p_j ((1 - p_j)|o_j| + Σ_{k≠j} p_k |o_k|) on g_j (δp_j = p_j(δo_j - Σ_k p_k δo_k))
        mags = [abs(v) if a else mpmath.mpf(0) for v, a in zip(row, kept, strict=True)]
        vscale.append(mpmath.fsum(abs(gk) * m for gk, m in zip(gi, mags, strict=True)))
        spread = mpmath.fsum(pk * m for pk, m in zip(p, mags, strict=True))
        gcond.append([max(abs(gk), pk * ((1 - pk) * m + (spread - pk * m)))
                      for gk, pk, m in zip(gi, p, mags, strict=True)])
    v = as_float(losses)
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"value": (v, np.maximum(np.abs(v), as_float(vscale)))}
    out.update(_chain_linear(g, _mpm(x), _mpm(w), cols, len(w), gcond))
    return out


def _softplus(v: mpmath.mpf) -> mpmath.mpf:
    return mpmath.log1p(mpmath.exp(v))


def _sigmoid(v: mpmath.mpf) -> mpmath.mpf:
    return 1 / (1 + mpmath.exp(-v))


def sigmoid_family(w: np.ndarray, b: np.ndarray, labels: np.ndarray, x: np.ndarray,
                   cands: np.ndarray, true_ec: np.ndarray, samp_ec: np.ndarray, *,
                   true_label: str, subtract_log_q: bool, remove_hits: bool
                   ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """NCE (``true_label="1/T"``, log Q subtracted) or negative sampling (``"1"``, not subtracted).

    ``ℓ = Σ_kept y softplus(-o) + (1 - y) softplus(o)``; ``∂ℓ/∂o = σ(o) - y``, whose scale
    is ``max(σ(o), y)`` (a difference of two terms).
    """
    o, cols = _sampled_columns(w, b, labels, x, cands, true_ec, samp_ec, subtract_log_q)
    num_true = labels.shape[1]
    y_true = mpmath.mpf(1) / num_true if true_label == "1/T" else mpmath.mpf(1)
    losses, vscale, g, gscale = [], [], [], []
    for i, row in enumerate(o):
        truth = {int(c) for c in labels[i]}
        total, tscale, gi, si = mpmath.mpf(0), mpmath.mpf(0), [], []
        for k, v in enumerate(row):
            y = y_true if k < num_true else mpmath.mpf(0)
            if k >= num_true and remove_hits and cols[i][k] in truth:
                gi.append(mpmath.mpf(0))
                si.append(mpmath.mpf(0))
                continue
            total += y * _softplus(-v) + (1 - y) * _softplus(v)
            sig = _sigmoid(v)
            gk = sig - y
            gi.append(gk)
            # σ(o) - y is a difference when 0 < y < 1 (NCE with T > 1): scale max(σ, y)
            sk = max(abs(gk), min(sig, y)) if 0 < y < 1 else abs(gk)
            if subtract_log_q:  # o is rounded (log Q): u|o| relative on o, σ' = σ(1 - σ)
                tscale += abs(gk) * abs(v)
                sk = max(sk, sig * (1 - sig) * abs(v))
            si.append(sk)
        losses.append(total)
        vscale.append(tscale)
        g.append(gi)
        gscale.append(si)
    lv = as_float(losses)
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"value": (lv, np.maximum(np.abs(lv), as_float(vscale)))}
    out.update(_chain_linear(g, _mpm(x), _mpm(w), cols, len(w), gscale))
    return out


def as_softmax(z: np.ndarray, t: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AS-Softmax: classes with ``p_t - p_i > δ`` (exact p) dropped, then CE over the rest."""
    allowed = np.ones(z.shape, bool)
    for i, row in enumerate(z):
        p = probs(_row(row))
        allowed[i] = [not (p[int(t[i])] - pc > mpmath.mpf(delta)) for pc in p]
    return sparse_ce(z, t, allowed=allowed)


def multilabel_ce(z: np.ndarray, y: np.ndarray, kept_neg: np.ndarray | None = None,
                  kept_pos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``log(1 + Σ_N e^{z}) + log(1 + Σ_P e^{-z})`` over the kept terms; gradient (each entry one term)."""
    vals, grads = [], []
    for i, row in enumerate(z):
        r = _row(row)
        neg = [c for c in range(len(r)) if y[i, c] == 0 and (kept_neg is None or kept_neg[i, c])]
        pos = [c for c in range(len(r)) if y[i, c] == 1 and (kept_pos is None or kept_pos[i, c])]
        s_neg = 1 + mpmath.fsum(mpmath.exp(r[c]) for c in neg)
        s_pos = 1 + mpmath.fsum(mpmath.exp(-r[c]) for c in pos)
        vals.append(mpmath.log(s_neg) + mpmath.log(s_pos))
        g = [mpmath.mpf(0)] * len(r)
        for c in neg:
            g[c] = mpmath.exp(r[c]) / s_neg
        for c in pos:
            g[c] = -mpmath.exp(-r[c]) / s_pos
        grads.append(as_float(g))
    gr = np.array(grads)
    return as_float(vals), gr, np.abs(gr)


def multilabel_as_masks(z: np.ndarray, y: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """The multi-label AS masks from the exact softmax: negatives with ``p_min - p_i <= δ``, positives
    with ``p_t - p_max <= δ`` (``p_min`` over positives, ``p_max`` over negatives)."""
    kn, kp = np.zeros(z.shape, bool), np.zeros(z.shape, bool)
    for i, row in enumerate(z):
        p = probs(_row(row))
        pos = [p[c] for c in range(len(p)) if y[i, c] == 1]
        neg = [p[c] for c in range(len(p)) if y[i, c] == 0]
        if not pos or not neg:
            continue
        p_min, p_max = min(pos), max(neg)
        kn[i] = [y[i, c] == 0 and p_min - p[c] <= delta for c in range(len(p))]
        kp[i] = [y[i, c] == 1 and p[c] - p_max <= delta for c in range(len(p))]
    return kn, kp


def am_softmax(f: np.ndarray, w: np.ndarray, t: np.ndarray, s: float, m: float
               ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    r"""AM-Softmax: CE of :math:`\psi = s(\cos - m e_t)`, :math:`\cos = \hat f\hat w^\top`.

    Gradients by the chain rule in exact arithmetic: :math:`G = s(q - e_t)`,
    :math:`\partial/\partial f_n = \sum_c G_{nc}(\hat w_c - \cos_{nc}\hat f_n)/\|f_n\|`,
    :math:`\partial/\partial w_c = \sum_n G_{nc}(\hat f_n - \cos_{nc}\hat w_c)/\|w_c\|`.
    The cosines are computed from rounded data by the code, so the value's scale is
    :math:`s\sum_c|q_c - e_{tc}|` (its first-order sensitivity to an ulp-sized error in each
    :math:`\cos`) next to the value itself.
    """
    fm, wm = _mpm(f), _mpm(w)
    sm, mm = mpmath.mpf(s), mpmath.mpf(m)
    fn = [mpmath.sqrt(mpmath.fsum(v * v for v in r)) for r in fm]
    wn = [mpmath.sqrt(mpmath.fsum(v * v for v in r)) for r in wm]
    fh = [[v / n for v in r] for r, n in zip(fm, fn, strict=True)]
    wh = [[v / n for v in r] for r, n in zip(wm, wn, strict=True)]
    cos = _matmul_t(fh, wh)
    dim, num = len(fm[0]), len(wm)
    vals, vscale = [], []
    df = [[mpmath.mpf(0)] * dim for _ in fm]
    sf = [[mpmath.mpf(0)] * dim for _ in fm]
    dw = [[mpmath.mpf(0)] * dim for _ in wm]
    sw = [[mpmath.mpf(0)] * dim for _ in wm]
    for n, row in enumerate(cos):
        tn = int(t[n])
        psi = [sm * (cv - (mm if c == tn else 0)) for c, cv in enumerate(row)]
        top = lse(psi)
        vals.append(top - psi[tn])
        q = [mpmath.exp(v - top) for v in psi]
        g = [sm * (qc - (1 if c == tn else 0)) for c, qc in enumerate(q)]
        vscale.append(mpmath.fsum(abs(gc) for gc in g))
        for c in range(num):
            for j in range(dim):
                a, bterm = wh[c][j], row[c] * fh[n][j]
                df[n][j] += g[c] * (a - bterm) / fn[n]
                sf[n][j] += abs(g[c]) * (abs(a) + abs(bterm)) / fn[n]
                a2, b2 = fh[n][j], row[c] * wh[c][j]
                dw[c][j] += g[c] * (a2 - b2) / wn[c]
                sw[c][j] += abs(g[c]) * (abs(a2) + abs(b2)) / wn[c]
    v = as_float(vals)
    arr = np.array
    # the gradients hold G = s(q - e_t), which an ulp of error in a cosine changes by ~2s ulps
    # relative (δq_c = q_c(δψ_c - Σ q δψ), δψ = s δcos): that condition factor is in the scale
    cond = 2 * float(sm)
    return {
        "value": (v, np.maximum(np.abs(v), as_float(vscale))),
        "features": (arr([as_float(r) for r in df]), cond * arr([as_float(r) for r in sf])),
        "weights": (arr([as_float(r) for r in dw]), cond * arr([as_float(r) for r in sw])),
    }


def _sparsemax_row(r: list[mpmath.mpf]) -> tuple[list[mpmath.mpf], mpmath.mpf]:
    """``([z - τ]_+, τ)``: the largest support k with ``1 + k z_(k) > Σ_{j≤k} z_(j)``."""
    u = sorted(r, reverse=True)
    acc, tau = mpmath.mpf(0), mpmath.mpf(0)
    for j, uj in enumerate(u, start=1):
        acc += uj
        if 1 + j * uj > acc:
            tau = (acc - 1) / j
    return [max(v - tau, mpmath.mpf(0)) for v in r], tau


def _entmax15_row(r: list[mpmath.mpf]) -> tuple[list[mpmath.mpf], mpmath.mpf]:
    """``([z/2 - τ]_+^2, τ)`` with ``Σ = 1``: Newton on the convex decreasing ``Σ[u - τ]_+^2 - 1``."""
    u = [v / 2 for v in r]
    tau = max(u) - 1  # f(τ) >= 0 here; Newton from the left converges monotonically
    for _ in range(200):
        f = mpmath.fsum(max(v - tau, 0) ** 2 for v in u) - 1
        df = -2 * mpmath.fsum(max(v - tau, 0) for v in u)
        step = f / df
        tau -= step
        if abs(step) < mpmath.mpf(10) ** (-(mp.dps - 10)):
            break
    return [max(v - tau, mpmath.mpf(0)) ** 2 for v in u], tau


def fenchel_young(z: np.ndarray, t: np.ndarray, kind: str) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    r"""Sparsemax / entmax-1.5: loss, gradient ``p - e_t`` and the map ``p``, with their scales.

    The map is :math:`p_j = z_j - \tau` (sparsemax) or :math:`(z_j/2 - \tau)^2` (entmax-1.5)
    on the support: a difference with the threshold :math:`\tau`, which any implementation
    computes from the rounded logits (an error of an ulp of :math:`\max_j |z_j|`).  So the
    scale of :math:`p_j` is :math:`\max(|z_j|, |\tau|)` (sparsemax) and
    :math:`2\sqrt{p_j}\max(|z_j/2|, |\tau|)` (entmax); the target's gradient
    :math:`p_t - 1 = -\sum_{j\ne t} p_j` has the sum of the others' scales; the loss, whose
    first-order sensitivity to :math:`p` is :math:`p - e_t`, has
    :math:`\sum_j |p_j - [j=t]|\,\mathrm{scale}_j` (plus :math:`\max(|\tau|, |z_t|)` when the
    target is outside the support, where the loss holds :math:`\tau - z_t`).
    """
    vals, vscale, grads, gscale, maps, mscale = [], [], [], [], [], []
    for i, row in enumerate(z):
        r = _row(row)
        ti = int(t[i])
        if kind == "sparsemax":
            p, tau = _sparsemax_row(r)
            reg = (1 - mpmath.fsum(pc * pc for pc in p)) / 2
            sc = [max(abs(v), abs(tau)) if pc > 0 else mpmath.mpf(0) for v, pc in zip(r, p, strict=True)]
            outside = max(abs(tau), abs(r[ti])) if p[ti] == 0 else mpmath.mpf(0)
        else:
            p, tau = _entmax15_row(r)
            reg = (1 - mpmath.fsum(pc ** mpmath.mpf(1.5) for pc in p)) / mpmath.mpf(0.75)
            sc = [2 * mpmath.sqrt(pc) * max(abs(v / 2), abs(tau)) for v, pc in zip(r, p, strict=True)]
            outside = 2 * max(abs(tau), abs(r[ti] / 2)) if p[ti] == 0 else mpmath.mpf(0)
        inner = mpmath.fsum(pc * v for pc, v in zip(p, r, strict=True)) - r[ti]
        vals.append(inner + reg)
        g = list(p)
        g[ti] = -mpmath.fsum(pc for c, pc in enumerate(p) if c != ti)  # p_t - 1
        gs = list(sc)
        gs[ti] = mpmath.fsum(sv for c, sv in enumerate(sc) if c != ti) + sc[ti]
        vscale.append(mpmath.fsum(abs(gj) * sj for gj, sj in zip(g, sc, strict=True)) + outside)
        grads.append(as_float(g))
        gscale.append(as_float(gs))
        maps.append(as_float(p))
        mscale.append(as_float(sc))
    return {"value": (as_float(vals), as_float(vscale)), "gradient": (np.array(grads), np.array(gscale)),
            "map": (np.array(maps), np.array(mscale))}

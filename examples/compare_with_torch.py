"""Side by side: refsoftmax's hand-derived loss and gradient vs PyTorch autograd.

Run: ``python examples/compare_with_torch.py``.  Prints, for a small batch, the
sparse softmax cross-entropy (with class weights, label smoothing, an ignored
example and the mean reduction) and its gradient from both, and the largest
difference.  Exits with status 1 if they disagree beyond float64 rounding.
"""

from __future__ import annotations

import sys

import numpy as np

import refsoftmax as rs


def main() -> int:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("PyTorch is not installed: pip install torch==2.13.0")
        return 2

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 5)) * 2
    labels = np.array([0, 3, -100, 1])
    weights = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    options = dict(class_weights=weights, ignore_index=-100, label_smoothing=0.1, reduction="mean")

    value, grads = rs.sparse_softmax_cross_entropy.value_and_grad(logits, labels, **options)

    z = torch.tensor(logits, requires_grad=True)
    ref = F.cross_entropy(z, torch.tensor(labels), weight=torch.tensor(weights),
                          ignore_index=-100, label_smoothing=0.1, reduction="mean")
    ref.backward()
    assert z.grad is not None
    torch_grad = z.grad.numpy()

    np.set_printoptions(precision=6, suppress=True, linewidth=120)
    print("sparse_softmax_cross_entropy, float64, batch 4 x 5 classes")
    print(f"options: {', '.join(f'{k}={v!r}' for k, v in options.items() if k != 'class_weights')}, "
          f"class_weights={weights.tolist()}")
    print(f"labels: {labels.tolist()}   (-100 is ignored)\n")
    print(f"{'':>12} {'refsoftmax':>22} {'torch':>22}")
    print(f"{'loss':>12} {float(value):>22.16f} {ref.item():>22.16f}")
    print("\ngradient w.r.t. logits, row by row (refsoftmax | torch):")
    for a, b in zip(grads["logits"], torch_grad, strict=True):
        print(f"  {a} | {b}")
    loss_err = abs(float(value) - ref.item())
    grad_err = float(np.max(np.abs(grads["logits"] - torch_grad)))
    print(f"\nmax |difference|: loss {loss_err:.2e}, gradient {grad_err:.2e}")
    report = rs.gradcheck(rs.sparse_softmax_cross_entropy, (logits, labels), **options)
    print(report)
    ok = loss_err < 1e-12 and grad_err < 1e-12 and report.passed
    print("agree" if ok else "DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""tests/test_my_ce.py: certify my_ce, a hand-written PyTorch sparse cross-entropy, in CI."""

import torch

from refsoftmax.testing import assert_conforms


def my_ce(logits, labels, reduction="none", ignore_index=None):
    """Cross-entropy of logits (..., C) and class indices (...), over the last axis."""
    keep = torch.ones_like(labels, dtype=torch.bool) if ignore_index is None else labels != ignore_index
    logp = torch.log_softmax(logits, dim=-1)
    # gather raises on a label outside [0, C); ignored rows pick class 0, then are zeroed
    picked = logp.gather(-1, torch.where(keep, labels, 0).unsqueeze(-1)).squeeze(-1)
    loss = torch.where(keep, -picked, 0.0)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / keep.sum()  # 0 / 0 = nan when every row is ignored, as the reference
    return loss


def test_my_ce_conforms():
    assert_conforms(my_ce, loss="sparse_softmax_cross_entropy", framework="torch",
                    options=("reduction", "ignore_index"), max_examples=5)

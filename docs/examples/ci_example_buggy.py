"""A buggy variant: indexing wraps the label -1 around to the last class instead of refusing it."""

import torch

from refsoftmax.testing import assert_conforms


def buggy_ce(logits, labels, reduction="none"):
    logp = torch.log_softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
    loss = -logp[torch.arange(len(logp)), labels.reshape(-1)].reshape(labels.shape)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def test_buggy_ce_conforms():
    assert_conforms(buggy_ce, loss="sparse_softmax_cross_entropy", framework="torch",
                    options=("reduction",), max_examples=5)

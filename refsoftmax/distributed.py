r"""Losses with the class axis sharded over a ``torch.distributed`` process group.

Large-vocabulary training splits the logits (or the output embedding) along the classes:
rank :math:`k` of a group of :math:`R` holds the contiguous block :math:`[o_k, o_k + C_k)`
of the :math:`C = \sum_k C_k` classes, in rank order, blocks of any (even zero) size — the
layout of Megatron-core's and fairscale's vocab-parallel cross-entropy and of a
``Shard(-1)`` DTensor.  Every function here takes this rank's block and returns what the
dense function returns: the loss (the same on every rank) and, from ``backward``, this
rank's block of the gradient.

* ``sparse_softmax_cross_entropy(local_logits, labels)``: integer labels (global indices,
  the same on every rank);
* ``softmax_cross_entropy(local_logits, local_labels)``: soft labels, sharded with the logits;
* ``linear_softmax_cross_entropy(local_weights, local_biases, labels, inputs)``: the weight
  rows sharded, the inputs replicated;
* ``logsumexp(local_x)``, ``log_softmax(local_x)``, ``softmax(local_x)``.

**Forward: all-reduces only**, of a few numbers per row, never anything of size C (the row
maximum, the cancellation-free :math:`r = s - 1`, the loss as a sum of non-negative local
terms: :mod:`refsoftmax._sharded`).  **Backward: hand-derived and local** for the losses;
``log_softmax``/``softmax`` need one all-reduce of a number per row (their cotangent is
sharded too) and the linear loss one of the inputs' gradient (the inputs are replicated).
The concatenated gradient blocks equal the dense reference's gradient to 1e-12 relative in
float64 for world sizes 1–4 and uneven blocks (``tests/test_distributed.py``).

Runs on any backend ``torch.distributed`` runs on (gloo on the CPU, NCCL on GPUs); the
collectives live in :mod:`refsoftmax.backends.torch`.  The ordinary
:func:`refsoftmax.sparse_softmax_cross_entropy` accepts a ``Shard(-1)`` DTensor and runs
:data:`sparse_softmax_cross_entropy` on its local shards.
"""

from __future__ import annotations

from refsoftmax._sharded_dense import ShardedSoftmaxCrossEntropy
from refsoftmax._sharded_linear import ShardedLinearSoftmaxCrossEntropy
from refsoftmax._sharded_softmax import ShardedLogSoftmax, ShardedLogSumExp, ShardedSoftmax
from refsoftmax._sharded_sparse import (
    ShardedSparseSoftmaxCrossEntropy,
    sparse_softmax_cross_entropy,
)

__all__ = [
    "ShardedLinearSoftmaxCrossEntropy",
    "ShardedLogSoftmax",
    "ShardedLogSumExp",
    "ShardedSoftmax",
    "ShardedSoftmaxCrossEntropy",
    "ShardedSparseSoftmaxCrossEntropy",
    "linear_softmax_cross_entropy",
    "log_softmax",
    "logsumexp",
    "softmax",
    "softmax_cross_entropy",
    "sparse_softmax_cross_entropy",
]

softmax_cross_entropy = ShardedSoftmaxCrossEntropy()
linear_softmax_cross_entropy = ShardedLinearSoftmaxCrossEntropy()
logsumexp = ShardedLogSumExp()
log_softmax = ShardedLogSoftmax()
softmax = ShardedSoftmax()

"""A tiny library with a sparse cross-entropy, and the refsoftmax adapter that certifies it."""

from refsoftmax_example_plugin.loss import sparse_cross_entropy

__all__ = ["sparse_cross_entropy"]
__version__ = "0.1"

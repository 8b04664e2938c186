"""Hugging Face transformers: ``fixed_cross_entropy`` and ``ForCausalLMLoss``, with and without
``num_items_in_batch`` (``transformers.loss.loss_utils``, PyTorch autograd).

Certified against :func:`refsoftmax.sparse_softmax_cross_entropy`.  What the
functions do (transformers 5.23 source):

- ``fixed_cross_entropy(source, target, num_items_in_batch=None,
  ignore_index=-100, **kwargs)`` is ``F.cross_entropy(source, target,
  ignore_index=ignore_index)`` with ``reduction="mean"``, or, when
  ``num_items_in_batch`` is given, ``reduction="sum"`` divided by it.  It
  takes ``source`` of shape ``[N, C]`` (its callers flatten the tokens
  first): the adapter flattens leading dims the same way.  ``**kwargs`` is
  swallowed, so there are no class weights and no label smoothing: such
  cases are skipped.
- ``ForCausalLMLoss(logits, labels, vocab_size, num_items_in_batch=None,
  ignore_index=-100)`` upcasts the logits to float32, shifts the labels
  (position t is scored on ``labels[..., t + 1]``, the last position on
  ``ignore_index``), flattens and calls ``fixed_cross_entropy``.

The reference scores position t on its own label ``labels[..., t]``.  The
adapter feeds ``ForCausalLMLoss`` what a causal LM sees for that: the token
sequence ``(0, y_0, ..., y_{T-1})`` (a first token that is never predicted)
and the case's logits with one extra, all-zero position at the end (the
prediction after the last token, which has no label and is ignored), i.e.
``F.pad(logits, (0, 0, 0, 1))`` and ``F.pad(labels, (1, 0))`` on
``[batch, T, C]`` / ``[batch, T]`` (a 2-D case is one sequence of T = N
tokens).  A library that scored position t on ``y_t`` unshifted, or lost a
position, would disagree with the reference.

``num_items_in_batch`` is a token count supplied from outside the call (the
Trainer passes the number of target tokens of the whole gradient-accumulation
step, over all devices), so the value is ``sum / num_items_in_batch`` with a
denominator the reference does not know.  Those targets call the function with
``num_items_in_batch=torch.tensor(13)`` (an int64 tensor, as the Trainer
passes it) and compare ``13 * value`` (the multiplication in float64, so it
adds no rounding) with the reference's ``reduction="sum"``; value and gradient
alike, since ``d(13 v)/dz = 13 dv/dz``.  A count the function ignored, or a
division by its own count, would be off by a factor.

The functions return only a reduced value (``returns``): a case with another
reduction is evaluated one example at a time, each example a batch (a
sequence) of one.  ``ignore_index`` is passed through; a case without one
that has the label -100 is skipped (transformers always ignores -100).
``ForCausalLMLoss`` computes in float32 whatever the logits' dtype
(``compute_dtype="float32"``): on float64 inputs it is held to float32's
tolerance and reported as ``convention`` where only that explains the
difference.  No other convention differs from the reference defaults (the
mean divides by the non-ignored count; an all-ignored mean is NaN).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "transformers"

#: the external token count of the ``num_items_in_batch`` targets
NUM_ITEMS = 13

_DOC = "transformers.loss.loss_utils (transformers 5.x); docs/conventions.md, PyTorch rows"
_IMPORTS = ("import torch, torch.nn.functional as F\n"
            "from transformers.loss.loss_utils import ForCausalLMLoss, fixed_cross_entropy")
_Z = "torch.tensor(logits, dtype=torch.{dtype})"
_Y = "torch.tensor(labels)"
_II = "options.get('ignore_index', -100)"


def available() -> bool:
    return importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch") is not None


def version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed without metadata
        import transformers

        return str(getattr(transformers, "__version__", "unknown"))


def _ignore_index(inputs: dict[str, Any], options: dict[str, Any], returns: str) -> int:
    """The ``ignore_index`` to pass; skips what the functions cannot express."""
    if "class_weights" in inputs:
        raise Unsupported("no class weights: fixed_cross_entropy passes only ignore_index to F.cross_entropy")
    extra = set(options) - {"reduction", "ignore_index"}
    if extra:
        raise Unsupported(f"option(s) {sorted(extra)} not expressible in transformers' loss functions")
    if options.get("reduction", "none") != returns:  # the engine asks for ``returns`` only
        raise Unsupported(f"returns reduction={returns!r} only")
    if options.get("ignore_index") is None:
        if bool((inputs["labels"] == -100).any()):
            raise Unsupported("transformers treats -100 as ignored by default; the case has no ignore_index")
        return -100
    return int(options["ignore_index"])


def _sequences(inputs: dict[str, Any]) -> tuple[Any, Any]:
    """The case as ``[batch, T, C]`` logits and ``[batch, T]`` labels."""
    z, y = inputs["logits"], inputs["labels"]
    if z.ndim < 2:
        raise Unsupported("transformers takes a batch of examples")
    return z.reshape(-1, *z.shape[-2:]), y.reshape(-1, y.shape[-1])


def _fixed(num_items: int | None) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    returns = "mean" if num_items is None else "sum"

    def call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        import torch
        from transformers.loss.loss_utils import fixed_cross_entropy

        ignore_index = _ignore_index(inputs, options, returns)
        z, y = inputs["logits"], inputs["labels"]
        source, target = z.reshape(-1, z.shape[-1]), y.reshape(-1)
        if num_items is None:
            return fixed_cross_entropy(source, target, ignore_index=ignore_index)
        value = fixed_cross_entropy(source, target, num_items_in_batch=torch.tensor(num_items),
                                    ignore_index=ignore_index)
        return value.to(torch.float64) * num_items

    return call


def _causal(num_items: int | None) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    returns = "mean" if num_items is None else "sum"

    def call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        import torch
        import torch.nn.functional as F
        from transformers.loss.loss_utils import ForCausalLMLoss

        ignore_index = _ignore_index(inputs, options, returns)
        z, y = _sequences(inputs)
        logits, labels = F.pad(z, (0, 0, 0, 1)), F.pad(y, (1, 0))
        if num_items is None:
            return ForCausalLMLoss(logits, labels, z.shape[-1], ignore_index=ignore_index)
        value = ForCausalLMLoss(logits, labels, z.shape[-1], num_items_in_batch=torch.tensor(num_items),
                                ignore_index=ignore_index)
        return value.to(torch.float64) * num_items

    return call


def targets() -> list[Target]:
    flat = f"{_Z}.reshape(-1, logits.shape[-1]), {_Y}.reshape(-1)"
    seq = (f"F.pad({_Z}.reshape(-1, *logits.shape[-2:]), (0, 0, 0, 1)), "
           f"F.pad({_Y}.reshape(-1, labels.shape[-1]), (1, 0)), logits.shape[-1]")
    n = NUM_ITEMS
    scaled = (f"compared: {n} x the value with num_items_in_batch=torch.tensor({n}) against the "
              "reference's reduction='sum' (value and gradient)")
    causal = ("logits padded with one trailing position, labels with one leading token, so that the "
              "shifted label of position t is the case's label t; computed in float32")
    return [
        Target(
            LIBRARY, "transformers.loss.loss_utils.fixed_cross_entropy",
            "sparse_softmax_cross_entropy", "torch", _fixed(None), returns="mean",
            convention_doc=_DOC, imports=_IMPORTS,
            expression=f"fixed_cross_entropy({flat}, ignore_index={_II})",
            notes="num_items_in_batch=None: F.cross_entropy's mean over the non-ignored tokens",
        ),
        Target(
            LIBRARY, f"transformers.loss.loss_utils.fixed_cross_entropy(num_items_in_batch={n})",
            "sparse_softmax_cross_entropy", "torch", _fixed(n), returns="sum",
            convention_doc=_DOC, imports=_IMPORTS,
            expression=f"{n} * fixed_cross_entropy({flat}, num_items_in_batch=torch.tensor({n}), "
                       f"ignore_index={_II}).double()",
            notes=scaled,
        ),
        Target(
            LIBRARY, "transformers.loss.loss_utils.ForCausalLMLoss",
            "sparse_softmax_cross_entropy", "torch", _causal(None), returns="mean",
            compute_dtype="float32", convention_doc=_DOC, imports=_IMPORTS,
            expression=f"ForCausalLMLoss({seq}, ignore_index={_II})",
            notes=causal,
        ),
        Target(
            LIBRARY, f"transformers.loss.loss_utils.ForCausalLMLoss(num_items_in_batch={n})",
            "sparse_softmax_cross_entropy", "torch", _causal(n), returns="sum",
            compute_dtype="float32", convention_doc=_DOC, imports=_IMPORTS,
            expression=f"{n} * ForCausalLMLoss({seq}, num_items_in_batch=torch.tensor({n}), "
                       f"ignore_index={_II}).double()",
            notes=causal + "; " + scaled,
        ),
    ]

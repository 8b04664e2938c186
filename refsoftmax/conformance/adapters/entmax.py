"""entmax (PyTorch): ``sparsemax_loss``, ``entmax15_loss``, their bisection forms and loss modules.

Certified against :func:`refsoftmax.sparsemax_loss` / :func:`refsoftmax.entmax15_loss`
(the specs in :mod:`refsoftmax.conformance.specs_fenchel_young`), gradients
by ``torch.autograd`` through entmax's own ``autograd.Function`` backward.

- ``entmax.sparsemax_loss(X, target)`` / ``entmax.entmax15_loss(X, target)``:
  per-example losses, exact sort-based thresholds (``k=None``); the same
  with ``k=2`` (partial sort by ``topk`` and a doubling schedule when the
  support is larger), a separate code path;
- ``entmax.sparsemax_bisect_loss`` / ``entmax.entmax_bisect_loss(alpha=1.5)``:
  the threshold by 50 bisection steps (the package default);
- ``entmax.SparsemaxLoss`` / ``entmax.Entmax15Loss`` modules:
  ``reduction`` (``"mean"`` is the package's ``"elementwise_mean"``) and
  ``ignore_index``, passed through as given.

entmax documents ``X`` as 2-D ``(n_samples, n_classes)``: a case with
leading batch dims is skipped (:class:`Unsupported`) rather than reshaped
by the adapter.  The functions have no reduction and no ignore index; a
case asking for them is skipped for those targets.  No convention differs
from the reference (the modules' mean is over non-ignored examples, NaN
when all are ignored), so no target declares one.

Known disagreements (entmax 1.3), reported as failures or errors: the loss
is computed as ``Ω(p) + ⟨p − e_t, X⟩`` on the unshifted logits, so a −∞
logit that is not the label gives NaN (``0 · −∞``), and logits near ±1000
lose the loss to cancellation in float32 (1.5-entmax) and float16/bfloat16;
a row with an empty support (all −∞, or a NaN) raises ``index -1 is out of
bounds``; the modules apply ``ignore_index`` only when it is ≥ 0, so their
default -100 raises on a -100 label.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "entmax"

_DOC = "entmax package (2-D inputs)"
_IMPORTS = "import torch, entmax"
_X = "torch.tensor(logits, dtype=torch.{dtype})"
_T = "torch.tensor(labels)"


def available() -> bool:
    return importlib.util.find_spec("entmax") is not None and importlib.util.find_spec("torch") is not None


def version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("entmax")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed without metadata
        import entmax

        return str(getattr(entmax, "__version__", "unknown"))


def _two_d(inputs: dict[str, Any]) -> None:
    if inputs["logits"].ndim != 2:
        raise Unsupported("entmax takes X of shape (n_samples, n_classes) only")


def _function(name: str, **kwargs: Any) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    def call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        import entmax

        if options.get("reduction", "none") != "none":
            raise Unsupported(f"entmax.{name} returns per-example losses: no reduction={options['reduction']!r}")
        extra = set(options) - {"reduction"}
        if extra:
            raise Unsupported(f"option(s) {sorted(extra)} not expressible in entmax.{name}")
        _two_d(inputs)
        return getattr(entmax, name)(inputs["logits"], inputs["labels"], **kwargs)

    return call


def _module(name: str) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    def call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        import entmax

        extra = set(options) - {"reduction", "ignore_index"}
        if extra:
            raise Unsupported(f"option(s) {sorted(extra)} not expressible in entmax.{name}")
        _two_d(inputs)
        reduction = options.get("reduction", "none")
        kwargs: dict[str, Any] = {"reduction": "elementwise_mean" if reduction == "mean" else reduction}
        if options.get("ignore_index") is not None:
            kwargs["ignore_index"] = options["ignore_index"]
        return getattr(entmax, name)(**kwargs)(inputs["logits"], inputs["labels"])

    return call


def targets() -> list[Target]:
    out = []
    for loss, fn, bisect, bisect_kwargs, module in (
        ("sparsemax_loss", "sparsemax_loss", "sparsemax_bisect_loss", {}, "SparsemaxLoss"),
        ("entmax15_loss", "entmax15_loss", "entmax_bisect_loss", {"alpha": 1.5}, "Entmax15Loss"),
    ):
        out.append(Target(
            LIBRARY, f"entmax.{fn}", loss, "torch", _function(fn),
            convention_doc=_DOC, imports=_IMPORTS, expression=f"entmax.{fn}({_X}, {_T})",
        ))
        out.append(Target(
            LIBRARY, f"entmax.{fn}(k=2)", loss, "torch", _function(fn, k=2),
            convention_doc=_DOC, imports=_IMPORTS, expression=f"entmax.{fn}({_X}, {_T}, k=2)",
        ))
        args = "".join(f", {k}={v!r}" for k, v in bisect_kwargs.items())
        out.append(Target(
            LIBRARY, f"entmax.{bisect}({args[2:]})", loss, "torch", _function(bisect, **bisect_kwargs),
            convention_doc=_DOC, imports=_IMPORTS, expression=f"entmax.{bisect}({_X}, {_T}{args})",
        ))
        out.append(Target(
            LIBRARY, f"entmax.{module}", loss, "torch", _module(module),
            convention_doc=_DOC, imports=_IMPORTS,
            expression=f"entmax.{module}(reduction={{{{'mean': 'elementwise_mean'}}}}.get("
                       "options.get('reduction', 'none'), options.get('reduction', 'none')), "
                       f"ignore_index=options.get('ignore_index', -100))({_X}, {_T})",
        ))
    return out

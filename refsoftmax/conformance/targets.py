"""What is certified: a *target* is one library function, seen through the reference signature."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from refsoftmax.conformance.cases import DTYPES

__all__ = ["SPECS", "Drawn", "LossSpec", "Target", "Unsupported", "register_spec"]


class Unsupported(Exception):
    """Raised by a target's ``call`` for an option or input the library cannot express (case skipped)."""


@dataclass
class Target:
    """One library function, adapted to the reference signature of ``loss``.

    ``call(inputs, options)`` receives the case inputs as framework arrays
    (``logits``, ``labels``, ``class_weights`` ... named as in the reference)
    and the reference options, and returns the framework array that should
    equal the reference value.  It raises :class:`Unsupported` for options
    the library cannot express.

    ``conventions`` are the reference options that reproduce the library's
    documented conventions (``docs/conventions.md``); a disagreement
    explained by them is reported as ``"convention"``, not ``"fail"``.
    """

    library: str
    function: str
    loss: str
    framework: str
    call: Callable[[dict[str, Any], dict[str, Any]], Any]
    wrt: tuple[str, ...] = ("logits",)
    dtypes: tuple[str, ...] = DTYPES
    conventions: dict[str, Any] = field(default_factory=dict)
    convention_doc: str = ""
    expression: str = ""  # reproducer: an expression over the input names, e.g. "F.cross_entropy(...)"
    imports: str = ""
    grad_fn: Callable[..., dict[str, Any]] | None = None
    notes: str = ""


@dataclass(frozen=True)
class LossSpec:
    """The reference side of a loss: the refsoftmax function and how to call it."""

    name: str
    positional: tuple[str, ...]
    array_options: tuple[str, ...] = ("class_weights",)
    #: the reference callable; default ``getattr(refsoftmax, name)``.  Anything with the
    #: refsoftmax protocol works (``__call__`` and ``value_and_grad``).
    reference: Any = None
    #: inputs that must stay > 0 (e.g. probabilities): finite differences perturb them
    #: relatively, ``x (1 + h d)``, instead of by ``h d``.
    positive: tuple[str, ...] = ()
    #: ``canonical(value, dtype)``, applied to the candidate's value before it is compared,
    #: for values the spec defines only up to a representation (e.g. an excluded logit,
    #: ``-inf`` in the reference, as a large negative number); ``None``: compared as returned.
    canonical: Callable[[Any, str], Any] | None = None

    @property
    def function(self) -> Any:
        if self.reference is not None:
            return self.reference
        import refsoftmax

        return getattr(refsoftmax, self.name)


@dataclass(frozen=True)
class Drawn:
    """What a randomised target's ``call`` may return: its value and what its draw fixed.

    ``given`` holds reference options determined by the library's own random draw
    (e.g. the candidates a sampler drew and its number of tries): the value is
    compared with the reference evaluated *given* them.  ``value`` is the
    framework array that is compared (and differentiated, if the target has ``wrt``).
    """

    value: Any
    given: dict[str, Any] = field(default_factory=dict)


SPECS: dict[str, LossSpec] = {
    "sparse_softmax_cross_entropy": LossSpec("sparse_softmax_cross_entropy", ("logits", "labels")),
    "softmax_cross_entropy": LossSpec("softmax_cross_entropy", ("logits", "labels")),
}


def register_spec(spec: LossSpec) -> None:
    """Add (or replace) the reference spec of a loss; its cases come from ``cases.register``."""
    SPECS[spec.name] = spec

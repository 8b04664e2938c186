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
    #: what the function returns: ``"none"`` (per-example values, like the reference's
    #: default) or only a reduced value, ``"mean"`` / ``"sum"``; a case that needs another
    #: reduction is then evaluated one example at a time, reference and candidate alike.
    returns: str = "none"
    #: the function's stated preconditions (names in ``engine.PRECONDITIONS``); cases
    #: outside them are skipped with the reason.
    preconditions: tuple[str, ...] = ()
    #: the dtype the function computes in whatever its input dtype (e.g. ``"float32"``):
    #: values and gradients are then also compared at that dtype's tolerance, and a
    #: disagreement only that explains is reported as ``"convention"``.
    compute_dtype: str | None = None
    #: for reproducers of a user's function: the source line that binds it to ``fn``
    #: (e.g. ``"from mypkg.losses import my_ce as fn"``) and the options it accepts.
    source: str = ""
    accepted: tuple[str, ...] | None = None


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
    #: inputs shared by every example (not sliced when a case is evaluated per example)
    shared: tuple[str, ...] = ("weights", "biases")

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
    """Add (or replace) the reference side of a loss, so that ``certify(fn, loss=spec.name)`` works.

    Parameters
    ----------
    spec : LossSpec
        The loss's name, the names of its positional array arguments, its array
        options, and the reference (anything with ``__call__`` and
        ``value_and_grad(*args, cotangent=...)``, e.g. a refsoftmax function).
        Its cases come from :func:`refsoftmax.conformance.register_cases`.

    Examples
    --------
    Certify functions against ``refsoftmax.logsumexp`` under a name of your own,
    with one curated case and seeded random cases:

    >>> import numpy as np
    >>> import refsoftmax
    >>> from refsoftmax import conformance
    >>> conformance.register_spec(conformance.LossSpec(
    ...     "my_logsumexp", ("logits",), array_options=(), reference=refsoftmax.logsumexp))
    >>> def edge(rng):
    ...     return [conformance.Case("huge", "my_logsumexp", {"logits": np.array([[1e4, 0.0]])})]
    >>> def random(rng, i):
    ...     return conformance.Case(f"random-{i}", "my_logsumexp", {"logits": rng.standard_normal((3, 4))})
    >>> conformance.register_cases("my_logsumexp", edge, random)
    >>> def naive(logits):
    ...     with np.errstate(over="ignore"):
    ...         return np.log(np.exp(logits).sum(-1))
    >>> report = conformance.certify(naive, loss="my_logsumexp", options=(), max_examples=2)
    >>> [(r.case, r.status) for r in report.results if r.status != "pass"][:1]
    [('huge[float64]', 'fail')]
    """
    SPECS[spec.name] = spec

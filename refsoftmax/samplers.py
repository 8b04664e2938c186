"""Candidate samplers for sampled softmax and NCE, with TensorFlow's definitions.

A candidate sampler draws ``num_sampled`` classes ("candidates") from a base
distribution :math:`P` over ``[0, range_max)`` and reports, for every true
class and every candidate, its *expected count* :math:`Q`: how often the class
is expected to occur in one set of candidates.  Sampled softmax subtracts
:math:`\\log Q` from the logits.  Everything here reproduces
``tf.random.*_candidate_sampler`` and ``tf.nn.compute_accidental_hits``
(kernels ``core/kernels/range_sampler.cc`` and ``candidate_sampler_ops.cc``).

Base distributions
------------------
* uniform: :math:`P(c) = 1 / R` (``R = range_max``);
* log-uniform (Zipfian): :math:`P(c) = \\log\\frac{c + 2}{c + 1} / \\log(R + 1)`,
  drawn as ``int(exp(U * log1p(R))) - 1`` (mod ``R``) with ``U ~ U[0, 1)``;
* fixed unigram: :math:`P(c) \\propto w_c^{\\text{distortion}}` from a list
  or a vocabulary file, with reserved ids and sharding as TensorFlow has them;
* learned unigram: :math:`P(c) = n_c / \\sum_j n_j` where every count starts
  at 1 and grows by one for each occurrence of ``c`` among the true classes
  of a call (updated *after* that call has drawn);
* all candidates: every class once, expected counts 1.

Expected counts
---------------
With ``unique=False`` the ``k = num_sampled`` candidates are independent
draws and :math:`Q(c) = k\\,P(c)`.  With ``unique=True`` the sampler rejects
repeats until it holds ``k`` distinct classes, having made ``T >= k``
draws (``num_tries``), and TensorFlow approximates the inclusion probability
as if ``T`` were fixed:

.. math::

    Q(c) = \\begin{cases} k\\,P(c) & T = k \\\\
                         1 - (1 - P(c))^T = -\\operatorname{expm1}(T \\operatorname{log1p}(-P(c)))
                         & T > k. \\end{cases}

TensorFlow evaluates this in ``float``: :math:`P(c)` rounded to float32, then
``log1p``, the product with ``T`` and ``expm1`` each rounded to float32.
:func:`_expected_count` reproduces every one of those roundings, each step
evaluated in float64 and rounded to float32 (correct rounding, the same on
every platform and backend).  The float32 results equal TensorFlow's bit for
bit when ``T = k``; when ``T > k`` a few percent of them differ in the last
bit, because glibc's ``log1pf``/``expm1f``, which TensorFlow calls, are not
correctly rounded (the same holds for ``powf`` in a fixed unigram
distribution with ``distortion != 1``: at most 2 ulp in :math:`P`).
:meth:`CandidateSampler.probability`, in contrast, returns :math:`P(c)` in
float64 as the definition gives it.

Randomness and backends
-----------------------
Draws come from the seeded ``Generator`` of :mod:`refsoftmax.backends`, made
on the namespace and device of ``true_classes`` (Python lists go to the
backend flag, see :func:`refsoftmax.get_backend`).  The same ``seed`` gives
the same candidates on every run; ``seed=None`` draws fresh entropy.  NumPy
and array-api-strict both draw with PCG64 and give *identical* candidates;
PyTorch, CuPy and JAX each have their own generator, so their candidates
differ (as TensorFlow's Philox stream does: no sampler here reproduces
TensorFlow's random numbers, only its distributions and expected counts).
The draws are made in vectorised batches on the backend; the rejection loop
of ``unique=True`` is sequential and does its bookkeeping on the host.  All
returned arrays live in the namespace and on the device of ``true_classes``.

By default one set of candidates is shared by the whole batch (as in
TensorFlow): ``candidates`` has shape ``[num_sampled]``.  ``per_example=True``
draws a separate set for each row: ``[batch, num_sampled]``, with its own
``num_tries`` per row.

>>> from refsoftmax.samplers import log_uniform_candidate_sampler
>>> s = log_uniform_candidate_sampler([[1], [7]], num_true=1, num_sampled=4,
...                                   unique=True, range_max=100, seed=0)
>>> s.candidates.shape, s.true_expected_count.shape, s.sampled_expected_count.dtype
((4,), (2, 1), dtype('float32'))
>>> len(set(s.candidates.tolist()))
4
"""

from __future__ import annotations

import abc
import math
import numbers
import os
import threading
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from refsoftmax import backends
from refsoftmax._arrays import resolve
from refsoftmax._labels import class_indices

__all__ = [
    "AllCandidateSampler",
    "CandidateSampler",
    "FixedUnigramSampler",
    "LearnedUnigramSampler",
    "LogUniformSampler",
    "SampledValues",
    "UniformSampler",
    "all_candidate_sampler",
    "compute_accidental_hits",
    "fixed_unigram_candidate_sampler",
    "learned_unigram_candidate_sampler",
    "log_uniform_candidate_sampler",
    "uniform_candidate_sampler",
]

_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_FLT_MAX = float(np.finfo(np.float32).max)


class SampledValues(NamedTuple):
    """What a candidate sampler returns; unpacks like TensorFlow's ``sampled_values`` triple.

    Attributes
    ----------
    candidates : array of int64, ``[num_sampled]`` (``[batch, num_sampled]`` per example)
        The sampled classes, in the order they were drawn.
    true_expected_count : array of float32, ``[batch, num_true]``
        :math:`Q` of each true class.
    sampled_expected_count : array of float32, same shape as ``candidates``
        :math:`Q` of each candidate.
    """

    candidates: Any
    true_expected_count: Any
    sampled_expected_count: Any


# --------------------------------------------------------------------------- checks


def _check_int(name: str, value: Any, minimum: int, maximum: int = _INT64_MAX) -> int:
    """``value`` as a Python int in [minimum, maximum] (``TypeError`` for non-integers)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        msg = f"{name} must be an integer, got {value!r}"
        raise TypeError(msg)
    value = int(value)
    if value < minimum:
        msg = f"{name} must be >= {minimum}, got {value}"
        raise ValueError(msg)
    if value > maximum:
        msg = f"{name} must be <= {maximum}, got {value}"
        raise ValueError(msg)
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        msg = f"{name} must be a bool, got {value!r}"
        raise TypeError(msg)
    return bool(value)


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    return _check_int("seed", seed, 0)


def _check_real(name: str, value: Any) -> float:
    """A finite Python float (``TypeError`` for non-numbers)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        msg = f"{name} must be a real number, got {value!r}"
        raise TypeError(msg)
    value = float(value)
    if not math.isfinite(value):
        msg = f"{name} must be finite, got {value!r}"
        raise ValueError(msg)
    return value


def _check_integer_array(name: str, xp: Any, x: Any, ndim: int, shape_text: str) -> None:
    """``x`` must be an integer array with ``ndim`` dimensions."""
    if x.dtype == xp.bool or not xp.isdtype(x.dtype, "integral"):
        msg = f"{name} must be an integer array, got dtype {x.dtype}"
        raise TypeError(msg)
    if x.ndim != ndim:
        msg = f"{name} must be a {ndim}-D {shape_text} array, got shape {tuple(x.shape)}"
        raise ValueError(msg)


def _check_classes_in_range(name: str, xp: Any, x: Any, range_max: int) -> Any:
    """``x`` (any integer dtype) checked to lie in ``[0, range_max)``, as int64."""
    bounds = f"lie in [0, range_max={range_max})"
    index, _ = class_indices(xp, x, range_max, name=name, range_text=bounds)
    return index


def _resolve_true_classes(true_classes: Any, num_true: int | None) -> tuple[Any, Any]:
    """``true_classes`` as a 2-D integer array of its namespace (``num_true`` checked if given)."""
    xp, arrays = resolve(true_classes=true_classes)
    tc = arrays["true_classes"]
    _check_integer_array("true_classes", xp, tc, 2, "[batch_size, num_true]")
    if num_true is not None:
        num_true = _check_int("num_true", num_true, 1)
        if tc.shape[1] != num_true:
            msg = (
                f"num_true={num_true} does not match true_classes.shape[1]={tc.shape[1]} "
                f"(true_classes has shape {tuple(tc.shape)})"
            )
            raise ValueError(msg)
    elif tc.shape[1] < 1:
        msg = f"true_classes must have at least one column, got shape {tuple(tc.shape)}"
        raise ValueError(msg)
    return xp, tc


# ---------------------------------------------------------------- expected counts


def _round32(xp: Any, x: Any) -> Any:
    """``x`` (float64) rounded to float32 and widened back: one float32 operation of TF's."""
    return xp.astype(xp.astype(x, xp.float32), xp.float64)


def _expected_count(xp: Any, p32: Any, num_sampled: int, num_tries: Any) -> Any:
    """TensorFlow's ``ExpectedCountHelper``, float32 rounding step by step.

    ``p32`` holds TF's float32 probabilities; ``num_tries`` is a Python int or
    an integer array broadcastable against ``p32`` (one value per row).  TF
    converts ``num_sampled`` and ``num_tries`` to float32 before multiplying;
    a product of two float32 numbers is exact in float64, so rounding it to
    float32 reproduces TF's float32 product exactly.
    """
    p = xp.astype(p32, xp.float64)
    k32 = float(np.float32(num_sampled))
    with_replacement = xp.astype(p * k32, xp.float32)
    if isinstance(num_tries, int):
        if num_tries == num_sampled:
            return with_replacement
        tries32: Any = float(np.float32(num_tries))
        no_rejection: Any = None
    else:
        tries32 = _round32(xp, xp.astype(num_tries, xp.float64))
        no_rejection = num_tries == num_sampled
    # P(c) = 1 only occurs with T = k (a second distinct draw is impossible); for P = 1
    # the formula gives 1 - 0**T = 1, set directly so that log1p never sees -1.
    below_one = p < 1.0
    safe_p = xp.where(below_one, p, xp.zeros_like(p))
    exponent = _round32(xp, tries32 * _round32(xp, xp.log1p(-safe_p)))
    with_rejection = xp.where(
        below_one, xp.astype(-xp.expm1(exponent), xp.float32), xp.ones_like(p32)
    )
    if no_rejection is None:
        return with_rejection
    return xp.where(no_rejection, with_replacement, with_rejection)


# ------------------------------------------------------------------------ samplers


def _placement(xp: Any, x: Any) -> tuple[backends.BackendModule, Any]:
    """The backend module serving ``xp`` and the device of ``x``."""
    return backends.for_namespace(xp), array_api_compat.device(x)


def _take(xp: Any, module: backends.BackendModule, table: np.ndarray, classes: Any) -> Any:
    """``table[classes]`` for a host table, on the namespace and device of ``classes``."""
    device = array_api_compat.device(classes)
    values = xp.take(module.from_host(table, device), xp.reshape(classes, (-1,)), axis=0)
    return xp.reshape(values, tuple(classes.shape))


class CandidateSampler(abc.ABC):
    """A base distribution over the classes ``[0, range_max)`` and TF's sampling rules.

    Parameters
    ----------
    range_max : int
        The number of classes, ``>= 1``.

    Notes
    -----
    :meth:`sample` draws the candidates and computes the expected counts (see
    the module docstring for the formulas).  Subclasses define the base
    distribution through :meth:`probability` and their draws.
    """

    def __init__(self, range_max: int) -> None:
        self._range_max = _check_int("range_max", range_max, 1)

    @property
    def range_max(self) -> int:
        """The number of classes; candidates lie in ``[0, range_max)``."""
        return self._range_max

    def __repr__(self) -> str:
        return f"{type(self).__name__}(range_max={self._range_max})"

    def probability(self, classes: Any) -> Any:
        """:math:`P(c)`, the probability that a single draw returns ``c``, in float64.

        Parameters
        ----------
        classes : integer array (any shape) or list
            Classes in ``[0, range_max)``.

        Returns
        -------
        array of float64
            Same shape, namespace and device as ``classes``.
        """
        xp, arrays = resolve(classes=classes)
        c = arrays["classes"]
        if c.dtype == xp.bool or not xp.isdtype(c.dtype, "integral"):
            msg = f"classes must be an integer array, got dtype {c.dtype}"
            raise TypeError(msg)
        c = _check_classes_in_range("classes", xp, c, self._range_max)
        return self._probability(xp, c)

    def sample(
        self,
        true_classes: Any,
        num_sampled: int,
        *,
        unique: bool = True,
        seed: int | None = None,
        per_example: bool = False,
    ) -> SampledValues:
        """Draw candidates and compute the expected counts of candidates and true classes.

        Parameters
        ----------
        true_classes : integer array ``[batch_size, num_true]``
            The target classes, in ``[0, range_max)``.  Its namespace and device
            are those of the results and of the random generator.
        num_sampled : int
            Candidates per set, ``>= 1`` (and ``<= range_max`` when ``unique``).
        unique : bool
            Draw without replacement (by rejection) instead of with replacement.
        seed : int or None
            Seed of the backend generator; ``None`` draws fresh entropy.
        per_example : bool
            One set of candidates per row of ``true_classes`` instead of one
            shared set.

        Returns
        -------
        SampledValues
        """
        values, _ = self._sample(
            true_classes, num_sampled, unique=unique, seed=seed, per_example=per_example
        )
        return values

    @abc.abstractmethod
    def _probability(self, xp: Any, classes: Any) -> Any:
        """:math:`P` in float64 for int64 ``classes`` known to be in range."""

    @abc.abstractmethod
    def _sample(
        self,
        true_classes: Any,
        num_sampled: int,
        *,
        unique: bool,
        seed: int | None,
        per_example: bool,
        num_true: int | None = None,
    ) -> tuple[SampledValues, Any]:
        """The samples and ``num_tries`` (an int, or a NumPy array with one per row)."""


class _RandomSampler(CandidateSampler):
    """A sampler that draws from its base distribution, as TF's ``RangeSampler`` does."""

    @abc.abstractmethod
    def _draw(self, gen: Any, xp: Any, device: Any, shape: tuple[int, ...]) -> Any:
        """Independent draws from the base distribution: int64 array of ``shape`` on ``device``."""

    def _probability32(self, xp: Any, classes: Any) -> Any:
        """:math:`P` as TF's float ``Probability()`` computes it (default: float64 rounded)."""
        return xp.astype(self._probability(xp, classes), xp.float32, copy=False)

    def _num_possible(self) -> int:
        """How many classes have :math:`P > 0` (the most ``unique=True`` can return)."""
        return self._range_max

    def _after_sampling(self, true_classes_np: np.ndarray) -> None:
        """Hook for stateful samplers, called with the true classes after each draw."""

    def _draw_unique(
        self, gen: Any, xp: Any, module: backends.BackendModule, device: Any, num_sampled: int
    ) -> tuple[np.ndarray, int]:
        """TF's rejection loop: draw until ``num_sampled`` distinct classes; count the draws.

        Draws come in batches from the backend (each batch at least as large as
        all draws so far, so the number of batches grows logarithmically); the
        first new values of a batch are accepted in order and the rest of the
        batch is discarded once the set is full.
        """
        picked = np.empty(0, dtype=np.int64)
        num_tries = 0
        while picked.size < num_sampled:
            remaining = num_sampled - picked.size
            size = max(16, 2 * remaining, num_tries)
            draws = np.asarray(module.to_numpy(self._draw(gen, xp, device, (size,))), np.int64)
            fresh = np.zeros(size, dtype=bool)
            fresh[np.unique(draws, return_index=True)[1]] = True  # first occurrence in the batch
            fresh &= ~np.isin(draws, picked)
            accepted = np.flatnonzero(fresh)[:remaining]
            picked = np.concatenate([picked, draws[accepted]])
            num_tries += int(accepted[-1]) + 1 if picked.size == num_sampled else size
        return picked, num_tries

    def _sample(
        self,
        true_classes: Any,
        num_sampled: int,
        *,
        unique: bool,
        seed: int | None,
        per_example: bool,
        num_true: int | None = None,
    ) -> tuple[SampledValues, Any]:
        xp, tc = _resolve_true_classes(true_classes, num_true)
        num_sampled = _check_int("num_sampled", num_sampled, 1, _INT32_MAX)
        unique = _check_bool("unique", unique)
        per_example = _check_bool("per_example", per_example)
        seed = _check_seed(seed)
        if unique and num_sampled > self._range_max:
            msg = (
                f"num_sampled={num_sampled} exceeds range_max={self._range_max}: "
                "unique=True cannot draw more distinct classes than there are"
            )
            raise ValueError(msg)
        if unique and num_sampled > self._num_possible():
            msg = (
                f"num_sampled={num_sampled} exceeds the {self._num_possible()} classes with "
                f"nonzero probability of {self!r}: unique=True would never finish "
                "(TensorFlow loops until its try counter overflows)"
            )
            raise ValueError(msg)
        tc = _check_classes_in_range("true_classes", xp, tc, self._range_max)

        module, device = _placement(xp, tc)
        gen = module.Generator(seed, device)
        batch = int(tc.shape[0])
        num_tries: Any
        if not unique:
            shape = (batch, num_sampled) if per_example else (num_sampled,)
            candidates = xp.astype(self._draw(gen, xp, device, shape), xp.int64)
            num_tries = num_sampled
        elif per_example:
            rows = [self._draw_unique(gen, xp, module, device, num_sampled) for _ in range(batch)]
            picked = np.stack([r[0] for r in rows]) if rows else np.empty((0, num_sampled))
            num_tries = np.asarray([r[1] for r in rows], dtype=np.int64)
            candidates = module.from_host(picked.astype(np.int64), device)
        else:
            picked, num_tries = self._draw_unique(gen, xp, module, device, num_sampled)
            candidates = module.from_host(picked, device)

        tries: Any = num_tries
        if isinstance(num_tries, np.ndarray):  # one per row, broadcast over the columns
            tries = module.from_host(num_tries.reshape(-1, 1), device)
        true_expected = _expected_count(xp, self._probability32(xp, tc), num_sampled, tries)
        sampled_expected = _expected_count(
            xp, self._probability32(xp, candidates), num_sampled, tries
        )
        self._after_sampling(np.asarray(module.to_numpy(tc), dtype=np.int64))
        return SampledValues(candidates, true_expected, sampled_expected), num_tries


class UniformSampler(_RandomSampler):
    """Uniform base distribution: :math:`P(c) = 1 / R`.

    TF's ``UniformSampler``: draws ``Uniform64(R)``; its float probability is
    ``float(1.0 / R)``.

    Parameters
    ----------
    range_max : int
        The number of classes ``R``.

    Examples
    --------
    >>> from refsoftmax.samplers import UniformSampler
    >>> UniformSampler(4).probability([0, 3]).tolist()
    [0.25, 0.25]
    """

    def _probability(self, xp: Any, classes: Any) -> Any:
        return xp.full(
            tuple(classes.shape), 1.0 / self._range_max, dtype=xp.float64,
            device=array_api_compat.device(classes),
        )

    def _draw(self, gen: Any, xp: Any, device: Any, shape: tuple[int, ...]) -> Any:
        return xp.astype(gen.integers(0, self._range_max, shape), xp.int64, copy=False)


class LogUniformSampler(_RandomSampler):
    """Log-uniform (Zipfian) base distribution.

    .. math::

        P(c) = \\frac{\\log\\bigl((c + 2) / (c + 1)\\bigr)}{\\log(R + 1)},

    computed as TF does: the logarithm of the ratio in float64 over
    ``log1p(R)``.  A draw is ``int(exp(U * log1p(R))) - 1`` taken modulo
    ``R`` (the modulo only guards against round-off), ``U ~ U[0, 1)`` in
    float64: the value is ``c`` exactly when ``U log(R+1)`` falls in
    ``[log(c+1), log(c+2))``.  Suited to classes sorted by decreasing frequency.

    Parameters
    ----------
    range_max : int
        The number of classes ``R``.

    Examples
    --------
    >>> from refsoftmax.samplers import LogUniformSampler
    >>> [round(p, 4) for p in LogUniformSampler(3).probability([0, 1, 2]).tolist()]
    [0.5, 0.2925, 0.2075]
    """

    def __init__(self, range_max: int) -> None:
        super().__init__(range_max)
        self._log_range = math.log1p(self._range_max)

    def _probability(self, xp: Any, classes: Any) -> Any:
        c = xp.astype(classes, xp.float64)
        return xp.log((c + 2.0) / (c + 1.0)) / self._log_range

    def _draw(self, gen: Any, xp: Any, device: Any, shape: tuple[int, ...]) -> Any:
        u = gen.uniform(shape, xp.float64)
        value = xp.astype(xp.exp(u * self._log_range), xp.int64) - 1
        return value % self._range_max


class _TableSampler(_RandomSampler):
    """A base distribution given by a host table of nonnegative weights."""

    @abc.abstractmethod
    def _weights(self) -> np.ndarray:
        """The weights, float64 ``[range_max]`` (not necessarily normalised)."""

    @abc.abstractmethod
    def _probability32_table(self) -> np.ndarray:
        """TF's float32 probabilities, ``[range_max]``."""

    def _probability(self, xp: Any, classes: Any) -> Any:
        weights = self._weights()
        return _take(xp, backends.for_namespace(xp), weights / weights.sum(), classes)

    def _probability32(self, xp: Any, classes: Any) -> Any:
        return _take(xp, backends.for_namespace(xp), self._probability32_table(), classes)

    def _num_possible(self) -> int:
        return int(np.count_nonzero(self._weights()))

    def _draw(self, gen: Any, xp: Any, device: Any, shape: tuple[int, ...]) -> Any:
        # Inverse CDF: the first class whose cumulative weight exceeds U * total.  U < 1
        # makes U * total < total, and a class of weight 0 never satisfies
        # cdf[c - 1] <= x < cdf[c], so it is never drawn.
        cdf_np = np.cumsum(self._weights())
        cdf = backends.for_namespace(xp).from_host(cdf_np, device)
        u = gen.uniform(shape, xp.float64)
        x = xp.reshape(u * float(cdf_np[-1]), (-1,))
        return xp.reshape(xp.astype(xp.searchsorted(cdf, x, side="right"), xp.int64, copy=False), shape)


def _parse_count(field: bytes) -> float | None:
    """The number in one vocabulary field, as C's ``strtof`` reads a whole field; else ``None``.

    Surrounding whitespace is allowed; decimal, scientific, hexadecimal
    (``0x1f``, ``0x1.8p1``), ``inf`` and ``nan`` spellings parse (the last two
    are then rejected as non-finite); Python-only forms such as ``1_000`` do not.
    """
    try:
        text = field.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if not text or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float.fromhex(text)
    except ValueError:
        return None


def _read_vocab_file(
    path: str | os.PathLike[str], first_id: int, num_shards: int, shard: int
) -> np.ndarray:
    """The counts of the shard's entries of a vocabulary file, as TF's ``LoadFromFile`` reads.

    Lines are split on ``\\n`` (a trailing ``\\r`` is dropped); an empty line is
    skipped and gets no id; line ``i`` of the others gets id ``first_id + i``;
    a line belongs to the shard when ``id % num_shards == shard`` and only
    those lines are parsed; the count is the last comma-separated field.
    """
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the file's final newline
    counts = []
    word_id = first_id
    for line_number, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            continue
        if word_id % num_shards == shard:
            value = _parse_count(line.rsplit(b",", 1)[-1])
            if value is None:
                msg = (
                    f"vocab_file {os.fspath(path)!r}, line {line_number}: the last "
                    f"comma-separated field must be a number, got {line.decode(errors='replace')!r}"
                )
                raise ValueError(msg)
            if not (math.isfinite(value) and value >= 0):
                msg = (
                    f"vocab_file {os.fspath(path)!r}, line {line_number}: counts must be "
                    f"finite and >= 0, got {value!r}"
                )
                raise ValueError(msg)
            counts.append(value)
        word_id += 1
    return np.asarray(counts, dtype=np.float64)


def _as_unigrams(unigrams: Any) -> np.ndarray:
    """``unigrams`` as a 1-D float64 array of finite, nonnegative counts."""
    try:
        values = np.asarray(unigrams, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"unigrams must be a sequence of real numbers: {exc}"
        raise TypeError(msg) from exc
    if values.ndim != 1:
        msg = f"unigrams must be 1-D, got shape {values.shape}"
        raise ValueError(msg)
    bad = ~np.isfinite(values) | (values < 0)
    if np.any(bad):
        index = int(np.flatnonzero(bad)[0])
        msg = f"unigrams must be finite and >= 0, got unigrams[{index}]={float(values[index])!r}"
        raise ValueError(msg)
    return values


class FixedUnigramSampler(_TableSampler):
    """Unigram base distribution from fixed counts, TF's ``FixedUnigramSampler``.

    Parameters
    ----------
    range_max : int
        The number of classes of *this shard*: reserved ids in the shard plus
        the shard's entries of ``unigrams`` / ``vocab_file``.  Must match.
    unigrams : sequence of float, optional
        Counts (or probabilities) of the ids, in id order.
    vocab_file : path, optional
        A CSV file, one id per line, its count the *last* comma-separated
        field (``word,count``; a line that is just a number works too).
        Exactly one of ``unigrams`` and ``vocab_file`` must be given.
    distortion : float
        Each count is raised to this power first; ``1`` keeps the counts,
        ``0`` makes the distribution uniform over the entries (``0**0 = 1``).
    num_reserved_ids : int
        Ids ``0 .. num_reserved_ids-1`` get weight 0 (never drawn).
    num_shards, shard : int
        Keep only the ids with ``id % num_shards == shard``.

    Notes
    -----
    With :math:`w_c = \\text{count}_c^{\\text{distortion}}`,
    :math:`P(c) = w_c / \\sum_j w_j`.  The id bookkeeping follows TF exactly,
    including a quirk with sharding: the shard first holds its reserved ids
    (those ``r < num_reserved_ids`` with ``r % num_shards == shard``, weight 0),
    say :math:`n_s` of them, and then entry ``i`` of ``unigrams``/``vocab_file``
    gets id :math:`n_s + i` (**not** ``num_reserved_ids + i``) and is kept when
    that id is in the shard.  Without sharding this is the natural layout:
    reserved ids first, then the entries.  The vocabulary file is read like TF
    reads it: lines end at ``\\n`` (a trailing ``\\r`` is dropped), empty lines
    are skipped without taking an id, and only the lines of the shard are
    parsed, so a malformed line of another shard is ignored.

    TF keeps the counts in float32; its float32 probabilities
    (``powf(count, distortion)`` divided by the running float32 total) are
    reproduced for the expected counts, while :meth:`probability` gives the
    float64 values.  Deviations, all for inputs where TF returns NaN or
    garbage or never returns: negative or non-finite counts, a non-finite or
    zero total and weights overflowing float32 raise ``ValueError``, and so
    does ``unique=True`` asking for more candidates than there are classes
    of nonzero weight.

    Examples
    --------
    >>> from refsoftmax.samplers import FixedUnigramSampler
    >>> sampler = FixedUnigramSampler(4, unigrams=[1.0, 2.0, 1.0], num_reserved_ids=1)
    >>> sampler.probability([0, 1, 2, 3]).tolist()
    [0.0, 0.25, 0.5, 0.25]
    """

    def __init__(
        self,
        range_max: int,
        *,
        unigrams: Any = None,
        vocab_file: str | os.PathLike[str] | None = None,
        distortion: float = 1.0,
        num_reserved_ids: int = 0,
        num_shards: int = 1,
        shard: int = 0,
    ) -> None:
        super().__init__(range_max)
        distortion = _check_real("distortion", distortion)
        num_reserved_ids = _check_int("num_reserved_ids", num_reserved_ids, 0, _INT32_MAX)
        num_shards = _check_int("num_shards", num_shards, 1, _INT32_MAX)
        shard = _check_int("shard", shard, 0, _INT32_MAX)
        if shard >= num_shards:
            msg = f"shard must lie in [0, num_shards={num_shards}), got {shard}"
            raise ValueError(msg)
        path = "" if vocab_file is None else os.fspath(vocab_file)
        values = np.empty(0) if unigrams is None else _as_unigrams(unigrams)
        if bool(path) == (values.size > 0):
            msg = (
                "give exactly one of vocab_file and unigrams, got "
                f"vocab_file={vocab_file!r} and unigrams of length "
                f"{values.size}"
            )
            raise ValueError(msg)
        self.distortion = distortion
        self.num_reserved_ids = num_reserved_ids
        self.num_shards = num_shards
        self.shard = shard

        # Reserved ids in this shard: r < num_reserved_ids with r % num_shards == shard.
        num_reserved_here = max(0, -(-(num_reserved_ids - shard) // num_shards))
        if path:
            counts = _read_vocab_file(path, num_reserved_here, num_shards, shard)
        else:
            ids = num_reserved_here + np.arange(values.size)
            counts = values[ids % num_shards == shard]
        expected_range = num_reserved_here + counts.size
        if expected_range != self._range_max:
            msg = (
                f"range_max={self._range_max} must equal the number of ids in shard {shard}: "
                f"{num_reserved_here} reserved + {counts.size} from the "
                f"{'vocab_file' if path else 'unigrams'} = {expected_range}"
            )
            raise ValueError(msg)

        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            weights = np.power(counts, distortion)
            total = float(np.sum(weights))
            # TF: float32 counts, powf, a float32 running total, a float32 division.
            weights32 = np.power(
                counts.astype(np.float32).astype(np.float64), float(np.float32(distortion))
            ).astype(np.float32)
            total32 = np.cumsum(weights32, dtype=np.float32)[-1] if weights32.size else 0.0
        if not np.all(np.isfinite(weights)):
            bad = int(np.flatnonzero(~np.isfinite(weights))[0])
            msg = (
                f"count {float(counts[bad])!r} ** distortion={distortion!r} is not finite "
                f"(entry {bad} of shard {shard})"
            )
            raise ValueError(msg)
        if not (math.isfinite(total) and total > 0):
            msg = f"the weights of shard {shard} sum to {total!r}; the sum must be finite and > 0"
            raise ValueError(msg)
        if not (np.all(np.isfinite(weights32)) and np.isfinite(total32) and total32 > 0):
            msg = (
                f"the weights of shard {shard} overflow or underflow float32 (total "
                f"{float(total32)!r}), in which TensorFlow keeps and sums them"
            )
            raise ValueError(msg)
        self._weights64 = np.concatenate([np.zeros(num_reserved_here), weights])
        self._table32 = np.concatenate(
            [np.zeros(num_reserved_here, np.float32), weights32 / np.float32(total32)]
        ).astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"FixedUnigramSampler(range_max={self._range_max}, distortion={self.distortion}, "
            f"num_reserved_ids={self.num_reserved_ids}, num_shards={self.num_shards}, "
            f"shard={self.shard})"
        )

    def _weights(self) -> np.ndarray:
        return self._weights64

    def _probability32_table(self) -> np.ndarray:
        return self._table32


class LearnedUnigramSampler(_TableSampler):
    """Unigram base distribution learned from the true classes, TF's ``UnigramSampler``.

    Every class starts with count 1; after each :meth:`sample` (the draws and
    expected counts use the counts *before* it), every entry of
    ``true_classes`` adds one to its class, repeats included, in row-major
    order, as long as the total stays at most ``2**31 - 1`` (TF's int32
    cap; updates beyond it are dropped).  :math:`P(c) = n_c / \\sum_j n_j`.

    **This object keeps state**: each call of :meth:`sample` changes the
    distribution of the next one.  (TF keeps it in the op's kernel, so in a
    graph one op node learns over its runs; the function
    :func:`learned_unigram_candidate_sampler` starts afresh on every call.)
    The counts are not saved anywhere.  ``sample`` holds a lock, so calls from
    several threads each see and update a consistent state.

    Parameters
    ----------
    range_max : int
        The number of classes, ``< 2**31 - 1`` as in TF.

    Examples
    --------
    >>> from refsoftmax.samplers import LearnedUnigramSampler
    >>> sampler = LearnedUnigramSampler(3)
    >>> _ = sampler.sample([[2], [2]], num_sampled=1, seed=0)
    >>> sampler.counts.tolist(), sampler.probability([0, 2]).tolist()
    ([1, 1, 3], [0.2, 0.6])
    """

    def __init__(self, range_max: int) -> None:
        super().__init__(_check_int("range_max", range_max, 1, _INT32_MAX - 1))
        self._counts = np.ones(self._range_max, dtype=np.int64)
        self._lock = threading.Lock()

    @property
    def counts(self) -> np.ndarray:
        """A NumPy copy of the current counts :math:`n_c` (int64 ``[range_max]``)."""
        return self._counts.copy()

    def _weights(self) -> np.ndarray:
        return self._counts.astype(np.float64)

    def _probability32_table(self) -> np.ndarray:
        # TF: static_cast<float>(weight) / total_weight, the int32 total converted to float.
        return self._counts.astype(np.float32) / np.float32(int(self._counts.sum()))

    def _num_possible(self) -> int:
        return self._range_max

    def _after_sampling(self, true_classes_np: np.ndarray) -> None:
        values = true_classes_np.reshape(-1)
        room = max(0, _INT32_MAX - int(self._counts.sum()))
        np.add.at(self._counts, values[:room], 1)

    def _sample(self, *args: Any, **kwargs: Any) -> tuple[SampledValues, Any]:
        with self._lock:
            return super()._sample(*args, **kwargs)


class AllCandidateSampler(CandidateSampler):
    """Every class once: candidates ``0 .. range_max-1``, every expected count 1.

    TF's ``AllSampler`` (its range is ``num_sampled``, which must therefore
    equal ``range_max`` here).  There is no randomness: ``unique`` and
    ``seed`` are accepted and ignored, as in TF.  :meth:`probability` gives
    ``1 / range_max``, the frequency of each class in the output, which
    makes :math:`k P(c) = 1` agree with the expected counts (TF's
    ``Probability`` cannot be called).

    Examples
    --------
    >>> from refsoftmax.samplers import AllCandidateSampler
    >>> s = AllCandidateSampler(3).sample([[2]], num_sampled=3)
    >>> s.candidates.tolist(), s.true_expected_count.tolist()
    ([0, 1, 2], [[1.0]])
    """

    def _probability(self, xp: Any, classes: Any) -> Any:
        return xp.full(
            tuple(classes.shape), 1.0 / self._range_max, dtype=xp.float64,
            device=array_api_compat.device(classes),
        )

    def _sample(
        self,
        true_classes: Any,
        num_sampled: int,
        *,
        unique: bool,
        seed: int | None,
        per_example: bool,
        num_true: int | None = None,
    ) -> tuple[SampledValues, Any]:
        xp, tc = _resolve_true_classes(true_classes, num_true)
        num_sampled = _check_int("num_sampled", num_sampled, 1, _INT32_MAX)
        _check_bool("unique", unique)
        per_example = _check_bool("per_example", per_example)
        _check_seed(seed)
        if num_sampled != self._range_max:
            msg = (
                f"num_sampled={num_sampled} must equal range_max={self._range_max}: "
                "the all-candidate sampler returns every class once"
            )
            raise ValueError(msg)
        tc = _check_classes_in_range("true_classes", xp, tc, self._range_max)
        device = array_api_compat.device(tc)
        batch = int(tc.shape[0])
        candidates = xp.arange(num_sampled, dtype=xp.int64, device=device)
        if per_example:
            candidates = xp.zeros((batch, 1), dtype=xp.int64, device=device) + candidates
        ones = xp.ones(tuple(candidates.shape), dtype=xp.float32, device=device)
        true_ones = xp.ones(tuple(tc.shape), dtype=xp.float32, device=device)
        return SampledValues(candidates, true_ones, ones), num_sampled


# ---------------------------------------------------------- TF-signature functions


def uniform_candidate_sampler(
    true_classes: Any,
    num_true: int,
    num_sampled: int,
    unique: bool,
    range_max: int,
    seed: int | None = None,
    *,
    per_example: bool = False,
) -> SampledValues:
    """``tf.random.uniform_candidate_sampler``: candidates from :class:`UniformSampler`.

    Parameters
    ----------
    true_classes : integer array ``[batch_size, num_true]``
        Target classes in ``[0, range_max)``.
    num_true : int
        Must equal ``true_classes.shape[1]``.
    num_sampled : int
        Candidates per set.
    unique : bool
        Without replacement (rejection) if true.
    range_max : int
        The number of classes.
    seed : int or None
        Generator seed; ``None`` for fresh entropy.
    per_example : bool
        A separate set of candidates per row (not in TF).

    Returns
    -------
    SampledValues

    Examples
    --------
    >>> from refsoftmax.samplers import uniform_candidate_sampler
    >>> s = uniform_candidate_sampler([[0, 1]], 2, 3, False, 10, seed=1)
    >>> s.true_expected_count.tolist()
    [[0.30000001192092896, 0.30000001192092896]]
    """
    values, _ = UniformSampler(range_max)._sample(
        true_classes, num_sampled, unique=unique, seed=seed, per_example=per_example,
        num_true=num_true,
    )
    return values


def log_uniform_candidate_sampler(
    true_classes: Any,
    num_true: int,
    num_sampled: int,
    unique: bool,
    range_max: int,
    seed: int | None = None,
    *,
    per_example: bool = False,
) -> SampledValues:
    """``tf.random.log_uniform_candidate_sampler``: candidates from :class:`LogUniformSampler`.

    Arguments as :func:`uniform_candidate_sampler`.  This is the sampler
    ``tf.nn.sampled_softmax_loss`` uses by default (with ``unique=True``).

    Examples
    --------
    >>> from refsoftmax.samplers import log_uniform_candidate_sampler
    >>> s = log_uniform_candidate_sampler([[0]], 1, 2, False, 3, seed=0)
    >>> s.true_expected_count.tolist()
    [[1.0]]
    """
    values, _ = LogUniformSampler(range_max)._sample(
        true_classes, num_sampled, unique=unique, seed=seed, per_example=per_example,
        num_true=num_true,
    )
    return values


def learned_unigram_candidate_sampler(
    true_classes: Any,
    num_true: int,
    num_sampled: int,
    unique: bool,
    range_max: int,
    seed: int | None = None,
    *,
    per_example: bool = False,
) -> SampledValues:
    """``tf.random.learned_unigram_candidate_sampler`` on a fresh :class:`LearnedUnigramSampler`.

    Every call starts from counts of 1, so this is the first call of a TF op;
    keep a :class:`LearnedUnigramSampler` and call its ``sample`` to learn
    across calls.  Arguments as :func:`uniform_candidate_sampler`.

    Examples
    --------
    >>> from refsoftmax.samplers import learned_unigram_candidate_sampler
    >>> s = learned_unigram_candidate_sampler([[0]], 1, 2, False, 4, seed=0)
    >>> s.true_expected_count.tolist()
    [[0.5]]
    """
    values, _ = LearnedUnigramSampler(range_max)._sample(
        true_classes, num_sampled, unique=unique, seed=seed, per_example=per_example,
        num_true=num_true,
    )
    return values


def fixed_unigram_candidate_sampler(
    true_classes: Any,
    num_true: int,
    num_sampled: int,
    unique: bool,
    range_max: int,
    vocab_file: str | os.PathLike[str] = "",
    distortion: float = 1.0,
    num_reserved_ids: int = 0,
    num_shards: int = 1,
    shard: int = 0,
    unigrams: Any = (),
    seed: int | None = None,
    *,
    per_example: bool = False,
) -> SampledValues:
    """``tf.random.fixed_unigram_candidate_sampler``: candidates from :class:`FixedUnigramSampler`.

    ``vocab_file``, ``distortion``, ``num_reserved_ids``, ``num_shards``,
    ``shard`` and ``unigrams`` are described there (``''`` and ``()`` mean
    "not given"); the other arguments as :func:`uniform_candidate_sampler`.

    Examples
    --------
    >>> from refsoftmax.samplers import fixed_unigram_candidate_sampler
    >>> s = fixed_unigram_candidate_sampler([[1]], 1, 4, False, 2, unigrams=[1.0, 3.0], seed=0)
    >>> s.true_expected_count.tolist()
    [[3.0]]
    """
    sampler = FixedUnigramSampler(
        range_max, unigrams=unigrams, vocab_file=vocab_file, distortion=distortion,
        num_reserved_ids=num_reserved_ids, num_shards=num_shards, shard=shard,
    )
    values, _ = sampler._sample(
        true_classes, num_sampled, unique=unique, seed=seed, per_example=per_example,
        num_true=num_true,
    )
    return values


def all_candidate_sampler(
    true_classes: Any,
    num_true: int,
    num_sampled: int,
    unique: bool,
    seed: int | None = None,
    *,
    per_example: bool = False,
) -> SampledValues:
    """``tf.random.all_candidate_sampler``: the classes ``0 .. num_sampled-1``, counts 1.

    ``true_classes`` must lie in ``[0, num_sampled)``; ``unique`` and ``seed``
    are checked and ignored.  See :class:`AllCandidateSampler`.

    Examples
    --------
    >>> from refsoftmax.samplers import all_candidate_sampler
    >>> all_candidate_sampler([[1]], 1, 3, True).candidates.tolist()
    [0, 1, 2]
    """
    num_sampled = _check_int("num_sampled", num_sampled, 1, _INT32_MAX)
    values, _ = AllCandidateSampler(num_sampled)._sample(
        true_classes, num_sampled, unique=unique, seed=seed, per_example=per_example,
        num_true=num_true,
    )
    return values


def compute_accidental_hits(
    true_classes: Any, sampled_candidates: Any, num_true: int
) -> tuple[Any, Any, Any]:
    """``tf.nn.compute_accidental_hits``: where a row's true class is among the candidates.

    For every row ``i`` and column ``j`` (in row-major order) whose true class
    ``true_classes[i, j]`` occurs among ``sampled_candidates``, one entry
    ``(i, pos, -FLT_MAX)`` is produced, ``pos`` being the position of that
    class among the candidates.  Adding the weights at ``[indices, ids]`` to
    the sampled logits removes accidental hits.

    Two behaviours of TF's kernel are reproduced exactly:

    * a class that occurs **several times among the candidates** (possible
      with ``unique=False``) is reported once, at its **last** position (TF
      keeps a map class -> position, later positions overwriting earlier ones);
    * a class that occurs **several times in one row** of ``true_classes``
      is reported once per occurrence: the same ``(i, pos)`` appears twice.

    Parameters
    ----------
    true_classes : integer array ``[batch_size, num_true]``
    sampled_candidates : integer array ``[num_sampled]``
        Shared candidates, as TF requires; ``[batch_size, num_sampled]``
        (``per_example=True`` samples) is accepted too and matches each row
        against its own candidates.
    num_true : int
        Must equal ``true_classes.shape[1]``.

    Returns
    -------
    indices : array of int32 ``[n_hits]``
        Row of each hit.
    ids : array of int64 ``[n_hits]``
        Position of the hit among the (row's) candidates.
    weights : array of float32 ``[n_hits]``
        ``-FLT_MAX`` (``-3.4028235e38``) for every hit.

    Examples
    --------
    >>> from refsoftmax.samplers import compute_accidental_hits
    >>> idx, ids, w = compute_accidental_hits([[1, 2], [3, 3]], [3, 1, 3], num_true=2)
    >>> idx.tolist(), ids.tolist(), w.dtype
    ([0, 1, 1], [1, 2, 2], dtype('float32'))
    """
    xp, arrays = resolve(true_classes=true_classes, sampled_candidates=sampled_candidates)
    tc, sc = arrays["true_classes"], arrays["sampled_candidates"]
    _check_integer_array("true_classes", xp, tc, 2, "[batch_size, num_true]")
    num_true = _check_int("num_true", num_true, 1)
    if tc.shape[1] != num_true:
        msg = (
            f"num_true={num_true} does not match true_classes.shape[1]={tc.shape[1]} "
            f"(true_classes has shape {tuple(tc.shape)})"
        )
        raise ValueError(msg)
    if sc.ndim == 2:
        _check_integer_array("sampled_candidates", xp, sc, 2, "[batch_size, num_sampled]")
        if sc.shape[0] != tc.shape[0]:
            msg = (
                f"sampled_candidates of shape {tuple(sc.shape)} must have one row per row of "
                f"true_classes (shape {tuple(tc.shape)})"
            )
            raise ValueError(msg)
    else:
        _check_integer_array("sampled_candidates", xp, sc, 1, "[num_sampled]")

    module, device = _placement(xp, tc)
    true_np = np.asarray(module.to_numpy(tc), dtype=np.int64)
    cand_np = np.asarray(module.to_numpy(sc), dtype=np.int64)
    if cand_np.ndim == 1:  # one candidate set: match all labels at once, in row-major order
        found, ids_np = _last_positions(cand_np, true_np.reshape(-1))
        indices_np = np.flatnonzero(found) // num_true
    else:
        per_row = [_last_positions(cand_np[i], true_np[i]) for i in range(true_np.shape[0])]
        indices_np = np.concatenate(
            [np.full(int(f.sum()), i) for i, (f, _) in enumerate(per_row)] + [np.empty(0)]
        )
        ids_np = np.concatenate([pos for _, pos in per_row] + [np.empty(0)])
    weights_np = np.full(indices_np.shape, -_FLT_MAX, dtype=np.float32)
    return (
        module.from_host(indices_np.astype(np.int32), device),
        module.from_host(ids_np.astype(np.int64), device),
        module.from_host(weights_np, device),
    )


def _last_positions(candidates: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which ``labels`` occur among ``candidates``, and the last position of each that does."""
    order = np.argsort(candidates, kind="stable")  # equal candidates keep their order
    ordered = candidates[order]
    after = np.searchsorted(ordered, labels, side="right")  # just past the last equal one
    found = after > 0
    found[found] = ordered[after[found] - 1] == labels[found]
    return found, order[after[found] - 1]

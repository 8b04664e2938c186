"""Conformance specs and cases of the sampled-softmax family (imported by the adapters using them).

Registered on import (:func:`~refsoftmax.conformance.targets.register_spec` and
:func:`~refsoftmax.conformance.cases.register`):

* ``sampled_softmax_loss`` and ``nce_loss``: the refsoftmax functions, driven
  with explicit ``sampled_values`` (deterministic).  Inputs ``weights``,
  ``biases``, ``labels``, ``inputs``; the other arguments are case options.
  The expected counts inside ``sampled_values`` are rounded to the case dtype
  like the inputs (:meth:`~refsoftmax.conformance.cases.Case.rounded_options`).
* ``uniform_candidate_sampler``, ``log_uniform_candidate_sampler``,
  ``fixed_unigram_candidate_sampler``, ``learned_unigram_candidate_sampler``:
  the **expected counts** a sampler reports, *given its own draw*
  (:class:`ExpectedCounts`; value only).
* ``compute_accidental_hits`` (:class:`AccidentalHits`; value only).
* ``log_q_correction`` and ``accidental_hit_exclusion``: the two steps of
  TF's sampled-softmax estimator applied to a ``[..., N]`` block of logits
  (:class:`LogQCorrection`, :class:`AccidentalHitExclusion`).

These references are small wrappers around refsoftmax's own definitions
(:mod:`refsoftmax.samplers`); they follow the refsoftmax protocol as far as
the engine needs it (``__call__``, and ``value_and_grad`` where a gradient is
certified).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from refsoftmax import samplers
from refsoftmax.conformance import cases
from refsoftmax.conformance.cases import Case
from refsoftmax.conformance.targets import LossSpec, register_spec

__all__ = [
    "SAMPLED_LOSSES",
    "SAMPLER_SPECS",
    "AccidentalHitExclusion",
    "AccidentalHits",
    "ExpectedCounts",
    "LogQCorrection",
    "excluded_threshold",
]

SAMPLED_LOSSES = ("sampled_softmax_loss", "nce_loss")
#: spec name -> sampler kind
SAMPLER_SPECS = {
    "uniform_candidate_sampler": "uniform",
    "log_uniform_candidate_sampler": "log_uniform",
    "fixed_unigram_candidate_sampler": "fixed_unigram",
    "learned_unigram_candidate_sampler": "learned_unigram",
}


# ------------------------------------------------------------------ sampled losses


def _counts(c: int, classes: np.ndarray, k: int) -> np.ndarray:
    """Log-uniform expected counts with replacement, k P(c), float64 (any positive numbers do)."""
    return np.asarray(samplers.LogUniformSampler(c).probability(np.asarray(classes, np.int64)) * k)


def _sampled_case(
    loss: str,
    name: str,
    rng: np.random.Generator,
    labels: Any,
    candidates: Any,
    *,
    num_classes: int = 12,
    dim: int = 5,
    remove: bool = True,
    scale: float = 1.0,
    counts: tuple[np.ndarray, np.ndarray] | None = None,
    valid: bool = True,
    tags: tuple[str, ...] = (),
) -> Case:
    y = np.asarray(labels, np.int64)
    cand = np.asarray(candidates, np.int64)
    batch, num_true = y.shape
    c = num_classes
    w = rng.standard_normal((c, dim))
    b = rng.standard_normal(c) * 0.5
    x = rng.standard_normal((batch, dim)) * scale
    if counts is None:
        k = cand.size
        counts = (_counts(c, np.clip(y, 0, c - 1), k), _counts(c, np.clip(cand, 0, c - 1), k))
    options = {
        "num_sampled": int(cand.size),
        "num_classes": c,
        "num_true": int(num_true),
        "sampled_values": (cand, counts[0], counts[1]),
        "remove_accidental_hits": remove,
    }
    inputs = {"weights": w, "biases": b, "labels": y, "inputs": x}
    return Case(name, loss, inputs, options, valid=valid, tags=tags)


def _sampled_edge_cases(loss: str) -> Any:
    def edge(rng: np.random.Generator) -> list[Case]:
        c: list[Case] = []

        def add(*args: Any, **kw: Any) -> None:
            c.append(_sampled_case(loss, *args, **kw))

        y1 = np.array([[0], [5], [2], [9]])
        add("basic", rng, y1, [1, 3, 4, 7, 11], tags=("shape",))
        add("one-example", rng, [[4]], [0, 2, 8], tags=("shape",))
        add("one-candidate", rng, y1, [6], tags=("shape",))
        add("accidental-hits-removed", rng, y1, [5, 1, 0, 7, 11], tags=("hits",))
        add("accidental-hits-kept", rng, y1, [5, 1, 0, 7, 11], remove=False, tags=("hits",))
        y3 = np.array([[0, 5, 7], [2, 2, 9], [11, 3, 1]])
        add("num-true-3-removed", rng, y3, [7, 4, 2, 8, 1, 6], tags=("hits", "num_true"))
        add("num-true-3-kept", rng, y3, [7, 4, 2, 8, 1, 6], remove=False, tags=("hits", "num_true"))
        ys = np.full((4, 1), 4)
        add("shared-label-removed", rng, ys, [4, 0, 10, 6], tags=("hits",))
        add("shared-label-kept", rng, ys, [4, 0, 10, 6], remove=False, tags=("hits",))
        add("all-candidates-hit", rng, [[2, 5], [5, 2]], [2, 5], tags=("hits", "num_true"))
        # unique=False: candidates may repeat; a repeated candidate that is a label is a hit twice
        dup = [3, 7, 3, 1, 9, 3]
        yd = np.array([[3], [1], [6], [3]])
        add("duplicate-candidates-hit-removed", rng, yd, dup, tags=("hits", "duplicates"))
        add(
            "duplicate-candidates-hit-kept", rng, yd, dup, remove=False, tags=("hits", "duplicates")
        )
        add("duplicate-candidates-no-hit", rng, [[0], [2], [5]], dup, tags=("duplicates",))
        add("label-repeated-in-row", rng, [[3, 3], [1, 8]], [3, 10, 8], tags=("hits", "num_true"))
        add("tiny-hidden-states", rng, y1, [1, 3, 4, 7, 11], scale=1e-30, tags=("magnitude",))
        add(
            "large-hidden-states",
            rng,
            y1,
            [1, 3, 4, 7, 11],
            dim=8,
            scale=30.0,
            tags=("magnitude", "overflow"),
        )
        add(
            "small-expected-counts",
            rng,
            y1,
            [1, 3, 4, 7, 11],
            counts=(np.full((4, 1), 1e-3), np.array([2e-3, 1e-2, 0.5, 3.0, 7.0])),
            tags=("counts",),
        )
        # invalid: the candidate must refuse
        add("label-out-of-range", rng, [[0], [12]], [1, 3], valid=False, tags=("labels", "invalid"))
        add(
            "candidate-out-of-range",
            rng,
            [[0], [4]],
            [1, 12],
            valid=False,
            counts=(np.ones((2, 1)), np.ones(2)),
            tags=("candidates", "invalid"),
        )
        add(
            "zero-expected-count",
            rng,
            [[0], [4]],
            [1, 3],
            valid=False,
            counts=(np.array([[0.0], [0.5]]), np.array([0.5, 0.5])),
            tags=("counts", "invalid"),
        )
        return c

    return edge


def _sampled_random(loss: str) -> Any:
    def random(rng: np.random.Generator, i: int) -> Case:
        c = int(rng.integers(2, 41))
        batch = int(rng.integers(1, 7))
        num_true = int(rng.integers(1, min(3, c) + 1))
        unique = bool(rng.random() < 0.75)
        k = int(rng.integers(1, c + 1)) if unique else int(rng.integers(1, 2 * c + 1))
        sampler = (
            samplers.LogUniformSampler(c) if rng.random() < 0.6 else samplers.UniformSampler(c)
        )
        y = rng.integers(0, c, (batch, num_true))
        sv = sampler.sample(y, k, unique=unique, seed=int(rng.integers(0, 2**31)))
        counts = (
            np.asarray(sv.true_expected_count, np.float64),
            np.asarray(sv.sampled_expected_count, np.float64),
        )
        scale = float(np.exp(rng.uniform(np.log(1e-2), np.log(10.0))))
        return _sampled_case(
            loss,
            f"random-{i}",
            rng,
            y,
            sv.candidates,
            num_classes=c,
            dim=int(rng.integers(1, 9)),
            remove=bool(rng.random() < 0.7),
            scale=scale,
            counts=counts,
            tags=("random",),
        )

    return random


# ------------------------------------------------------------------ samplers' expected counts


class ExpectedCounts:
    r"""Reference of a sampler's expected counts, **given its draw**; value :math:`\log Q`.

    ``f(true_classes, *, num_true, num_sampled, unique, range_max, seed=0,
    candidates=None, num_tries=None, runs=1, **sampler_params)`` returns
    :math:`\log Q(c)` (float64) for ``c`` in ``[true_classes.ravel(), candidates]``,
    the correction sampled softmax subtracts (comparing logs compares the
    counts relatively).  :math:`Q` is the definition of
    :mod:`refsoftmax.samplers` evaluated in float64 from
    :meth:`~refsoftmax.samplers.CandidateSampler.probability`:
    :math:`Q = kP` when ``unique`` is false or ``num_tries == k``, else
    :math:`1 - (1 - P)^T` with ``T = num_tries``.

    ``candidates``/``num_tries`` are what the library's own draw fixed (the
    adapter passes them on, see :class:`~refsoftmax.conformance.targets.Drawn`);
    without them the reference makes its own seeded draw.  A sampler that does
    not return ``num_tries`` is given :meth:`fit_num_tries`: the integer
    :math:`T \ge k` that best explains its counts; with more than one
    informative class a wrong formula cannot be fitted by a single integer.
    A candidate that the draw cannot have produced (out of range, probability
    0, or a repeat when ``unique``) gets NaN, which never matches.

    ``runs`` (learned unigram): the counts reported by the ``runs``-th call of
    one sampler on the same ``true_classes`` (each call learns from them).
    ``sampler_params``: ``unigrams``, ``distortion``, ``num_reserved_ids``,
    ``num_shards``, ``shard`` of the fixed unigram sampler.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"{kind}_candidate_sampler"

    def __repr__(self) -> str:
        return f"ExpectedCounts({self.kind!r})"

    def sampler(
        self,
        range_max: int,
        runs: int = 1,
        true_classes: Any = None,
        num_sampled: int = 1,
        **params: Any,
    ) -> samplers.CandidateSampler:
        """The refsoftmax sampler, advanced by ``runs - 1`` calls (learned unigram)."""
        if self.kind == "uniform":
            return samplers.UniformSampler(range_max)
        if self.kind == "log_uniform":
            return samplers.LogUniformSampler(range_max)
        if self.kind == "fixed_unigram":
            return samplers.FixedUnigramSampler(range_max, **params)
        learned = samplers.LearnedUnigramSampler(range_max)
        for _ in range(runs - 1):  # the counts learned do not depend on the draws
            learned.sample(true_classes, num_sampled, unique=False, seed=0)
        return learned

    def _probabilities(self, sampler: samplers.CandidateSampler, classes: np.ndarray) -> np.ndarray:
        p = np.full(classes.shape, np.nan)
        ok = (classes >= 0) & (classes < sampler.range_max)
        p[ok] = np.asarray(sampler.probability(classes[ok]), np.float64)
        return p

    @staticmethod
    def _formula(p: np.ndarray, k: int, tries: Any, unique: bool) -> np.ndarray:
        t = np.asarray(tries, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            rejection = np.where(p < 1, -np.expm1(t * np.log1p(-np.minimum(p, 1.0 - 1e-300))), 1.0)
            return np.where(np.logical_or(not unique, t == k), k * p, rejection)

    def __call__(
        self,
        true_classes: Any,
        *,
        num_true: int,
        num_sampled: int,
        unique: bool,
        range_max: int,
        seed: int = 0,
        candidates: Any = None,
        num_tries: Any = None,
        runs: int = 1,
        **params: Any,
    ) -> np.ndarray:
        tc = np.asarray(true_classes, np.int64)
        if tc.ndim != 2 or tc.shape[1] != num_true:
            msg = f"true_classes must have shape (batch, num_true={num_true}), got {tc.shape}"
            raise ValueError(msg)
        sampler = self.sampler(range_max, runs, tc, num_sampled, **params)
        if candidates is None:
            values, num_tries = sampler._sample(
                tc, num_sampled, unique=unique, seed=seed, per_example=False, num_true=num_true
            )
            candidates = values.candidates
        cand = np.asarray(candidates, np.int64).reshape(-1)
        if num_tries is None:
            num_tries = num_sampled
        classes = np.concatenate([tc.reshape(-1), cand])
        p = self._probabilities(sampler, classes)
        q = self._formula(p, num_sampled, num_tries, unique)
        bad = np.zeros(classes.shape, bool)
        bad[tc.size :] = ~(p[tc.size :] > 0)  # out of range (NaN) or never drawn
        if unique:
            _, first = np.unique(cand, return_index=True)
            repeat = np.ones(cand.size, bool)
            repeat[first] = False
            bad[tc.size :] |= repeat
        if cand.size != num_sampled:
            bad[tc.size :] = True
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log(q)
        return np.where(bad, np.nan, out)

    def fit_num_tries(
        self,
        true_classes: Any,
        candidates: Any,
        counts: Any,
        *,
        num_sampled: int,
        range_max: int,
        runs: int = 1,
        **params: Any,
    ) -> int:
        """The integer ``T >= num_sampled`` whose counts are closest to ``counts``.

        Closest: the smallest largest ``|log ratio|``.

        ``counts`` are the library's counts of ``[true_classes.ravel(), candidates]``.
        """
        params = {k: v for k, v in params.items() if k not in ("num_true", "unique", "seed")}
        tc = np.asarray(true_classes, np.int64)
        cand = np.asarray(candidates, np.int64).reshape(-1)
        sampler = self.sampler(range_max, runs, tc, num_sampled, **params)
        classes = np.concatenate([tc.reshape(-1), cand])
        p = self._probabilities(sampler, classes)
        q = np.asarray(counts, np.float64).reshape(-1)
        k = num_sampled
        tries = {k}
        informative = np.isfinite(p) & (p > 0) & (p < 1) & (q > 0) & (q < 1)
        if informative.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                est = float(np.median(np.log1p(-q[informative]) / np.log1p(-p[informative])))
            if math.isfinite(est):
                tries |= set(range(max(k, int(est * 0.98) - 5), max(k, int(est * 1.02) + 6)))
        usable = np.isfinite(p) & (p > 0) & (q > 0)
        if not usable.any():
            return k
        t = np.array(sorted(tries), np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.abs(np.log(self._formula(p[usable][None, :], k, t, True)) - np.log(q[usable]))
        return int(t[int(np.argmin(np.nanmax(err, axis=1))), 0])


def _classes(rng: np.random.Generator, r: int, shape: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, r, shape).astype(np.int64)


def _sampler_edge_cases(kind: str) -> Any:
    loss = f"{kind}_candidate_sampler"

    def make(
        name: str,
        tc: Any,
        k: int,
        unique: bool,
        r: int,
        seed: int = 1,
        valid: bool = True,
        tags: tuple[str, ...] = (),
        **params: Any,
    ) -> Case:
        opts = {
            "num_true": int(np.shape(tc)[1]),
            "num_sampled": k,
            "unique": unique,
            "range_max": r,
            "seed": seed,
            **params,
        }
        return Case(
            name, loss, {"true_classes": np.asarray(tc, np.int64)}, opts, valid=valid, tags=tags
        )

    def edge(rng: np.random.Generator) -> list[Case]:
        extra: dict[str, Any] = {}
        r_small, r_mid = 30, 50
        if kind == "fixed_unigram":
            extra = {"unigrams": tuple(float(v) for v in rng.pareto(1.0, 50) + 0.1)}
            r_small = r_mid = 50
        c = [
            make("with-replacement", _classes(rng, r_mid, (3, 2)), 25, False, r_mid, **extra),
            make(
                "with-replacement-one-true", _classes(rng, r_mid, (5, 1)), 7, False, r_mid, **extra
            ),
            make("unique-moderate", _classes(rng, r_mid, (4, 3)), 20, True, r_mid, **extra),
            make(
                "unique-many-rejections",
                _classes(rng, r_small, (4, 3)),
                r_small - 1,
                True,
                r_small,
                **extra,
            ),
            make(
                "unique-every-class",
                _classes(rng, r_small, (2, 1)),
                r_small,
                True,
                r_small,
                **extra,
            ),
            make("unique-seed-2", _classes(rng, r_mid, (4, 3)), 20, True, r_mid, seed=2, **extra),
            make("one-candidate", _classes(rng, r_mid, (2, 1)), 1, True, r_mid, **extra),
        ]
        if kind != "fixed_unigram":
            c.append(make("large-range", _classes(rng, 10**6, (4, 3)), 50, True, 10**6))
            c.append(
                make("large-range-with-replacement", _classes(rng, 10**6, (4, 3)), 50, False, 10**6)
            )
        if kind == "fixed_unigram":
            ug = (5.0, 1.0, 0.0, 3.0, 8.0, 2.0, 2.0, 9.0, 1.0, 4.0)
            c.append(
                make(
                    "distortion",
                    [[2, 3], [11, 4]],
                    6,
                    False,
                    12,
                    unigrams=ug,
                    distortion=0.75,
                    num_reserved_ids=2,
                )
            )
            c.append(
                make(
                    "distortion-unique",
                    [[2, 3], [11, 4]],
                    6,
                    True,
                    12,
                    unigrams=ug,
                    distortion=0.75,
                    num_reserved_ids=2,
                )
            )
            c.append(
                make("distortion-zero", [[2, 3], [9, 4]], 5, True, 10, unigrams=ug, distortion=0.0)
            )
            c.append(
                make(
                    "shards",
                    [[1, 3], [5, 0]],
                    4,
                    False,
                    8,
                    unigrams=tuple(range(1, 20)),
                    num_reserved_ids=3,
                    num_shards=3,
                    shard=1,
                    distortion=0.75,
                )
            )
            c.append(
                make(
                    "range-max-mismatch",
                    [[1]],
                    1,
                    True,
                    5,
                    unigrams=(1.0, 2.0),
                    valid=False,
                    tags=("invalid",),
                )
            )
        if kind == "learned_unigram":
            tc = np.array([[1, 1, 4], [0, 7, 1]])
            c.append(make("learned-third-run", tc, 5, False, 9, runs=3))
            c.append(make("learned-third-run-unique", tc, 5, True, 9, runs=3))

        def flat(r: int) -> dict[str, Any]:
            return {"unigrams": (1.0,) * r} if kind == "fixed_unigram" else {}

        c.append(
            make(
                "more-than-range-unique",
                [[0]],
                6,
                True,
                5,
                valid=False,
                tags=("invalid",),
                **flat(5),
            )
        )
        c.append(
            make(
                "true-class-out-of-range",
                [[0, 4]],
                2,
                True,
                4,
                valid=False,
                tags=("invalid",),
                **flat(4),
            )
        )
        return c

    return edge


def _sampler_random(kind: str) -> Any:
    loss = f"{kind}_candidate_sampler"

    def random(rng: np.random.Generator, i: int) -> Case:
        r = int(np.exp(rng.uniform(np.log(2), np.log(200 if kind == "fixed_unigram" else 10**5))))
        unique = bool(rng.random() < 0.6)
        k = int(rng.integers(1, min(r, 64) + 1)) if unique else int(rng.integers(1, 65))
        num_true = int(rng.integers(1, 4))
        tc = _classes(rng, r, (int(rng.integers(1, 6)), num_true))
        opts: dict[str, Any] = {
            "num_true": num_true,
            "num_sampled": k,
            "unique": unique,
            "range_max": r,
            "seed": int(rng.integers(1, 2**31)),
        }
        if kind == "fixed_unigram":
            opts["unigrams"] = tuple(float(v) for v in rng.pareto(1.0, r) + 0.01)
            opts["distortion"] = float(rng.choice([1.0, 0.75, 0.5]))
        if kind == "learned_unigram":
            opts["runs"] = int(rng.integers(1, 4))
        return Case(f"random-{i}", loss, {"true_classes": tc}, opts, tags=("random",))

    return random


# ------------------------------------------------------------------ accidental hits


class AccidentalHits:
    """Reference ``compute_accidental_hits(true_classes, sampled_candidates, *, num_true)``.

    Value: ``[3, n_hits]`` float64, the rows (indices, ids, weights) of
    :func:`refsoftmax.samplers.compute_accidental_hits` (TF's definition,
    including its reporting of a repeated candidate once, at its last
    position, and of a class repeated in a row once per occurrence); the
    integers are exact in float64, the weights are ``-FLT_MAX``.
    """

    name = "compute_accidental_hits"

    def __call__(self, true_classes: Any, sampled_candidates: Any, *, num_true: int) -> np.ndarray:
        out = samplers.compute_accidental_hits(
            np.asarray(true_classes, np.int64), np.asarray(sampled_candidates, np.int64), num_true
        )
        return np.stack([np.asarray(a, np.float64) for a in out])


def _hits_edge(rng: np.random.Generator) -> list[Case]:
    loss = "compute_accidental_hits"

    def make(
        name: str,
        t: Any,
        s: Any,
        valid: bool = True,
        num_true: int | None = None,
        tags: tuple[str, ...] = (),
    ) -> Case:
        tc = np.asarray(t, np.int64)
        return Case(
            name,
            loss,
            {"true_classes": tc, "sampled_candidates": np.asarray(s, np.int64)},
            {"num_true": int(tc.shape[1] if num_true is None else num_true)},
            valid=valid,
            tags=tags,
        )

    return [
        make("no-hits", [[0], [1]], [2, 3, 4]),
        make("one-hit", [[0], [3]], [2, 3, 4]),
        make("num-true-2", [[1, 2], [3, 4]], [4, 1, 9], tags=("num_true",)),
        make("shared-label", [[5], [5], [5]], [1, 5, 2], tags=("hits",)),
        make("repeated-candidate", [[3], [1]], [3, 7, 3, 1, 9, 3], tags=("duplicates",)),
        make("class-repeated-in-row", [[3, 3], [1, 8]], [3, 10, 8], tags=("duplicates",)),
        make("every-candidate-hits", [[2, 5], [5, 2]], [2, 5], tags=("hits",)),
        make("one-candidate", [[0], [0]], [0]),
        make("per-example-candidates", [[1], [2]], [[1, 2], [1, 2]], tags=("per_example",)),
        make("num-true-mismatch", [[1, 2]], [1, 2], num_true=3, valid=False, tags=("invalid",)),
    ]


def _hits_random(rng: np.random.Generator, i: int) -> Case:
    batch, num_true, k = int(rng.integers(1, 6)), int(rng.integers(1, 4)), int(rng.integers(1, 12))
    tc = rng.integers(0, 8, (batch, num_true)).astype(np.int64)
    s = rng.integers(0, 8, k).astype(np.int64)
    return Case(
        f"random-{i}",
        "compute_accidental_hits",
        {"true_classes": tc, "sampled_candidates": s},
        {"num_true": num_true},
        tags=("random",),
    )


# ------------------------------------------------------------------ the estimator's two steps


def _sum_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``g`` summed over the axes that broadcasting added or stretched, to reach ``shape``."""
    g = np.asarray(g, np.float64)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


class LogQCorrection:
    r"""Reference of the log-Q step: ``logits - log(q)``, TF's sampled-softmax correction.

    ``f(logits, candidate_sampling_probability, *, clip=None)``.  ``q`` is the
    expected count (or sampling probability) of each column, broadcast
    against ``logits``; TF's estimator subtracts :math:`\log Q` of the
    expected count, which may exceed 1 (:math:`Q = kP` with replacement).
    ``q`` must be >= 0 (``ValueError`` otherwise); ``q = 0`` gives ``+inf``
    (a class that is never sampled cannot be corrected for).
    ``clip=(lo, hi)`` evaluates ``logits - log(clip(q, lo, hi))``, the
    gradient w.r.t. ``q`` then being 0 outside ``[lo, hi]`` (a convention
    some libraries follow; not TF's estimator).

    Gradients: ``d/dlogits = cotangent``; ``d/dq = -cotangent / q`` (summed
    over the axes ``q`` is broadcast along).
    """

    name = "log_q_correction"
    differentiable = ("logits", "candidate_sampling_probability")

    @staticmethod
    def _prepare(
        logits: Any, q: Any, clip: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        z = np.asarray(logits, np.float64)
        q = np.asarray(q, np.float64)
        if np.any(np.isnan(q) | (q < 0)):
            msg = "candidate_sampling_probability must be >= 0"
            raise ValueError(msg)
        inside = np.ones(q.shape, bool)
        if clip is not None:
            lo, hi = clip
            inside = (q >= lo) & (q <= hi)
            q = np.clip(q, lo, hi)
        return z, q, inside, np.broadcast_shapes(z.shape, q.shape)  # type: ignore[return-value]

    def __call__(
        self, logits: Any, candidate_sampling_probability: Any, *, clip: Any = None
    ) -> np.ndarray:
        z, q, _, _ = self._prepare(logits, candidate_sampling_probability, clip)
        with np.errstate(divide="ignore"):
            return np.asarray(z - np.log(q))

    def value_and_grad(
        self,
        logits: Any,
        candidate_sampling_probability: Any,
        *,
        cotangent: Any = None,
        clip: Any = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        z, q, inside, shape = self._prepare(logits, candidate_sampling_probability, clip)
        with np.errstate(divide="ignore"):
            value = np.asarray(z - np.log(q))
        ct = (
            np.ones(shape)
            if cotangent is None
            else np.broadcast_to(np.asarray(cotangent, np.float64), shape)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            gq = np.where(inside, -ct / q, 0.0)
        return value, {
            "logits": _sum_to(ct, z.shape),
            "candidate_sampling_probability": _sum_to(gq, q.shape),
        }


#: The most negative finite value of each dtype.
_LOWEST = {
    "float64": -float(np.finfo(np.float64).max),
    "float32": -float(np.finfo(np.float32).max),
    "float16": -65504.0,
    "bfloat16": -3.3895313892515355e38,
}


def excluded_threshold(dtype: str) -> float:
    """A value at or below this counts as an excluded logit: ``-1e30``, or half the dtype's lowest
    value where that is larger (float16: ``-32752``)."""
    return max(-1e30, _LOWEST.get(dtype, -1e30) / 2)


def canonical_excluded(value: Any, dtype: str) -> np.ndarray:
    """``value`` with every entry ``<= excluded_threshold(dtype)`` replaced by ``-inf``."""
    v = np.asarray(value, np.float64)
    return np.where(v <= excluded_threshold(dtype), -np.inf, v)


class AccidentalHitExclusion:
    r"""Reference of the hit-removal step: the logits with accidental hits excluded (``-inf``).

    ``f(logits, labels, candidate_ids)``: ``logits`` and ``labels`` are
    ``[..., N]``, ``labels`` one-hot (exactly one 1 per row, else
    ``ValueError``); ``candidate_ids`` are the class ids of the ``N`` columns,
    ``[N]`` or with leading dims matching ``labels``.  In a row whose positive
    column is ``p``, every other column ``j`` with ``candidate_ids[j] ==
    candidate_ids[p]`` (of that row) is an accidental hit and is **excluded**:
    its value is ``-inf`` (TF's estimator adds ``-FLT_MAX``, i.e. leaves the
    column out of the softmax).  Other columns are unchanged.

    **Comparing an excluded logit**: the reference semantics is "excluded",
    not a particular number; a candidate value ``<= -1e30`` (``<=`` half the
    lowest finite value of the dtype where that is larger, e.g. ``-32752`` in
    float16) is treated as excluded (``canonical``: mapped to ``-inf`` before
    the comparison).  Any larger value, e.g. the logit unchanged, is not.

    Gradient: excluding is adding a constant, so ``d/dlogits = cotangent``
    everywhere (an excluded column's softmax probability is 0 downstream, so
    what passes through it is multiplied by 0 there).
    """

    name = "accidental_hit_exclusion"
    differentiable = ("logits",)

    @staticmethod
    def hits(labels: Any, candidate_ids: Any) -> np.ndarray:
        y = np.asarray(labels, np.float64)
        ids = np.asarray(candidate_ids)
        if y.ndim == 0 or not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=-1) == 1)):
            msg = "labels must be one-hot: exactly one 1 per row, zeros elsewhere"
            raise ValueError(msg)
        if ids.ndim > y.ndim or ids.shape != y.shape[y.ndim - ids.ndim :]:
            msg = f"candidate_ids of shape {ids.shape} must match the last dims of labels {y.shape}"
            raise ValueError(msg)
        ids = np.broadcast_to(ids, y.shape)
        positive = np.argmax(y, axis=-1)[..., None]
        positive_id = np.take_along_axis(ids, positive, axis=-1)
        return np.asarray((ids == positive_id) & (y == 0))

    def __call__(self, logits: Any, labels: Any, candidate_ids: Any) -> np.ndarray:
        z = np.asarray(logits, np.float64)
        return np.where(self.hits(labels, candidate_ids), -np.inf, z)

    def value_and_grad(
        self, logits: Any, labels: Any, candidate_ids: Any, *, cotangent: Any = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        value = self(logits, labels, candidate_ids)
        ct = np.ones(value.shape) if cotangent is None else np.asarray(cotangent, np.float64)
        return value, {"logits": np.broadcast_to(ct, value.shape).copy()}


def _logq_edge(rng: np.random.Generator) -> list[Case]:
    loss = "log_q_correction"

    def make(name: str, z: Any, q: Any, valid: bool = True, tags: tuple[str, ...] = ()) -> Case:
        return Case(
            name,
            loss,
            {
                "logits": np.asarray(z, np.float64),
                "candidate_sampling_probability": np.asarray(q, np.float64),
            },
            valid=valid,
            tags=tags,
        )

    z = rng.standard_normal((4, 6)) * 2
    return [
        make("basic", z, rng.uniform(0.01, 0.5, (4, 6)), tags=("shape",)),
        make("shared-probabilities", z, rng.uniform(0.01, 0.5, 6), tags=("shape", "broadcast")),
        make(
            "leading-dims",
            rng.standard_normal((2, 3, 5)),
            rng.uniform(0.01, 0.9, (2, 3, 5)),
            tags=("shape",),
        ),
        make("one-row", rng.standard_normal(5), rng.uniform(0.01, 0.9, 5), tags=("shape",)),
        make(
            "small-probabilities",
            z,
            np.exp(rng.uniform(np.log(2e-6), np.log(1e-3), (4, 6))),
            tags=("magnitude",),
        ),
        make(
            "large-logits",
            rng.standard_normal((3, 4)) * 1e4,
            rng.uniform(0.01, 0.9, (3, 4)),
            tags=("magnitude",),
        ),
        make("expected-counts-above-one", z, rng.uniform(1.5, 6.0, (4, 6)), tags=("counts",)),
        make(
            "probabilities-below-1e-6",
            z,
            np.exp(rng.uniform(np.log(1e-12), np.log(5e-7), (4, 6))),
            tags=("magnitude",),
        ),
        make(
            "zero-probability",
            z,
            np.where(np.arange(6) == 2, 0.0, 0.25) * np.ones((4, 6)),
            tags=("non-finite",),
        ),
        make(
            "negative-probability",
            z,
            np.where(np.arange(6) == 2, -0.1, 0.25) * np.ones((4, 6)),
            valid=False,
            tags=("invalid",),
        ),
    ]


def _logq_random(rng: np.random.Generator, i: int) -> Case:
    b, n = int(rng.integers(1, 6)), int(rng.integers(1, 12))
    z = rng.standard_normal((b, n)) * float(np.exp(rng.uniform(np.log(1e-2), np.log(50.0))))
    shape = (n,) if rng.random() < 0.3 else (b, n)
    q = np.exp(rng.uniform(np.log(1e-5), np.log(0.99), shape))
    return Case(
        f"random-{i}",
        "log_q_correction",
        {"logits": z, "candidate_sampling_probability": q},
        tags=("random",),
    )


def _one_hot(rows: list[int], n: int) -> np.ndarray:
    return np.eye(n)[rows]


def _exclusion_edge(rng: np.random.Generator) -> list[Case]:
    loss = "accidental_hit_exclusion"

    def make(
        name: str, z: Any, y: Any, ids: Any, valid: bool = True, tags: tuple[str, ...] = ()
    ) -> Case:
        return Case(
            name,
            loss,
            {
                "logits": np.asarray(z, np.float64),
                "labels": np.asarray(y, np.float64),
                "candidate_ids": np.asarray(ids, np.int64),
            },
            valid=valid,
            tags=tags,
        )

    z = rng.standard_normal((4, 6)) * 2
    y = _one_hot([0, 1, 2, 3], 6)
    return [
        make("distinct-ids", z, y, [10, 11, 12, 13, 14, 15], tags=("no-hits",)),
        make("repeated-id-not-positive", z, y, [10, 11, 12, 13, 20, 20], tags=("no-hits",)),
        make("positive-id-repeated", z, y, [10, 11, 12, 10, 14, 11], tags=("hits",)),
        make("every-id-equal", z, y, [7] * 6, tags=("hits",)),
        make(
            "per-row-ids",
            z,
            y,
            [
                [10, 11, 12, 10, 14, 15],
                [10, 11, 12, 13, 11, 15],
                [10, 11, 12, 13, 14, 12],
                [13, 11, 12, 13, 14, 15],
            ],
            tags=("hits", "per_row"),
        ),
        make(
            "leading-dims",
            rng.standard_normal((2, 3, 5)),
            _one_hot([0, 1, 2, 3, 4, 0], 5).reshape(2, 3, 5),
            [3, 1, 3, 2, 1],
            tags=("hits", "shape"),
        ),
        make(
            "one-row", rng.standard_normal(5), np.eye(5)[2], [4, 9, 4, 4, 1], tags=("hits", "shape")
        ),
        make(
            "large-logits",
            rng.standard_normal((4, 6)) * 1e4,
            y,
            [10, 11, 12, 10, 14, 11],
            tags=("hits", "magnitude"),
        ),
        make(
            "no-positive",
            z,
            np.vstack([y[:3], np.zeros(6)]),
            [10, 11, 12, 13, 14, 10],
            valid=False,
            tags=("labels", "invalid"),
        ),
        make(
            "two-positives",
            z,
            np.vstack([y[:3], _one_hot([3], 6) + _one_hot([4], 6)]),
            [10, 11, 12, 13, 14, 10],
            valid=False,
            tags=("labels", "invalid"),
        ),
    ]


def _exclusion_random(rng: np.random.Generator, i: int) -> Case:
    b, n = int(rng.integers(1, 6)), int(rng.integers(2, 12))
    z = rng.standard_normal((b, n)) * float(np.exp(rng.uniform(np.log(1e-2), np.log(50.0))))
    y = _one_hot(rng.integers(0, n, b).tolist(), n)
    ids = rng.integers(
        0, max(2, n // 2) if rng.random() < 0.6 else 1000, (b, n) if rng.random() < 0.3 else n
    )
    return Case(
        f"random-{i}",
        "accidental_hit_exclusion",
        {"logits": z, "labels": y, "candidate_ids": ids.astype(np.int64)},
        tags=("random",),
    )


# ------------------------------------------------------------------ registration


def register() -> None:
    """Register every spec and case generator of this module (idempotent; done on import)."""
    for loss in SAMPLED_LOSSES:
        register_spec(LossSpec(loss, ("weights", "biases", "labels", "inputs"), array_options=()))
        cases.register(loss, _sampled_edge_cases(loss), _sampled_random(loss))
    for name, kind in SAMPLER_SPECS.items():
        register_spec(
            LossSpec(name, ("true_classes",), array_options=(), reference=ExpectedCounts(kind))
        )
        cases.register(name, _sampler_edge_cases(kind), _sampler_random(kind), dtypes=("float32",))
    register_spec(
        LossSpec(
            "compute_accidental_hits",
            ("true_classes", "sampled_candidates"),
            array_options=(),
            reference=AccidentalHits(),
        )
    )
    cases.register("compute_accidental_hits", _hits_edge, _hits_random, dtypes=("float64",))
    register_spec(
        LossSpec(
            "log_q_correction",
            ("logits", "candidate_sampling_probability"),
            array_options=(),
            reference=LogQCorrection(),
            positive=("candidate_sampling_probability",),
        )
    )
    cases.register("log_q_correction", _logq_edge, _logq_random)
    register_spec(
        LossSpec(
            "accidental_hit_exclusion",
            ("logits", "labels", "candidate_ids"),
            array_options=(),
            reference=AccidentalHitExclusion(),
            canonical=canonical_excluded,
        )
    )
    cases.register("accidental_hit_exclusion", _exclusion_edge, _exclusion_random)


register()

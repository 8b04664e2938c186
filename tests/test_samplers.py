"""Candidate samplers: distributions, expected counts, accidental hits, and TensorFlow parity.

The TensorFlow tests (bottom) skip cleanly where TensorFlow is not installed.
TF's samplers are always run in a fresh graph: in eager mode TF caches op
kernels by their attributes, and a cached learned-unigram kernel keeps its
counts (and a cached fixed-unigram kernel its vocabulary file) across calls.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np
import pytest

from refsoftmax import backends
from refsoftmax import samplers as S
from refsoftmax.samplers import (
    AllCandidateSampler,
    FixedUnigramSampler,
    LearnedUnigramSampler,
    LogUniformSampler,
    SampledValues,
    UniformSampler,
)

FLT_MAX = float(np.finfo(np.float32).max)
NP_XP = backends.load("numpy").namespace()


def _trained_learned() -> LearnedUnigramSampler:
    sampler = LearnedUnigramSampler(20)
    sampler.sample(np.array([[0, 0, 3], [5, 3, 19]]), 1, seed=0)  # counts 0:3 3:3 5:2 19:2
    return sampler


#: name -> (factory, num_sampled for unique draws that force rejections)
SAMPLERS: dict[str, tuple[Callable[[], Any], int]] = {
    "uniform": (lambda: UniformSampler(37), 30),
    "log_uniform": (lambda: LogUniformSampler(50), 30),
    "fixed_unigram": (
        lambda: FixedUnigramSampler(
            12, unigrams=[5, 1, 0, 3, 8, 2, 2, 9, 1, 4], distortion=0.75, num_reserved_ids=2
        ),
        8,
    ),
    "learned_unigram": (_trained_learned, 15),
}


def _ulp_diff(a: Any, b: Any) -> int:
    a32 = np.asarray(a, dtype=np.float32).view(np.int32).astype(np.int64)
    b32 = np.asarray(b, dtype=np.float32).view(np.int32).astype(np.int64)
    return int(np.abs(a32 - b32).max()) if a32.size else 0


def _check_placement(backend: Any, *arrays: Any) -> None:
    for x in arrays:
        xp = array_api_compat.array_namespace(x)
        assert backend.name == backends.for_namespace(xp).NAME
        assert array_api_compat.device(x) == backend.device


def _numpy_expected_count(p: np.ndarray, k: int, num_tries: Any) -> np.ndarray:
    """The expected-count formula in float64, independently of the module."""
    p = np.asarray(p, dtype=np.float64)
    tries = np.asarray(num_tries, dtype=np.float64)
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf gives 1 - 0**T = 1, as it should
        return np.where(tries == k, k * p, -np.expm1(tries * np.log1p(-p)))


# ------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("unique", [False, True])
@pytest.mark.parametrize("per_example", [False, True])
def test_seeded_draws_reproduce(backend: Any, name: str, unique: bool, per_example: bool) -> None:
    factory, k = SAMPLERS[name]
    true_classes = backend.asarray([[1, 3], [5, 7], [11, 2]], dtype=np.int64)
    first = factory().sample(true_classes, k, unique=unique, seed=123, per_example=per_example)
    again = factory().sample(true_classes, k, unique=unique, seed=123, per_example=per_example)
    assert isinstance(first, SampledValues)
    _check_placement(backend, *first)
    shape = (3, k) if per_example else (k,)
    assert tuple(first.candidates.shape) == shape
    assert tuple(first.sampled_expected_count.shape) == shape
    assert tuple(first.true_expected_count.shape) == (3, 2)
    assert backend.to_numpy(first.candidates).dtype == np.int64
    assert backend.to_numpy(first.true_expected_count).dtype == np.float32
    assert backend.to_numpy(first.sampled_expected_count).dtype == np.float32
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


def test_seeds_differ_and_none_is_fresh(backend: Any) -> None:
    tc = backend.asarray([[0]], dtype=np.int64)
    draw = lambda seed: backend.to_numpy(  # noqa: E731
        S.uniform_candidate_sampler(tc, 1, 20, True, 10**9, seed=seed).candidates
    )
    assert not np.array_equal(draw(1), draw(2))
    assert not np.array_equal(draw(None), draw(None))


def test_numpy_and_array_api_strict_draw_the_same() -> None:
    strict = pytest.importorskip("array_api_strict")
    tc_np = np.array([[3, 4]])
    tc_strict = strict.asarray(tc_np)
    for name, (factory, k) in SAMPLERS.items():
        for unique in (False, True):
            a = factory().sample(tc_np, k, unique=unique, seed=9, per_example=True)
            b = factory().sample(tc_strict, k, unique=unique, seed=9, per_example=True)
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x, np.from_dlpack(y), err_msg=name)


def test_outputs_follow_the_device_of_true_classes(strict_device1: Any) -> None:
    tc = strict_device1.asarray([[1, 2]], dtype=np.int64)
    for factory, k in SAMPLERS.values():
        for unique in (False, True):
            out = factory().sample(tc, k, unique=unique, seed=0)
            _check_placement(strict_device1, *out)
    _check_placement(strict_device1, *S.compute_accidental_hits(tc, tc[0, :], 2))
    _check_placement(strict_device1, UniformSampler(3).probability(tc))


# -------------------------------------------------------------------- distributions


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_draw_frequencies_follow_probability(backend: Any, name: str) -> None:
    """Chi-square of 200k seeded draws (unique=False) against ``probability()``."""
    stats = pytest.importorskip("scipy.stats")
    factory, _ = SAMPLERS[name]
    sampler = factory()
    n = 200_000
    tc = backend.asarray([[0]], dtype=np.int64)
    # Before sampling: a learned sampler updates its counts afterwards.
    p = backend.to_numpy(sampler.probability(backend.asarray(np.arange(sampler.range_max))))
    draws = backend.to_numpy(sampler.sample(tc, n, unique=False, seed=2024).candidates)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)
    counts = np.bincount(draws, minlength=sampler.range_max)
    assert counts.size == sampler.range_max
    assert counts[p == 0].sum() == 0  # zero-weight classes are never drawn
    support = p > 0
    result = stats.chisquare(counts[support], n * p[support] / p[support].sum())
    assert result.pvalue > 1e-3, (name, result)


def test_probability_formulas(backend: Any) -> None:
    c = np.arange(50)
    got = backend.to_numpy(LogUniformSampler(50).probability(backend.asarray(c)))
    np.testing.assert_allclose(got, (np.log(c + 2) - np.log(c + 1)) / np.log(51), rtol=1e-13)
    got = backend.to_numpy(UniformSampler(8).probability(backend.asarray([[0, 7]])))
    np.testing.assert_array_equal(got, [[0.125, 0.125]])
    fixed = FixedUnigramSampler(5, unigrams=[4.0, 1.0, 0.0, 9.0], distortion=0.5, num_reserved_ids=1)
    got = backend.to_numpy(fixed.probability(backend.asarray(np.arange(5))))
    np.testing.assert_allclose(got, np.array([0, 2, 1, 0, 3]) / 6, rtol=1e-15)
    got = backend.to_numpy(AllCandidateSampler(4).probability(backend.asarray([1])))
    np.testing.assert_array_equal(got, [0.25])


# ------------------------------------------------------------------ expected counts


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("per_example", [False, True])
def test_unique_draws_and_their_expected_counts(backend: Any, name: str, per_example: bool) -> None:
    factory, k = SAMPLERS[name]
    sampler = factory()
    tc_np = np.array([[1, 2], [3, 4], [5, 11]])
    probability = sampler.probability(np.arange(sampler.range_max))  # before any update
    values, num_tries = sampler._sample(
        backend.asarray(tc_np), k, unique=True, seed=5, per_example=per_example
    )
    cands = backend.to_numpy(values.candidates).reshape(-1 if not per_example else 3, k)
    tries = np.broadcast_to(np.asarray(num_tries).reshape(-1, 1), (cands.shape[0], 1))
    for row, t in zip(cands, tries[:, 0], strict=True):
        assert len(set(row.tolist())) == k  # distinct
        assert np.all(probability[row] > 0)
        assert t >= k
    assert np.any(tries > k)  # these settings force rejections
    sampled = backend.to_numpy(values.sampled_expected_count).reshape(cands.shape)
    true = backend.to_numpy(values.true_expected_count)
    np.testing.assert_allclose(
        sampled, _numpy_expected_count(probability[cands], k, tries), rtol=1e-6
    )
    true_tries = tries if per_example else tries[:1]
    np.testing.assert_allclose(
        true, _numpy_expected_count(probability[tc_np], k, true_tries), rtol=1e-6
    )


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_with_replacement_expected_count_is_k_times_p(backend: Any, name: str) -> None:
    factory, _ = SAMPLERS[name]
    sampler = factory()
    tc = np.array([[1, 2], [3, 4]])
    k = 7
    p32 = sampler._probability32(NP_XP, np.arange(sampler.range_max))
    p64 = sampler.probability(tc)  # before sampling updates a learned sampler
    values, num_tries = sampler._sample(backend.asarray(tc), k, unique=False, seed=3,
                                        per_example=False)
    assert num_tries == k
    cands = backend.to_numpy(values.candidates)
    # TF's float32 product p * k, and the float64 definition to float32 accuracy.
    np.testing.assert_array_equal(
        backend.to_numpy(values.sampled_expected_count), p32[cands] * np.float32(k)
    )
    np.testing.assert_array_equal(
        backend.to_numpy(values.true_expected_count), p32[tc] * np.float32(k)
    )
    np.testing.assert_allclose(
        backend.to_numpy(values.true_expected_count),
        k * p64, rtol=1e-6,
    )


def test_expected_count_helper_matches_the_formula() -> None:
    p = np.array([0.0, 1e-7, 1e-3, 0.01, 0.3, 0.9, 0.999], dtype=np.float32)
    for k, tries in [(1, 1), (5, 5), (5, 6), (5, 40), (64, 1000), (3, 10**6)]:
        got = S._expected_count(NP_XP, p, k, tries)
        assert got.dtype == np.float32
        want = _numpy_expected_count(p.astype(np.float64), k, tries)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # P = 1 occurs with T = k only: k * p, and no warning from log1p(-1) in the other branch.
    got = S._expected_count(NP_XP, np.float32([1.0, 0.5]), 1, np.array([[1], [3]]))
    np.testing.assert_array_equal(got, [[1.0, 0.5], [1.0, 0.875]])


# ----------------------------------------------------------------- all candidates


def test_all_candidate_sampler(backend: Any) -> None:
    tc = backend.asarray([[0, 4], [2, 2]], dtype=np.int64)
    out = S.all_candidate_sampler(tc, 2, 5, True, seed=3)
    _check_placement(backend, *out)
    np.testing.assert_array_equal(backend.to_numpy(out.candidates), np.arange(5))
    np.testing.assert_array_equal(backend.to_numpy(out.true_expected_count), np.ones((2, 2)))
    np.testing.assert_array_equal(backend.to_numpy(out.sampled_expected_count), np.ones(5))
    per_row = AllCandidateSampler(5).sample(tc, 5, per_example=True)
    np.testing.assert_array_equal(backend.to_numpy(per_row.candidates), np.tile(np.arange(5), (2, 1)))
    assert backend.to_numpy(per_row.sampled_expected_count).shape == (2, 5)


# ------------------------------------------------------------------- accidental hits

HIT_CASES = [
    # true_classes, sampled, (indices, ids)
    ([[1, 2], [3, 3], [5, 1]], [1, 3, 1, 7, 3], ([0, 1, 1, 2], [2, 4, 4, 2])),
    ([[0], [1], [2]], [2, 0], ([0, 2], [1, 0])),
    ([[4, 4, 4]], [4, 4], ([0, 0, 0], [1, 1, 1])),
    ([[9, 8]], [1, 2, 3], ([], [])),
    (np.zeros((0, 2), dtype=np.int64), [1, 2], ([], [])),
]


@pytest.mark.parametrize(("true", "sampled", "expected"), HIT_CASES)
def test_compute_accidental_hits(backend: Any, true: Any, sampled: Any, expected: Any) -> None:
    true_arr = backend.asarray(np.asarray(true, dtype=np.int64))
    indices, ids, weights = S.compute_accidental_hits(
        true_arr, backend.asarray(sampled, dtype=np.int64), num_true=true_arr.shape[1]
    )
    _check_placement(backend, indices, ids, weights)
    indices_np, ids_np, weights_np = (backend.to_numpy(x) for x in (indices, ids, weights))
    assert (indices_np.dtype, ids_np.dtype, weights_np.dtype) == (np.int32, np.int64, np.float32)
    np.testing.assert_array_equal(indices_np, expected[0])
    np.testing.assert_array_equal(ids_np, expected[1])
    np.testing.assert_array_equal(weights_np, np.full(len(expected[0]), -FLT_MAX, np.float32))


def test_accidental_hits_per_example_candidates(backend: Any) -> None:
    true = backend.asarray([[1, 2], [2, 0]], dtype=np.int64)
    cands = backend.asarray([[2, 1, 1], [0, 5, 0]], dtype=np.int64)
    indices, ids, _ = S.compute_accidental_hits(true, cands, 2)
    np.testing.assert_array_equal(backend.to_numpy(indices), [0, 0, 1])
    np.testing.assert_array_equal(backend.to_numpy(ids), [2, 0, 2])


# --------------------------------------------------------------- learned unigram state


def test_learned_unigram_updates_after_drawing(backend: Any) -> None:
    sampler = LearnedUnigramSampler(6)
    tc = backend.asarray([[1, 1], [4, 1]], dtype=np.int64)
    first = sampler.sample(tc, 3, unique=False, seed=0)
    # The first call uses the initial counts (all 1): P = 1/6, Q = 3/6.
    np.testing.assert_array_equal(backend.to_numpy(first.true_expected_count), np.full((2, 2), 0.5))
    np.testing.assert_array_equal(sampler.counts, [1, 4, 1, 1, 2, 1])  # repeats count
    np.testing.assert_allclose(sampler.probability(np.arange(6)), np.array([1, 4, 1, 1, 2, 1]) / 10)
    second = sampler.sample(tc, 3, unique=False, seed=0)
    np.testing.assert_allclose(
        backend.to_numpy(second.true_expected_count), [[1.2, 1.2], [0.6, 1.2]], rtol=1e-7
    )
    np.testing.assert_array_equal(sampler.counts, [1, 7, 1, 1, 3, 1])
    # The function starts afresh each call.
    fresh = S.learned_unigram_candidate_sampler(tc, 2, 3, False, 6, seed=0)
    np.testing.assert_array_equal(backend.to_numpy(fresh.true_expected_count), np.full((2, 2), 0.5))


def test_learned_unigram_total_is_capped_like_tf() -> None:
    sampler = LearnedUnigramSampler(3)
    sampler._counts[0] = 2**31 - 1 - 2 - 2  # total = 2**31 - 3: room for two more updates
    sampler.sample([[1, 2, 2]], 1, unique=False, seed=0)
    np.testing.assert_array_equal(sampler.counts, [2**31 - 5, 2, 2])
    assert int(sampler.counts.sum()) == 2**31 - 1


# ----------------------------------------------------------------- fixed unigram layout


def test_fixed_unigram_reserved_ids_distortion_and_shards() -> None:
    unigrams = [1.0, 2.0, 3.0, 4.0, 5.0]
    s = FixedUnigramSampler(7, unigrams=unigrams, num_reserved_ids=2)
    np.testing.assert_allclose(s.probability(np.arange(7)), np.r_[0, 0, unigrams] / 15)
    s = FixedUnigramSampler(5, unigrams=unigrams, distortion=2.0)
    np.testing.assert_allclose(s.probability(np.arange(5)), np.square(unigrams) / 55)
    s = FixedUnigramSampler(5, unigrams=[0.0, 2.0, 3.0, 4.0, 5.0], distortion=0.0)
    np.testing.assert_allclose(s.probability(np.arange(5)), np.full(5, 0.2))  # 0 ** 0 = 1
    # Shards keep ids with id % num_shards == shard: 0, 2, 4 of [0, 5).
    s = FixedUnigramSampler(3, unigrams=unigrams, num_shards=2, shard=0)
    np.testing.assert_allclose(s.probability(np.arange(3)), np.array([1, 3, 5]) / 9)
    # TF quirk: with 3 reserved ids, shard 1 holds reserved id 1 (one id), and the
    # entries continue from id 1, not 3: entries 0, 2, 4 get ids 1, 3, 5 and are kept.
    s = FixedUnigramSampler(4, unigrams=unigrams, num_reserved_ids=3, num_shards=2, shard=1)
    np.testing.assert_allclose(s.probability(np.arange(4)), np.array([0, 1, 3, 5]) / 9)
    # Shard 0 holds reserved ids 0 and 2; entries continue from id 2: ids 2, 4, 6 kept.
    s = FixedUnigramSampler(5, unigrams=unigrams, num_reserved_ids=3, num_shards=2, shard=0)
    np.testing.assert_allclose(s.probability(np.arange(5)), np.array([0, 0, 1, 3, 5]) / 9)


def _write(path: Any, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_vocab_file_parsing(tmp_path: Any) -> None:
    data = (
        b"the,10\n"
        b"a, 4 \r\n"  # spaces around the count, CRLF
        b"\n"  # empty lines are skipped and take no id
        b"x,y,z,0x10\n"  # the LAST field is the count; hexadecimal as strtof reads it
        b"7.5e-1\n"  # a line that is just the count
        b"of,2"  # no final newline
    )
    path = _write(tmp_path / "vocab.csv", data)
    s = FixedUnigramSampler(5, vocab_file=path)
    counts = np.array([10, 4, 16, 0.75, 2])
    np.testing.assert_allclose(s.probability(np.arange(5)), counts / counts.sum())
    same = FixedUnigramSampler(5, unigrams=counts.tolist())
    np.testing.assert_array_equal(s._probability32_table(), same._probability32_table())
    # Sharding skips lines without parsing them (as TF does): line 2 is malformed but in shard 1.
    path = _write(tmp_path / "sharded.csv", b"a,1\nb,oops\nc,3\n")
    s = FixedUnigramSampler(2, vocab_file=path, num_shards=2, shard=0)
    np.testing.assert_allclose(s.probability([0, 1]), [0.25, 0.75])
    out = S.fixed_unigram_candidate_sampler([[1]], 1, 2, True, 2, vocab_file=path, num_shards=2)
    assert sorted(out.candidates.tolist()) == [0, 1]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"b,x", "must be a number"),
        (b"b,2,", "must be a number"),  # TF takes the empty last field
        (b" ", "must be a number"),  # whitespace is not an empty line
        (b"b,1_000", "must be a number"),  # Python's float() would accept it; strtof does not
        (b"b,2 x", "must be a number"),
        (b"b,-2", "finite and >= 0"),
        (b"b,nan", "finite and >= 0"),
        (b"b,inf", "finite and >= 0"),
    ],
)
def test_malformed_vocab_file_names_file_and_line(tmp_path: Any, line: bytes, reason: str) -> None:
    path = _write(tmp_path / "bad.csv", b"a,1\n\n" + line + b"\nc,3\n")
    with pytest.raises(ValueError, match=re.escape(f"{path!r}, line 3")) as info:
        FixedUnigramSampler(3, vocab_file=path)
    assert reason in str(info.value)


# ------------------------------------------------------------------------ bad inputs

TC = np.array([[1, 2], [3, 4]])
FIXED = {"unigrams": [1.0, 2.0, 3.0]}

BAD_INPUTS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("range_max 0", lambda: UniformSampler(0), ValueError, "range_max must be >= 1, got 0"),
    ("range_max float", lambda: LogUniformSampler(2.5), TypeError, "range_max must be an integer"),
    ("learned range_max too large", lambda: LearnedUnigramSampler(2**31 - 1), ValueError,
     "range_max must be <= 2147483646, got 2147483647"),
    ("num_sampled > range_max", lambda: UniformSampler(5).sample(TC, 6), ValueError,
     "num_sampled=6 exceeds range_max=5"),
    ("num_sampled > support", lambda: FixedUnigramSampler(
        5, unigrams=[1.0, 0.0, 1.0], num_reserved_ids=2).sample([[0]], 3), ValueError,
     "num_sampled=3 exceeds the 2 classes with nonzero probability"),
    ("num_sampled 0", lambda: UniformSampler(5).sample(TC, 0), ValueError,
     "num_sampled must be >= 1, got 0"),
    ("num_true mismatch", lambda: S.uniform_candidate_sampler(TC, 3, 2, True, 10), ValueError,
     "num_true=3 does not match true_classes.shape[1]=2"),
    ("num_true 0", lambda: S.uniform_candidate_sampler(TC, 0, 2, True, 10), ValueError,
     "num_true must be >= 1, got 0"),
    ("true_classes 1-D", lambda: UniformSampler(5).sample([1, 2], 2), ValueError,
     "true_classes must be a 2-D [batch_size, num_true] array, got shape (2,)"),
    ("true_classes float", lambda: UniformSampler(5).sample([[1.0]], 2), TypeError,
     "true_classes must be an integer array, got dtype float64"),
    ("true_classes bool", lambda: UniformSampler(5).sample(np.array([[True]]), 2), TypeError,
     "true_classes must be an integer array"),
    ("true_classes too large", lambda: UniformSampler(5).sample([[1, 5]], 2), ValueError,
     "true_classes must lie in [0, range_max=5), got 5"),
    ("true_classes negative", lambda: LogUniformSampler(5).sample([[-1]], 2), ValueError,
     "true_classes must lie in [0, range_max=5), got -1"),
    ("unique not bool", lambda: UniformSampler(5).sample(TC, 2, unique="yes"), TypeError,
     "unique must be a bool, got 'yes'"),
    ("seed negative", lambda: UniformSampler(5).sample(TC, 2, seed=-1), ValueError,
     "seed must be >= 0, got -1"),
    ("seed float", lambda: UniformSampler(5).sample(TC, 2, seed=1.5), TypeError,
     "seed must be an integer, got 1.5"),
    ("unigram nan", lambda: FixedUnigramSampler(3, unigrams=[1.0, float("nan"), 1.0]),
     ValueError, "unigrams must be finite and >= 0, got unigrams[1]=nan"),
    ("unigram negative", lambda: FixedUnigramSampler(3, unigrams=[1.0, -2.0, 1.0]),
     ValueError, "unigrams must be finite and >= 0, got unigrams[1]=-2.0"),
    ("unigrams sum zero", lambda: FixedUnigramSampler(2, unigrams=[0.0, 0.0]), ValueError,
     "sum to 0.0; the sum must be finite and > 0"),
    ("unigrams sum overflows", lambda: FixedUnigramSampler(2, unigrams=[1e308, 1e308]),
     ValueError, "sum to inf"),
    ("unigrams overflow float32", lambda: FixedUnigramSampler(2, unigrams=[1e39, 1.0]),
     ValueError, "overflow or underflow float32"),
    ("zero ** negative distortion", lambda: FixedUnigramSampler(
        3, unigrams=[1.0, 0.0, 1.0], distortion=-1.0), ValueError,
     "count 0.0 ** distortion=-1.0 is not finite"),
    ("distortion inf", lambda: FixedUnigramSampler(3, distortion=float("inf"), **FIXED),
     ValueError, "distortion must be finite, got inf"),
    ("distortion nan", lambda: FixedUnigramSampler(3, distortion=float("nan"), **FIXED),
     ValueError, "distortion must be finite, got nan"),
    ("shard >= num_shards", lambda: FixedUnigramSampler(3, num_shards=2, shard=2, **FIXED),
     ValueError, "shard must lie in [0, num_shards=2), got 2"),
    ("shard negative", lambda: FixedUnigramSampler(3, shard=-1, **FIXED), ValueError,
     "shard must be >= 0, got -1"),
    ("num_shards 0", lambda: FixedUnigramSampler(3, num_shards=0, **FIXED), ValueError,
     "num_shards must be >= 1, got 0"),
    ("num_reserved_ids negative", lambda: FixedUnigramSampler(3, num_reserved_ids=-1, **FIXED),
     ValueError, "num_reserved_ids must be >= 0, got -1"),
    ("neither unigrams nor file", lambda: FixedUnigramSampler(3), ValueError,
     "give exactly one of vocab_file and unigrams"),
    ("both unigrams and file", lambda: FixedUnigramSampler(3, vocab_file="v.csv", **FIXED),
     ValueError, "give exactly one of vocab_file and unigrams, got vocab_file='v.csv'"),
    ("fixed range mismatch", lambda: FixedUnigramSampler(5, **FIXED), ValueError,
     "range_max=5 must equal the number of ids in shard 0: 0 reserved + 3 from the unigrams = 3"),
    ("all-candidate num_sampled", lambda: AllCandidateSampler(4).sample(TC, 3), ValueError,
     "num_sampled=3 must equal range_max=4"),
    ("all-candidate true class", lambda: S.all_candidate_sampler(TC, 2, 4, True), ValueError,
     "true_classes must lie in [0, range_max=4), got 4"),
    ("probability float", lambda: UniformSampler(3).probability([0.5]), TypeError,
     "classes must be an integer array, got dtype float64"),
    ("probability out of range", lambda: LogUniformSampler(3).probability([0, 3]), ValueError,
     "classes must lie in [0, range_max=3), got 3"),
    ("hits num_true", lambda: S.compute_accidental_hits(TC, [1], 1), ValueError,
     "num_true=1 does not match true_classes.shape[1]=2"),
    ("hits candidates float", lambda: S.compute_accidental_hits(TC, [1.0], 2), TypeError,
     "sampled_candidates must be an integer array"),
    ("hits candidates 3-D", lambda: S.compute_accidental_hits(TC, [[[1]]], 2), ValueError,
     "sampled_candidates must be a 1-D [num_sampled] array, got shape (1, 1, 1)"),
    ("hits candidate rows", lambda: S.compute_accidental_hits(TC, [[1]], 2), ValueError,
     "must have one row per row of true_classes"),
    ("true_classes not an array", lambda: UniformSampler(3).sample("abc", 1), TypeError,
     "true_classes must be an array"),
]


@pytest.mark.parametrize(
    ("call", "error", "message"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_raises(call: Callable[[], Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_missing_vocab_file_raises_os_error(tmp_path: Any) -> None:
    with pytest.raises(FileNotFoundError):
        FixedUnigramSampler(3, vocab_file=str(tmp_path / "absent.csv"))


# ------------------------------------------------------------------ TensorFlow parity


@pytest.fixture(scope="module")
def tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


def _tf_run(tf: Any, build: Callable[[], Any], runs: int = 1) -> list[Any]:
    """Build the ops in a fresh graph (fresh kernels, fresh state) and run them ``runs`` times."""
    graph = tf.Graph()
    with graph.as_default():
        fetches = build()
    with tf.compat.v1.Session(graph=graph) as session:
        return [session.run(fetches) for _ in range(runs)]


def _tf_sampler(tf: Any, name: str, sampler: Any) -> Callable[..., Any]:
    """TF's function for one of the SAMPLERS, with the sampler's parameters bound."""
    if name == "fixed_unigram":
        return lambda tc, nt, k, u, r, seed: tf.random.fixed_unigram_candidate_sampler(
            tc, nt, k, u, r, distortion=0.75, num_reserved_ids=2,
            unigrams=[5.0, 1.0, 0.0, 3.0, 8.0, 2.0, 2.0, 9.0, 1.0, 4.0], seed=seed,
        )
    return {
        "uniform": tf.random.uniform_candidate_sampler,
        "log_uniform": tf.random.log_uniform_candidate_sampler,
        "learned_unigram": tf.random.learned_unigram_candidate_sampler,
    }[name]


@pytest.mark.parametrize(
    ("factory", "tf_kwargs"),
    [
        (lambda: UniformSampler(7), None),
        (lambda: UniformSampler(1000), None),
        (lambda: LogUniformSampler(1), None),
        (lambda: LogUniformSampler(50), None),
        (lambda: LogUniformSampler(12345), None),
        (lambda: LearnedUnigramSampler(333), None),
        (lambda: FixedUnigramSampler(4, unigrams=[3.0, 1.0, 2.0, 7.0]),
         {"unigrams": [3.0, 1.0, 2.0, 7.0]}),
        (lambda: FixedUnigramSampler(
            8, unigrams=np.arange(1.0, 20.0).tolist(), num_reserved_ids=3, num_shards=3, shard=1,
            distortion=0.75),
         {"unigrams": np.arange(1.0, 20.0).tolist(), "num_reserved_ids": 3, "num_shards": 3,
          "shard": 1, "distortion": 0.75}),
        (lambda: FixedUnigramSampler(
            1000, unigrams=(np.random.default_rng(0).pareto(1.0, 1000) * 100).tolist(),
            distortion=0.75),
         {"unigrams": (np.random.default_rng(0).pareto(1.0, 1000) * 100).tolist(),
          "distortion": 0.75}),
    ],
)
def test_tf_probabilities(tf: Any, factory: Callable[[], Any], tf_kwargs: Any) -> None:
    """TF's Q for k = 1 over all classes is its float32 P; compare with ours for k = 1 and 3."""
    sampler = factory()
    r = sampler.range_max
    classes = np.arange(r, dtype=np.int64)[None, :]
    if isinstance(sampler, UniformSampler):
        fn = tf.random.uniform_candidate_sampler
    elif isinstance(sampler, LogUniformSampler):
        fn = tf.random.log_uniform_candidate_sampler
    elif isinstance(sampler, LearnedUnigramSampler):
        fn = tf.random.learned_unigram_candidate_sampler
    else:
        fn = lambda *a, **kw: tf.random.fixed_unigram_candidate_sampler(  # noqa: E731
            *a, **kw, **tf_kwargs
        )
    p1, p3 = _tf_run(tf, lambda: [
        fn(tf.constant(classes), r, k, False, r, seed=1).true_expected_count for k in (1, 3)
    ])[0]
    ours32 = sampler._probability32(NP_XP, classes)
    # Bit-exact but for glibc's powf (distortion != 1), which is not correctly rounded.
    assert _ulp_diff(p1, ours32) <= (0 if tf_kwargs is None or "distortion" not in tf_kwargs
                                     else 2)
    np.testing.assert_allclose(p3 / 3, sampler.probability(classes), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_tf_with_replacement_expected_counts(tf: Any, name: str) -> None:
    """unique=False: TF's expected counts are exactly float32(k * P32) of its own candidates."""
    # TF's learned-unigram op starts from counts of 1: an untrained sampler.
    sampler = LearnedUnigramSampler(20) if name == "learned_unigram" else SAMPLERS[name][0]()
    fn = _tf_sampler(tf, name, sampler)
    tc = np.array([[2, 3], [4, 5], [11, 2]], dtype=np.int64)
    k = 25
    cands, true_q, sampled_q = _tf_run(
        tf, lambda: fn(tf.constant(tc), 2, k, False, sampler.range_max, seed=11)
    )[0]
    p32 = sampler._probability32(NP_XP, np.arange(sampler.range_max))
    tol = 2 if name == "fixed_unigram" else 0  # glibc powf
    assert _ulp_diff(sampled_q, p32[cands] * np.float32(k)) <= tol
    assert _ulp_diff(true_q, p32[tc] * np.float32(k)) <= tol
    ours = sampler._sample(tc, k, unique=False, seed=11, per_example=False)[0]
    assert _ulp_diff(ours.true_expected_count, true_q) <= tol


def _consistent_num_tries(p32: np.ndarray, q: np.ndarray, k: int) -> tuple[int, int] | None:
    """The integer T >= k for which our expected counts agree best with ``q`` (<= 1 ulp)."""
    candidates = {k}
    informative = (p32 > 0) & (q < 1)
    if np.any(informative):
        i = np.flatnonzero(informative)[np.argmin(p32[informative])]
        estimate = np.log1p(-float(q[i])) / np.log1p(-float(p32[i]))
        candidates |= set(range(max(k, int(estimate * 0.9) - 5), int(estimate * 1.1) + 6))
    best = None
    for t in sorted(candidates):
        diff = _ulp_diff(S._expected_count(NP_XP, p32, k, t), q)
        if diff <= 1 and (best is None or diff < best[1]):
            best = (t, diff)
    return best


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize(("range_max", "k"), [(50, 20), (30, 29), (1000, 64), (10**6, 50)])
def test_tf_without_replacement_expected_counts(tf: Any, name: str, range_max: int, k: int) -> None:
    """unique=True: all of TF's expected counts agree with our formula for one integer T."""
    if name == "fixed_unigram":
        range_max = min(range_max, 5000)  # TF's unigrams attribute is slow to build
        unigrams = (np.random.default_rng(range_max).pareto(1.0, range_max) + 0.1).tolist()
        sampler: Any = FixedUnigramSampler(range_max, unigrams=unigrams)
        fn = lambda tc, nt, kk, u, r, seed: tf.random.fixed_unigram_candidate_sampler(  # noqa: E731
            tc, nt, kk, u, r, unigrams=unigrams, seed=seed
        )
    else:
        sampler = {"uniform": UniformSampler, "log_uniform": LogUniformSampler,
                   "learned_unigram": LearnedUnigramSampler}[name](range_max)
        fn = _tf_sampler(tf, name, sampler)
    tc = np.random.default_rng(k).integers(0, range_max, (4, 3))
    seen_rejection = False
    for seed in (1, 2, 3):
        cands, true_q, sampled_q = _tf_run(
            tf, lambda seed=seed: fn(tf.constant(tc), 3, k, True, range_max, seed=seed)
        )[0]
        assert len(set(cands.tolist())) == k
        p32 = np.concatenate([sampler._probability32(NP_XP, cands),
                              sampler._probability32(NP_XP, tc.reshape(-1))])
        q = np.concatenate([sampled_q, true_q.reshape(-1)])
        found = _consistent_num_tries(p32, q, k)
        assert found is not None, (name, range_max, k, seed)
        seen_rejection |= found[0] > k
    if range_max <= 50:
        assert seen_rejection  # the T > k branch was exercised


def test_tf_accidental_hits(tf: Any) -> None:
    rng = np.random.default_rng(0)
    cases = [(np.array(t, dtype=np.int64), np.array(s, dtype=np.int64)) for t, s, _ in HIT_CASES]
    for _ in range(20):
        batch, num_true, k = rng.integers(1, 6), rng.integers(1, 4), rng.integers(1, 12)
        cases.append((rng.integers(0, 8, (batch, num_true)), rng.integers(0, 8, k)))
    for true, sampled in cases:
        want = _tf_run(tf, lambda true=true, sampled=sampled: tf.nn.compute_accidental_hits(
            tf.constant(true), tf.constant(sampled), num_true=true.shape[1]))[0]
        got = S.compute_accidental_hits(true, sampled, true.shape[1])
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)


def test_tf_learned_unigram_state(tf: Any) -> None:
    """Three runs of one TF op against three calls of one sampler: same counts, same Q."""
    tc = np.array([[1, 1, 4], [0, 7, 1]], dtype=np.int64)
    k, r = 5, 9
    runs = _tf_run(tf, lambda: tf.random.learned_unigram_candidate_sampler(
        tf.constant(tc), 3, k, False, r, seed=4), runs=3)
    sampler = LearnedUnigramSampler(r)
    for cands, true_q, sampled_q in runs:
        p32 = sampler._probability32(NP_XP, np.arange(r))
        np.testing.assert_array_equal(sampled_q, p32[cands] * np.float32(k))
        ours = sampler.sample(tc, k, unique=False, seed=0)
        np.testing.assert_array_equal(ours.true_expected_count, true_q)


def test_tf_vocab_file(tf: Any, tmp_path: Any) -> None:
    data = b"the,10\na, 4 \r\n\nx,y,z,0x10\n7.5e-1\nof,2\nb,oops\nc,3.5\nd,1e3\ne,2"
    for options in [{}, {"num_reserved_ids": 2}, {"num_reserved_ids": 3, "num_shards": 2,
                                                  "shard": 1}]:
        path = _write(tmp_path / f"vocab{len(options)}.csv", data)
        if not options:  # line 7 is malformed: both refuse the file
            with pytest.raises(ValueError, match="line 7"):
                FixedUnigramSampler(9, vocab_file=path)
            with pytest.raises(tf.errors.InvalidArgumentError, match="oops"):
                _tf_run(tf, lambda path=path: tf.random.fixed_unigram_candidate_sampler(
                    tf.constant([[0]], tf.int64), 1, 1, False, 9, vocab_file=path))
            continue
        # With shards, the malformed line is skipped unread by both.
        if "num_shards" in options:  # shard 1 holds reserved id 1, then ids 1, 3, .. 9
            sampler = FixedUnigramSampler(6, vocab_file=path, **options)
        else:
            path = _write(tmp_path / "fixed.csv", data.replace(b"oops", b"5"))
            sampler = FixedUnigramSampler(11, vocab_file=path, **options)
        r = sampler.range_max
        want = _tf_run(tf, lambda path=path, r=r, options=options:
                       tf.random.fixed_unigram_candidate_sampler(
                           tf.constant(np.arange(r)[None, :]), r, 1, False, r, vocab_file=path,
                           **options).true_expected_count)[0]
        np.testing.assert_array_equal(want[0], sampler._probability32_table())


def test_tf_all_candidate_sampler(tf: Any) -> None:
    tc = np.array([[0, 4], [2, 2]], dtype=np.int64)
    want = _tf_run(tf, lambda: tf.random.all_candidate_sampler(tf.constant(tc), 2, 5, True))[0]
    got = S.all_candidate_sampler(tc, 2, 5, True)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: S.uniform_candidate_sampler(TC, 2, 6, True, 5),
         lambda tf: tf.random.uniform_candidate_sampler(tf.constant(TC), 2, 6, True, 5)),
        (lambda: S.log_uniform_candidate_sampler(TC, 2, 2, True, 4),
         lambda tf: tf.random.log_uniform_candidate_sampler(tf.constant(TC), 2, 2, True, 4)),
        (lambda: S.fixed_unigram_candidate_sampler(TC, 2, 1, True, 5, unigrams=[1.0, 2.0]),
         lambda tf: tf.random.fixed_unigram_candidate_sampler(
             tf.constant(TC), 2, 1, True, 5, unigrams=[1.0, 2.0])),
    ],
    ids=["num_sampled > range_max", "true class out of range", "range_max mismatch"],
)
def test_tf_rejects_the_same_inputs(tf: Any, ours: Callable[[], Any], theirs: Any) -> None:
    with pytest.raises(ValueError):
        ours()
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        _tf_run(tf, lambda: theirs(tf))

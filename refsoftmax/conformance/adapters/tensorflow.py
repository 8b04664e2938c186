"""TensorFlow: ``tf.nn`` softmax cross-entropies, sampled softmax, NCE, the candidate samplers.

Targets (gradients by ``tf.GradientTape``):

* ``tf.nn.sparse_softmax_cross_entropy_with_logits`` and
  ``tf.nn.softmax_cross_entropy_with_logits`` (the latter w.r.t. logits and
  labels).  They have no options: only ``reduction="none"`` without weights,
  ignore index or smoothing is expressible; other cases are skipped.
  Conventions (``docs/conventions.md``, Edge inputs): none to declare; the
  dense form returns NaN for a ``-inf`` logit carrying no label mass where the
  loss is finite (notes n2/n3), which is reported as a failure.
* ``tf.nn.sampled_softmax_loss`` and ``tf.nn.nce_loss`` with explicit
  ``sampled_values`` (specs of :mod:`refsoftmax.conformance.sampled`), w.r.t.
  weights, biases and inputs (TF's ``IndexedSlices`` are densified by the driver).
* ``tf.random.{uniform,log_uniform,fixed_unigram,learned_unigram}_candidate_sampler``:
  their expected counts, given their own draw.  Each call builds a fresh graph
  (fresh kernel, fresh state, a deterministic draw for the op seed) and runs
  the op ``runs`` times; TF does not return its number of tries, so for
  ``unique=True`` the integer that best explains its counts is fitted
  (:meth:`~refsoftmax.conformance.sampled.ExpectedCounts.fit_num_tries`) and
  passed with the candidates to the reference (:class:`~refsoftmax.conformance.targets.Drawn`).
* ``tf.nn.compute_accidental_hits``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from refsoftmax.conformance import sampled
from refsoftmax.conformance.targets import Drawn, Target, Unsupported

LIBRARY = "tensorflow"

_SAMPLED_OPTIONS = {
    "num_sampled",
    "num_classes",
    "num_true",
    "sampled_values",
    "remove_accidental_hits",
}
_UNIGRAM_PARAMS = ("unigrams", "distortion", "num_reserved_ids", "num_shards", "shard")


def available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def version() -> str:
    return str(_tf().__version__)


def _check(inputs: dict[str, Any], options: dict[str, Any], allowed: set[str]) -> None:
    extra = set(options) - allowed
    if "class_weights" in inputs:
        extra.add("class_weights")
    if extra:
        raise Unsupported(f"option(s) {sorted(extra)} not expressible in this function")


def _plain_cross_entropy(inputs: dict[str, Any], options: dict[str, Any]) -> None:
    """``tf.nn`` cross-entropies have no options: only per-example losses, unweighted."""
    _check(inputs, options, {"reduction"})
    if options.get("reduction", "none") != "none":
        raise Unsupported(
            f"reduction={options['reduction']!r}: tf.nn returns per-example losses only"
        )


def _sparse_ce(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    _plain_cross_entropy(inputs, options)
    return _tf().nn.sparse_softmax_cross_entropy_with_logits(
        labels=inputs["labels"], logits=inputs["logits"]
    )


def _dense_ce(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    _plain_cross_entropy(inputs, options)
    return _tf().nn.softmax_cross_entropy_with_logits(
        labels=inputs["labels"], logits=inputs["logits"]
    )


def _sampled_loss(name: str) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    def call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        tf = _tf()
        _check(inputs, options, _SAMPLED_OPTIONS)
        dtype = inputs["weights"].dtype
        candidates, true_ec, sampled_ec = options["sampled_values"]
        if np.ndim(candidates) != 1:
            raise Unsupported("TF's sampled losses take one set of candidates shared by the batch")
        sv = (
            tf.constant(np.asarray(candidates, np.int64)),
            tf.cast(np.asarray(true_ec), dtype),
            tf.cast(np.asarray(sampled_ec), dtype),
        )
        return getattr(tf.nn, name)(
            inputs["weights"],
            inputs["biases"],
            inputs["labels"],
            inputs["inputs"],
            options["num_sampled"],
            options["num_classes"],
            num_true=options["num_true"],
            sampled_values=sv,
            remove_accidental_hits=options["remove_accidental_hits"],
        )

    return call


def _run_in_fresh_graph(build: Callable[[], Any], runs: int = 1) -> Any:
    """Build the op in a new graph (fresh kernel state, seeded draws); run it ``runs`` times."""
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        fetches = build()
    with tf.compat.v1.Session(graph=graph) as session:
        out = None
        for _ in range(runs):
            out = session.run(fetches)
    return out


def _sampler(spec_name: str) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    reference = sampled.ExpectedCounts(sampled.SAMPLER_SPECS[spec_name])

    def call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        tf = _tf()
        _check(
            inputs,
            options,
            {"num_true", "num_sampled", "unique", "range_max", "seed", "runs", *_UNIGRAM_PARAMS},
        )
        tc = np.asarray(inputs["true_classes"], np.int64)
        fn = getattr(tf.random, spec_name)
        params = {k: options[k] for k in _UNIGRAM_PARAMS if k in options}
        if "unigrams" in params:
            params["unigrams"] = list(params["unigrams"])
        k = options["num_sampled"]

        def build() -> Any:
            return fn(
                tf.constant(tc),
                options["num_true"],
                k,
                options["unique"],
                options["range_max"],
                seed=options["seed"],
                **params,
            )

        candidates, true_ec, sampled_ec = _run_in_fresh_graph(build, options.get("runs", 1))
        counts = np.concatenate([np.reshape(true_ec, -1), np.reshape(sampled_ec, -1)]).astype(
            np.float64
        )
        num_tries = k
        if options["unique"]:
            num_tries = reference.fit_num_tries(tc, candidates, counts, **options)
        with np.errstate(divide="ignore"):
            value = np.log(counts)
        return Drawn(
            value, {"candidates": np.asarray(candidates, np.int64), "num_tries": num_tries}
        )

    return call


def _accidental_hits(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    tf = _tf()
    _check(inputs, options, {"num_true"})
    if len(inputs["sampled_candidates"].shape) != 1:
        raise Unsupported("tf.nn.compute_accidental_hits takes one set of candidates [num_sampled]")
    out = tf.nn.compute_accidental_hits(
        inputs["true_classes"], inputs["sampled_candidates"], num_true=options["num_true"]
    )
    return np.stack([np.asarray(a, np.float64) for a in out])


def targets() -> list[Target]:
    ce_doc = "docs/conventions.md, TF `tf.nn.*` rows (Edge inputs; notes n2, n3)"
    sampled_doc = "docs/losses/sampled_softmax.md, docs/losses/samplers.md (TF's definitions)"
    imports = "import tensorflow as tf"
    spec_imports = (
        "import tensorflow as tf\nimport refsoftmax.conformance.sampled  # registers the specs"
    )
    cast = "tf.cast(tf.constant({x}), tf.{{dtype}})"
    out = [
        Target(
            LIBRARY,
            "tf.nn.sparse_softmax_cross_entropy_with_logits",
            "sparse_softmax_cross_entropy",
            "tensorflow",
            _sparse_ce,
            convention_doc=ce_doc,
            imports=imports,
            expression="tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits="
            + cast.format(x="logits")
            + ")",
        ),
        Target(
            LIBRARY,
            "tf.nn.softmax_cross_entropy_with_logits",
            "softmax_cross_entropy",
            "tensorflow",
            _dense_ce,
            wrt=("logits", "labels"),
            convention_doc=ce_doc,
            imports=imports,
            expression="tf.nn.softmax_cross_entropy_with_logits(labels="
            + cast.format(x="labels")
            + ", logits="
            + cast.format(x="logits")
            + ")",
        ),
    ]
    for name in sampled.SAMPLED_LOSSES:
        out.append(
            Target(
                LIBRARY,
                f"tf.nn.{name}",
                name,
                "tensorflow",
                _sampled_loss(name),
                wrt=("weights", "biases", "inputs"),
                convention_doc=sampled_doc,
                imports=imports,
                expression=(
                    f"tf.nn.{name}("
                    + cast.format(x="weights")
                    + ", "
                    + cast.format(x="biases")
                    + ", labels, "
                    + cast.format(x="inputs")
                    + ", options['num_sampled'], "
                    "options['num_classes'], options['num_true'], sampled_values=("
                    "tf.constant(options['sampled_values'][0]), "
                    "tf.cast(options['sampled_values'][1], tf.{dtype}), "
                    "tf.cast(options['sampled_values'][2], tf.{dtype})), "
                    "remove_accidental_hits=options['remove_accidental_hits'])"
                ),
            )
        )
    for spec_name in sampled.SAMPLER_SPECS:
        call = (
            f"tf.random.{spec_name}(tf.constant(true_classes), options['num_true'], "
            "options['num_sampled'], options['unique'], options['range_max'], "
            "seed=options['seed'], "
            "**{{k: options[k] for k in ('unigrams', 'distortion', 'num_reserved_ids', "
            "'num_shards', 'shard') if k in options}})"
        )
        out.append(
            Target(
                LIBRARY,
                f"tf.random.{spec_name} (expected counts)",
                spec_name,
                "tensorflow",
                _sampler(spec_name),
                wrt=(),
                convention_doc=sampled_doc,
                imports=spec_imports,
                notes="value: log expected counts of [true classes, candidates], given TF's draw",
                expression=(
                    "np.log(np.concatenate([np.ravel(a) for a in "
                    f"[{call} for _ in range(options.get('runs', 1))][-1][1:]]))"
                ),
            )
        )
    out.append(
        Target(
            LIBRARY,
            "tf.nn.compute_accidental_hits",
            "compute_accidental_hits",
            "tensorflow",
            _accidental_hits,
            wrt=(),
            convention_doc=sampled_doc,
            imports=spec_imports,
            expression="np.stack([np.asarray(a, np.float64) for a in tf.nn.compute_accidental_hits("
            "true_classes, sampled_candidates, options['num_true'])])",
        )
    )
    return out

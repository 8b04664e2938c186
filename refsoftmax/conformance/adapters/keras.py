"""Keras 3: ``CategoricalCrossentropy``, ``SparseCategoricalCrossentropy`` and their functional
forms, on each installed Keras backend (TensorFlow, JAX, PyTorch).

**Processes.**  Keras fixes its backend when it is first imported
(``KERAS_BACKEND``), so one process can only certify one backend:

- :func:`targets` returns the targets of the *current* process's backend
  (``keras.backend.backend()``), each named with it, e.g.
  ``"keras.losses.SparseCategoricalCrossentropy [jax]"``, and run on that
  backend's framework driver (gradients by ``tf.GradientTape`` or
  ``torch.autograd``, eagerly; on JAX, value and ``jax.vjp`` as one
  ``jax.jit`` program, see ``adapters/_jax.py``: under ``jit`` the sparse
  loss is finite at a ``-inf`` logit where eager Keras-JAX gives NaN,
  ``REFSOFTMAX_JAX_JIT=0`` certifies eager execution);
- :func:`certify` (what ``refsoftmax certify keras`` and
  ``certify_library("keras")`` call) runs one subprocess per installed
  backend and reference loss, ``python -m refsoftmax.conformance.adapters.keras
  --keras-backend NAME --loss LOSS --json PATH`` with ``KERAS_BACKEND=NAME``,
  as many at once as there are CPUs, the longest (JAX, which compiles
  every program) first, and merges their JSON reports into one
  :class:`~refsoftmax.conformance.report.Report`, in a fixed order, with a
  note per subprocess (framework version, cases, time).  Splitting by loss
  as well as by backend lets two CPUs share the JAX work.  A subprocess
  that dies is one ``"error"`` row carrying the end of its stderr; a
  backend that is not installed is one ``"skipped"`` row.  Progress comes
  back as ``@refsoftmax-progress DONE TOTAL`` lines on the subprocess's
  stdout.

The same command, run by hand, certifies one backend (``--loss`` omitted:
both losses) and writes its JSON report (``--json -``: to stdout).

**How the reference options are expressed.**

- ``reduction``: ``"none"``/``"sum"`` as they are, ``"mean"`` as Keras's
  default ``"sum_over_batch_size"`` (the functional forms have no reduction:
  other reductions are skipped there);
- ``class_weights`` (integer labels only): Keras has no per-class weights;
  users pass them per example, ``sample_weight = w[label]`` (0 on ignored
  rows), which is what ``Model.fit(class_weight=...)`` does, so the adapter
  does that.  Label distributions cannot be weighted this way: skipped;
- ``ignore_index`` → ``ignore_class``; ``label_smoothing`` →
  ``CategoricalCrossentropy(label_smoothing=...)`` (``SparseCategorical*``
  has none: skipped);
- dtypes: the loss classes compute in their ``dtype`` argument, which
  defaults to ``keras.config.floatx()`` (float32) and *converts the inputs*
  to it: the adapter passes the dtype the case feeds (``dtype="float64"``
  for float64 inputs, ``"float16"`` for float16 ...), so each dtype is
  computed in itself as for the other libraries.  The functional forms take
  the arrays as they are.  The classes convert the integer labels to that
  dtype too, so in float16 (bfloat16) a label above 2048 (256) is rounded,
  4095 → 4096: the engine reports it (``wide-row`` cases).

**Conventions** (measured, ``docs/conventions.md``, Keras rows):
``"sum_over_batch_size"`` divides by the number of non-ignored examples,
whatever their weights (``mean_denominator="count"``; for label
distributions, by the batch size, ``"all"``), returns 0 when nothing is
left (``empty_mean="zero"``), and a per-example weight multiplies the
whole example (``class_weighting="target"``).  Smoothing is uniform over
all classes (the default).

**Known precision loss**: on the torch backend the mean reduction returns
float32 for float64 inputs (Keras's torch ``divide_no_nan`` takes its dtype
from ``result_type(x1, x2, float)``, which is floatx there); the engine
reports those float64 cases as failures, since the value (and the gradient
through it) really is rounded to float32.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from refsoftmax.conformance.targets import Target, Unsupported

LIBRARY = "keras"

#: Keras backends certified, in the order of the report.
BACKENDS = ("tensorflow", "jax", "torch")

#: The reference losses certified: one subprocess per backend and loss.
LOSSES = ("sparse_softmax_cross_entropy", "softmax_cross_entropy")

#: Relative cost of a backend's run, to start the longest first (JAX compiles every program).
_COST = {"jax": 3, "torch": 2, "tensorflow": 1}

#: The refsoftmax framework driver of each Keras backend.
FRAMEWORK = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}

_DOC = "docs/conventions.md, Keras rows"
_REDUCTIONS = {"none": "none", "sum": "sum", "mean": "sum_over_batch_size"}
_PROGRESS = "@refsoftmax-progress"


def available() -> bool:
    return importlib.util.find_spec("keras") is not None


def version() -> str:
    try:
        return importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - keras without metadata
        import keras

        return str(keras.__version__)


def installed_backends() -> list[str]:
    """The Keras backends whose framework is importable here."""
    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


# ------------------------------------------------------------------ the targets (one backend)


def _check(
    inputs: dict[str, Any],
    options: dict[str, Any],
    allowed: set[str],
    *,
    reductions: tuple[str, ...] = ("none", "sum", "mean"),
    weights: bool = False,
) -> None:
    reduction = options.get("reduction", "none")
    if reduction not in reductions:
        raise Unsupported(f"no reduction={reduction!r} here")
    if "class_weights" in inputs and not weights:
        raise Unsupported(
            "Keras has no per-class weights; sample_weight = w[label] needs integer labels"
        )
    extra = set(options) - allowed - {"reduction"}
    if extra:
        raise Unsupported(f"option(s) {sorted(extra)} not expressible in this function")


def _sample_weight(inputs: dict[str, Any], options: dict[str, Any]) -> np.ndarray:
    """``w[label]`` per example, 0 where the label is ``ignore_index`` (computed on the host)."""
    from keras import ops

    w = np.asarray(ops.convert_to_numpy(inputs["class_weights"]), np.float64)
    labels = np.asarray(ops.convert_to_numpy(inputs["labels"]))
    ignore = options.get("ignore_index")
    kept = np.ones(labels.shape, bool) if ignore is None else labels != ignore
    if ((labels[kept] < 0) | (labels[kept] >= w.shape[0])).any():
        raise Unsupported("sample_weight = w[label] is undefined for a label outside [0, C)")
    return np.where(kept, w[np.where(kept, labels, 0)], 0.0)


@functools.cache
def _loss(
    kind: str, dtype: str, reduction: str, ignore_class: int | None, label_smoothing: float
) -> Callable[..., Any]:
    """``loss(logits, labels[, sample_weight])`` for one Keras API and static options."""
    import keras

    if kind == "SparseCategoricalCrossentropy":
        obj = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=ignore_class, reduction=reduction, dtype=dtype
        )
    elif kind == "CategoricalCrossentropy":
        obj = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing, reduction=reduction, dtype=dtype
        )
    elif kind == "sparse_categorical_crossentropy":
        return lambda logits, labels: keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True, ignore_class=ignore_class
        )
    else:
        return lambda logits, labels: keras.losses.categorical_crossentropy(
            labels, logits, from_logits=True, label_smoothing=label_smoothing
        )

    def loss(logits: Any, labels: Any, sample_weight: Any = None) -> Any:
        return obj(labels, logits, sample_weight=sample_weight)

    return loss


@functools.cache
def _program(*key: Any) -> Any:
    from refsoftmax.conformance.adapters._jax import Program

    return Program(_loss(*key), ("logits",) if _sparse(key[0]) else ("logits", "labels"))


def _sparse(kind: str) -> bool:
    return kind.lower().startswith("sparse")


def _api(
    kind: str,
) -> Callable[[dict[str, Any], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]:
    """``resolve(inputs, options) -> (key of _loss, its array arguments)``; raises Unsupported."""
    sparse = _sparse(kind)
    functional = kind[0].islower()

    def resolve(
        inputs: dict[str, Any], options: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        from keras import backend

        allowed = {"ignore_index"} if sparse else {"label_smoothing"}
        _check(
            inputs,
            options,
            allowed,
            reductions=("none",) if functional else ("none", "sum", "mean"),
            weights=sparse and not functional,
        )
        dtype = backend.standardize_dtype(inputs["logits"].dtype)
        reduction = _REDUCTIONS[options.get("reduction", "none")]
        key = (
            kind,
            dtype,
            reduction,
            options.get("ignore_index"),
            float(options.get("label_smoothing", 0.0)),
        )
        arrays = {"logits": inputs["logits"], "labels": inputs["labels"]}
        if "class_weights" in inputs:
            arrays["sample_weight"] = _sample_weight(inputs, options)
        return key, arrays

    return resolve


def _target(backend: str, kind: str, expression: str) -> Target:
    resolve = _api(kind)
    sparse = _sparse(kind)
    function = f"keras.losses.{kind} [{backend}]"
    if sparse:
        conventions = {
            "class_weighting": "target",
            "mean_denominator": "count",
            "empty_mean": "zero",
        }
    else:
        conventions = {"mean_denominator": "all", "empty_mean": "zero"}
    if kind[0].islower():
        conventions = {}  # per-example losses: no reduction, no weights
    common: dict[str, Any] = {
        "wrt": ("logits",) if sparse else ("logits", "labels"),
        "conventions": conventions,
        "convention_doc": _DOC,
        "expression": expression,
        "imports": f"import os; os.environ['KERAS_BACKEND'] = {backend!r}; "
        + ("import jax; jax.config.update('jax_enable_x64', True); " if backend == "jax" else "")
        + "import keras",
        "notes": f"Keras backend {backend}",
    }
    loss_name = "sparse_softmax_cross_entropy" if sparse else "softmax_cross_entropy"
    if backend != "jax":

        def call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
            key, arrays = resolve(inputs, options)
            return _loss(*key)(**arrays)

        return Target(LIBRARY, function, loss_name, FRAMEWORK[backend], call, **common)

    # JAX: one jitted value-and-VJP program per shape (see adapters/_jax.py)
    def jax_call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        key, arrays = resolve(inputs, options)
        return _program(*key).value(_device(arrays))

    def grad_fn(inputs: dict[str, Any], options: dict[str, Any], cotangent: Any) -> dict[str, Any]:
        key, arrays = resolve(inputs, options)
        return dict(_program(*key).grads(_device(arrays), cotangent))

    from refsoftmax.conformance.adapters._jax import mode

    common["notes"] += f"; {mode()}"
    return Target(LIBRARY, function, loss_name, "jax", jax_call, grad_fn=grad_fn, **common)


def _device(arrays: dict[str, Any]) -> dict[str, Any]:
    import jax

    return {k: jax.device_put(v) if isinstance(v, np.ndarray) else v for k, v in arrays.items()}


def targets() -> list[Target]:
    """The targets of the Keras backend of this process (see the module docstring)."""
    import keras

    backend = keras.backend.backend()
    if backend not in FRAMEWORK:
        msg = f"Keras backend {backend!r} is not supported; choose one of {sorted(FRAMEWORK)}"
        raise ValueError(msg)
    r = "options.get('reduction', 'none')"
    red = f"{{{{'mean': 'sum_over_batch_size'}}}}.get({r}, {r})"
    ignored = "labels == options.get('ignore_index')"
    sw = (
        f"None if {{w}} is None "
        f"else np.where({ignored}, 0.0, {{w}}[np.where({ignored}, 0, labels)])"
    )
    z = "keras.ops.convert_to_tensor(logits, dtype='{dtype}')"
    y = "keras.ops.convert_to_tensor(labels, dtype='{dtype}')"
    return [
        _target(
            backend,
            "SparseCategoricalCrossentropy",
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True, "
            f"ignore_class=options.get('ignore_index'), reduction={red}, dtype='{{dtype}}')"
            f"(labels, logits, sample_weight={sw})",
        ),
        _target(
            backend,
            "sparse_categorical_crossentropy",
            f"keras.losses.sparse_categorical_crossentropy(labels, {z}, from_logits=True, "
            "ignore_class=options.get('ignore_index'))",
        ),
        _target(
            backend,
            "CategoricalCrossentropy",
            "keras.losses.CategoricalCrossentropy(from_logits=True, "
            f"label_smoothing=options.get('label_smoothing', 0.0), reduction={red}, "
            "dtype='{dtype}')(labels, logits)",
        ),
        _target(
            backend,
            "categorical_crossentropy",
            f"keras.losses.categorical_crossentropy({y}, {z}, from_logits=True, "
            "label_smoothing=options.get('label_smoothing', 0.0))",
        ),
    ]


# ------------------------------------------------------------------ every backend (subprocesses)


def _framework_version(backend: str) -> str:
    from refsoftmax.conformance.frameworks import get_framework

    fw = get_framework(FRAMEWORK[backend])
    try:
        return f"{fw.distribution()} {fw.version()}"
    except Exception:  # pragma: no cover - a broken install
        return backend


def _run_shard(
    keras_backend: str,
    loss: str,
    *,
    backend: str,
    seed: int,
    max_examples: int,
    on_progress: Callable[[int, int], None],
    timeout: float | None,
) -> dict[str, Any]:
    """One Keras backend on one loss, in a subprocess: its report as a dict, or why it failed."""
    import refsoftmax
    from refsoftmax.conformance.adapters._jax import fast_compile_flags

    env = dict(os.environ, KERAS_BACKEND=keras_backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["XLA_FLAGS"] = fast_compile_flags(env.get("XLA_FLAGS", ""))  # see adapters/_jax.py
    root = str(
        Path(refsoftmax.__file__).resolve().parents[1]
    )  # this refsoftmax, even if not installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="refsoftmax-keras-") as tmp:
        path = Path(tmp) / "report.json"
        cmd = [
            sys.executable,
            "-m",
            "refsoftmax.conformance.adapters.keras",
            "--keras-backend",
            keras_backend,
            "--loss",
            loss,
            "--reference-backend",
            backend,
            "--seed",
            str(seed),
            "--max-examples",
            str(max_examples),
            "--json",
            str(path),
            "--progress",
        ]
        start = time.perf_counter()
        with subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            stderr: list[str] = []
            reader = threading.Thread(target=lambda: stderr.extend(proc.stderr or ()), daemon=True)
            reader.start()
            timer = threading.Timer(timeout, proc.kill) if timeout else None
            if timer is not None:
                timer.start()
            try:
                for line in proc.stdout or ():
                    if line.startswith(_PROGRESS):
                        _, done, total = line.split()
                        on_progress(int(done), int(total))
                code = proc.wait()
            finally:
                if timer is not None:
                    timer.cancel()
            reader.join()
        seconds = time.perf_counter() - start
        if code == 0 and path.exists():
            return {"report": json.loads(path.read_text()), "seconds": seconds}
        tail = " | ".join(line.strip() for line in stderr[-4:] if line.strip())
        return {"failed": f"subprocess exited with {code}: {tail}"[:1000], "seconds": seconds}


def certify(
    *,
    backend: str = "numpy",
    seed: int = 0,
    max_examples: int = 20,
    progress: Callable[[int, int, str], None] | None = None,
    keras_backends: list[str] | None = None,
    timeout: float | None = None,
) -> Any:
    """Certify Keras on every installed backend, in subprocesses; one merged report.

    ``backend`` is the reference's backend, ``keras_backends`` the Keras
    backends to run (default: all of :data:`BACKENDS` that are installed),
    ``timeout`` a limit in seconds per subprocess.
    """
    from refsoftmax.conformance.engine import CaseResult
    from refsoftmax.conformance.report import Report

    start = time.perf_counter()
    report = Report(LIBRARY, version(), backend, seed=seed, max_examples=max_examples)
    chosen = [b for b in BACKENDS if b in (keras_backends or BACKENDS)]
    chosen += [b for b in keras_backends or () if b not in BACKENDS]
    installed = installed_backends()
    for b in chosen:
        if b not in installed:
            report.notes.append(f"Keras backend {b}: not installed, not certified")
            report.results.append(
                CaseResult(
                    LIBRARY,
                    f"keras.losses.* [{b}]",
                    "*",
                    "skipped",
                    f"the {b} backend is not installed",
                )
            )
    shards = [(b, loss) for b in chosen if b in installed for loss in LOSSES]
    lock = threading.Lock()
    counts: dict[tuple[str, str], tuple[int, int]] = {}

    def on_progress(shard: tuple[str, str]) -> Callable[[int, int], None]:
        def update(done: int, total: int) -> None:
            with lock:
                counts[shard] = (done, total)
                if progress is not None:
                    running = sorted({b for b, _ in counts})
                    progress(
                        sum(d for d, _ in counts.values()),
                        sum(t for _, t in counts.values()),
                        f"keras [{', '.join(running)}]",
                    )

        return update

    workers = max(1, min(len(shards), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            shard: pool.submit(
                _run_shard,
                *shard,
                backend=backend,
                seed=seed,
                max_examples=max_examples,
                on_progress=on_progress(shard),
                timeout=timeout,
            )
            for shard in sorted(shards, key=lambda s: -_COST.get(s[0], 0))
        }  # longest first
        outcomes = {shard: f.result() for shard, f in futures.items()}
    for shard in shards:  # in BACKENDS and LOSSES order, whatever finished first
        b, loss = shard
        outcome = outcomes[shard]
        if "failed" in outcome:
            report.notes.append(f"Keras backend {b}, {loss}: {outcome['failed']}")
            report.results.append(
                CaseResult(LIBRARY, f"keras.losses.* [{b}]", loss, "error", outcome["failed"])
            )
            continue
        sub = Report.from_dict(outcome["report"])
        report.results += sub.results
        report.notes.append(
            f"Keras backend {b} ({_framework_version(b)}), {loss}: {len(sub.results)} cases, "
            f"{outcome['seconds']:.1f} s in a subprocess"
        )
        report.notes += [f"[{b}] {n}" for n in sub.notes if f"[{b}] {n}" not in report.notes]
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m refsoftmax.conformance.adapters.keras --keras-backend NAME --json PATH``."""
    p = argparse.ArgumentParser(
        prog="python -m refsoftmax.conformance.adapters.keras",
        description="Certify Keras on one backend (the one this process imports).",
    )
    p.add_argument("--keras-backend", required=True, choices=sorted(FRAMEWORK))
    p.add_argument("--loss", choices=LOSSES, help="certify the targets of this reference loss only")
    p.add_argument("--reference-backend", default="numpy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-examples", type=int, default=20)
    p.add_argument(
        "--json", default="-", metavar="PATH", help="where to write the JSON report ('-': stdout)"
    )
    p.add_argument("--progress", action="store_true", help=f"print '{_PROGRESS} DONE TOTAL' lines")
    args = p.parse_args(argv)
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != args.keras_backend:
        p.error("keras is already imported with another backend")
    os.environ["KERAS_BACKEND"] = args.keras_backend
    if args.keras_backend == "jax":  # float64 needs x64, before Keras makes any array
        import jax

        jax.config.update("jax_enable_x64", True)
    from refsoftmax.conformance import certify_targets

    def progress(done: int, total: int, label: str) -> None:
        if args.progress:
            print(f"{_PROGRESS} {done} {total}", flush=True)

    with contextlib.redirect_stdout(sys.stderr) if args.json == "-" else contextlib.nullcontext():
        chosen = [t for t in targets() if args.loss in (None, t.loss)]
        report = certify_targets(
            chosen,
            library=LIBRARY,
            version=version(),
            backend=args.reference_backend,
            seed=args.seed,
            max_examples=args.max_examples,
            progress=progress,
        )
    if args.keras_backend == "jax":
        from refsoftmax.conformance.adapters._jax import mode

        report.notes.append(f"JAX: {mode()}")
    if args.json == "-":
        print(report.to_json())
    else:
        Path(args.json).write_text(report.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())

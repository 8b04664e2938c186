r"""Certifying vocab-parallel losses: ``certify(fn, ..., world_size=N)``.

A *vocab-parallel* (class-sharded) loss runs on every rank of a process group: rank
:math:`k` holds the block :math:`[o_k, o_k + C_k)` of the logits' classes, in rank order,
and the same labels (global class indices), and returns the loss, the same on every rank.
This module runs such a function on the ``N`` ranks of **one gloo process group on
127.0.0.1, started once per certification** (:class:`Pool`; a few seconds per rank to
import torch), and gives the engine what a single-process candidate would give: the value (rank 0's) and
the gradient (the concatenation of the ranks' blocks, each from autograd on its rank).  The
comparison with the dense reference, the finite-difference checks, the conventions and the
reports are therefore exactly those of an ordinary certification
(:func:`refsoftmax.conformance.engine.run_case`).  Checked on top, because only a sharded
function can get them wrong:

* **the ranks return the same loss**, bit for bit; otherwise the case is a ``fail`` whose
  message names the ranks and their values;
* a rank that raises where the others return, or that does not answer (a collective
  the others never enter), is a ``fail`` naming the ranks; the group is restarted;
* **no rank modifies its block of logits** (or the labels) in place.

What is sharded, and how (:class:`Sharding`): the case's logits ``[..., C]`` are cut along
the last axis into the blocks of a *layout* — ``"even"`` (C/N classes each, what
Megatron-core and fairscale require), ``"chunk"`` (``ceil(C/N)`` each, the last ones
smaller or empty: a ``Shard(-1)`` DTensor's layout), ``"uneven"`` (blocks proportional to
1, 2, …, N: rank 0 gets the fewest, an empty block for small C) or a callable.  A case the
layout cannot hold (``"even"``: C not a multiple of N; with ``empty_blocks=False``: a block
would be empty) is **widened** to the fewest classes it can hold, its extra columns copies
of its first ones (labels, class weights and out-of-range labels moved along); its name
says so (``basic/C6[float64]``).  Only ``sparse_softmax_cross_entropy`` is certified this
way (integer labels, classes on the last axis).

The function must be importable by the ranks (fresh ``python`` processes with this
process's ``sys.path``, which do not import its ``__main__``): pass ``"module:function"`` or
a function defined at the top level of a module.  It is called on every rank as
``fn(local_logits, labels, **options)`` with torch tensors (``local_logits`` requires grad;
``class_weights=``, when given, holds all C weights); the ranks have called
``torch.distributed.init_process_group("gloo")`` for the whole group and nothing else, so a
library's own state (Megatron's ``initialize_model_parallel``, a DTensor mesh) is the
function's to set up on its first call.  If ``fn`` has an attribute ``sharded_context`` (a
callable returning a context manager), every rank enters it around the forward *and* the
backward (``torch.distributed.tensor.parallel.loss_parallel`` needs its backward inside).
It may raise :class:`~refsoftmax.conformance.targets.Unsupported` for an option it cannot
express (the case is skipped).

By hand (a reproducer in a report does this)::

    from refsoftmax.conformance import sharded
    out = sharded.run("mypkg.losses:vocab_parallel_ce", logits, labels, world_size=2,
                      cotangent=np.ones(len(labels)))
    out.values        # the loss on each rank
    out.gradient      # the ranks' gradient blocks, concatenated
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import socket
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refsoftmax.conformance.cases import Case, generate
from refsoftmax.conformance.frameworks import Framework, register_framework
from refsoftmax.conformance.report import Report
from refsoftmax.conformance.targets import SPECS, Target, Unsupported

__all__ = [
    "FRAMEWORK",
    "LAYOUTS",
    "Pool",
    "Ranks",
    "Remote",
    "Sharding",
    "block_sizes",
    "certify_targets",
    "pool",
    "run",
]

LOSS = "sparse_softmax_cross_entropy"

#: The built-in layouts (``Sharding.layout``); a callable ``(C, N) -> sizes | None`` also works.
LAYOUTS = ("even", "chunk", "uneven")

#: The framework name of sharded targets (the candidate's arrays stay on this process, as
#: NumPy; the ranks build their torch tensors).
FRAMEWORK = "torch (sharded)"


# ------------------------------------------------------------------ layouts

def block_sizes(num_classes: int, world_size: int, layout: str | Callable[..., Any] = "even") -> list[int] | None:
    """The ranks' block sizes for ``num_classes`` classes, in rank order; ``None`` if the
    layout cannot hold that many.

    >>> block_sizes(6, 2), block_sizes(5, 2), block_sizes(5, 4, "chunk"), block_sizes(5, 2, "uneven")
    ([3, 3], None, [2, 2, 1, 0], [2, 3])
    """
    c, n = int(num_classes), int(world_size)
    if callable(layout):
        sizes = layout(c, n)
        return None if sizes is None else [int(s) for s in sizes]
    if layout == "even":
        return [c // n] * n if c % n == 0 else None
    if layout == "chunk":  # torch.chunk / DTensor Shard: ceil(C/N) each, the last ones smaller
        step = -(-c // n)
        return [max(0, min(step, c - k * step)) for k in range(n)]
    if layout == "uneven":  # proportional to 1, 2, ..., N (largest remainder)
        weights = np.arange(1, n + 1, dtype=np.float64)
        exact = c * weights / weights.sum()
        sizes = np.floor(exact).astype(np.int64)
        order = np.argsort(-(exact - sizes), kind="stable")
        sizes[order[: c - int(sizes.sum())]] += 1
        return [int(s) for s in sizes]
    msg = f"layout must be one of {list(LAYOUTS)} or a callable (C, N) -> sizes, got {layout!r}"
    raise ValueError(msg)


@dataclass(frozen=True)
class Sharding:
    """How a certification shards the classes: ``world_size`` ranks, a ``layout``, and
    whether a rank's block may be empty (``empty_blocks=False``: such cases are widened)."""

    world_size: int
    layout: str | Callable[..., Any] = "even"
    empty_blocks: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.world_size, int) or isinstance(self.world_size, bool) or self.world_size < 1:
            msg = f"world_size must be a positive int, got {self.world_size!r}"
            raise ValueError(msg)
        if not callable(self.layout) and self.layout not in LAYOUTS:
            msg = f"layout must be one of {list(LAYOUTS)} or a callable (C, N) -> sizes, got {self.layout!r}"
            raise ValueError(msg)

    def sizes(self, num_classes: int) -> list[int] | None:
        """The block sizes for ``num_classes``, ``None`` when this sharding cannot hold them."""
        sizes = block_sizes(num_classes, self.world_size, self.layout)
        if sizes is None:
            return None
        if len(sizes) != self.world_size or sum(sizes) != num_classes or min(sizes) < 0:
            msg = (f"layout {self.describe_layout()} gave blocks {sizes} for {num_classes} classes "
                   f"on {self.world_size} ranks")
            raise ValueError(msg)
        if not self.empty_blocks and min(sizes) == 0:
            return None
        return sizes

    def describe_layout(self) -> str:
        return self.layout if isinstance(self.layout, str) else _ref(self.layout)

    def describe(self) -> str:
        text = f"{self.world_size} ranks, layout {self.describe_layout()!r}"
        return text + ("" if self.empty_blocks else " without empty blocks")

    def prepare(self, case: Case) -> Case:
        """``case`` itself, or widened to the fewest classes this sharding can hold."""
        if case.loss != LOSS:
            msg = f"sharded certification runs {LOSS} cases only, got one of {case.loss}"
            raise ValueError(msg)
        z = case.inputs["logits"]
        c = int(z.shape[-1])
        wide = c
        while self.sizes(wide) is None:
            wide += 1
            if wide > max(64, 4 * c) + 4 * self.world_size:
                msg = f"layout {self.describe_layout()} holds no class count from {c} to {wide}"
                raise ValueError(msg)
        return case if wide == c else widen(case, wide)


def widen(case: Case, num_classes: int) -> Case:
    """``case`` with ``num_classes`` classes: the extra columns repeat the first ones.

    Labels keep their meaning: a valid label stays where it was; an out-of-range one (``≥ C``,
    not the ignore index) moves up by the number of added classes, so that it is still out
    of range.  Class weights are extended like the logits' columns.
    """
    z = case.inputs["logits"]
    c = int(z.shape[-1])
    extra = np.arange(num_classes - c) % max(c, 1)
    inputs = dict(case.inputs)
    inputs["logits"] = np.concatenate([z, z[..., extra]], axis=-1)
    labels = np.asarray(case.inputs["labels"])
    ignore = case.options.get("ignore_index")
    beyond = (labels >= c) if ignore is None else ((labels >= c) & (labels != ignore))
    inputs["labels"] = np.where(beyond, labels + (num_classes - c), labels)
    options = dict(case.options)
    if options.get("class_weights") is not None:
        w = np.asarray(options["class_weights"], np.float64)
        options["class_weights"] = np.concatenate([w, w[extra]])
    base, bracket, dtype = case.name.partition("[")
    return Case(f"{base}/C{num_classes}{bracket}{dtype}", case.loss, inputs, options, case.dtype,
                case.valid, case.tags)


# ------------------------------------------------------------------ the functions' references

def _ref(fn: Any) -> str:
    """``"module:qualname"`` of a function, or its ``repr`` when it has none."""
    if isinstance(fn, str):
        return fn
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        return f"{module}:{qualname}"
    return repr(fn)


def _resolve(fn: Any) -> Callable[..., Any]:
    """A ``"module:qualname"`` string imported (on a rank), or the callable itself."""
    if not isinstance(fn, str):
        return fn  # type: ignore[no-any-return,unused-ignore]
    import importlib

    module_name, sep, qualname = fn.partition(":")
    if not sep or not module_name or not qualname:
        msg = f"a sharded function must be 'module:function', got {fn!r}"
        raise ValueError(msg)
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return,unused-ignore]


def _payload(fn: Any) -> bytes:
    """``fn`` as the ranks receive it: its reference, or the callable pickled (by reference)."""
    if isinstance(fn, str):
        _check_ref(fn)
        return pickle.dumps(fn)
    if not callable(fn):
        msg = f"fn must be a callable or 'module:function', got {fn!r}"
        raise TypeError(msg)
    if getattr(fn, "__module__", None) == "__main__":
        msg = (f"{getattr(fn, '__qualname__', fn)!r} is defined in __main__, which the ranks do not import: "
               "move it to a module, or pass 'module:function'")
        raise ValueError(msg)
    try:
        return pickle.dumps(fn)
    except Exception as exc:
        msg = (f"the spawned ranks cannot import {_ref(fn)} ({type(exc).__name__}: {exc}): pass a "
               f"module-level function, or 'module:function'")
        raise ValueError(msg) from None


def _check_ref(ref: str) -> None:
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        msg = f"a sharded function must be 'module:function', got {ref!r}"
        raise ValueError(msg)


# ------------------------------------------------------------------ the ranks

def _loopback_interface() -> str | None:
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):  # pragma: no cover - no interface list on this platform
        return None
    return next((n for n in names if n == "lo"), next((n for n in names if n.startswith("lo")), None))


def _rank_entry(argv: list[str]) -> None:
    """A rank's process (``python -c ... _rank_entry``): ``rank world store_port conn_port threads``.

    It imports nothing of the parent's ``__main__`` (unlike ``multiprocessing`` spawn), so a
    script that starts a group needs no ``if __name__ == "__main__":`` guard.
    """
    import sys
    from multiprocessing.connection import Connection, answer_challenge

    rank, world_size, store_port, conn_port, threads = (int(v) for v in argv[:5])
    sock = socket.create_connection(("127.0.0.1", conn_port), timeout=120)
    sock.settimeout(None)
    conn = Connection(sock.detach())
    answer_challenge(conn, bytes.fromhex(os.environ.pop(_KEY_VARIABLE)))
    conn.send({"rank": rank})
    setup = conn.recv()
    sys.path[:0] = [p for p in setup["sys_path"] if p not in sys.path]
    try:
        import warnings

        warnings.simplefilter("ignore")  # peers' import-time warnings (Megatron: no Apex ...)
        iface = _loopback_interface()
        if iface and "GLOO_SOCKET_IFNAME" not in os.environ:
            os.environ["GLOO_SOCKET_IFNAME"] = iface  # the ranks talk over 127.0.0.1 only
        from datetime import timedelta

        import torch
        import torch.distributed as dist

        torch.set_num_threads(threads)
        store = dist.TCPStore("127.0.0.1", store_port, is_master=False, timeout=timedelta(seconds=120))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=120))
    except BaseException:
        conn.send({"id": 0, "rank": rank, "error": traceback.format_exc(limit=6)})
        return
    conn.send({"id": 0, "rank": rank})
    functions: dict[bytes, Any] = {}
    state: dict[str, Any] = {}
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            break
        if message is None:
            break
        try:
            reply = _answer(message, functions, state)
        except Unsupported as exc:
            reply = {"unsupported": str(exc)}
        except BaseException as exc:
            reply = {"error": f"{type(exc).__name__}: {_first_line(exc)}",
                     "trace": traceback.format_exc(limit=8)[-1500:]}
        reply.update(id=message["id"], rank=rank)
        conn.send(reply)
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


_KEY_VARIABLE = "REFSOFTMAX_SHARDED_KEY"


def _answer(message: dict[str, Any], functions: dict[bytes, Any], state: dict[str, Any]) -> dict[str, Any]:
    import torch

    if message["op"] == "backward":
        if not state:
            msg = "backward without a forward"
            raise RuntimeError(msg)
        leaf, value, enter = state["leaf"], state["value"], state["context"]
        ct = torch.tensor(np.asarray(message["cotangent"], np.float64), dtype=value.dtype)
        with enter():
            (grad,) = torch.autograd.grad(value, [leaf], ct, allow_unused=True)
        block = np.zeros(tuple(leaf.shape)) if grad is None else _host(grad)
        return {"grad": block}
    if message["op"] == "call":  # the benchmark and helpers: a function of the rank, by reference
        out = _resolve(pickle.loads(message["fn"]))(*message.get("args", ()))
        return {"result": out}
    state.clear()
    key = message["fn"]
    if key not in functions:
        functions[key] = _resolve(pickle.loads(key))
    fn = functions[key]
    context = getattr(fn, "sharded_context", None) or contextlib.nullcontext
    dtype = getattr(torch, message["dtype"])
    leaf = torch.tensor(message["logits"], dtype=dtype).requires_grad_(True)
    labels = torch.from_numpy(np.array(message["labels"], copy=True))
    kwargs = dict(message["options"])
    if message.get("class_weights") is not None:
        kwargs["class_weights"] = torch.tensor(message["class_weights"], dtype=dtype)
    before = leaf.detach().clone(), labels.clone()
    with context():
        value = fn(leaf, labels, **kwargs)
    if not isinstance(value, torch.Tensor):
        msg = f"returned a {type(value).__name__}, not a torch tensor"
        raise TypeError(msg)
    state.update(leaf=leaf, value=value, context=context)
    modified = [name for name, now, old in (("local_logits", leaf.detach(), before[0]),
                                            ("labels", labels, before[1])) if _changed(now, old)]
    return {"value": _host(value), "dtype": str(value.dtype).replace("torch.", ""), "modified": modified}


def _changed(now: Any, old: Any) -> bool:
    """Whether a tensor differs from its earlier copy (shape, or any entry; NaN equals NaN)."""
    import torch

    if tuple(now.shape) != tuple(old.shape) or now.dtype != old.dtype:
        return True
    if not now.is_floating_point():
        return not torch.equal(now, old)
    return not (torch.equal(now.isnan(), old.isnan())
                and torch.equal(torch.nan_to_num(now, nan=0.0), torch.nan_to_num(old, nan=0.0)))


def _host(x: Any) -> np.ndarray:
    import torch

    return np.asarray(x.detach().to(dtype=torch.float64).cpu().numpy())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


class Pool:
    """``world_size`` ranks of one gloo group on 127.0.0.1, started once, fed case by case.

    Each rank is a fresh ``python`` process (``subprocess``; the parent's ``sys.path``, its
    ``__main__`` not imported) talking to this one over an authenticated socket on
    127.0.0.1.  ``timeout`` bounds one exchange (seconds); once a rank has answered with an
    error the others get ``straggler`` more seconds (they may be waiting in a collective the
    failed rank never entered).  A rank that does not answer in time, or dies, breaks the
    group: every rank is stopped and the next exchange starts a new group.  Use as a context
    manager, or :func:`pool` to let every certification of that world size inside share it.
    """

    def __init__(self, world_size: int, *, timeout: float = 60.0, straggler: float = 5.0,
                 threads: int = 1) -> None:
        self.world_size = int(world_size)
        self.timeout, self.straggler, self.threads = float(timeout), float(straggler), int(threads)
        #: what the ranks got wrong since the last clear(): (kind, message) per forward/backward
        self.findings: list[tuple[str, str]] = []
        self.forwards = 0  # forwards since the last clear()
        self.starts = 0  # how many times a group was started (a failed rank restarts it)
        self.start_seconds: list[float] = []  # how long each start took
        self.broken = ""  # why the group could not be started (then it is not tried again)
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._store: Any = None
        self._logs: tempfile.TemporaryDirectory[str] | None = None
        self._next_id = 1

    # lifecycle
    def __enter__(self) -> Pool:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return bool(self._procs)

    def start(self) -> None:
        """Start the ranks and wait until every one has joined the group.

        A group that failed to start once is not tried again (``broken`` says why).
        """
        if self._procs:
            return
        if self.broken:
            raise RuntimeError(self.broken)
        import secrets
        import subprocess
        import sys
        from datetime import timedelta
        from multiprocessing.connection import Connection, deliver_challenge

        import torch.distributed as dist

        begin = time.perf_counter()
        key = secrets.token_bytes(32)
        self._store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                                    timeout=timedelta(seconds=120))
        self._logs = tempfile.TemporaryDirectory(prefix="refsoftmax-sharded-")
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env = {**os.environ, _KEY_VARIABLE: key.hex(),
               "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        failed: dict[int, str] = {}
        with socket.create_server(("127.0.0.1", 0)) as server:
            server.settimeout(1.0)
            port = server.getsockname()[1]
            code = f"import sys; from {__name__} import _rank_entry; _rank_entry(sys.argv[1:])"
            for rank in range(self.world_size):
                log = open(os.path.join(self._logs.name, f"rank{rank}.log"), "wb")  # noqa: SIM115
                args = [str(v) for v in (rank, self.world_size, self._store.port, port, self.threads)]
                self._procs.append(subprocess.Popen([sys.executable, "-c", code, *args], env=env,
                                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))
                log.close()
            conns: dict[int, Any] = {}
            deadline = time.monotonic() + max(self.timeout, 180.0)
            while len(conns) < self.world_size and time.monotonic() < deadline:
                if all(p.poll() is not None for r, p in enumerate(self._procs) if r not in conns):
                    break
                try:
                    sock, _ = server.accept()
                except TimeoutError:
                    continue
                sock.settimeout(None)
                conn = Connection(sock.detach())
                try:
                    deliver_challenge(conn, key)
                    hello = conn.recv()
                    conn.send({"sys_path": paths})
                except Exception:
                    conn.close()
                    continue
                conns[int(hello["rank"])] = conn
            self._conns = [conns.get(r) for r in range(self.world_size)]
        replies = self._collect(0, max(self.timeout, 180.0), 0.0)
        failed.update({r: str(rep.get("error")) for r, rep in replies.items() if rep.get("error")})
        for rank in range(self.world_size):
            if rank not in replies and rank not in failed:
                code_ = self._procs[rank].poll()
                tail = self.log_tail(rank, 400)
                failed[rank] = (("did not join the group in time" if code_ is None else f"exited with code {code_}")
                                + (f"; its output ends: {tail!r}" if tail else ""))
        if failed:
            details = "; ".join(f"rank {r}: {e}" for r, e in sorted(failed.items()))
            self.close()
            self.broken = f"the gloo group of {self.world_size} ranks did not start: {details}"
            raise RuntimeError(self.broken)
        self.starts += 1
        self.start_seconds.append(time.perf_counter() - begin)

    def close(self) -> None:
        """Stop every rank (politely, then by force)."""
        for conn in self._conns:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.send(None)
        deadline = time.monotonic() + 10.0
        for proc in self._procs:
            with contextlib.suppress(Exception):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(Exception):
                    proc.wait(5.0)
            if proc.poll() is None:  # pragma: no cover - a rank that ignores SIGTERM
                proc.kill()
                proc.wait(5.0)
        for conn in self._conns:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._procs, self._conns, self._store = [], [], None
        if self._logs is not None:
            self._logs.cleanup()
            self._logs = None

    def log_tail(self, rank: int, chars: int = 600) -> str:
        """The end of a rank's stdout/stderr (for an error message)."""
        if self._logs is None:
            return ""
        try:
            with open(os.path.join(self._logs.name, f"rank{rank}.log"), errors="replace") as fh:
                return fh.read()[-chars:]
        except OSError:
            return ""

    # exchanges
    def exchange(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``messages[r]`` to rank ``r``; every rank's reply, in rank order.

        A rank that does not answer gets ``{"error": ..., "silent": True}``; the group is then
        stopped (the next exchange starts a new one).
        """
        self.start()
        ident = self._next_id
        self._next_id += 1
        for rank, message in enumerate(messages):
            with contextlib.suppress(OSError, ValueError):  # a dead rank: found below
                self._conns[rank].send({**message, "id": ident})
        replies = self._collect(ident, self.timeout, self.straggler)
        if len(replies) < self.world_size:
            for rank in range(self.world_size):
                if rank not in replies:
                    code = self._procs[rank].poll()
                    what = f"died (exit code {code})" if code is not None else "did not answer"
                    replies[rank] = {"error": f"rank {rank} {what}", "silent": True,
                                     "trace": self.log_tail(rank)}
            self.close()
        return [replies[r] for r in range(self.world_size)]

    def _collect(self, ident: int, timeout: float, straggler: float) -> dict[int, dict[str, Any]]:
        from multiprocessing.connection import wait

        replies: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        live = {r: c for r, c in enumerate(self._conns) if c is not None}
        while len(replies) < self.world_size and live:
            now = time.monotonic()
            if now >= deadline:
                break
            ready = wait(list(live.values()), timeout=min(1.0, deadline - now))
            for conn in ready:
                rank = next(r for r, c in live.items() if c is conn)
                try:
                    reply: dict[str, Any] = live[rank].recv()
                except (EOFError, OSError):
                    live.pop(rank)  # the rank died
                    continue
                if reply.get("id") != ident:
                    continue  # a late answer to an exchange that timed out
                replies[rank] = reply
                live.pop(rank)
                if reply.get("error") and straggler:
                    deadline = min(deadline, time.monotonic() + straggler)
        return replies


_ACTIVE: dict[int, Pool] = {}


@contextlib.contextmanager
def pool(world_size: int, **kwargs: Any) -> Iterator[Pool]:
    """A :class:`Pool` that every certification (and :func:`run`) of ``world_size`` inside uses::

        with sharded.pool(2):                  # one group for both certifications
            conformance.certify("mypkg:ce_a", framework="torch", world_size=2)
            conformance.certify("mypkg:ce_b", framework="torch", world_size=2)
    """
    if world_size in _ACTIVE:
        yield _ACTIVE[world_size]
        return
    p = Pool(world_size, **kwargs)
    _ACTIVE[world_size] = p
    try:
        p.start()
        yield p
    finally:
        _ACTIVE.pop(world_size, None)
        p.close()


def _active(world_size: int) -> Pool:
    if world_size not in _ACTIVE:
        msg = (f"no group of {world_size} ranks is running: use sharded.certify_targets, "
               f"sharded.run, or `with sharded.pool({world_size}):`")
        raise RuntimeError(msg)
    return _ACTIVE[world_size]


# ------------------------------------------------------------------ the candidate, seen from here

@dataclass
class Host:
    """A case input as the sharded framework hands it to a target: the (rounded) float64 or
    integer array, and the dtype the ranks build their tensors in (``None``: as is)."""

    array: np.ndarray
    dtype: str | None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


class RankError(RuntimeError):
    """Every rank raised (or some did and the case fails for it): the ranks' messages."""


@dataclass
class RankValues:
    """What a forward on every rank returned: rank 0's value, and how to get the gradient."""

    value: np.ndarray
    values: list[np.ndarray]  # every rank's
    pool: Pool

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    def backward(self, cotangent: np.ndarray) -> np.ndarray:
        """The ranks' gradient blocks for ``cotangent``, concatenated along the classes."""
        replies = self.pool.exchange([{"op": "backward", "cotangent": np.asarray(cotangent)}]
                                     * self.pool.world_size)
        errors = {r: rep for r, rep in enumerate(replies) if "grad" not in rep}
        if errors:
            split = _split_message("backward", replies, self.pool.straggler)
            if split:
                self.pool.findings.append(("raised", split))
            raise RankError(_error_summary("backward", errors, self.pool.world_size))
        return np.concatenate([rep["grad"] for rep in replies], axis=-1)


class Remote:
    """``fn`` on every rank of the running group, called from here with the reference signature.

    ``remote(logits, labels, class_weights=None, **options)`` takes :class:`Host` arrays (or
    NumPy arrays, sent in float64), cuts the logits into the blocks of ``sharding`` and
    returns :class:`RankValues`.  What the ranks got wrong (different losses, some raising,
    inputs modified in place) goes to the pool's ``findings``.
    """

    def __init__(self, fn: Any, sharding: Sharding) -> None:
        self.fn, self.sharding = fn, sharding
        self.payload = _payload(fn)
        self.reference = _ref(fn)

    def __call__(self, logits: Any, labels: Any, class_weights: Any = None, **options: Any) -> RankValues:
        p = _active(self.sharding.world_size)
        z, dtype = (logits.array, logits.dtype) if isinstance(logits, Host) else (np.asarray(logits), None)
        t = labels.array if isinstance(labels, Host) else np.asarray(labels)
        w = class_weights.array if isinstance(class_weights, Host) else class_weights
        dtype = dtype or "float64"
        c = int(np.shape(z)[-1]) if np.ndim(z) else 0
        sizes = self.sharding.sizes(c)
        if sizes is None:
            msg = f"{c} classes do not fit the sharding ({self.sharding.describe()})"
            raise Unsupported(msg)
        offsets = np.cumsum([0, *sizes])
        messages = [{"op": "forward", "fn": self.payload, "dtype": dtype,
                     "logits": np.ascontiguousarray(z[..., offsets[r]:offsets[r + 1]]),
                     "labels": t, "class_weights": None if w is None else np.asarray(w),
                     "options": options} for r in range(p.world_size)]
        replies = p.exchange(messages)
        p.forwards += 1
        unsupported = [rep["unsupported"] for rep in replies if "unsupported" in rep]
        if len(unsupported) == len(replies):
            raise Unsupported(unsupported[0])
        errors = {r: rep for r, rep in enumerate(replies) if "value" not in rep}
        if errors:
            split = _split_message("forward", replies, p.straggler)
            if split:
                p.findings.append(("raised", split))
            raise RankError(_error_summary("forward", errors, p.world_size))
        values = [rep["value"] for rep in replies]
        different = _different(values)
        if different:
            p.findings.append(("values", different))
        modified = sorted({name for rep in replies for name in rep["modified"]})
        for name in modified:
            ranks = [r for r, rep in enumerate(replies) if name in rep["modified"]]
            p.findings.append((f"modified {name}", f"modified its input {name} in place on "
                               f"{_ranks(ranks, p.world_size)} (a loss must leave its arguments unchanged)"))
        return RankValues(values[0], values, p)

    def expression(self) -> str:
        """The reproducer's call (``Target.expression``): the loss on every rank."""
        layout = self.sharding.layout if isinstance(self.sharding.layout, str) else _ref(self.sharding.layout)
        extra = "" if self.sharding.empty_blocks else ", empty_blocks=False"
        text = (f"sharded.run({self.reference!r}, logits, labels, world_size={self.sharding.world_size}, "
                f"layout={layout!r}{extra}, dtype='{{dtype}}', class_weights={{w}}, backward=True, "
                "**options).values")
        return text.replace("{", "{{").replace("}", "}}").replace("{{dtype}}", "{dtype}").replace("{{w}}", "{w}")


def _ranks(ranks: Iterable[int], world_size: int) -> str:
    ranks = list(ranks)
    if len(ranks) == world_size and world_size > 1:
        return "every rank"
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(str(r) for r in ranks)


def _different(values: list[np.ndarray]) -> str:
    """``""`` when every rank returned the same value; else a message naming the ranks."""
    shapes = {tuple(np.shape(v)) for v in values}
    if len(shapes) > 1:
        return "the ranks returned values of different shapes: " + "; ".join(
            f"rank {r}: {tuple(np.shape(v))}" for r, v in enumerate(values))
    first = values[0]
    same = [bool(np.array_equal(v, first, equal_nan=True)) for v in values]
    if all(same):
        return ""
    stacked = np.stack([np.asarray(v, np.float64).reshape(-1) for v in values])
    differs = ~np.all((stacked == stacked[:1]) | (np.isnan(stacked) & np.isnan(stacked[:1])), axis=0)
    i = int(np.flatnonzero(differs)[0])
    groups: dict[str, list[int]] = {}
    for r in range(len(values)):
        groups.setdefault(repr(float(stacked[r, i])), []).append(r)
    index = ", ".join(str(int(j)) for j in np.unravel_index(i, np.shape(first))) if np.ndim(first) else ""
    parts = [f"{v} on {_ranks(rs, 0)}" for v, rs in groups.items()]
    count = int(differs.sum())
    return (f"the ranks returned different losses: value{f'[{index}]' if index else ''} is " + ", ".join(parts)
            + (f" ({count} of {differs.size} values differ)" if differs.size > 1 else ""))


def _error_summary(step: str, errors: dict[int, dict[str, Any]], world_size: int) -> str:
    messages: dict[str, list[int]] = {}
    for rank, rep in errors.items():
        text = "no answer" if rep.get("silent") else str(rep.get("error", "no answer"))
        messages.setdefault(text, []).append(rank)
    return "; ".join(f"{msg} (on {_ranks(rs, world_size)}, in the {step})" for msg, rs in messages.items())


def _split_message(step: str, replies: list[dict[str, Any]], straggler: float) -> str:
    """``""`` unless some ranks raised and others did not: then a message naming both."""
    n = len(replies)
    raised = [r for r, rep in enumerate(replies) if rep.get("error") and not rep.get("silent")]
    silent = [r for r, rep in enumerate(replies) if rep.get("silent")]
    answered = [r for r, rep in enumerate(replies) if not rep.get("error")]
    if not raised or len(raised) == n:
        return ""  # every rank raised (an ordinary exception of the function), or none did
    errors = _error_summary(step, {r: replies[r] for r in raised}, n)
    others = []
    if answered:
        others.append(f"{_ranks(answered, n)} returned normally")
    if silent:
        others.append(f"{_ranks(silent, n)} did not answer within {straggler:g} s (waiting, it seems, "
                      f"in a collective the raising rank never entered)")
    return f"the ranks disagree: {errors}, while " + " and ".join(others)


# ------------------------------------------------------------------ the framework driver

class ShardedFramework(Framework):
    """Inputs stay NumPy here (:class:`Host`); the ranks hold the tensors and run autograd."""

    name = FRAMEWORK
    module = "torch"
    dtypes = ("float64", "float32", "float16", "bfloat16")
    import_line = "from refsoftmax.conformance import sharded"

    def distribution(self) -> str:
        return "torch"

    def to_array(self, x: np.ndarray, dtype: str | None) -> Any:
        return Host(np.array(x, dtype=np.float64 if dtype else None, copy=True), dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, Host):
            return np.array(x.array, copy=True)
        if isinstance(x, RankValues):
            return np.asarray(x.value, np.float64)
        return np.asarray(x, dtype=np.float64)

    def vjp(self, fn, args, wrt, cotangent):  # type: ignore[no-untyped-def,unused-ignore]
        out = fn(**args)  # every rank ran the forward and keeps its graph
        if not isinstance(out, RankValues):
            msg = f"a sharded target returned {type(out).__name__}, not the ranks' values"
            raise TypeError(msg)
        grads = {name: out.backward(cotangent) for name in wrt if name == "logits"}
        return self.to_numpy(out), grads


register_framework(ShardedFramework())


# ------------------------------------------------------------------ running a certification

def sharded_target(fn: Any, sharding: Sharding, *, library: str, function: str,
                   call: Callable[[Remote, dict[str, Any], dict[str, Any]], Any] | None = None,
                   **fields: Any) -> Target:
    """A :class:`Target` running ``fn`` on the ranks of ``sharding``.

    ``call(remote, inputs, options)`` translates a case for ``fn`` (raising
    :class:`Unsupported` for what it cannot express) and calls ``remote``; the default
    passes every option and ``class_weights`` on.  ``fields`` are further ``Target`` fields
    (``conventions``, ``compute_dtype``, ``preconditions``, ``convention_doc``, ``notes``).
    """
    remote = Remote(fn, sharding)
    translate = call or _pass_through

    def target_call(inputs: dict[str, Any], options: dict[str, Any]) -> Any:
        return translate(remote, inputs, options)

    return Target(library, function, LOSS, FRAMEWORK, target_call, wrt=("logits",),
                  expression=remote.expression(), imports="from refsoftmax.conformance import sharded",
                  **fields)


def _pass_through(remote: Remote, inputs: dict[str, Any], options: dict[str, Any]) -> Any:
    kwargs = dict(options)
    if "class_weights" in inputs:
        kwargs["class_weights"] = inputs["class_weights"]
    return remote(inputs["logits"], inputs["labels"], **kwargs)


def certify_targets(targets: Iterable[Target], sharding: Sharding, *, library: str, version: str,
                    backend: str = "numpy", seed: int = 0, max_examples: int = 20,
                    cases: Sequence[Case] | None = None, dtypes: tuple[str, ...] | None = None,
                    progress: Callable[[int, int, str], None] | None = None, timeout: float = 60.0) -> Report:
    """Certify sharded targets on one group of ``sharding.world_size`` ranks (started here,
    unless :func:`pool` holds one of that size).

    ``cases`` replaces the generated cases (``generate(LOSS, seed=, max_examples=)``), e.g. a
    few for a test; every case is first :meth:`Sharding.prepare`-d (widened if the layout
    cannot hold it).  Each case runs through :func:`~refsoftmax.conformance.engine.run_case`;
    what the ranks got wrong on top (:class:`Pool` ``findings``) turns its result into a
    ``fail`` with those messages first.
    """
    from refsoftmax.conformance.cases import DTYPES
    from refsoftmax.conformance.engine import run_case

    targets = list(targets)
    for t in targets:
        if t.loss != LOSS or t.framework != FRAMEWORK:
            msg = f"{t.function}: a sharded target certifies {LOSS} on the {FRAMEWORK!r} framework"
            raise ValueError(msg)
    start = time.perf_counter()
    report = Report(library, version, backend, seed=seed, max_examples=max_examples)
    chosen = list(cases) if cases is not None else generate(LOSS, seed=seed, max_examples=max_examples,
                                                            dtypes=dtypes or DTYPES)
    prepared = [sharding.prepare(c) for c in chosen]
    widened = sum(p is not c for p, c in zip(prepared, chosen, strict=True))
    plan = [(t, c) for t in targets for c in prepared]
    shared = sharding.world_size in _ACTIVE
    with pool(sharding.world_size, timeout=timeout) as group:
        starts_before = group.starts
        for i, (target, case) in enumerate(plan):
            group.findings.clear()
            group.forwards = 0
            case_seed = zlib.crc32(f"{seed}/{target.function}/{case.name}".encode())
            result = run_case(target, case, backend=backend, seed=case_seed)
            if group.findings and result.status != "skipped":
                result = _rank_failure(result, target, case, _summarise(group), backend)
            if result.status == "fail":
                result.message = _owners(result.message, sharding.sizes(int(case.inputs["logits"].shape[-1])))
            report.results.append(result)
            if progress is not None:
                progress(i + 1, len(plan), target.function)
        restarts = group.starts - starts_before
        startup = group.start_seconds[-1 - restarts] if not shared else 0.0
    report.seconds = time.perf_counter() - start
    report.notes.append(
        f"run on {sharding.describe()}: one gloo process group on 127.0.0.1"
        + (f" (started in {startup:.1f} s)" if not shared else
           f" (shared with other certifications; started in {group.start_seconds[0]:.1f} s)")
        + (f", restarted {restarts} time(s) after a rank failed to answer" if restarts > 0 else "")
        + f"; {widened} of {len(chosen)} cases widened to a class count the layout holds "
        "(their names end in /C<classes>; the extra columns repeat the first ones)")
    return report


_GRADIENT_ENTRY = re.compile(r"d/dlogits\[((?:\d+, )*)(\d+)\]")


def _owners(message: str, sizes: list[int] | None) -> str:
    """``message`` with each gradient entry it names followed by the rank whose block holds it:
    ``d/dlogits[0, 4] (rank 1's block) is ...``."""
    if not sizes:
        return message
    ends = np.cumsum(sizes)

    def name(m: re.Match[str]) -> str:
        rank = int(np.searchsorted(ends, int(m.group(2)), side="right"))
        return f"{m.group(0)} (rank {rank}'s block)" if rank < len(sizes) else m.group(0)

    return _GRADIENT_ENTRY.sub(name, message)


def _summarise(group: Pool) -> list[str]:
    """The first finding of each kind, and in how many of the case's evaluations it occurred
    (a case is evaluated several times: the comparison, the finite differences)."""
    first: dict[str, str] = {}
    count: dict[str, int] = {}
    for kind, message in group.findings:
        first.setdefault(kind, message)
        count[kind] = count.get(kind, 0) + 1
    return [msg + (f" (in {count[k]} of the case's {group.forwards} evaluations)" if group.forwards > 1 else "")
            for k, msg in first.items()]


def _rank_failure(result: Any, target: Target, case: Case, findings: list[str], backend: str) -> Any:
    """``result`` as a ``fail`` led by what the ranks got wrong, with a reproducer."""
    from refsoftmax.conformance import engine

    spec = SPECS[target.loss]
    previous = result.message if result.status in ("fail", "error") else ""
    result.status = "fail"
    result.checks["ranks"] = "FAIL"
    result.message = " | ".join([*findings, *([previous] if previous else [])])
    if not result.reproducer:
        inputs = case.rounded()
        options = {k: v for k, v in case.rounded_options().items() if k not in spec.array_options}
        plan = engine._plan(spec, target, inputs, options, backend) if case.valid else engine._Plan()
        result.reproducer = engine.reproducer(target, case, inputs, options, plan)
    return result


# ------------------------------------------------------------------ by hand

@dataclass
class Ranks:
    """What :func:`run` returns: the loss on each rank, the concatenated gradient (if a
    cotangent was given), and what the ranks got wrong (:class:`Pool` ``findings``)."""

    values: list[np.ndarray]
    gradient: np.ndarray | None = None
    findings: list[str] = field(default_factory=list)


def run(fn: Any, logits: Any, labels: Any, *, world_size: int, layout: Any = "even",
        empty_blocks: bool = True, dtype: str = "float64", class_weights: Any = None,
        cotangent: Any = None, backward: bool = False, **options: Any) -> Ranks:
    """``fn`` on ``world_size`` ranks for one input: each rank's loss, and the gradient.

    Starts a group (and stops it) unless :func:`pool` holds one of that size.  The logits
    are cut into the blocks of ``layout`` and built in ``dtype`` on every rank; with a
    ``cotangent`` (``backward=True``: ones) every rank back-propagates it and the blocks are
    concatenated.  A rank's exception is raised (:class:`RankError`).
    """
    sharding = Sharding(world_size, layout if not isinstance(layout, str) or layout in LAYOUTS
                        else _resolve(layout), empty_blocks)
    remote = Remote(fn, sharding)
    z = np.asarray(logits, np.float64)
    host = {"logits": Host(z, dtype), "labels": Host(np.asarray(labels), None)}
    w = None if class_weights is None else Host(np.asarray(class_weights, np.float64), dtype)
    with pool(world_size) as group:
        group.findings.clear()
        out = remote(host["logits"], host["labels"], class_weights=w, **options)
        if cotangent is None and backward:
            cotangent = np.ones(out.shape)
        gradient = None if cotangent is None else out.backward(np.asarray(cotangent, np.float64))
        return Ranks(out.values, gradient, [message for _, message in group.findings])


# ------------------------------------------------------------------ the self-check, adapters

def reference(local_logits: Any, labels: Any, **options: Any) -> Any:
    """refsoftmax's own :func:`refsoftmax.distributed.sparse_softmax_cross_entropy` on a rank,
    differentiable through :func:`refsoftmax.bridges.torch_autograd`: the harness's self-check
    (``certify("refsoftmax.conformance.sharded:reference", framework="torch", world_size=2,
    layout="uneven", options=...)`` passes every case)."""
    from refsoftmax import distributed
    from refsoftmax.bridges import torch_autograd

    return torch_autograd(distributed.sparse_softmax_cross_entropy)(local_logits, labels, **options)


def certify_adapter(module: Any, *, world_sizes: Sequence[int] | None = None, backend: str = "numpy",
                    seed: int = 0, max_examples: int = 20, cases: Sequence[Case] | None = None,
                    progress: Callable[[int, int, str], None] | None = None) -> Report:
    """A sharded adapter's certification at each of its world sizes, merged into one report.

    ``module`` defines ``LIBRARY``, ``version()``, ``WORLD_SIZES``, ``sharding(world_size)``
    and ``targets(world_size)``; one group is started per world size.
    """
    sizes = tuple(world_sizes or module.WORLD_SIZES)
    merged = Report(module.LIBRARY, module.version(), backend, seed=seed, max_examples=max_examples)
    for n in sizes:
        part = certify_targets(module.targets(n), module.sharding(n), library=module.LIBRARY,
                               version=merged.version, backend=backend, seed=seed,
                               max_examples=max_examples, cases=cases, progress=progress)
        merge(merged, part, f"world size {n}")
    return merged


def merge(report: Report, part: Report, label: str | None = None) -> None:
    """Append ``part``'s results, notes (with ``label``: prefixed, and its time) and time to ``report``."""
    report.results += part.results
    report.notes += [note if label is None else f"{label}: {note} ({part.seconds:.1f} s in all)"
                     for note in part.notes]
    report.seconds += part.seconds

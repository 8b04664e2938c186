"""Draw the charts of ``docs/performance.md`` from the benchmark results and the accuracy table.

Run from anywhere: ``python docs/scripts/performance_charts.py``.  It reads

* ``benchmarks/results/bench_sparse_ce.md``, ``bench_sampled_softmax.md`` and
  ``bench_linear_softmax.md`` (the time tables: each implementation's median time as a
  multiple of the fastest peer's, or of the peer's where there is one);
* the memory tables of ``benchmarks/results/bench_linear_softmax*.md``: peak memory of the
  chunked linear loss for each chunk size measured at C = 262,144, and for the default chunk
  size at each vocabulary size measured (``--results-tag vocab-C`` runs);
* ``docs/accuracy.md``'s table (worst error in ulps per function and quantity);

and writes ``speed_vs_fastest_peer.svg``, ``linear_memory_vs_chunk_size.svg``,
``linear_memory_vs_vocabulary.svg`` and ``accuracy_ulps.svg`` into ``docs/images/performance/``.  The SVGs are deterministic (fixed
hash salt, no date or creator metadata, glyphs as paths), so re-running it on unchanged
inputs leaves the files unchanged.  Needs matplotlib (the ``docs`` extra).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
ACCURACY = ROOT / "docs" / "accuracy.md"
OUT = ROOT / "docs" / "images" / "performance"

OURS, PEER, OTHER = "#3f51b5", "#ef6c00", "#9e9e9e"
RC = {
    "svg.hashsalt": "refsoftmax-docs",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
METADATA = {"Date": None, "Creator": None}


# ----------------------------------------------------------------------------- parsing


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every pipe table in ``text`` as a list of rows (header → cell)."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 3 and set("".join(block[1])) <= set("-: "):
            tables.append([dict(zip(block[0], row, strict=False)) for row in block[2:]])
        block = []
    return tables


def _table_with(path: Path, column: str) -> list[dict[str, str]]:
    for table in markdown_tables(path.read_text(encoding="utf-8")):
        if table and column in table[0]:
            return table
    raise SystemExit(f"performance_charts: no table with a {column!r} column in {path}")


_ASCII_ROW = re.compile(r"^(?P<name>\S.*?)\s+(?P<median>[\d.]+)\s+(?P<iqr>[\d.]+)\s+(?P<min>[\d.]+)\s+(?P<ratio>[\d.]+)$")


def ascii_ratio_table(path: Path) -> list[tuple[str, float]]:
    """(implementation, × fastest peer) from bench_sparse_ce.py's text table."""
    rows, inside = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("implementation") and "fastest peer" in line:
            inside = True
            continue
        if inside and set(line) == {"-"}:
            continue
        if inside:
            match = _ASCII_ROW.match(line.strip())
            if match is None:
                break
            rows.append((match.group("name"), float(match.group("ratio"))))
    if not rows:
        raise SystemExit(f"performance_charts: no '× fastest peer' table in {path}")
    return rows


def _setup_line(path: Path) -> str:
    """The benchmark's one-line description of its problem (shapes, dtype)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if "forward + backward" in line:
            return line.strip().strip("`")
    return ""


def _shape(setup: str) -> str:
    found = re.findall(r"\b[BCDS]=[\d,\[\] ]+(?: × C=\d+)?", setup)
    return ", ".join(part.strip().rstrip(",") for part in found)


@dataclass
class Benchmark:
    title: str
    ratio_label: str
    rows: list[tuple[str, float]]


def speed_benchmarks() -> list[Benchmark]:
    sparse = RESULTS / "bench_sparse_ce.md"
    sampled = RESULTS / "bench_sampled_softmax.md"
    linear = RESULTS / "bench_linear_softmax.md"
    out = [Benchmark(f"sparse softmax cross-entropy ({_shape(_setup_line(sparse))})", "× fastest peer (optax-jit)",
                     ascii_ratio_table(sparse))]
    column = "× fastest TF sampled"
    out.append(Benchmark(f"sampled softmax ({_shape(_setup_line(sampled))})", f"{column} (tf-function)",
                         [(r["implementation"] + ("" if r["kind"] == "sampled" else " [full softmax]"),
                           float(r[column])) for r in _table_with(sampled, column)]))
    column = "× torch-materialised"
    out.append(Benchmark(f"linear softmax cross-entropy ({_shape(_setup_line(linear))})", f"{column} (the peer)",
                         [(r["implementation"], float(r[column])) for r in _table_with(linear, column)]))
    return out


@dataclass
class MemoryPoint:
    chunk: int
    peak: float
    working: float  # peak − the returned gradients
    source: str  # the measured commit


def linear_memory() -> tuple[list[MemoryPoint], dict[str, float]]:
    """The chunked runs (one point per chunk size: the first file by name that measured it)
    and the reference lines."""
    points: dict[int, MemoryPoint] = {}
    refs: dict[str, float] = {}
    column = "tracemalloc peak MiB"
    for path in sorted(RESULTS.glob("bench_linear_softmax*.md")):
        text = path.read_text(encoding="utf-8")
        if column not in text or _classes(text) != 262144:  # the chunk sweep is at C = 262,144
            continue
        commit = re.search(r"^commit\s*:\s*(\S+)", text, re.M)
        source = f"commit {commit.group(1)}" if commit else path.name
        for row in _table_with(path, column):
            name = row["implementation"]
            if name.startswith("refsoftmax-chunked") and row["chunk_size"]:
                chunk = int(row["chunk_size"])
                points.setdefault(chunk, MemoryPoint(chunk, float(row[column]),
                                                     float(row["peak − returned MiB"]), source))
            elif name == "numpy-materialised":
                refs["numpy, materialised logits (tracemalloc)"] = float(row[column])
            elif name == "torch-materialised":
                refs["torch, materialised logits (RSS)"] = float(row["RSS peak increase MiB"])
        match = re.search(r"\(\[B, C\] logits: ([\d.]+) GiB\)", text)
        if match:
            refs["the [B, C] logits themselves"] = float(match.group(1)) * 1024
    if not points:
        raise SystemExit("performance_charts: no memory table of the chunked linear loss in benchmarks/results/")
    return sorted(points.values(), key=lambda p: p.chunk), refs


def accuracy_table() -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """Row labels and, per dtype, per backend, the worst ulps (``docs/accuracy.md``)."""
    table = _table_with(ACCURACY, "numpy float64")
    labels = [f"{r['function'].strip('`')} — {r['quantity']}" for r in table]
    values: dict[str, dict[str, list[float]]] = {"float64": {}, "float32": {}}
    for dtype, per_backend in values.items():
        for column in table[0]:
            backend, _, kind = column.partition(" ")
            if kind == dtype:
                per_backend[backend] = [float(r[column].strip("*")) for r in table]
    return labels, values


# ----------------------------------------------------------------------------- charts


def _category(name: str) -> str:
    if name.startswith("refsoftmax"):
        return OURS
    return PEER if "(peer)" in name else OTHER


def chart_speed(path: Path) -> None:
    benchmarks = speed_benchmarks()
    heights = [len(b.rows) for b in benchmarks]
    fig, axes = plt.subplots(len(benchmarks), 1, figsize=(7.5, 0.28 * sum(heights) + 1.2 * len(benchmarks) + 0.5),
                             gridspec_kw={"height_ratios": heights})
    for ax, bench in zip(axes, benchmarks, strict=True):
        names = [n for n, _ in bench.rows][::-1]
        ratios = [r for _, r in bench.rows][::-1]
        # bars from 1× (the fastest peer): to the left faster, to the right slower
        ax.barh(names, [r - 1.0 for r in ratios], left=1.0, color=[_category(n) for n in names], height=0.65)
        ax.set_xscale("log")
        lo, hi = min(*ratios, 1.0) / 1.6, max(*ratios, 1.0) * 2.2
        ax.set_xlim(lo, hi)
        ax.set_xticks([t for t in (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if lo <= t <= hi])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
        ax.axvline(1.0, color="black", linewidth=0.8)
        for y, ratio in enumerate(ratios):
            ax.text(max(ratio, 1.0) * 1.05, y, f"{ratio:.2f}×", va="center", fontsize=8)
        ax.set_title(bench.title, fontsize=9, loc="left")
        ax.set_xlabel(f"median time, {bench.ratio_label}; log scale, left of 1× is faster", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in (OURS, PEER, OTHER)]
    fig.legend(handles, ["refsoftmax", "peer library", "baseline"], loc="upper left", bbox_to_anchor=(0.0, 0.975),
               ncols=3, fontsize=8, frameon=False)
    fig.suptitle("Forward + backward time relative to the fastest peer", x=0.01, ha="left", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)


def _classes(text: str) -> int | None:
    match = re.search(r"\bC=(\d+)", text)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class VocabPoint:
    classes: int
    chunked_peak: float
    chunked_working: float
    materialised: float | None
    logits: float


def vocabulary_memory() -> list[VocabPoint]:
    """One point per vocabulary size: the default-chunk runs of every memory table."""
    column = "tracemalloc peak MiB"
    points: dict[int, VocabPoint] = {}
    for path in sorted(RESULTS.glob("bench_linear_softmax*.md")):
        text = path.read_text(encoding="utf-8")
        classes = _classes(text)
        logits = re.search(r"\(\[B, C\] logits: ([\d.]+) ([GM])iB\)", text)
        if column not in text or classes is None or logits is None or classes in points:
            continue
        size = float(logits.group(1)) * (1024 if logits.group(2) == "G" else 1)
        rows = _table_with(path, column)
        chunked = [r for r in rows if r["implementation"] == "refsoftmax-chunked[default]"]
        numpy_rows = [r for r in rows if r["implementation"] == "numpy-materialised"]
        if not chunked:
            continue
        points[classes] = VocabPoint(classes, float(chunked[0][column]), float(chunked[0]["peak − returned MiB"]),
                                     float(numpy_rows[0][column]) if numpy_rows else None, size)
    return sorted(points.values(), key=lambda p: p.classes)


def chart_vocabulary(path: Path) -> None:
    points = vocabulary_memory()
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    c = [p.classes for p in points]
    ax.plot(c, [p.logits for p in points], color="black", linestyle=":", label="the [B, C] logits themselves")
    mat = [(p.classes, p.materialised) for p in points if p.materialised is not None]
    ax.plot([m[0] for m in mat], [m[1] for m in mat], marker="^", color=PEER,
            label="NumPy, materialised logits: peak (tracemalloc)")
    ax.plot(c, [p.chunked_peak for p in points], marker="o", color=OURS,
            label="refsoftmax chunked: peak (incl. the returned gradients)")
    ax.plot(c, [p.chunked_working for p in points], marker="s", color=OURS, linestyle=":",
            label="refsoftmax chunked: peak − returned gradients")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(c, [f"{v:,}" for v in c])
    ax.set_xlabel("vocabulary size C (classes)")
    ax.set_ylabel("memory, MiB (log scale)")
    ax.set_title("linear_softmax_cross_entropy, forward + backward: memory vs vocabulary\n"
                 "B = 4096, D = 256, float32, default chunk size", fontsize=9, loc="left")
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)


def chart_memory(path: Path) -> None:
    points, refs = linear_memory()
    fig, ax = plt.subplots(figsize=(7.5, 5.4))
    chunks = [p.chunk for p in points]
    ax.plot(chunks, [p.peak for p in points], marker="o", color=OURS,
            label="refsoftmax chunked: peak (incl. the returned gradients)")
    ax.plot(chunks, [p.working for p in points], marker="s", color=OURS, linestyle=":",
            label="refsoftmax chunked: peak − returned gradients")
    for p in points:
        ax.annotate(f"{p.peak:.0f} MiB\n{p.source}", (p.chunk, p.peak), textcoords="offset points",
                    xytext=(0, 8), ha="center", fontsize=7)
    styles = iter([(PEER, "-."), (OTHER, "--"), ("black", ":")])
    for label, value in sorted(refs.items(), key=lambda kv: -kv[1]):
        color, style = next(styles, (OTHER, "-"))
        ax.axhline(value, color=color, linestyle=style, linewidth=1, label=f"{label}: {value:.0f} MiB")
    logits = refs.get("the [B, C] logits themselves")
    if logits:
        ax.axhline(0.1 * logits, color="#2e7d32", linewidth=1, label=f"target: 10 % of the logits ({0.1 * logits:.0f} MiB)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(chunks, [f"{c:,}" for c in chunks])
    ax.set_xlim(chunks[0] / 1.5, chunks[-1] * 1.5)
    ax.set_yscale("log")
    ax.set_xlabel("chunk_size (classes per chunk)")
    ax.set_ylabel("memory, MiB (log scale)")
    ax.set_title("linear_softmax_cross_entropy, forward + backward: memory vs chunk size\n"
                 "B = 4096, C = 262,144, D = 256, float32 (every run is at this one vocabulary size)",
                 fontsize=9, loc="left")
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)


def chart_accuracy(path: Path) -> None:
    labels, values = accuracy_table()
    bounds = {"float64": 8.0, "float32": 4.0}  # tests/accuracy/test_accuracy.py (docs/accuracy.md)
    markers = {"numpy": ("o", OURS), "torch": ("^", PEER), "jax": ("s", "#2e7d32")}
    fig, axes = plt.subplots(1, 2, sharey=True, figsize=(8.5, 0.2 * len(labels) + 1.8))
    y = list(range(len(labels)))[::-1]
    for ax, (dtype, per_backend) in zip(axes, values.items(), strict=True):
        # each backend on its own sub-row, so that equal values do not hide each other
        for k, (backend, ulps) in enumerate(per_backend.items()):
            marker, color = markers.get(backend, ("x", OTHER))
            offset = 0.25 * (1 - k)
            ax.scatter(ulps, [v + offset for v in y], marker=marker, s=14, color=color,
                       label=f"{backend} {dtype}", linewidths=0)
        ax.axvline(bounds[dtype], color="#c62828", linestyle="--", linewidth=1,
                   label=f"bound: {bounds[dtype]:g} ulp")
        ax.set_xlim(0, max(bounds[dtype], *(max(v) for v in per_backend.values())) * 1.08)
        ax.set_title(dtype, fontsize=9)
        ax.set_xlabel("worst error, ulps")
        ax.grid(axis="x", linewidth=0.4, alpha=0.5)
        for row in y[::2]:
            ax.axhspan(row - 0.5, row + 0.5, color="#f2f2f2", zorder=0, linewidth=0)
        ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.02 + 0.6 / len(labels)), ncols=2,
                  frameon=False)
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[0].set_ylim(-0.6, len(labels) - 0.4)
    fig.suptitle("Worst error against the 50-digit oracle (docs/accuracy.md)", x=0.01, ha="left", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)


CHARTS = {
    "speed_vs_fastest_peer.svg": chart_speed,
    "linear_memory_vs_chunk_size.svg": chart_memory,
    "linear_memory_vs_vocabulary.svg": chart_vocabulary,
    "accuracy_ulps.svg": chart_accuracy,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder for the SVGs (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(RC):
        for name, draw in CHARTS.items():
            draw(args.out / name)
            print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The layering of the package: every loss module is a leaf.

A loss module (one public ``Function`` family) may import the private kernel
modules (``refsoftmax._*``) and the infrastructure (``backends``,
``samplers``, ``row_sparse``, ...), but never another loss module: an engine
two losses share lives in a named private module.  The private modules, in
turn, never import a loss module.  The imports are read with :mod:`ast`, so
imports inside functions count too.  Also: the sparse-label options are
declared in two places only (the public ``forward`` signature and
``SparseOptions``), and those agree.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from refsoftmax._sparse_call import SparseOptions
from refsoftmax.sparse_softmax_cross_entropy import sparse_softmax_cross_entropy

PACKAGE = Path(__file__).resolve().parent.parent / "refsoftmax"

# (refsoftmax.distributed only re-exports: its losses live in the private _sharded_* modules,
# which, like every private module, import no loss module)
LOSS_MODULES = (
    "am_softmax",
    "as_softmax",
    "fenchel_young",
    "linear_softmax_cross_entropy",
    "multilabel",
    "nce",
    "negative_sampling",
    "sampled_softmax",
    "softmax",
    "softmax_cross_entropy",
    "sparse_softmax_cross_entropy",
    "temperature_softmax",
    "topk_softmax",
)


def _imported_modules(tree: ast.AST) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` for every import: ``name`` is None for ``import module``.

    ``from refsoftmax import x`` is reported as module ``refsoftmax.x`` (``x``
    may be a submodule); relative imports are resolved against ``refsoftmax``.
    """
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = "refsoftmax" + (f".{module}" if module else "")
            for alias in node.names:
                if module == "refsoftmax":
                    found.append((node.lineno, f"refsoftmax.{alias.name}", None))
                else:
                    found.append((node.lineno, module, alias.name))
    return found


def _loss_imports(path: Path) -> list[str]:
    """The imports in ``path`` of a loss module (or of a name from one), as readable lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    offences = []
    for line, module, name in _imported_modules(tree):
        parts = module.split(".")
        if len(parts) >= 2 and parts[0] == "refsoftmax" and parts[1] in LOSS_MODULES:
            if parts[1] == path.stem:
                continue
            what = f"{module}.{name}" if name else module
            offences.append(f"{path.name}:{line} imports {what}")
    return offences


@pytest.mark.parametrize("module", LOSS_MODULES)
def test_loss_module_imports_no_other_loss_module(module: str) -> None:
    offences = _loss_imports(PACKAGE / f"{module}.py")
    assert not offences, (
        "a loss module must not import another loss module; move the shared engine "
        "into a private refsoftmax._* module:\n" + "\n".join(offences)
    )


PRIVATE_MODULES = sorted(p for p in PACKAGE.glob("_*.py") if not p.name.startswith("__"))


@pytest.mark.parametrize("path", PRIVATE_MODULES, ids=lambda p: p.name)
def test_private_module_imports_no_loss_module(path: Path) -> None:
    offences = _loss_imports(path)
    assert not offences, "a private kernel module must not import a loss module:\n" + "\n".join(
        offences
    )


def _defines_function(path: Path) -> bool:
    """Whether the module defines a subclass of ``Function`` (directly)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return any(
        isinstance(node, ast.ClassDef)
        and any(isinstance(b, ast.Name) and b.id == "Function" for b in node.bases)
        for node in tree.body
    )


def test_every_loss_module_is_listed() -> None:
    public = [p for p in PACKAGE.glob("*.py") if not p.name.startswith("_")]
    defining = {p.stem for p in public if _defines_function(p)}
    assert defining == set(LOSS_MODULES)


def test_the_check_detects_an_offence(tmp_path: Path) -> None:
    fake = tmp_path / "topk_softmax.py"
    fake.write_text(
        "from refsoftmax.sparse_softmax_cross_entropy import _prepare\n"
        "def f():\n    from refsoftmax import softmax\n"
        "from refsoftmax._shifted import shift_rows\n"
        "from refsoftmax.topk_softmax import topk_mask\n",
        encoding="utf-8",
    )
    assert _loss_imports(fake) == [
        "topk_softmax.py:1 imports refsoftmax.sparse_softmax_cross_entropy._prepare",
        "topk_softmax.py:3 imports refsoftmax.softmax",
    ]


def test_sparse_options_are_the_public_keywords() -> None:
    """The sparse-CE options live in ``forward``'s signature and in ``SparseOptions``: they agree."""
    keywords = {
        p.name: p.default
        for p in inspect.signature(sparse_softmax_cross_entropy.forward).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    fields = {f.name: f.default for f in dataclasses.fields(SparseOptions)}
    assert keywords == fields

"""Adapters from other packages: the ``refsoftmax.adapters`` entry points.

``tests/plugin_example/`` is a minimal third-party adapter package.  Instead of
pip-installing it, each test "installs" it into a temporary directory, as pip would
into site-packages: the package source plus a ``*.dist-info`` with ``METADATA`` and
the ``entry_points.txt`` its ``pyproject.toml`` declares; that directory goes on
``sys.path`` (and on ``PYTHONPATH`` for the command line).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from refsoftmax import conformance
from refsoftmax.conformance import adapters

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = Path(__file__).resolve().parent / "plugin_example"
PACKAGE = "refsoftmax_example_plugin"


def _install(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    """Write the metadata pip would write for distribution ``dist`` with these adapters."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = [f"[{adapters.GROUP}]", *(f"{k} = {v}" for k, v in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def _declared() -> dict[str, str]:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"][adapters.GROUP])


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory on ``sys.path`` with the example plugin installed in it."""
    shutil.copytree(EXAMPLE / PACKAGE, tmp_path / PACKAGE)
    _install(tmp_path, PACKAGE, _declared())
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


def test_the_example_declares_its_adapter() -> None:
    assert _declared() == {"example": f"{PACKAGE}.adapter"}


def test_no_plugin_is_installed_outside_the_tests() -> None:
    assert adapters.registry() == adapters.ADAPTERS


def test_the_plugin_joins_the_registry(site: Path) -> None:
    assert adapters.registry() == {**adapters.ADAPTERS, "example": f"{PACKAGE}.adapter"}
    assert "example" not in adapters.ADAPTERS
    module = adapters.load("example")
    assert module.LIBRARY == "example" and module.available() and module.version() == "0.1"
    assert [t.library for t in module.targets()] == ["example"]
    assert "example" in adapters.available_adapters()


def test_an_unknown_name_lists_the_plugins(site: Path) -> None:
    with pytest.raises(ValueError, match=r"no adapter for library='nope'; known: \[.*'example'"):
        adapters.load("nope")


def test_certify_library_certifies_the_plugin(site: Path) -> None:
    report = conformance.certify_library("example", max_examples=2)
    assert report.library == "example" and report.version == "0.1"
    assert {r.function for r in report.results} == {f"{PACKAGE}.sparse_cross_entropy"}
    assert report.ok, report.summary_text()


def test_the_command_line_certifies_the_plugin(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "example.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "refsoftmax", "certify", "example", "--max-examples", "2", "--quiet",
         "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert "example" in proc.stdout
    report = json.loads(out.read_text())
    assert report["library"] == "example" and report["version"] == "0.1"


@pytest.mark.parametrize("module", ["refsoftmax_no_such_module", "refsoftmax_raising_adapter"])
def test_a_broken_plugin_is_a_clear_error_and_spares_the_others(site: Path, module: str) -> None:
    (site / "refsoftmax_raising_adapter.py").write_text('raise RuntimeError("needs a GPU")\n')
    _install(site, "refsoftmax_broken_plugin", {"broken": module})
    with pytest.raises(ImportError, match=rf"'broken', entry point broken = {module} .*failed to import"):
        adapters.load("broken")
    with pytest.warns(UserWarning, match=rf"entry point broken = {module} .*skipped"):
        names = adapters.available_adapters()
    assert "example" in names and "broken" not in names
    assert adapters.load("example").LIBRARY == "example"
    sys.modules.pop("refsoftmax_raising_adapter", None)


def test_a_builtin_name_wins_with_a_warning(site: Path) -> None:
    _install(site, "refsoftmax_torch_impostor", {"torch": f"{PACKAGE}.adapter"})
    with pytest.warns(UserWarning, match=r"'torch': the built-in adapter refsoftmax\.conformance\.adapters\.torch "
                                         rf"and the entry point torch = {PACKAGE}\.adapter"):
        registry = adapters.registry()
    assert registry["torch"] == adapters.ADAPTERS["torch"]
    assert adapters.load("torch").__name__ == adapters.ADAPTERS["torch"]

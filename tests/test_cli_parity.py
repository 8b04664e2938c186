"""``refsoftmax certify --impl``: the CLI takes what ``certify()`` takes and refuses what it refuses."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from refsoftmax.conformance.cli import main

IMPL = textwrap.dedent('''
    import numpy as np
    import refsoftmax as rs

    def am(features, weights, labels, scale=30.0, margin=0.35, reduction="none"):
        return np.asarray(rs.am_softmax_loss(features, weights, labels, scale=scale, margin=margin,
                                             reduction=reduction))

    def mean_only(logits, labels):
        out = rs.sparse_softmax_cross_entropy(logits, labels)
        return np.asarray(np.mean(out))

    def in_float32(logits, labels, reduction="none"):
        out = rs.sparse_softmax_cross_entropy(logits.astype(np.float32), labels, reduction=reduction)
        return np.asarray(out, dtype=logits.dtype)

    def refuses_nan(logits, labels, reduction="none"):
        if not np.isfinite(logits).all():
            raise ValueError("finite logits only")
        return np.asarray(rs.sparse_softmax_cross_entropy(logits, labels, reduction=reduction))

    def torch_only(logits, labels, reduction="none"):
        raise TypeError("expected Tensor as element 0 in argument 0, but got numpy.ndarray")

    def others(logits, labels, label_smoothing=0.0, reduction="none"):
        return np.asarray(rs.sparse_softmax_cross_entropy(
            logits, labels, label_smoothing=label_smoothing, label_smoothing_mode="others",
            reduction=reduction))
''')


@pytest.fixture
def impl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "cli_impl_mod.py").write_text(IMPL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("cli_impl_mod", None)
    return "cli_impl_mod"


def test_wrt_options_dtypes_library_and_version(impl: str, tmp_path: Path) -> None:
    out = tmp_path / "am.json"
    rc = main(["certify", "--impl", f"{impl}:am", "--loss", "am_softmax_loss", "--options",
               "scale,margin,reduction", "--dtypes", "float64",
               "--library", "mylib", "--library-version", "2.1", "--max-examples", "2", "--quiet",
               "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0
    assert (report["library"], report["version"]) == ("mylib", "2.1")
    assert {r["status"] for r in report["results"] if r["dtype"] != "float64"} == {"skipped"}
    assert {r["status"] for r in report["results"] if r["dtype"] == "float64"} <= {"pass", "skipped"}


def test_conventions_turn_a_disagreement_into_a_convention(impl: str, tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    rc = main(["certify", "--impl", f"{impl}:others", "--options", "label_smoothing,reduction",
               "--conventions", "label_smoothing_mode=others", "--dtypes", "float64",
               "--max-examples", "0", "--quiet", "--json", str(out)])
    statuses = {r["status"] for r in json.loads(out.read_text())["results"]}
    assert rc == 0 and "convention" in statuses and "fail" not in statuses


@pytest.mark.parametrize(("flags", "word"), [
    (["--options", "reduction,smoothing"], "smoothing"),
    (["--conventions", "label_smothing_mode=others"], "label_smothing_mode"),
    (["--conventions", "label_smoothing_mode=sideways"], "sideways"),
    (["--conventions", "nokey"], "KEY=VALUE"),
    (["--wrt", "logits,weights"], "weights"),
    (["--wrt", "logits"], "needs gradients"),  # numpy: no autodiff, and no grad_fn from the CLI
    (["--dtypes", "float64,float8"], "float8"),
    (["--returns", "average"], "average"),
    (["--preconditions", "finite_inputs,positive"], "positive"),
    (["--compute-dtype", "float8"], "float8"),
])
def test_unknown_keys_and_values_exit_2_naming_them(impl: str, capsys: pytest.CaptureFixture[str],
                                                    flags: list[str], word: str) -> None:
    rc = main(["certify", "--impl", f"{impl}:others", "--quiet", *flags])
    assert rc == 2
    assert word in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import refsoftmax

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"refsoftmax {refsoftmax.__version__}"


def _statuses(path: Path) -> dict[str, str]:
    return {r["case"]: r["status"] for r in json.loads(path.read_text())["results"]}


def test_returns_preconditions_and_compute_dtype(impl: str, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    rc = main(["certify", "--impl", f"{impl}:mean_only", "--options", "", "--returns", "mean",
               "--dtypes", "float64", "--max-examples", "0", "--quiet", "--json", str(out)])
    got = _statuses(out)
    assert rc == 0 and got["leading-dims[float64]"] == "pass"  # per example: reduction "none" ran
    rc = main(["certify", "--impl", f"{impl}:refuses_nan", "--preconditions", "finite_inputs",
               "--dtypes", "float64", "--max-examples", "0", "--quiet", "--json", str(out)])
    assert rc == 0 and _statuses(out)["nan-logit[float64]"] == "skipped"
    rc = main(["certify", "--impl", f"{impl}:in_float32", "--compute-dtype", "float32",
               "--dtypes", "float64", "--max-examples", "2", "--quiet", "--json", str(out)])
    assert rc == 0 and "convention" in _statuses(out).values()


def test_report_file_names_have_no_colon(impl: str, tmp_path: Path) -> None:
    rc = main(["certify", "--impl", f"{impl}:mean_only", "--options", "", "--returns", "mean",
               "--dtypes", "float64", "--max-examples", "0", "--quiet", "--json", str(tmp_path / "out")])
    assert rc == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{impl}_mean_only.json"]


def test_a_library_asked_for_by_name_must_be_installed(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from refsoftmax.conformance import adapters

    module = adapters.load("entmax")
    monkeypatch.setattr(module, "available", lambda: False)
    assert main(["certify", "entmax", "--quiet"]) == 2
    assert "entmax is not installed" in capsys.readouterr().err


def test_piped_output_is_complete_and_names_the_framework(impl: str) -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "refsoftmax", "certify", "--impl", f"{impl}:torch_only", "--dtypes", "float64",
         "--max-examples", "0"], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert f"refsoftmax certify: {impl}:torch_only" in proc.stderr or "torch_only (case 1 of" in proc.stderr
    assert "cases done" in proc.stderr
    assert f"{impl}:torch_only" in proc.stdout  # full names: no rich table cut at 80 columns
    assert "try --framework torch" in proc.stdout

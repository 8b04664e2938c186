"""Fetch the pinned MathJax into ``docs/_vendor/mathjax/`` so the docs site serves it itself.

Run from anywhere before ``mkdocs build`` (CI does): ``python docs/scripts/fetch_mathjax.py``.
It runs ``npm pack mathjax@<version>`` (npm checks the registry's integrity hash; the
tarball's SHA-512 is checked again here against the pin below) and unpacks the package's
``es5/`` folder — the ``tex-mml-chtml.js`` component, the TeX extensions it autoloads,
the CHTML woff2 fonts, the menu and accessibility components — into the ignored folder
``docs/_vendor/mathjax/``.  The mkdocs hook ``docs/hooks/mathjax.py`` copies that folder
into the built site as ``javascripts/mathjax/`` and fails the build when it is missing, so
a site with raw LaTeX cannot be built by accident.  Nothing is fetched when the folder
already holds the pinned version (``--force`` fetches again).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "3.2.2"
# the npm registry's dist.integrity of mathjax@3.2.2 (`npm view mathjax@3.2.2 dist.integrity`)
INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
VENDOR = Path(__file__).resolve().parents[1] / "_vendor" / "mathjax"
#: the file the site loads (``extra_javascript`` in mkdocs.yml), relative to VENDOR
ENTRY = "tex-mml-chtml.js"
STAMP = ".version"


def installed_version(vendor: Path = VENDOR) -> str | None:
    """The MathJax version unpacked in ``vendor``, or None when it is absent or incomplete."""
    stamp = vendor / STAMP
    if not stamp.is_file() or not (vendor / ENTRY).is_file():
        return None
    return stamp.read_text().strip()


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(vendor: Path = VENDOR, *, force: bool = False) -> Path:
    """Unpack mathjax@VERSION's ``es5/`` into ``vendor`` (a no-op when it is there already)."""
    if not force and installed_version(vendor) == VERSION:
        return vendor
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("fetch_mathjax: npm is not installed (Debian: apt-get install -y npm)")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [npm, "pack", f"mathjax@{VERSION}", "--json", "--pack-destination", tmp],
            check=True, capture_output=True, text=True, cwd=tmp,
        )
        info = json.loads(out.stdout)[0]
        tarball = Path(tmp) / info["filename"]
        if _integrity(tarball) != INTEGRITY:
            raise SystemExit(f"fetch_mathjax: {tarball.name} does not match the pinned integrity {INTEGRITY}")
        staging = Path(tmp) / "staging"
        with tarfile.open(tarball) as tar:
            members = [
                m for m in tar.getmembers()
                if (m.name.startswith("package/es5/") or m.name == "package/LICENSE") and (m.isfile() or m.isdir())
            ]
            if sys.version_info >= (3, 12):
                tar.extractall(staging, members=members, filter="data")
            else:  # the members are plain files and folders under package/
                tar.extractall(staging, members=members)
        es5 = staging / "package" / "es5"
        if not (es5 / ENTRY).is_file():
            raise SystemExit(f"fetch_mathjax: {ENTRY} is not in mathjax@{VERSION}'s es5/")
        (es5 / STAMP).write_text(VERSION + "\n")
        if (staging / "package" / "LICENSE").is_file():  # Apache-2.0: ships with the files
            shutil.copy2(staging / "package" / "LICENSE", es5 / "LICENSE")
        if vendor.exists():
            shutil.rmtree(vendor)
        vendor.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(es5), str(vendor))
    return vendor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="fetch again even if the pinned version is there")
    args = parser.parse_args(argv)
    path = fetch(force=args.force)
    files = sum(1 for p in path.rglob("*") if p.is_file())
    print(f"MathJax {installed_version(path)} in {path} ({files} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

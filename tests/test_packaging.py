"""A non-editable install works: the wheel carries the manifest and an installed package keeps its
data in the user cache, not in a checkout it does not have.

The wheel is built from this checkout without build isolation and installed (``--no-deps``) into a
fresh venv made without pip; a ``.pth`` file lends the venv the running interpreter's
site-packages (torch, PyG, ...) so nothing is downloaded. The console script then runs from an
unrelated folder with a clean environment.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.packaging


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Build the wheel, install it into a fresh venv; return its paths and a clean environment."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # a copy: building in place would write build/ and *.egg-info here
    shutil.copytree(REPO / "pyg_rbp", source / "pyg_rbp", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(base / "dist"), str(source)],
        cwd=base,
    )
    wheels = sorted((base / "dist").glob("pyg_rbp-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    vpython = venv / "bin" / "python"
    purelib = Path(
        _run([str(vpython), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    import importlib

    # where the running interpreter finds the dependencies (its site-packages, or a folder on its path)
    homes = {str(Path(importlib.import_module(m).__file__).resolve().parents[1])
             for m in ("torch", "torch_geometric", "ogb", "sklearn", "numpy", "scipy", "tqdm")}
    lent = sorted(p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"], *homes}
                  if Path(p).is_dir() and Path(p) != REPO)
    (purelib / "_lent_site_packages.pth").write_text("".join(f"{p}\n" for p in lent))
    _run([sys.executable, "-m", "pip", "--python", str(vpython), "install", "--no-deps", "--no-index",
          "-q", str(wheels[0])])
    home = base / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYG_RBP_") and k not in {"PYTHONPATH", "XDG_CACHE_HOME", "VIRTUAL_ENV"}}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", PYG_RBP_DOWNLOAD="0")
    work = base / "elsewhere"
    work.mkdir()
    return {"wheel": wheels[0], "python": vpython, "bin": venv / "bin", "env": env, "cwd": work,
            "home": home, "purelib": purelib}


def test_the_wheel_ships_the_manifest(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "pyg_rbp/data/manifest.json" in names
    assert "pyg_rbp/py.typed" in names


def test_installed_package_imports_from_the_venv_and_keeps_data_in_the_user_cache(installed):
    xdg = installed["cwd"] / "xdg"
    code = (
        "import os, pyg_rbp, pyg_rbp.data as d;"
        "from pyg_rbp.data.storage import source_checkout, mirror_roots;"
        "print(pyg_rbp.__file__); print(d.configured_root()); print(source_checkout());"
        "print(len(mirror_roots())); print(sorted(d.dataset_names()));"
        f"os.environ['XDG_CACHE_HOME'] = {str(xdg)!r}; print(d.configured_root())"
    )
    out = _run([str(installed["python"]), "-c", code], cwd=installed["cwd"], env=installed["env"]).stdout
    module, root, checkout, mirrors, names, xdg_root = out.strip().splitlines()
    assert Path(module).is_relative_to(installed["purelib"])  # the wheel, not this checkout
    assert Path(root) == installed["home"] / ".cache" / "pyg_rbp" / "datasets"
    assert checkout == "None" and mirrors == "0"
    from pyg_rbp.data import dataset_names

    assert names == str(sorted(dataset_names()))  # the packaged manifest is this checkout's
    assert Path(xdg_root) == xdg / "pyg_rbp" / "datasets"


def test_console_script_trains_on_the_embedded_digits_from_another_folder(installed):
    out = _run(
        [str(installed["bin"] / "pyg-rbp"), "demo", "--grad", "bptt,rbp", "--epochs", "2", "--max-iter", "5",
         "--no-progress"],
        cwd=installed["cwd"], env=installed["env"],
    ).stdout
    assert "digits" in out.lower()
    rows = [line for line in out.splitlines() if line.startswith("|") and ("bptt" in line or "rbp" in line)]
    assert len(rows) == 2, out


COMPILED_AGAINST_TORCH = {"torch-scatter", "torch-sparse", "torch-cluster", "torch-spline-conv", "pyg-lib"}
"""Packages whose source build imports torch: under pip's build isolation they fail with
``No module named 'torch'``, so an extra holding one installs only with ``--no-build-isolation``."""


def test_every_extra_the_readme_lists_installs_as_written():
    import re

    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    commands = [line for line in (REPO / "README.md").read_text().splitlines()
                if re.search(r"pip install\b.*\.\[", line)]
    assert commands, "the README lists no extras"
    for line in commands:
        for group in re.findall(r"\.\[([\w,\- ]+)\]", line):
            for extra in (g.strip() for g in group.split(",")):
                assert extra in extras, f"README installs extra {extra!r} that pyproject.toml lacks: {line}"
                names = {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in extras[extra]}
                compiled = names & COMPILED_AGAINST_TORCH
                assert not compiled or "--no-build-isolation" in line, (
                    f"extra {extra!r} holds {sorted(compiled)}, which cannot build under pip's build "
                    f"isolation; the README's command must say --no-build-isolation: {line}"
                )

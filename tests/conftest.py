"""Shared test fixtures: a writable data cache seeded from the read-only shared copies."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYG_RBP_SHARED", REPO.parent / "shared" / "datasets"))


@pytest.fixture(autouse=True)
def _fresh_convergence_warnings():
    """Each test sees the engine's once-per-process warnings afresh."""
    from pyg_rbp.engine import reset_warnings

    reset_warnings()
    yield


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The read-only folder of offline dataset copies (``../shared/datasets``)."""
    if not SHARED.is_dir():
        pytest.fail(f"offline datasets not found at {SHARED}; set PYG_RBP_SHARED")
    return SHARED


@pytest.fixture(scope="session")
def data_root(tmp_path_factory, shared_datasets) -> Path:
    """A writable data root seeded from the shared copies (loaders write ``processed/``)."""
    root = tmp_path_factory.mktemp("pyg_rbp_data")
    shutil.copytree(shared_datasets, root, dirs_exist_ok=True)
    for path in root.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    root.chmod(root.stat().st_mode | 0o200)
    return root

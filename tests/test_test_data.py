"""The suite on a machine without the offline mirror: a test that needs a real dataset is skipped
with one summary line naming the dataset and how to provide it, and fails under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"CI", "PYG_RBP_REQUIRE_DATA"}}
    base.update(PYG_RBP_SHARED=str(tmp_path / "no_mirror"), PYG_RBP_DATA=str(tmp_path / "empty_root"),
                PYG_RBP_DOWNLOAD="0", PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
         "tests/test_data_loaders.py::test_cora_public",
         "tests/test_data_loaders.py::test_karate_fixed_split"],
        cwd=REPO, env=base, capture_output=True, text=True, timeout=300,
    )


def test_missing_real_data_skips_with_one_line_and_fails_under_ci(tmp_path):
    local = _pytest(tmp_path)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "1 passed, 1 skipped" in local.stdout
    lines = [line for line in local.stdout.splitlines() if line.startswith("pyg_rbp: ")]
    assert len(lines) == 1, local.stdout
    assert "real datasets cora" in lines[0] and "PYG_RBP_SHARED=" in lines[0]
    assert str(tmp_path / "no_mirror") in lines[0]
    strict = _pytest(tmp_path, PYG_RBP_REQUIRE_DATA="1")  # what .ci/run sets
    assert strict.returncode == 1, strict.stdout
    assert "required under CI" in strict.stdout and "1 passed" in strict.stdout


def test_ci_flags(monkeypatch):
    from conftest import data_required

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PYG_RBP_REQUIRE_DATA", raising=False)
    assert not data_required()
    monkeypatch.setenv("CI", "true")
    assert data_required()
    monkeypatch.setenv("CI", "false")
    monkeypatch.setenv("PYG_RBP_REQUIRE_DATA", "1")
    assert data_required()

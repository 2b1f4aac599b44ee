"""The suite on a machine without the offline mirror: a test that needs a real dataset is skipped
with one summary line naming the dataset and how to provide it, and fails under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"CI", "PYG_RBP_REQUIRE_DATA"}}
    base.update(PYG_RBP_SHARED=str(tmp_path / "no_mirror"), PYG_RBP_DATA=str(tmp_path / "empty_root"),
                PYG_RBP_DOWNLOAD="0", PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
         "tests/data/test_loaders.py::test_cora_public",
         "tests/data/test_loaders.py::test_karate_fixed_split"],
        cwd=REPO, env=base, capture_output=True, text=True, timeout=300,
    )


def test_missing_real_data_skips_with_one_summary_line(tmp_path):
    local = _pytest(tmp_path)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "1 passed, 1 skipped" in local.stdout
    lines = [line for line in local.stdout.splitlines() if line.startswith("pyg_rbp: ")]
    assert len(lines) == 1, local.stdout
    assert "real datasets cora" in lines[0] and "PYG_RBP_SHARED=" in lines[0]
    assert str(tmp_path / "no_mirror") in lines[0]


def test_ci_flags_turn_the_skip_into_a_failure(monkeypatch, tmp_path):
    import conftest

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PYG_RBP_REQUIRE_DATA", raising=False)
    assert not conftest.data_required()
    monkeypatch.setattr(conftest, "_MISSING", {})
    monkeypatch.setattr(conftest, "provide_dataset", lambda name, root: "not in any mirror, no network")
    with pytest.raises(pytest.skip.Exception, match="cora: not in any mirror"):
        conftest.require_datasets(["cora"], tmp_path)
    for flag in ({"CI": "true"}, {"PYG_RBP_REQUIRE_DATA": "1"}):  # .ci/run sets the second
        monkeypatch.setattr(conftest, "_MISSING", {})
        with monkeypatch.context() as m:
            for key, value in flag.items():
                m.setenv(key, value)
            assert conftest.data_required()
            with pytest.raises(pytest.fail.Exception, match="cora: .*required under CI"):
                conftest.require_datasets(["cora"], tmp_path)
    monkeypatch.setattr(conftest, "_MISSING", {})
    monkeypatch.setattr(conftest, "provide_dataset", lambda name, root: None)
    assert conftest.require_datasets(["cora"], tmp_path) == tmp_path

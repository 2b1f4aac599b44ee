"""Result files: written atomically, strict JSON, readable by others like any file `open` makes."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from pyg_rbp.results import atomic_write_json


def test_atomic_json_is_strict_and_has_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "sub" / "r.json",
                                 {"nan": math.nan, "t": torch.tensor([1.5, 2.0]), "p": tmp_path})
    finally:
        os.umask(old)
    assert json.loads(path.read_text()) == {"nan": None, "t": [1.5, 2.0], "p": str(tmp_path)}
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = atomic_write_json(tmp_path / "r.json", {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)  # the write dies half way
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]

"""No dataset file is unpickled unverified: planted pickles (raw Planetoid files, processed torch
files, files in a mirror) raise an error naming the file and run nothing; a half-written processed
file is rebuilt; lock files never follow a symlink planted in the shared temporary folder."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from pyg_rbp.data import ChecksumError, UnsafeDataError, load
from pyg_rbp.data.safe_load import check_torch_file, restricted_unpickle


class _CreatesAFile:
    """Unpickling this opens (so creates) ``path``: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant_pickle(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(_CreatesAFile(marker), fh, protocol=2)


def _plant_torch(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(({"x": torch.zeros(2)}, _CreatesAFile(marker)), path)


def test_planted_raw_planetoid_file_without_a_hash_is_refused(offline, tiny_pubmed_root, tmp_path):
    root, _ = tiny_pubmed_root
    target = root / "Planetoid" / "PubMed" / "raw" / "ind.pubmed.x"  # PubMed has no recorded sha256
    marker = tmp_path / "pwned"
    _plant_pickle(target, marker)
    with pytest.raises(UnsafeDataError, match="refusing to unpickle") as info:
        load("pubmed", root=root)
    assert str(target) in str(info.value) and "io.open" in str(info.value)
    assert not marker.exists()


def test_planted_raw_cora_file_fails_its_checksum_before_any_unpickling(offline, tiny_pubmed_root, tmp_path):
    root, _ = tiny_pubmed_root
    raw = root / "Planetoid" / "Cora" / "raw"
    shutil.copytree(root / "Planetoid" / "PubMed" / "raw", raw)
    for path in raw.iterdir():
        path.rename(raw / path.name.replace("pubmed", "cora"))
    marker = tmp_path / "pwned"
    _plant_pickle(raw / "ind.cora.x", marker)
    with pytest.raises(ChecksumError, match=r"ind\.cora\.x"):
        load("cora", root=root)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["data.pt", "pre_transform.pt"])
def test_planted_processed_file_is_refused_by_name(offline, tiny_pubmed_root, tmp_path, name):
    root, _ = tiny_pubmed_root
    planted = root / "Planetoid" / "PubMed" / "processed" / name
    marker = tmp_path / "pwned"
    _plant_torch(planted, marker)
    with pytest.raises(UnsafeDataError, match="outside the allow-list") as info:
        load("pubmed", root=root)
    assert str(planted) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["geometric_data_processed.pt", "pre_transform.pt", "pre_filter.pt"])
def test_planted_ogb_processed_file_is_refused(offline, tiny_arxiv_root, tmp_path, name):
    root, _ = tiny_arxiv_root
    assert load("ogbn-arxiv", root=root).data.num_nodes == 50  # OGB writes processed/ ...
    planted = root / "ogb" / "ogbn_arxiv" / "processed" / name
    assert planted.is_file()
    marker = tmp_path / "pwned"
    _plant_torch(planted, marker)  # ... and someone replaces one file of it
    with pytest.raises(UnsafeDataError, match=name):
        load("ogbn-arxiv", root=root)
    assert not marker.exists()


def test_a_planted_legacy_pickle_named_pt_is_refused(tmp_path):
    planted = tmp_path / "processed" / "data.pt"
    marker = tmp_path / "pwned"
    _plant_pickle(planted, marker)
    with pytest.raises(UnsafeDataError, match="outside the allow-list"):
        check_torch_file(planted)
    assert not marker.exists() and planted.exists()


def test_a_mirror_s_processed_folder_is_never_copied(offline, tiny_pubmed_root, monkeypatch, tmp_path):
    mirror, _ = tiny_pubmed_root
    marker = tmp_path / "pwned"
    _plant_torch(mirror / "Planetoid" / "PubMed" / "processed" / "data.pt", marker)
    monkeypatch.setenv("PYG_RBP_SHARED", str(mirror))
    root = tmp_path / "fresh_root"
    assert load("pubmed", root=root).data.num_nodes == 600
    assert (root / "Planetoid" / "PubMed" / "raw" / "ind.pubmed.graph").is_file()
    assert not (root / "Planetoid" / "PubMed" / "processed").exists()
    assert not marker.exists()


def test_a_half_written_processed_file_is_rebuilt(offline, tiny_arxiv_root):
    root, truth = tiny_arxiv_root
    first = load("ogbn-arxiv", root=root).data
    processed = root / "ogb" / "ogbn_arxiv" / "processed" / "geometric_data_processed.pt"
    blob = processed.read_bytes()
    processed.write_bytes(blob[: len(blob) // 2])  # the disk filled up mid-write
    with pytest.warns(RuntimeWarning, match=r"geometric_data_processed\.pt is damaged.*rebuilds it"):
        again = load("ogbn-arxiv", root=root).data
    assert torch.equal(again.x, first.x) and torch.equal(again.edge_index, first.edge_index)
    assert processed.stat().st_size == len(blob)
    processed.write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert load("ogbn-arxiv", root=root).data.num_nodes == truth["num_nodes"]


def test_restricted_unpickler_reads_the_format_and_nothing_else(tmp_path):
    import numpy as np
    import scipy.sparse as sp

    good = {"a": np.arange(6).reshape(2, 3), "m": sp.csr_matrix(np.eye(3, dtype=np.float32))}
    (tmp_path / "good").write_bytes(pickle.dumps(good, protocol=2))
    back = restricted_unpickle(tmp_path / "good")
    assert np.array_equal(back["a"], good["a"]) and (back["m"] != good["m"]).nnz == 0
    for name, evil in {"posix.system": (os.system, ("true",)), "__builtin__.eval": (eval, ("1",))}.items():
        class Evil:
            def __reduce__(self, evil=evil):
                return evil

        (tmp_path / name).write_bytes(pickle.dumps(Evil(), protocol=2))
        with pytest.raises(UnsafeDataError, match=f"refusing to unpickle it: it names {name}"):
            restricted_unpickle(tmp_path / name)
    (tmp_path / "codec").write_bytes(pickle.dumps(b"\xff\x00", protocol=2))  # bytes via _codecs.encode
    assert restricted_unpickle(tmp_path / "codec") == b"\xff\x00"


def test_the_safe_reader_builds_pyg_s_planetoid_graph(offline, tiny_pubmed_root, tmp_path):
    from torch_geometric.datasets import Planetoid

    root, _ = tiny_pubmed_root
    ours = load("pubmed", root=root).data
    reference_root = tmp_path / "pyg"
    shutil.copytree(root / "Planetoid" / "PubMed" / "raw", reference_root / "PubMed" / "raw")
    theirs = Planetoid(str(reference_root), "PubMed")[0]  # trusted: we wrote these files
    for key in ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.datasets("citeseer")
def test_the_safe_reader_builds_pyg_s_citeseer(data_root, tmp_path):
    from torch_geometric.datasets import Planetoid

    ours = load("citeseer", root=data_root).data
    reference_root = tmp_path / "pyg"
    shutil.copytree(data_root / "Planetoid" / "CiteSeer" / "raw", reference_root / "CiteSeer" / "raw")
    theirs = Planetoid(str(reference_root), "CiteSeer")[0]  # checksummed files
    for key in ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(ours[key], theirs[key]), key


def test_lock_file_never_follows_a_planted_symlink(tmp_path, monkeypatch):
    from pyg_rbp.data.storage import dataset_lock, private_temp_folder

    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    # 1. the lock folder itself planted as a symlink to somewhere else
    folder = shared_tmp / f"pyg_rbp-locks-{os.getuid()}"
    folder.symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(RuntimeError, match="symlink"):
        with dataset_lock("cora", tmp_path / "root"):
            pass
    folder.unlink()
    # 2. a lock file inside our folder planted as a symlink to a victim file
    real = private_temp_folder("pyg_rbp-locks")
    assert real == folder and (folder.stat().st_mode & 0o777) == 0o700
    with dataset_lock("cora", tmp_path / "root"):
        pass
    (lock,) = folder.iterdir()
    lock.unlink()
    lock.symlink_to(victim)
    with pytest.raises(RuntimeError, match=f"lock file {lock} is a symlink"):
        with dataset_lock("cora", tmp_path / "root"):
            pass
    assert victim.read_text() == "precious\n"
    # 3. a folder writable by others is refused as well
    lock.unlink()
    folder.chmod(0o777)
    with pytest.raises(RuntimeError, match="writable by others"):
        private_temp_folder("pyg_rbp-locks")

"""Where data comes from and how loading fails: roots, read-only caches, mirrors, downloads,
missing files and checksum mismatches."""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from pyg_rbp.data import ChecksumError, DataUnavailableError, default_root, load
from pyg_rbp.data.manifest import entry, sha256_of
from pyg_rbp.data.storage import cache_root_for, configured_root, prepare_dataset_folder

CORA_FILES = ["x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"]


def _copy_cora(shared: Path, root: Path) -> Path:
    target = root / "Planetoid" / "Cora" / "raw"
    shutil.copytree(shared / "Planetoid" / "Cora" / "raw", target)
    for path in [target, *target.iterdir()]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return target


def _set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("PYG_RBP_DATA", str(tmp_path / "from_env"))
    assert configured_root() == tmp_path / "from_env"
    assert configured_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("PYG_RBP_DATA")
    assert configured_root() == Path(__file__).resolve().parents[2] / "datasets"
    assert default_root(tmp_path / "new") == tmp_path / "new" and (tmp_path / "new").is_dir()


def test_installed_package_roots_in_the_user_cache_and_has_no_default_mirror(monkeypatch, tmp_path):
    from pyg_rbp.data import storage

    monkeypatch.delenv("PYG_RBP_DATA", raising=False)
    monkeypatch.delenv("PYG_RBP_SHARED", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert storage.source_checkout() == Path(__file__).resolve().parents[2]
    site_packages = tmp_path / "lib" / "python3.11" / "site-packages"  # where a wheel puts pyg_rbp
    monkeypatch.setattr(storage, "REPO_ROOT", site_packages.parent)
    assert storage.source_checkout() is None
    assert configured_root() == tmp_path / "xdg" / "pyg_rbp" / "datasets"
    assert storage.mirror_roots() == []
    monkeypatch.setenv("PYG_RBP_DATA", str(tmp_path / "mine"))
    assert configured_root() == tmp_path / "mine"


def test_missing_pubmed_files_name_files_folder_and_source(offline, tmp_path):
    root = tmp_path / "empty_root"
    with pytest.raises(DataUnavailableError) as info:
        load("pubmed", root=root)
    message = str(info.value)
    folder = root / "Planetoid" / "PubMed"
    assert "8 required file(s) missing" in message
    for suffix in CORA_FILES:
        assert str(folder / "raw" / f"ind.pubmed.{suffix}") in message
    assert "https://github.com/kimiyoung/planetoid/raw/master/data" in message
    assert "PYG_RBP_DOWNLOAD=1" in message


def test_missing_one_file_of_a_partial_copy(offline, tiny_pubmed_root):
    root, _ = tiny_pubmed_root
    (root / "Planetoid" / "PubMed" / "raw" / "ind.pubmed.graph").unlink()
    with pytest.raises(DataUnavailableError, match=r"(?s)1 required file\(s\) missing.*ind\.pubmed\.graph"):
        load("pubmed", root=root)


def test_ogb_without_release_marker_errors_instead_of_prompting(offline, tiny_arxiv_root):
    root, _ = tiny_arxiv_root
    (root / "ogb" / "ogbn_arxiv" / "RELEASE_v1.txt").unlink()
    # `offline` makes input() raise AssertionError, so reaching OGB's prompt would fail differently
    with pytest.raises(DataUnavailableError, match=r"RELEASE_v1\.txt"):
        load("ogbn-arxiv", root=root)
    with pytest.raises(
        DataUnavailableError, match=r"(?s)ogbn_products.*snap\.stanford\.edu/ogb/data/nodeproppred"
    ):
        load("ogbn-products", root=root)


@pytest.mark.datasets("mnist")
def test_mnist_train_missing(offline, shared_datasets):
    from pyg_rbp.data import load_mnist

    with pytest.raises(DataUnavailableError) as info:
        load_mnist(shared_datasets, "train")
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
    assert str(shared_datasets / "MNIST") in message and "ossci-datasets" in message
    with pytest.raises(ValueError, match="split must be 'test' or 'train'"):
        load_mnist(shared_datasets, "valid")


@pytest.mark.datasets("cora")
def test_corrupted_file_gives_checksum_error(offline, shared_datasets, tmp_path):
    raw = _copy_cora(shared_datasets, tmp_path / "root")
    target = raw / "ind.cora.x"
    blob = bytearray(target.read_bytes())
    blob[100] ^= 0xFF
    target.write_bytes(bytes(blob))
    with pytest.raises(ChecksumError) as info:
        load("cora", root=tmp_path / "root")
    message = str(info.value)
    assert str(target) in message and sha256_of(target) in message
    assert "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab" in message
    assert "ind.cora.y" not in message


@pytest.mark.datasets("cora")
def test_read_only_root_is_copied_to_cache(offline, shared_datasets, tmp_path):
    root = tmp_path / "ro_root"
    _copy_cora(shared_datasets, root)
    _set_writable(root, False)
    try:
        cora = load("cora", root=root)
        assert cora.root == cache_root_for(root) and str(cora.root).startswith(str(offline))
        assert cora.data.num_nodes == 2708
        assert (cora.root / "Planetoid" / "Cora" / "raw" / "ind.cora.x").is_file()
        assert not (root / "Planetoid" / "Cora" / "processed").exists()
        copied = default_root(root)
        assert copied == cache_root_for(root)
        assert sorted(p.name for p in (copied / "Planetoid" / "Cora" / "raw").iterdir()) == sorted(
            f"ind.cora.{s}" for s in CORA_FILES
        )
    finally:
        _set_writable(root, True)


@pytest.mark.datasets("ogbg-molbace")
def test_missing_files_are_seeded_from_a_local_mirror(offline, shared_datasets, monkeypatch, tmp_path):
    monkeypatch.setenv("PYG_RBP_SHARED", str(shared_datasets))
    root = tmp_path / "seeded"
    bace = load("ogbg-molbace", root=root)
    assert bace.root == root and len(bace.dataset) == 1513
    copied = root / "ogb" / "ogbg_molbace" / "raw" / "edge.csv.gz"
    assert sha256_of(copied) == "014e9475134c9c20300fda5d8115bd0c5f192185cd74c6f8921afc28f6359ce7"


def test_download_per_file_from_a_file_url(offline, tiny_pubmed_root, tmp_path):
    """The opt-in download path, with a file:// source standing in for the network."""
    source_root, _ = tiny_pubmed_root
    pubmed = entry("pubmed")
    local = type(pubmed)(
        **{**pubmed.__dict__, "source": (source_root / "Planetoid" / "PubMed" / "raw").as_uri()}
    )
    root = tmp_path / "fresh"
    with pytest.raises(DataUnavailableError):
        prepare_dataset_folder(local, root, download=False)
    assert prepare_dataset_folder(local, root, download=True) == root
    assert sorted(p.name for p in (root / "Planetoid" / "PubMed" / "raw").iterdir()) == sorted(
        f"ind.pubmed.{s}" for s in CORA_FILES
    )
    assert load("pubmed", root=root).data.num_nodes == 600


def test_download_ogb_archive_from_a_file_url(offline, tmp_path):
    from conftest import write_tiny_ogbn

    release = tmp_path / "release"
    write_tiny_ogbn(release / "arxiv")
    archive = tmp_path / "arxiv.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((release / "arxiv").rglob("*")):
            zf.write(path, path.relative_to(release))
    arxiv = entry("ogbn-arxiv")
    local = type(arxiv)(**{**arxiv.__dict__, "source": archive.as_uri()})
    root = tmp_path / "fresh"
    prepare_dataset_folder(local, root, download=True)
    assert (root / "ogb" / "ogbn_arxiv" / "RELEASE_v1.txt").is_file()
    assert load("ogbn-arxiv", root=root).data.num_nodes == 50


def test_unreachable_source_is_a_clear_error(offline, tmp_path):
    pubmed = entry("pubmed")
    local = type(pubmed)(**{**pubmed.__dict__, "source": (tmp_path / "nowhere").as_uri()})
    with pytest.raises(DataUnavailableError, match=r"could not download file://.*nowhere/ind\.pubmed\.x"):
        prepare_dataset_folder(local, tmp_path / "fresh", download=True)

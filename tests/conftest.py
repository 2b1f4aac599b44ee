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


@pytest.fixture(scope="session", autouse=True)
def _data_cache_in_tmp(tmp_path_factory):
    """Read-only roots are copied into ``$PYG_RBP_CACHE``: keep that inside pytest's tmp dir."""
    if os.environ.get("PYG_RBP_CACHE"):
        yield
        return
    os.environ["PYG_RBP_CACHE"] = str(tmp_path_factory.mktemp("pyg_rbp_cache"))
    yield
    os.environ.pop("PYG_RBP_CACHE", None)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No downloads, no local mirrors, a private cache, and a stdin that fails if read.

    Loaders under this fixture see only the root they are given, so missing files must
    surface as ``DataUnavailableError`` (and any OGB prompt would fail loudly, not hang).
    """
    import builtins

    def no_stdin(*args, **kwargs):
        raise AssertionError(f"a loader tried to read stdin: {args}")

    monkeypatch.setenv("PYG_RBP_DOWNLOAD", "0")
    monkeypatch.setenv("PYG_RBP_SHARED", "")
    monkeypatch.setenv("PYG_RBP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PYG_RBP_DATA", raising=False)
    monkeypatch.setattr(builtins, "input", no_stdin)
    return tmp_path / "cache"


def write_tiny_planetoid(raw_dir: Path, prefix: str = "pubmed", seed: int = 0) -> dict:
    """Write a small Planetoid dataset in the ``ind.<prefix>.*`` pickle layout.

    600 nodes (30 in ``x``/``y``, 540 in ``allx``/``ally``, 60 test nodes in ``tx``/``ty`` at
    shuffled indices 540..599), 20 features, 3 classes, a random undirected graph. PyG's
    public split needs 500 validation nodes after ``y``, hence the size. Returns the ground
    truth (features, labels in PyG's node order, edges) for the tests to compare against.
    """
    import pickle
    from collections import defaultdict

    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n_all, n_allx, n_y, n_feat, n_cls = 600, 540, 30, 20, 3
    features = (rng.random((n_all, n_feat)) < 0.2).astype(np.float32)
    labels = rng.integers(0, n_cls, n_all)
    onehot = np.eye(n_cls, dtype=np.int64)[labels]
    test_index = rng.permutation(np.arange(n_allx, n_all))
    # row k of tx/ty is the node test_index[k] (PyG reorders by the sorted index)
    tx, ty = features[test_index], onehot[test_index]
    graph = defaultdict(list)
    edges = set()
    for i in range(n_all):
        for j in rng.choice(n_all, size=2, replace=False):
            if i != int(j):
                edges.add((min(i, int(j)), max(i, int(j))))
    for i, j in sorted(edges):
        graph[i].append(j)
        graph[j].append(i)
    raw_dir.mkdir(parents=True, exist_ok=True)
    items = {
        "x": sp.csr_matrix(features[:n_y]),
        "y": onehot[:n_y],
        "allx": sp.csr_matrix(features[:n_allx]),
        "ally": onehot[:n_allx],
        "tx": sp.csr_matrix(tx),
        "ty": ty,
        "graph": graph,
    }
    for name, obj in items.items():
        with open(raw_dir / f"ind.{prefix}.{name}", "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    (raw_dir / f"ind.{prefix}.test.index").write_text("".join(f"{i}\n" for i in test_index))
    return {
        "num_nodes": n_all,
        "num_features": n_feat,
        "num_classes": n_cls,
        "x": features,
        "y": labels,
        "num_undirected_edges": len(edges),
    }


def write_tiny_ogbn(folder: Path, split_name: str = "time", seed: int = 0) -> dict:
    """Write a small node dataset in OGB's ``ogbn-arxiv`` release layout under ``folder``.

    50 nodes, 8 features, labels in 0..4, 120 directed edges, a 30/10/10 split, the node-year
    file arxiv has, and ``RELEASE_v1.txt``. Returns the ground truth.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n, n_feat, n_edges = 50, 8, 120
    edges = rng.integers(0, n, size=(n_edges, 2))
    feats = rng.standard_normal((n, n_feat)).astype(np.float32)
    labels = rng.integers(0, 5, size=(n, 1))
    order = rng.permutation(n)
    split = {"train": np.sort(order[:30]), "valid": np.sort(order[30:40]), "test": np.sort(order[40:])}
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    def write(path: Path, values) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(values).to_csv(path, header=False, index=False, compression="gzip")

    write(raw / "edge.csv.gz", edges)
    write(raw / "node-feat.csv.gz", feats)
    write(raw / "node-label.csv.gz", labels)
    write(raw / "node_year.csv.gz", rng.integers(1990, 2020, size=(n, 1)))
    write(raw / "num-node-list.csv.gz", np.array([n]))
    write(raw / "num-edge-list.csv.gz", np.array([n_edges]))
    for part, idx in split.items():
        write(folder / "split" / split_name / f"{part}.csv.gz", idx)
    (folder / "RELEASE_v1.txt").write_text("# Release note for tiny test data\n")
    return {
        "num_nodes": n,
        "num_features": n_feat,
        "x": feats,
        "y": labels[:, 0],
        "split": split,
        "edges": edges,
    }


@pytest.fixture
def tiny_pubmed_root(tmp_path) -> tuple[Path, dict]:
    """A data root holding a generated PubMed-layout dataset: (root, ground truth)."""
    root = tmp_path / "tiny_root"
    truth = write_tiny_planetoid(root / "Planetoid" / "PubMed" / "raw", "pubmed")
    return root, truth


@pytest.fixture
def tiny_arxiv_root(tmp_path) -> tuple[Path, dict]:
    """A data root holding a generated ogbn-arxiv-layout dataset: (root, ground truth)."""
    root = tmp_path / "tiny_root"
    truth = write_tiny_ogbn(root / "ogb" / "ogbn_arxiv")
    return root, truth

"""Amazon / Coauthor graphs (shared copies, and Physics on a generated .npz) and the per-class protocol."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pyg_rbp.data import ChecksumError, UnsafeDataError, apply_protocol, load
from pyg_rbp.data.amazon_coauthor import load_shchur
from pyg_rbp.data.manifest import entry
from pyg_rbp.data.protocols import largest_connected_component, per_class_split

# published statistics (PyG docs) and the sizes of the largest connected component
SHARED = {
    "amazon-computers": (13752, 491722, 767, 10, 13381),
    "amazon-photo": (7650, 238162, 745, 8, 7487),
    "coauthor-cs": (18333, 163788, 6805, 15, 18333),
}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_graphs_load_and_split_per_class(name, data_root):
    n, e, f, c, lcc = SHARED[name]
    loaded = load(name, root=data_root)
    assert (loaded.task, loaded.metric, loaded.num_features, loaded.num_classes) == ("node", "acc", f, c)
    assert (loaded.data.num_nodes, loaded.data.edge_index.size(1)) == (n, e)
    assert not bool(loaded.data.train_mask.any())  # no official split
    data = apply_protocol(loaded, "per-class", seed=3)
    assert data.num_nodes == lcc and data.x.shape == (lcc, f)
    train, val, test = data.train_mask, data.val_mask, data.test_mask
    assert torch.bincount(data.y[train], minlength=c).tolist() == [20] * c
    assert torch.bincount(data.y[val], minlength=c).tolist() == [30] * c
    assert int(test.sum()) == lcc - 50 * c
    assert not bool((train & val).any() | (train & test).any() | (val & test).any())
    # same seed, same split; another seed, another one
    again = apply_protocol(loaded, "per-class", seed=3)
    assert torch.equal(again.train_mask, train) and torch.equal(again.val_mask, val)
    assert not torch.equal(apply_protocol(loaded, "per-class", seed=4).train_mask, train)
    with pytest.raises(ValueError, match="per-class"):
        apply_protocol(loaded, "public")


def test_manifest_pins_no_mirror_checksum_for_repacked_files():
    for name in (*SHARED, "coauthor-physics"):
        row = entry(name)
        assert all(f.sha256 is None for f in row.files), name
        assert set(row.extra["expected"]) == {"num_nodes", "num_edges", "num_features", "num_classes"}


def _write_npz(path, n=60, f=12, c=5, seed=0):
    """A small graph in Shchur et al.'s .npz layout (CSR adjacency, CSR attributes, labels)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, 240)
    cols = rng.integers(0, n, 240)
    adj = sp.csr_matrix((np.ones(240, dtype=np.float32), (rows, cols)), shape=(n, n))
    adj.sum_duplicates()
    attr = sp.csr_matrix((rng.random((n, f)) < 0.3).astype(np.float32))
    labels = np.arange(n) % c
    np.savez(path, adj_data=adj.data, adj_indices=adj.indices, adj_indptr=adj.indptr, adj_shape=adj.shape,
             attr_data=attr.data, attr_indices=attr.indices, attr_indptr=attr.indptr, attr_shape=attr.shape,
             labels=labels)


def test_coauthor_physics_on_generated_data(tmp_path):
    raw = tmp_path / "Coauthor" / "Physics" / "raw"
    raw.mkdir(parents=True)
    _write_npz(raw / "ms_academic_phy.npz")
    physics = entry("coauthor-physics")
    with pytest.raises(ChecksumError, match="num_nodes: 60 \\(expected 34493\\)"):
        load_shchur(physics, root=tmp_path)
    small = dataclasses.replace(physics, extra={**physics.extra, "expected": None})
    loaded = load_shchur(small, root=tmp_path)
    assert (loaded.num_features, loaded.num_classes, loaded.data.num_nodes) == (12, 5, 60)
    # the processed file exists now and is read back with weights_only=True
    assert (tmp_path / "Coauthor" / "Physics" / "processed").is_dir()
    again = load_shchur(small, root=tmp_path)
    assert torch.equal(again.data.edge_index, loaded.data.edge_index)


def test_processed_file_needing_unsafe_unpickling_is_refused(tmp_path):
    raw = tmp_path / "Coauthor" / "Physics" / "raw"
    raw.mkdir(parents=True)
    _write_npz(raw / "ms_academic_phy.npz")
    physics = entry("coauthor-physics")
    small = dataclasses.replace(physics, extra={**physics.extra, "expected": None})
    load_shchur(small, root=tmp_path)
    processed = next((tmp_path / "Coauthor" / "Physics" / "processed").glob("data.pt"))

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    with open(processed, "wb") as fh:
        pickle.dump(({"x": Evil()}, None, None), fh)
    with pytest.raises(UnsafeDataError, match="data.pt: refusing to load it"):
        load_shchur(small, root=tmp_path)


def test_largest_component_and_per_class_errors():
    from torch_geometric.data import Data

    # two components: {0,1,2} and {3,4}
    ei = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]])
    data = Data(x=torch.arange(5.0).view(5, 1), edge_index=ei, y=torch.tensor([0, 1, 0, 1, 1]))
    lcc = largest_connected_component(data)
    assert lcc.num_nodes == 3 and lcc.orig_node_index.tolist() == [0, 1, 2]
    assert lcc.x.view(-1).tolist() == [0.0, 1.0, 2.0] and lcc.edge_index.size(1) == 4
    with pytest.raises(ValueError, match="class 0 has 2 labelled nodes"):
        per_class_split(lcc, 0)

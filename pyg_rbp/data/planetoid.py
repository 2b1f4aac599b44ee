"""The Planetoid citation graphs (Cora, CiteSeer, PubMed), read safely from the raw ``ind.*`` files.

The graph is the one PyG's ``Planetoid(root, name)`` builds (the same node order, features, labels,
edges and public split: this module follows ``torch_geometric.io.planetoid.read_planetoid_data``),
but the raw pickles are read with :func:`~pyg_rbp.data.safe_load.restricted_unpickle` instead of
``pickle.load``, after their sha256 is checked where the manifest records one, and nothing is
read back from a ``processed/`` file (building the graph from the raw files takes under a
second for Cora and CiteSeer), so no pickle that the package did not verify is ever loaded.

PyG gives every node a label, but CiteSeer's ``ind.*`` files have test-index gaps: 15 isolated
nodes with no features and no label, which PyG fills with zero rows and so labels class 0. The
paper protocol uses *all labelled nodes*, so we recompute from the raw one-hot label rows which
nodes really have a label and attach it as ``data.labelled_mask``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import Data
from torch_geometric.io import read_txt_array
from torch_geometric.io.planetoid import edge_index_from_dict
from torch_geometric.utils import index_to_mask

from pyg_rbp.data.loaded import LoadedDataset, split_idx_from_masks
from pyg_rbp.data.manifest import DatasetEntry
from pyg_rbp.data.safe_load import restricted_unpickle
from pyg_rbp.data.storage import prepare_dataset_folder

_MATRICES = ("x", "tx", "allx", "y", "ty", "ally")


def read_file(raw_dir: Path, prefix: str, name: str):
    """One raw Planetoid item: a float tensor (features, one-hot labels), the adjacency dict
    (``graph``) or the long tensor of test indices, read without a full unpickler."""
    path = Path(raw_dir) / f"ind.{prefix.lower()}.{name}"
    if name == "test.index":
        return read_txt_array(str(path), dtype=torch.long)
    out = restricted_unpickle(path)
    if name == "graph":
        if not isinstance(out, dict) or not all(isinstance(v, (list, tuple)) for v in out.values()):
            raise ValueError(f"{path}: expected a dict of neighbour lists, got {type(out).__name__}")
        return out
    if sp.issparse(out):
        out = out.todense()
    if not isinstance(out, np.ndarray) or out.ndim != 2 or out.dtype == object:
        raise ValueError(f"{path}: expected a 2-d numeric matrix, got {type(out).__name__}")
    return torch.from_numpy(np.asarray(out)).to(torch.float)


def read_planetoid_data(raw_dir: Path, prefix: str) -> Data:
    """The graph of ``torch_geometric.io.planetoid.read_planetoid_data`` (Cora/CiteSeer/PubMed)."""
    x, tx, allx, y, ty, ally = (read_file(raw_dir, prefix, name) for name in _MATRICES)
    graph = read_file(raw_dir, prefix, "graph")
    test_index = read_file(raw_dir, prefix, "test.index")
    train_index = torch.arange(y.size(0), dtype=torch.long)
    val_index = torch.arange(y.size(0), y.size(0) + 500, dtype=torch.long)
    sorted_test_index = test_index.sort()[0]
    if prefix.lower() == "citeseer":  # isolated test nodes leave gaps: zero rows, as PyG does
        span = int(test_index.max() - test_index.min()) + 1
        tx_ext = torch.zeros(span, tx.size(1), dtype=tx.dtype)
        tx_ext[sorted_test_index - test_index.min(), :] = tx
        ty_ext = torch.zeros(span, ty.size(1), dtype=ty.dtype)
        ty_ext[sorted_test_index - test_index.min(), :] = ty
        tx, ty = tx_ext, ty_ext
    x = torch.cat([allx, tx], dim=0)
    x[test_index] = x[sorted_test_index]
    y = torch.cat([ally, ty], dim=0).max(dim=1)[1]
    y[test_index] = y[sorted_test_index]
    data = Data(x=x, edge_index=edge_index_from_dict(graph, num_nodes=y.size(0)), y=y)
    data.train_mask = index_to_mask(train_index, size=y.size(0))
    data.val_mask = index_to_mask(val_index, size=y.size(0))
    data.test_mask = index_to_mask(test_index, size=y.size(0))
    return data


def labelled_mask_from_raw(raw_dir: Path, prefix: str, num_nodes: int) -> torch.Tensor:
    """Nodes whose one-hot label row (``ally``/``ty``) is non-zero, in PyG's node order."""
    ally = read_file(raw_dir, prefix, "ally")
    ty = read_file(raw_dir, prefix, "ty")
    test_index = read_file(raw_dir, prefix, "test.index")
    sorted_test_index = test_index.sort()[0]
    if prefix.lower() == "citeseer":  # the same gap filling as torch_geometric.io.planetoid
        span = int(test_index.max() - test_index.min()) + 1
        ty_ext = torch.zeros(span, ty.size(1), dtype=ty.dtype)
        ty_ext[sorted_test_index - test_index.min()] = ty
        ty = ty_ext
    has_label = torch.cat([ally, ty], dim=0).sum(dim=1) > 0
    has_label[test_index] = has_label[sorted_test_index].clone()
    if has_label.numel() != num_nodes:
        raise ValueError(
            f"{prefix}: raw label rows ({has_label.numel()}) do not match the graph's {num_nodes} nodes"
        )
    return has_label


def load_planetoid(
    entry: DatasetEntry, root: str | os.PathLike | None = None, download: bool | None = None
) -> LoadedDataset:
    """Load Cora/CiteSeer/PubMed with PyG's public split (20 per class / 500 / 1000)."""
    base = prepare_dataset_folder(entry, root, download)
    raw_dir = base / entry.folder / "raw"
    data = read_planetoid_data(raw_dir, entry.name)
    data.labelled_mask = labelled_mask_from_raw(raw_dir, entry.name, data.num_nodes)
    return LoadedDataset(
        name=entry.name,
        task="node",
        metric="acc",
        num_features=int(data.num_features),
        num_classes=int(data.y.max()) + 1,
        data=data,
        split_idx=split_idx_from_masks(data),
        root=base,
        info={"source": entry.source, "split": "public"},
    )

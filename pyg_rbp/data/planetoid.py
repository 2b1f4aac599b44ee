"""The Planetoid citation graphs (Cora, CiteSeer, PubMed) through PyG's ``Planetoid``.

PyG gives every node a label, but CiteSeer's ``ind.*`` files have test-index gaps: 15 isolated
nodes with no features and no label, which PyG fills with zero rows and so labels class 0. The
paper protocol uses *all labelled nodes*, so we recompute from the raw one-hot label rows which
nodes really have a label and attach it as ``data.labelled_mask``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch_geometric.data import Data

from pyg_rbp.data.loaded import LoadedDataset, split_idx_from_masks
from pyg_rbp.data.manifest import DatasetEntry
from pyg_rbp.data.storage import prepare_dataset_folder


def labelled_mask_from_raw(raw_dir: Path, prefix: str, num_nodes: int) -> torch.Tensor:
    """Nodes whose one-hot label row (``ally``/``ty``) is non-zero, in PyG's node order."""
    from torch_geometric.io.planetoid import read_file

    ally = read_file(str(raw_dir), prefix, "ally")
    ty = read_file(str(raw_dir), prefix, "ty")
    test_index = read_file(str(raw_dir), prefix, "test.index")
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
    from torch_geometric.datasets import Planetoid

    base = prepare_dataset_folder(entry, root, download)
    pyg_name = entry.extra["pyg_name"]
    dataset = Planetoid(str(base / "Planetoid"), pyg_name)
    data: Data = dataset[0]
    data.labelled_mask = labelled_mask_from_raw(base / entry.folder / "raw", entry.name, data.num_nodes)
    return LoadedDataset(
        name=entry.name,
        task="node",
        metric="acc",
        num_features=int(data.num_features),
        num_classes=int(dataset.num_classes),
        data=data,
        split_idx=split_idx_from_masks(data),
        root=base,
        info={"source": entry.source, "split": "public"},
    )

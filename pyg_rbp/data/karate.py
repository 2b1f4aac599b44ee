"""Zachary's karate club (PyG ``KarateClub``, embedded): the smallest real graph, for smoke runs.

PyG marks one training node per community (4 nodes) and no validation or test nodes; we add a
fixed validation/test split of the other 30 nodes (10 / 20, seed 0) so that it fits the same
train/select/test code as every other node dataset.
"""

from __future__ import annotations

import torch
from torch_geometric.datasets import KarateClub
from torch_geometric.utils import index_to_mask

from pyg_rbp.data.loaded import LoadedDataset, split_idx_from_masks

KARATE_SOURCE = "torch_geometric.datasets.KarateClub (embedded in PyG; Zachary 1977)"


def load_karate() -> LoadedDataset:
    """``load("karate")``: 34 nodes, identity features, 4 classes, train 4 / val 10 / test 20."""
    data = KarateClub()[0]
    n = int(data.num_nodes)
    rest = (~data.train_mask).nonzero().view(-1)
    order = rest[torch.randperm(rest.numel(), generator=torch.Generator().manual_seed(0))]
    data.val_mask = index_to_mask(order[:10], size=n)
    data.test_mask = index_to_mask(order[10:], size=n)
    data.labelled_mask = torch.ones(n, dtype=torch.bool)
    return LoadedDataset(
        name="karate",
        task="node",
        metric="acc",
        num_features=int(data.num_features),
        num_classes=int(data.y.max()) + 1,
        data=data,
        split_idx=split_idx_from_masks(data),
        info={"source": KARATE_SOURCE, "split": "PyG train (1 per class) + val 10 / test 20, seed 0"},
    )

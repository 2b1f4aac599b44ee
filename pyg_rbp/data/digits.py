"""The embedded node-classification graph: scikit-learn's 8x8 digits as a k-NN graph.

It needs no download (the digits ship with scikit-learn), so every machine, CI included, has a
real node-classification problem with a non-trivial graph: 1797 nodes, 64 standardized
features, 10 classes, a symmetric 10-nearest-neighbour graph and a fixed stratified split.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, index_to_mask, to_undirected

from pyg_rbp.data.loaded import LoadedDataset, split_idx_from_masks

DIGITS_SOURCE = "scikit-learn sklearn.datasets.load_digits (bundled; UCI optdigits)"


def digits_graph(k: int = 10, seed: int = 0, train: float = 0.1, val: float = 0.2) -> Data:
    """The digits k-NN graph with a stratified ``train``/``val``/rest split drawn with ``seed``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not (0 < train < 1 and 0 < val < 1 and train + val < 1):
        raise ValueError(f"need 0 < train, val and train + val < 1; got train={train}, val={val}")
    images, labels = load_digits(return_X_y=True)
    features = StandardScaler().fit_transform(images).astype(np.float32)
    n = features.shape[0]
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features, return_distance=False)
    rows, cols = [], []
    for i, row in enumerate(neighbours):
        others = [j for j in row if j != i][:k]
        rows += [i] * len(others)
        cols += others
    edge_index = to_undirected(
        coalesce(torch.tensor([rows, cols], dtype=torch.long), num_nodes=n), num_nodes=n
    )

    index = np.arange(n)
    n_train, n_val = round(train * n), round(val * n)
    train_idx, rest = train_test_split(index, train_size=n_train, stratify=labels, random_state=seed)
    val_idx, test_idx = train_test_split(rest, train_size=n_val, stratify=labels[rest], random_state=seed)
    data = Data(x=torch.from_numpy(features), edge_index=edge_index, y=torch.from_numpy(labels).long())
    data.train_mask = index_to_mask(torch.from_numpy(train_idx), size=n)
    data.val_mask = index_to_mask(torch.from_numpy(val_idx), size=n)
    data.test_mask = index_to_mask(torch.from_numpy(test_idx), size=n)
    data.labelled_mask = torch.ones(n, dtype=torch.bool)
    return data


def load_digits_dataset() -> LoadedDataset:
    """``load("digits")``: the k=10 graph with the seed-0 10%/20%/70% stratified split."""
    data = digits_graph()
    return LoadedDataset(
        name="digits",
        task="node",
        metric="acc",
        num_features=int(data.num_features),
        num_classes=10,
        data=data,
        split_idx=split_idx_from_masks(data),
        info={"source": DIGITS_SOURCE, "k": 10, "split": "stratified 10/20/70, seed 0"},
    )

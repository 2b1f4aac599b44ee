"""The graphs the benchmarks run on: Cora (paper protocol features) and seeded random graphs.

Every benchmark row must say which graph and which cell size it was measured on, and every
method in one run must see exactly the same tensors. :class:`BenchGraph` is that one bundle;
:func:`load_bench_graph` builds it from a dataset name, :func:`random_graph` from sizes, so a
scaling run can go from Cora to a 100k-node graph by a flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

BENCH_DATASETS = ("cora", "random")


@dataclass
class BenchGraph:
    """Node features, edges, labels and the training mask of one benchmark graph."""

    name: str
    x: Tensor
    edge_index: Tensor
    y: Tensor
    train_mask: Tensor
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return int(self.x.size(0))

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.size(1))

    def to(self, device: torch.device | str) -> BenchGraph:
        return BenchGraph(self.name, self.x.to(device), self.edge_index.to(device),
                          self.y.to(device), self.train_mask.to(device), self.num_classes,
                          dict(self.info))

    def describe(self) -> dict[str, Any]:
        """Plain-Python summary for the JSON header."""
        return {"name": self.name, "num_nodes": self.num_nodes, "num_edges": self.num_edges,
                "num_features": int(self.x.size(1)), "num_classes": self.num_classes,
                "num_train": int(self.train_mask.sum()), **self.info}


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def random_graph(num_nodes: int, num_edges: int, num_features: int = 64, num_classes: int = 7,
                 seed: int = 0, train_fraction: float = 0.1) -> BenchGraph:
    """A seeded random directed graph with Gaussian features and uniform random labels.

    ``num_edges`` endpoints pairs are drawn uniformly; self-loops and duplicates are removed,
    so the graph may hold slightly fewer edges (the exact count is in ``info``). The first
    ``train_fraction`` of a random permutation of the nodes is the training set.
    """
    for name, value in (("num_nodes", num_nodes), ("num_edges", num_edges),
                        ("num_features", num_features), ("num_classes", num_classes)):
        _check_positive(name, value)
    if num_nodes < 2:
        raise ValueError(f"num_nodes must be at least 2, got {num_nodes}")
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(num_nodes, (num_edges,), generator=gen)
    dst = torch.randint(num_nodes, (num_edges,), generator=gen)
    keep = src != dst
    key = torch.unique(src[keep] * num_nodes + dst[keep])
    edge_index = torch.stack([key // num_nodes, key % num_nodes])
    x = torch.randn(num_nodes, num_features, generator=gen)
    y = torch.randint(num_classes, (num_nodes,), generator=gen)
    perm = torch.randperm(num_nodes, generator=gen)
    train_mask = torch.zeros(num_nodes, dtype=torch.bool)
    train_mask[perm[: max(1, int(train_fraction * num_nodes))]] = True
    return BenchGraph("random", x, edge_index, y, train_mask, num_classes,
                      {"seed": seed, "requested_edges": num_edges})


def load_bench_graph(name: str, *, root: str | Path | None = None, hidden: int = 64,
                     num_nodes: int = 2708, num_edges: int = 10556, num_features: int | None = None,
                     num_classes: int = 7, seed: int = 0) -> BenchGraph:
    """The graph a scaling benchmark runs on.

    ``cora``: the paper protocol of :func:`pyg_rbp.data.apply_protocol` (labelled nodes,
    bag-of-words reduced by PCA to ``hidden`` dimensions, seeded 1% training split).
    ``random``: :func:`random_graph` with the given sizes (features default to ``hidden``).
    """
    key = name.strip().lower()
    if key not in BENCH_DATASETS:
        raise ValueError(f"unknown benchmark dataset {name!r}; choose one of {', '.join(BENCH_DATASETS)}")
    _check_positive("hidden", hidden)
    if key == "random":
        return random_graph(num_nodes, num_edges, num_features or hidden, num_classes, seed)
    from pyg_rbp.data import apply_protocol, load

    data = apply_protocol(load("cora", root=root), "paper", seed=seed, hidden=num_features or hidden)
    return BenchGraph("cora", data.x, data.edge_index, data.y, data.train_mask,
                      int(data.y.max()) + 1,
                      {"features": f"PCA-{data.x.size(1)} of bag-of-words (paper protocol)",
                       "split": f"paper 1%/49%/50%, seed {seed}"})

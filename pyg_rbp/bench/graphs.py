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

from pyg_rbp.data import apply_protocol, load

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
    data = apply_protocol(load("cora", root=root), "paper", seed=seed, hidden=num_features or hidden)
    return BenchGraph("cora", data.x, data.edge_index, data.y, data.train_mask,
                      int(data.y.max()) + 1,
                      {"features": f"PCA-{data.x.size(1)} of bag-of-words (paper protocol)",
                       "split": f"paper 1%/49%/50%, seed {seed}"})


def _node_data(num_nodes: int, num_features: int, num_classes: int, gen: torch.Generator,
               train_fraction: float) -> tuple[Tensor, Tensor, Tensor]:
    """Gaussian features, uniform labels and a random training mask (as :func:`random_graph`),
    on the generator's device."""
    dev = gen.device
    x = torch.randn(num_nodes, num_features, generator=gen, device=dev)
    y = torch.randint(num_classes, (num_nodes,), generator=gen, device=dev)
    perm = torch.randperm(num_nodes, generator=gen, device=dev)
    train_mask = torch.zeros(num_nodes, dtype=torch.bool, device=dev)
    train_mask[perm[: max(1, int(train_fraction * num_nodes))]] = True
    return x, y, train_mask


def powerlaw_graph(num_nodes: int, num_edges: int, num_features: int = 64, num_classes: int = 7,
                   seed: int = 0, exponent: float = 2.5, train_fraction: float = 0.1,
                   max_rounds: int = 50, device: torch.device | str | None = None) -> BenchGraph:
    r"""A seeded directed Chung-Lu graph whose degrees follow a power law.

    Both endpoints of every edge are drawn with probability proportional to
    :math:`w_i = (i + 1)^{-1/(\gamma - 1)}` (``gamma = exponent``), so in- and out-degrees have
    a power-law tail of exponent :math:`\gamma`; the hubs sit at random node ids. Self-loops and
    duplicates are removed and more edges are drawn until exactly ``num_edges`` distinct ones
    exist (a random subset of the last draw is kept), at most ``max_rounds`` draws; the count
    reached is in ``info["num_edges_reached"]``. Features, labels and the training mask are
    drawn as in :func:`random_graph`.

    ``device``: where the graph is drawn (a CUDA generator draws other numbers than the CPU
    one for the same seed, but a 60M-edge graph takes seconds there instead of minutes).
    """
    for name, value in (("num_nodes", num_nodes), ("num_edges", num_edges),
                        ("num_features", num_features), ("num_classes", num_classes)):
        _check_positive(name, value)
    if num_nodes < 2:
        raise ValueError(f"num_nodes must be at least 2, got {num_nodes}")
    if not exponent > 2:
        raise ValueError(f"exponent must be > 2 (a finite mean degree), got {exponent!r}")
    if num_edges > num_nodes * (num_nodes - 1) // 4:
        raise ValueError(f"num_edges={num_edges} is too dense for a power-law graph on {num_nodes} "
                         f"nodes (at most a quarter of the {num_nodes * (num_nodes - 1)} pairs)")
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    gen = torch.Generator(device=dev).manual_seed(seed)
    weights = torch.arange(1, num_nodes + 1, dtype=torch.float64, device=dev).pow(-1.0 / (exponent - 1.0))
    cdf = weights.cumsum(0)
    cdf /= cdf[-1].clone()
    ids = torch.randperm(num_nodes, generator=gen, device=dev)

    def endpoints(count: int) -> Tensor:
        u = torch.rand(count, generator=gen, dtype=torch.float64, device=dev)
        return ids[torch.searchsorted(cdf, u).clamp_max_(num_nodes - 1)]

    keys = torch.empty(0, dtype=torch.long, device=dev)
    rounds = 0
    while keys.numel() < num_edges and rounds < max_rounds:
        draw = int((num_edges - keys.numel()) * 1.1) + 16
        src, dst = endpoints(draw), endpoints(draw)
        keep = src != dst
        keys = torch.unique(torch.cat([keys, src[keep] * num_nodes + dst[keep]]))
        rounds += 1
    if keys.numel() > num_edges:
        keys = keys[torch.randperm(keys.numel(), generator=gen, device=dev)[:num_edges]].sort().values
    edge_index = torch.stack([keys // num_nodes, keys % num_nodes])
    del keys
    x, y, train_mask = _node_data(num_nodes, num_features, num_classes, gen, train_fraction)
    return BenchGraph("powerlaw", x, edge_index, y, train_mask, num_classes,
                      {"seed": seed, "requested_edges": num_edges, "exponent": exponent,
                       "num_edges_reached": int(edge_index.size(1)), "draw_rounds": rounds,
                       "generated_on": str(dev)})

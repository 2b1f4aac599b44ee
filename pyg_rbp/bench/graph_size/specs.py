"""The graphs of ``bench graph-size``: specs (``powerlaw:1m``, ``coauthor-cs``), their canonical
names (the keys of the JSON) and how each is built or read.

Kept apart from the measurement so that the CLI can validate ``--graphs`` and the subprocess
can rebuild a graph from its spec without importing the benchmark's driver.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.utils import remove_self_loops, to_undirected

from pyg_rbp.bench.graphs import BenchGraph, powerlaw_graph, random_graph
from pyg_rbp.data import pca_features
from pyg_rbp.data.storage import configured_root, mirror_roots


@dataclass(frozen=True)
class RealGraph:
    """A real graph read from the raw ``.npz`` of Shchur et al.'s release (PyG's layout)."""

    folder: str
    filename: str


SYNTHETIC: dict[str, Callable[..., BenchGraph]] = {
    "powerlaw": powerlaw_graph,
    "random": random_graph,
}
"""Synthetic generators, ``KIND:NODES[:EDGES]`` in a graph spec."""

REAL_GRAPHS: dict[str, RealGraph] = {
    "amazon-computers": RealGraph("Amazon/Computers/raw", "amazon_electronics_computers.npz"),
    "amazon-photo": RealGraph("Amazon/Photo/raw", "amazon_electronics_photo.npz"),
    "coauthor-cs": RealGraph("Coauthor/CS/raw", "ms_academic_cs.npz"),
    "coauthor-physics": RealGraph("Coauthor/Physics/raw", "ms_academic_phy.npz"),
}
"""Real graphs by name; read with numpy (``allow_pickle=False``), nothing is written."""

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([km]?)$")


def parse_size(text: str) -> int:
    """``"10k" -> 10000``, ``"2.4m" -> 2400000``, ``"13752" -> 13752``."""
    m = _SIZE.match(text.strip().lower())
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 10000, 10k, 1m)")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2)]
    if value < 1 or value != int(value):
        raise ValueError(f"not a positive whole size: {text!r}")
    return int(value)


def _short(n: int) -> str:
    for div, unit in ((10**6, "m"), (10**3, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{unit}"
    return str(n)


@dataclass(frozen=True)
class GraphSpec:
    """One graph of the benchmark: a real graph by name, or ``kind:nodes[:edges]``."""

    kind: str
    num_nodes: int | None = None
    num_edges: int | None = None

    @property
    def synthetic(self) -> bool:
        return self.kind in SYNTHETIC

    @property
    def name(self) -> str:
        """The canonical name used as the key in the JSON (``powerlaw-1m``, ``amazon-photo``)."""
        if not self.synthetic:
            return self.kind
        assert self.num_nodes is not None and self.num_edges is not None
        return f"{self.kind}-{_short(self.num_nodes)}-{_short(self.num_edges)}e"


def parse_graph(text: str, degree: int = 10) -> GraphSpec:
    """``"powerlaw:1m"`` (``degree * nodes`` edges), ``"random:100k:500k"``, ``"coauthor-cs"``."""
    key = text.strip().lower()
    if key in REAL_GRAPHS:
        return GraphSpec(key)
    parts = key.split(":")
    if parts[0] not in SYNTHETIC or len(parts) not in (2, 3):
        raise ValueError(
            f"unknown graph {text!r}: use a real graph ({', '.join(REAL_GRAPHS)}) or "
            f"KIND:NODES[:EDGES] with KIND one of {', '.join(SYNTHETIC)} (e.g. powerlaw:1m)")
    nodes = parse_size(parts[1])
    edges = parse_size(parts[2]) if len(parts) == 3 else degree * nodes
    if nodes < 2:
        raise ValueError(f"graph {text!r}: at least 2 nodes")
    return GraphSpec(parts[0], nodes, edges)


def _find_raw(real: RealGraph, root: str | os.PathLike | None) -> Path:
    candidates = [configured_root(root), *mirror_roots()]
    for base in candidates:
        path = Path(base) / real.folder / real.filename
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{real.folder}/{real.filename} not found under {', '.join(str(c) for c in candidates)}")


def load_real_graph(name: str, root: str | os.PathLike | None = None, hidden: int = 64,
                    seed: int = 0, train_fraction: float = 0.1) -> BenchGraph:
    """An Amazon / Coauthor graph from its raw ``.npz``, as PyG's ``Amazon``/``Coauthor`` build it.

    Self-loops are removed and the graph made undirected (PyG's ``read_npz``); the bag-of-words
    features are reduced to ``hidden`` dimensions by PCA (:func:`pyg_rbp.data.pca_features`, as
    the paper protocol does for Cora), so the features are the cell's initial state; a seeded
    random ``train_fraction`` of the nodes is the training set. Read with
    ``numpy.load(allow_pickle=False)``: nothing is unpickled, nothing is written.
    """
    real = REAL_GRAPHS.get(name)
    if real is None:
        raise ValueError(f"unknown real graph {name!r}; choose one of {', '.join(REAL_GRAPHS)}")
    path = _find_raw(real, root)
    with np.load(path, allow_pickle=False) as z:
        n = int(z["adj_shape"][0])
        indptr, indices = z["adj_indptr"].astype(np.int64), z["adj_indices"].astype(np.int64)
        row = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        x = torch.sparse_csr_tensor(torch.from_numpy(z["attr_indptr"].astype(np.int64)),
                                    torch.from_numpy(z["attr_indices"].astype(np.int64)),
                                    torch.from_numpy(z["attr_data"].astype(np.float32)),
                                    size=tuple(int(s) for s in z["attr_shape"]))
        y = torch.from_numpy(z["labels"].astype(np.int64))
    edge_index = torch.from_numpy(np.stack([row, indices]))
    edge_index, _ = remove_self_loops(edge_index)
    edge_index = to_undirected(edge_index, num_nodes=n)
    width = int(x.size(1))
    x = pca_features(x.to_dense(), hidden, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    train_mask = torch.zeros(n, dtype=torch.bool)
    train_mask[perm[: max(1, int(train_fraction * n))]] = True
    return BenchGraph(name, x, edge_index, y, train_mask, int(y.max()) + 1,
                      {"features": f"PCA-{hidden} of {width} bag-of-words features",
                       "source": str(path.name)})


def build_graph(spec: GraphSpec, *, hidden: int = 64, classes: int = 7, seed: int = 0,
                exponent: float = 2.5, root: str | os.PathLike | None = None,
                device: torch.device | str | None = None) -> BenchGraph:
    """The graph of ``spec`` with ``hidden``-wide features (the cell's initial state).

    Power-law graphs are drawn on ``device`` (default CPU); the others are built on the CPU.
    """
    if spec.synthetic:
        assert spec.num_nodes is not None and spec.num_edges is not None
        kwargs: dict[str, Any] = {"exponent": exponent, "device": device} if spec.kind == "powerlaw" else {}
        g = SYNTHETIC[spec.kind](spec.num_nodes, spec.num_edges, hidden, classes, seed, **kwargs)
    else:
        g = load_real_graph(spec.kind, root=root, hidden=hidden, seed=seed)
    g.name = spec.name
    return g


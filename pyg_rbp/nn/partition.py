"""Node partitions of a graph: which nodes share a mini-batch.

History batches (:mod:`pyg_rbp.nn.history`) and cluster batches both cut a graph into parts.
Every edge between two parts is a message a batch does not differentiate through (a history
batch reads it from the buffer as a constant, a cluster batch drops it), so the fraction of
edges cut (:func:`edge_cut`) bounds how far a batch's gradient can be from the full graph's.
On Amazon Computers' largest component (average degree 37, 5 parts) a random order cuts 80.0 %
of the edges, the reverse Cuthill-McKee order 47.9 % and the spectral partition 16.5 %
(``benchmarks/results/scale/partitions.md``).

Methods (:data:`PARTITIONS`, one registration each; each returns a part id per node):

* ``spectral``: recursive spectral bisection. Each split sorts the nodes by the
  Fiedler vector of the normalised adjacency :math:`D^{-1/2}(A + I)D^{-1/2}` (scipy's Lanczos,
  ``eigsh``) and cuts it in proportion to the parts on each side, or at the end of a connected
  component where one lies within the sizes the two sides may take. Then greedy boundary
  refinement: a node moves to the part holding most of its neighbours while sizes stay within
  ``max_size`` and 10 % of balance. No METIS needed.
* ``rcm`` (the default of :func:`partition_nodes` and the history loader): contiguous chunks of
  the reverse Cuthill-McKee order (small bandwidth, fast).
* ``random``: chunks of a random permutation drawn with ``seed`` (the no-locality reference).
* ``metis``: METIS through ``torch-sparse`` (built with METIS) or ``pyg-lib``, as PyG's
  ``ClusterData`` calls it; sizes are METIS's (balanced to a few per cent, not capped).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch_geometric.typing as tg
from scipy.sparse.csgraph import connected_components, reverse_cuthill_mckee
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from torch import Tensor

from pyg_rbp.nn.adjacency import as_edge_index
from pyg_rbp.resolver import Registry

__all__ = ["PARTITIONS", "assign_parts", "edge_cut", "metis_available", "partition_nodes"]

Partitioner = Callable[[sp.csr_matrix, int, int, int], np.ndarray]
"""``(symmetric adjacency, num_parts, max_size, seed) -> [N] part ids in 0..num_parts-1``."""

PARTITIONS: Registry[Partitioner] = Registry("partition")
"""Partition methods by name: ``PARTITIONS.register("mine", fn)`` adds one to ``--partition``."""

BALANCE = 0.10
"""Refinement keeps every part within this fraction of the mean part size."""


def _chunks(order: np.ndarray, num_parts: int) -> np.ndarray:
    """Part ids that cut ``order`` into ``num_parts`` contiguous, balanced chunks."""
    n = order.size
    part = np.empty(n, dtype=np.int64)
    for p, chunk in enumerate(np.array_split(order, num_parts)):
        part[chunk] = p
    return part


@PARTITIONS.decorator("rcm")
def _rcm(adj: sp.csr_matrix, num_parts: int, max_size: int, seed: int) -> np.ndarray:
    return _chunks(reverse_cuthill_mckee(adj, symmetric_mode=True).astype(np.int64), num_parts)


@PARTITIONS.decorator("random")
def _random(adj: sp.csr_matrix, num_parts: int, max_size: int, seed: int) -> np.ndarray:
    order = torch.randperm(adj.shape[0], generator=torch.Generator().manual_seed(int(seed)))
    return _chunks(order.numpy(), num_parts)


def _fiedler_order(adj: sp.csr_matrix, seed: int) -> np.ndarray:
    """The nodes of a connected graph sorted by the Fiedler vector of its normalised adjacency
    (reverse Cuthill-McKee where Lanczos does not converge)."""
    n = adj.shape[0]
    if n <= 2:
        return np.arange(n)
    deg = np.asarray(adj.sum(axis=1)).ravel() + 1.0
    d = sp.diags(1.0 / np.sqrt(deg))
    m = d @ (adj + sp.eye(n, format="csr")) @ d
    v0 = np.random.default_rng(seed).standard_normal(n)
    try:
        vals, vecs = eigsh(m, k=2, which="LA", v0=v0, tol=1e-4, maxiter=3000)
    except ArpackNoConvergence:
        return reverse_cuthill_mckee(adj, symmetric_mode=True).astype(np.int64)
    v = vecs[:, int(np.argmin(vals))] / np.sqrt(deg)
    if v[np.argmax(np.abs(v))] < 0:  # the sign is arbitrary: fix it, so runs agree
        v = -v
    return np.argsort(v, kind="stable")


def _spectral_order(adj: sp.csr_matrix, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An order whose prefixes cut few edges: components one after another (largest first),
    each sorted by its Fiedler vector; and the positions where one component ends."""
    count, label = connected_components(adj, directed=False)
    if count == 1:
        return _fiedler_order(adj, seed), np.zeros(0, dtype=np.int64)
    by_label = np.argsort(label, kind="stable")  # the nodes of each component, grouped once
    members = np.split(by_label, np.cumsum(np.bincount(label, minlength=count))[:-1])
    order = []
    for c in np.argsort(-np.bincount(label, minlength=count), kind="stable"):
        nodes = members[c]
        order.append(nodes[_fiedler_order(adj[nodes][:, nodes], seed)] if nodes.size > 2 else nodes)
    return np.concatenate(order), np.cumsum([o.size for o in order])[:-1]


def _bisect(adj: sp.csr_matrix, nodes: np.ndarray, num_parts: int, first: int, max_size: int, seed: int,
            part: np.ndarray) -> None:
    """Split ``nodes`` in proportion ``left : num_parts - left`` of parts, at a component's end
    where one lies between the sizes both sides can hold, else along the Fiedler order."""
    if num_parts == 1:
        part[nodes] = first
        return
    left = num_parts // 2
    local, ends = _spectral_order(adj[nodes][:, nodes], seed)
    order = nodes[local]
    cut = int(round(nodes.size * left / num_parts))
    lo, hi = nodes.size - (num_parts - left) * max_size, left * max_size
    lo, hi = max(lo, left), min(hi, nodes.size - (num_parts - left))  # no side short of nodes
    fits = ends[(ends >= lo) & (ends <= hi)]
    if fits.size:
        cut = int(fits[np.argmin(np.abs(fits - cut))])
    _bisect(adj, order[:cut], left, first, max_size, seed, part)
    _bisect(adj, order[cut:], num_parts - left, first + left, max_size, seed, part)


def _refine(adj: sp.csr_matrix, part: np.ndarray, num_parts: int, max_size: int,
            passes: int = 10) -> np.ndarray:
    """Greedy boundary refinement: move nodes to the part holding most of their neighbours."""
    n = part.size
    mean = n / num_parts
    cap = max(int(np.ceil(mean)), min(max_size, int(np.floor(mean * (1 + BALANCE)))))
    floor = min(int(np.floor(n / num_parts)), max(1, int(np.ceil(mean * (1 - BALANCE)))))
    rows = np.arange(n)
    for _ in range(passes):
        onehot = sp.csr_matrix((np.ones(n), (rows, part)), shape=(n, num_parts))
        links = (adj @ onehot).tocsr()  # [N, parts], sparse: a node touches few parts
        best = np.asarray(links.argmax(axis=1)).ravel()
        gain = np.asarray(links.max(axis=1).todense()).ravel() - np.asarray(links[rows, part]).ravel()
        movers = np.flatnonzero(gain > 0)
        movers = movers[np.argsort(-gain[movers], kind="stable")]
        sizes = np.bincount(part, minlength=num_parts)
        moved = 0
        for i in movers.tolist():
            src, dst = part[i], best[i]
            if sizes[dst] < cap and sizes[src] > floor:
                sizes[src] -= 1
                sizes[dst] += 1
                part[i] = dst
                moved += 1
        if not moved:
            break
    return part


def _without_loops(adj: sp.csr_matrix) -> sp.csr_matrix:
    adj = (adj - sp.diags(adj.diagonal())).tocsr()  # a self loop links a node to its own part
    adj.eliminate_zeros()
    return adj


@PARTITIONS.decorator("spectral")
def _spectral(adj: sp.csr_matrix, num_parts: int, max_size: int, seed: int) -> np.ndarray:
    adj = _without_loops(adj)
    part = np.empty(adj.shape[0], dtype=np.int64)
    _bisect(adj, np.arange(adj.shape[0]), num_parts, 0, max_size, seed, part)
    return _refine(adj, part, num_parts, max_size)


def metis_available() -> bool:
    """Whether METIS can partition here: pyg-lib with METIS, or a torch-sparse built with
    ``WITH_METIS=1`` against libmetis (a plain source build of torch-sparse has none)."""
    if getattr(tg, "WITH_METIS", False):
        return True
    if not tg.WITH_TORCH_SPARSE:
        return False
    try:
        torch.ops.torch_sparse.partition(torch.tensor([0, 1, 2]), torch.tensor([1, 0]), None, 2, False)
    except (AttributeError, RuntimeError):  # "Not compiled with METIS support"
        return False
    return True


@PARTITIONS.decorator("metis")
def _metis(adj: sp.csr_matrix, num_parts: int, max_size: int, seed: int) -> np.ndarray:
    if not metis_available():
        raise RuntimeError(
            "partition 'metis' needs METIS, which neither pyg-lib nor torch-sparse offers here "
            "(install pyg-lib from PyG's wheel index, or build torch-sparse with WITH_METIS=1 "
            "against libmetis); partition 'spectral' needs nothing")
    adj = _without_loops(adj)
    indptr = torch.from_numpy(adj.indptr.astype(np.int64))
    index = torch.from_numpy(adj.indices.astype(np.int64))
    if tg.WITH_TORCH_SPARSE:
        try:
            return torch.ops.torch_sparse.partition(indptr, index, None, num_parts, False).numpy()
        except (AttributeError, RuntimeError):
            pass
    import pyg_lib  # noqa: PLC0415 - optional dependency

    return pyg_lib.partition.metis(indptr, index, num_parts, recursive=False).numpy()


def _symmetric(edge_index: Tensor, num_nodes: int) -> sp.csr_matrix:
    row, col = edge_index.cpu().numpy()
    adj = sp.coo_matrix((np.ones(row.size), (row, col)), shape=(num_nodes, num_nodes))
    adj = (adj + adj.T).tocsr()
    adj.data[:] = 1.0
    return adj


def assign_parts(edge_index: Any, num_nodes: int, num_parts: int, partition: str, seed: int = 0,
                 max_size: int | None = None) -> Tensor:
    """A part id in ``0..num_parts-1`` for every node (``[num_nodes]``, long, on CPU), by the
    registered ``partition`` (:data:`PARTITIONS`).

    Edge directions are ignored (the graph is symmetrised). ``max_size`` is the largest part
    the refinement of ``spectral`` may grow (default: 10 % over the mean); the bisection itself
    balances the parts and never needs more than the mean rounded up. ``edge_index`` may also
    be a ``torch.sparse`` or ``SparseTensor`` adjacency (on any device).

    Raises:
        ValueError: an unknown ``partition``, or ``num_parts`` outside ``[1, num_nodes]``.
    """
    partition = PARTITIONS.canonical(partition)
    edge_index, _ = as_edge_index(edge_index, None, num_nodes)
    if not isinstance(num_parts, int) or not 1 <= num_parts <= num_nodes:
        raise ValueError(f"num_parts must be an integer in [1, {num_nodes}], got {num_parts!r}")
    if max_size is None:
        max_size = int(np.ceil(num_nodes / num_parts * (1 + BALANCE)))
    max_size = max(int(max_size), -(-num_nodes // num_parts))
    part = PARTITIONS[partition](_symmetric(edge_index, num_nodes), num_parts, max_size, int(seed))
    return torch.as_tensor(np.asarray(part), dtype=torch.long)


def partition_nodes(edge_index: Any, num_nodes: int, batch_size: int, partition: str = "rcm",
                    seed: int = 0, multiple_of: int = 1, *, method: str | None = None) -> list[Tensor]:
    """Cut the nodes into batches of at most ``batch_size`` (each sorted), covering every node once.

    The number of batches is ``ceil(num_nodes / batch_size)`` rounded up to a multiple of
    ``multiple_of`` (the number of processes sharing them); ``partition`` is one of
    :data:`PARTITIONS` (``metis`` balances but does not cap sizes). The default, ``rcm``, is
    what the history loader uses (``spectral`` cuts fewer edges but makes batches of few
    classes, which trained worse there). ``edge_index`` may also be a ``torch.sparse`` or
    ``SparseTensor`` adjacency. ``method`` is the old name of ``partition`` (deprecated).

    Example::

        batches = partition_nodes(data.edge_index, data.num_nodes, 1024, partition="spectral")
        edge_cut(data.edge_index, batches)  # fraction of edges between batches
    """
    if method is not None:
        warnings.warn("partition_nodes(method=...) is now partition_nodes(partition=...)",
                      DeprecationWarning, stacklevel=2)
        partition = method
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    partition = PARTITIONS.canonical(partition)
    count = -(-num_nodes // batch_size)
    count = -(-count // multiple_of) * multiple_of
    if count > num_nodes:
        raise ValueError(f"{num_nodes} nodes cannot fill {count} non-empty batches")
    part = assign_parts(edge_index, num_nodes, count, partition, seed, max_size=batch_size)
    order = torch.argsort(part, stable=True)
    sizes = torch.bincount(part, minlength=count)
    if bool((sizes == 0).any()):
        raise ValueError(f"partition {partition!r} left {int((sizes == 0).sum())} of {count} batches empty")
    return [chunk.sort().values for chunk in torch.split(order, sizes.tolist())]


def edge_cut(edge_index: Any, batches: list[Tensor] | Tensor, num_nodes: int | None = None) -> float:
    """The fraction of edges whose two ends lie in different batches (a list of node-id
    tensors, or a part id per node)."""
    if isinstance(batches, Tensor):
        part = batches
    else:
        n = num_nodes or int(sum(int(b.numel()) for b in batches))
        part = torch.full((n,), -1, dtype=torch.long)
        for i, b in enumerate(batches):
            part[b.cpu()] = i
    n = int(part.numel())
    edge_index, _ = as_edge_index(edge_index, None, n)
    ei = edge_index.cpu()
    if ei.size(1) == 0:
        return 0.0
    return float((part[ei[0]] != part[ei[1]]).double().mean())

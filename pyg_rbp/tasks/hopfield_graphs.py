"""Topologies for a Hopfield network of neurons: which pairs of neurons share a synapse.

The paper's network is fully connected. Expressed as a graph, the same memory can also run on
sparse synapses, which is where a graph library pays off; this module builds the three
topologies the Hopfield benchmark offers, all as undirected PyG ``edge_index`` tensors (every
edge in both directions, no self-loops), ready for :class:`pyg_rbp.nn.HopfieldCell`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

TOPOLOGIES = ("complete", "knn", "random")


def complete_graph(num_nodes: int) -> Tensor:
    """Every pair of distinct neurons, both directions: ``[2, N (N - 1)]``."""
    if num_nodes < 2:
        raise ValueError(f"a complete graph needs at least 2 nodes, got {num_nodes}")
    iu = torch.triu_indices(num_nodes, num_nodes, 1)
    return torch.cat([iu, iu.flip(0)], dim=1)


def neuron_positions(num_pixels: int, shape: tuple[int, int], num_hidden: int, seed: int) -> Tensor:
    """2-D positions of the neurons ``[input pixels, hidden, output pixels]``.

    The input and the output neuron of pixel ``(r, c)`` both sit at ``(r, c)``; hidden neurons at
    positions drawn uniformly over the image with ``seed``.
    """
    h, w = shape
    if h * w != num_pixels:
        raise ValueError(f"shape {shape} does not have {num_pixels} pixels")
    rr, cc = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    pixels = torch.stack([rr.flatten(), cc.flatten()], dim=1)
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.rand(num_hidden, 2, generator=gen, dtype=torch.float64) * torch.tensor(
        [h - 1, w - 1], dtype=torch.float64)
    return torch.cat([pixels, hidden, pixels], dim=0)


def knn_graph(positions: Tensor, k: int) -> Tensor:
    """Each neuron linked to its ``k`` nearest neurons (Euclidean, ties by index), symmetrised.

    Input and output neurons of one pixel share a position, so each pixel's input is always
    wired to its own output.
    """
    n = positions.size(0)
    if not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"k must be an integer in [1, {n - 1}], got {k!r}")
    dist = torch.cdist(positions, positions)
    dist.fill_diagonal_(float("inf"))
    # Stable tie-break by index: add a tiny increasing offset.
    dist = dist + torch.arange(n, dtype=dist.dtype).unsqueeze(0) * 1e-9
    nbr = dist.topk(k, dim=1, largest=False).indices
    row = torch.arange(n).repeat_interleave(k)
    edge_index = torch.stack([row, nbr.flatten()])
    return to_undirected(edge_index, num_nodes=n)


def random_graph(num_nodes: int, avg_degree: float, seed: int) -> Tensor:
    """Erdős-Rényi synapses: each pair present independently, expected degree ``avg_degree``."""
    if not 0 < avg_degree <= num_nodes - 1:
        raise ValueError(f"avg_degree must be in (0, {num_nodes - 1}], got {avg_degree!r}")
    gen = torch.Generator().manual_seed(seed)
    m = round(avg_degree * num_nodes / 2)
    # m pairs drawn with replacement; self-loops and repeats dropped (a small deficit when
    # the graph is sparse).
    row = torch.randint(0, num_nodes, (m,), generator=gen)
    col = torch.randint(0, num_nodes, (m,), generator=gen)
    edge_index, _ = remove_self_loops(torch.stack([row, col]))
    return coalesce(to_undirected(edge_index, num_nodes=num_nodes), num_nodes=num_nodes)


def build_topology(topology: str, num_pixels: int, shape: tuple[int, int], num_hidden: int, *,
                   k: int = 8, avg_degree: float = 32.0, seed: int = 0) -> Tensor:
    """The synapses of a memory with ``num_pixels`` input, ``num_hidden`` hidden and
    ``num_pixels`` output neurons (in that order).

    ``"complete"``: all pairs (the paper). ``"knn"``: the ``k`` nearest neurons in the image plane
    (:func:`neuron_positions`, :func:`knn_graph`). ``"random"``: Erdős-Rényi with ``avg_degree``.
    """
    n = 2 * num_pixels + num_hidden
    if topology == "complete":
        return complete_graph(n)
    if topology == "knn":
        return knn_graph(neuron_positions(num_pixels, shape, num_hidden, seed), k)
    if topology == "random":
        return random_graph(n, avg_degree, seed)
    raise ValueError(f"unknown topology {topology!r}; choose one of {TOPOLOGIES}")

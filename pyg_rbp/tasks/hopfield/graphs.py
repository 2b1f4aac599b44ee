"""Topologies for a Hopfield network of neurons: which pairs of neurons share a synapse.

The paper's network is fully connected. Expressed as a graph, the same memory can also run on
sparse synapses, which is where a graph library pays off; this module builds the three
topologies the Hopfield benchmark offers, all as undirected PyG ``edge_index`` tensors (every
edge in both directions, no self-loops), ready for :class:`pyg_rbp.nn.HopfieldCell`.

``"local"`` is the one that retrieves MNIST digits from a few percent of the synapses: local
receptive fields (every neuron wired to the neurons within a radius in the image plane, so a
hidden neuron sees a patch of the input and writes the same patch of the output) plus a few
random long-range synapses per hidden neuron. Synapses between two clamped input neurons never
carry a signal (both ends are held), so the local topology leaves them out; :func:`count_synapses`
counts any topology's synapses against the complete graph's.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

TOPOLOGIES = ("complete", "knn", "random", "local")


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


def local_graph(num_pixels: int, shape: tuple[int, int], num_hidden: int, radius: float,
                long_range: int, seed: int) -> Tensor:
    """Local receptive fields plus random long-range synapses, over ``[inputs, hidden, outputs]``.

    Every pair of neurons at most ``radius`` apart in the image plane (positions of
    :func:`neuron_positions`) shares a synapse, except pairs of two input neurons (both clamped:
    such a synapse never matters); each hidden neuron also gets ``long_range`` synapses to
    neurons drawn uniformly over the whole network (with ``seed``; repeats merged).
    """
    if radius < 0 or long_range < 0:
        raise ValueError(f"radius and long_range must be >= 0, got {radius!r}, {long_range!r}")
    pos = neuron_positions(num_pixels, shape, num_hidden, seed)
    n = pos.size(0)
    near = torch.cdist(pos, pos) <= radius + 1e-9
    near.fill_diagonal_(False)
    near[:num_pixels, :num_pixels] = False  # input-input: both ends clamped
    row, col = near.nonzero().t()
    parts = [torch.stack([row, col])]
    if long_range and num_hidden:
        gen = torch.Generator().manual_seed(seed + 1)
        hidden = torch.arange(num_pixels, num_pixels + num_hidden).repeat_interleave(long_range)
        other = torch.randint(0, n, (hidden.numel(),), generator=gen)
        parts.append(torch.stack([hidden, other]))
    edge_index, _ = remove_self_loops(torch.cat(parts, dim=1))
    return coalesce(to_undirected(edge_index, num_nodes=n), num_nodes=n)


def count_synapses(edge_index: Tensor, num_nodes: int) -> dict[str, float]:
    """Undirected synapses of ``edge_index`` and their fraction of the complete graph's."""
    synapses = int(edge_index.size(1)) // 2
    complete = num_nodes * (num_nodes - 1) // 2
    return {"synapses": synapses, "complete_synapses": complete, "fraction": synapses / complete}


def build_topology(topology: str, num_pixels: int, shape: tuple[int, int], num_hidden: int, *,
                   k: int = 8, avg_degree: float = 32.0, seed: int = 0, radius: float = 3.0,
                   long_range: int = 16) -> Tensor:
    """The synapses of a memory with ``num_pixels`` input, ``num_hidden`` hidden and
    ``num_pixels`` output neurons (in that order).

    ``"complete"``: all pairs (the paper). ``"knn"``: the ``k`` nearest neurons in the image plane
    (:func:`neuron_positions`, :func:`knn_graph`). ``"random"``: Erdős-Rényi with ``avg_degree``.
    ``"local"``: receptive fields of ``radius`` plus ``long_range`` random synapses per hidden
    neuron (:func:`local_graph`).
    """
    n = 2 * num_pixels + num_hidden
    if topology == "complete":
        return complete_graph(n)
    if topology == "knn":
        return knn_graph(neuron_positions(num_pixels, shape, num_hidden, seed), k)
    if topology == "random":
        return random_graph(n, avg_degree, seed)
    if topology == "local":
        return local_graph(num_pixels, shape, num_hidden, radius, long_range, seed)
    raise ValueError(f"unknown topology {topology!r}; choose one of {TOPOLOGIES}")

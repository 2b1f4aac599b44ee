"""Node partitions: coverage and sizes, the reverse Cuthill-McKee order pinned, the spectral
partition recovering planted blocks, input formats, the registry, and clear errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import reverse_cuthill_mckee
from torch_geometric.utils import to_undirected

import pyg_rbp.nn.partition as partition
from pyg_rbp.nn.partition import PARTITIONS, assign_parts, edge_cut, partition_nodes


def planted(blocks: int = 4, size: int = 60, p_in: float = 0.2, p_out: float = 0.005, seed: int = 0):
    """A stochastic block model with shuffled node ids: the planted blocks and the graph."""
    gen = torch.Generator().manual_seed(seed)
    n = blocks * size
    block = torch.arange(n) // size
    prob = torch.where(block[:, None] == block[None, :], p_in, p_out)
    adj = torch.rand(n, n, generator=gen) < prob
    adj = torch.triu(adj, diagonal=1)
    edge_index = to_undirected(adj.nonzero().t(), num_nodes=n)
    perm = torch.randperm(n, generator=gen)  # hide the blocks from an order-based method
    return perm[edge_index], torch.empty(n, dtype=torch.long).index_copy_(0, perm, block)


@pytest.mark.parametrize("method", ["spectral", "rcm", "random"])
@pytest.mark.parametrize("multiple_of", [1, 3])
def test_batches_cover_every_node_once_within_the_size(method, multiple_of):
    edge_index, _ = planted()
    batches = partition_nodes(edge_index, 240, batch_size=50, partition=method, multiple_of=multiple_of)
    assert len(batches) == (5 if multiple_of == 1 else 6)
    assert sorted(torch.cat(batches).tolist()) == list(range(240))
    assert all(b.numel() <= 50 and b.numel() > 0 for b in batches)
    assert all(bool((b[1:] > b[:-1]).all()) for b in batches)  # each sorted


def test_rcm_and_random_are_the_chunks_they_always_were():
    """History runs recorded with these partitions must rebuild the same batches."""
    edge_index, _ = planted(seed=3)
    n = 240
    row, col = edge_index.numpy()
    adj = sp.coo_matrix((np.ones(row.size, dtype=np.int8), (row, col)), shape=(n, n))
    rcm = reverse_cuthill_mckee((adj + adj.T).tocsr(), symmetric_mode=True)
    order = torch.from_numpy(rcm.astype("int64"))
    expected = [c.sort().values.tolist() for c in torch.tensor_split(order, 5)]
    assert [b.tolist() for b in partition_nodes(edge_index, n, 50, partition="rcm")] == expected
    order = torch.randperm(n, generator=torch.Generator().manual_seed(7))
    expected = [c.sort().values.tolist() for c in torch.tensor_split(order, 5)]
    assert [b.tolist() for b in partition_nodes(edge_index, n, 50, partition="random", seed=7)] == expected


def test_spectral_partition_recovers_planted_blocks():
    edge_index, block = planted()
    part = assign_parts(edge_index, 240, 4, "spectral")
    planted_cut = edge_cut(edge_index, block)
    assert edge_cut(edge_index, part) <= planted_cut * 1.05 + 1e-12
    # each found part is (almost) one planted block
    for p in range(4):
        members = block[part == p]
        assert torch.bincount(members, minlength=4).max() >= 0.95 * members.numel()
    for other in ("rcm", "random"):
        assert edge_cut(edge_index, assign_parts(edge_index, 240, 4, other)) > 3 * planted_cut


def test_spectral_partition_keeps_components_whole_and_is_deterministic():
    a, _ = planted(blocks=1, size=50, p_in=0.3, seed=1)
    b, _ = planted(blocks=1, size=70, p_in=0.3, seed=2)
    edge_index = torch.cat([a, b + 50], dim=1)  # two components of 50 and 70 nodes
    part = assign_parts(edge_index, 120, 2, "spectral", max_size=70)
    assert edge_cut(edge_index, part) == 0.0
    assert torch.equal(part, assign_parts(edge_index, 120, 2, "spectral", max_size=70))


def test_every_adjacency_format_gives_the_same_partition():
    from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor

    edge_index, _ = planted()
    for name in ("spectral", "rcm"):
        want = [b.tolist() for b in partition_nodes(edge_index, 240, 60, name)]
        coo = torch.sparse_coo_tensor(edge_index, torch.ones(edge_index.size(1)), (240, 240))
        assert [b.tolist() for b in partition_nodes(coo, 240, 60, name)] == want
        assert [b.tolist() for b in partition_nodes(coo.to_sparse_csr(), 240, 60, name)] == want
        if WITH_TORCH_SPARSE:
            adj = SparseTensor.from_edge_index(edge_index, sparse_sizes=(240, 240))
            assert [b.tolist() for b in partition_nodes(adj, 240, 60, name)] == want


def test_a_registered_partition_is_one_name_away(monkeypatch):
    # a registration on a copy of the registry, so no other test sees it
    registry = copy.deepcopy(PARTITIONS)
    monkeypatch.setattr(partition, "PARTITIONS", registry)
    registry.register("test-stripes", lambda adj, parts, max_size, seed: np.arange(adj.shape[0]) % parts)
    edge_index, _ = planted()
    batches = partition_nodes(edge_index, 240, 80, partition="Test_Stripes")
    assert [b[:3].tolist() for b in batches] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert "test-stripes" not in PARTITIONS


def test_the_old_keyword_still_works_with_a_warning():
    edge_index, _ = planted()
    with pytest.warns(DeprecationWarning, match="partition="):
        old = partition_nodes(edge_index, 240, 50, method="random", seed=2)
    new = partition_nodes(edge_index, 240, 50, "random", 2)
    assert [b.tolist() for b in old] == [b.tolist() for b in new]


def test_edge_cut_counts_edges_between_batches():
    path = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    assert edge_cut(path, [torch.tensor([0, 1]), torch.tensor([2, 3])]) == pytest.approx(2 / 6)
    assert edge_cut(path, torch.tensor([0, 0, 0, 0])) == 0.0


def test_bad_input_is_named(monkeypatch):
    edge_index, _ = planted()
    with pytest.raises(ValueError, match="unknown partition 'kmeans': partition must be one of"):
        partition_nodes(edge_index, 240, 50, partition="kmeans")
    with pytest.raises(ValueError, match="num_parts"):
        assign_parts(edge_index, 240, 0, "spectral")
    with pytest.raises(ValueError, match="batch_size"):
        partition_nodes(edge_index, 240, 0)
    with pytest.raises(ValueError, match="cannot fill"):
        partition_nodes(edge_index, 4, 1, multiple_of=5)
    monkeypatch.setattr(partition, "metis_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs METIS.*'spectral' needs nothing"):
        partition_nodes(edge_index, 240, 50, partition="metis")

"""HopfieldCell's layer contract: repr, shapes, adjacency forms (its own graph), one parameter per
synapse, reset, the dense and sparse paths agree, every gradient mode."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.engine import grad_mode_names
from pyg_rbp.nn import HopfieldCell

pytestmark = pytest.mark.usefixtures("one_thread")
MODES = grad_mode_names()  # the paper's five, gmres and phantom
DT = torch.float64


def _complete(n: int) -> torch.Tensor:
    pairs = torch.combinations(torch.arange(n), 2).T
    return torch.cat([pairs, pairs.flip(0)], dim=1)


def test_repr(graph):
    assert repr(HopfieldCell(graph.num_nodes, graph.edge_index)) == (
        "HopfieldCell(6 neurons, 7 synapses, clamped=0, a=1, b=0.5, path=sparse-csr)")
    clamp = torch.tensor([0, 1])
    assert repr(HopfieldCell(4, _complete(4), clamp=clamp, a=0.5, b=2.0)) == (
        "HopfieldCell(4 neurons, 6 synapses, clamped=2, a=0.5, b=2, path=dense)")
    assert repr(HopfieldCell(4, _complete(4), dense=False, fused=False)).endswith("path=sparse-scatter)")


def test_output_shape_and_parameters(graph, contract):
    cell = HopfieldCell(graph.num_nodes, graph.edge_index)
    x = torch.randn(graph.num_nodes, 3)  # three independent patterns
    assert cell(x, x, graph.edge_index).shape == (graph.num_nodes, 3)
    assert contract.count_parameters(cell) == cell.num_synapses == graph.num_edges // 2


@pytest.mark.parametrize("path", ["csr", "scatter"])
@pytest.mark.parametrize("weighted", [False, True])
def test_adjacency_forms_agree(graph, adj_form, weighted, path):
    torch.manual_seed(0)
    cell = HopfieldCell(graph.num_nodes, graph.edge_index, init_std=0.5, fused=path == "csr")
    h, x = torch.randn(2, graph.num_nodes, 3).unbind(0)
    expected = cell(h, x, *graph.form("edge_index", weighted))
    torch.testing.assert_close(cell(h, x, *graph.form(adj_form, weighted)), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("clamped", [False, True])
def test_dense_and_sparse_paths_agree(clamped):
    torch.manual_seed(0)
    ei, clamp = _complete(5), (torch.tensor([1, 3]) if clamped else None)
    dense = HopfieldCell(5, ei, clamp=clamp, init_std=0.5)
    sparse = HopfieldCell(5, ei, clamp=clamp, init_std=0.5, dense=False)
    sparse.load_state_dict(dense.state_dict())
    assert dense.dense and not sparse.dense
    h, x = torch.randn(2, 5, 2).unbind(0)
    torch.testing.assert_close(dense(h, x, ei), sparse(h, x, ei), atol=1e-6, rtol=0)


def test_reset_parameters_restores_determinism(graph, contract):
    cell = HopfieldCell(graph.num_nodes, graph.edge_index, init_std=0.5)
    h, x = torch.randn(2, graph.num_nodes, 3).unbind(0)
    contract.assert_reset_restores_determinism(cell, lambda: cell(h, x, graph.edge_index))


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_every_gradient_mode_matches_the_dense_implicit_gradient(graph, contract, mode, dense):
    torch.manual_seed(0)
    ei = _complete(5) if dense else graph.edge_index
    n = int(ei.max()) + 1
    cell = HopfieldCell(n, ei, clamp=torch.tensor([0]), init_std=0.5).double()
    assert cell.dense == dense
    x = torch.randn(n, 2, dtype=DT, generator=torch.Generator().manual_seed(0))
    # an edge weight forces the sparse path: the dense path is checked without one
    weight = None if dense else graph.weight(DT)
    contract.assert_modes_match_reference(cell, x, ei, weight, mode)

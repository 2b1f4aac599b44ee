"""ImplicitCell's layer contract: repr, shapes, adjacency forms, parameters, reset, every gradient mode."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.engine import grad_mode_names
from pyg_rbp.nn import ImplicitCell

pytestmark = pytest.mark.usefixtures("one_thread")
MODES = grad_mode_names()  # the paper's five, gmres and phantom
DT = torch.float64


def test_repr():
    assert repr(ImplicitCell(5, 8)) == "ImplicitCell(5, 8, kappa=0.95, normalize='gcn')"
    assert repr(ImplicitCell(3, 4, kappa=0.5, normalize="none", act="tanh")) == (
        "ImplicitCell(3, 4, kappa=0.5, normalize='none')")


@pytest.mark.parametrize("bias", [True, False])
def test_output_shape_and_parameters(graph, contract, bias):
    f, c = 5, 4
    cell = ImplicitCell(f, c, bias=bias)
    h, x = torch.randn(graph.num_nodes, c), torch.randn(graph.num_nodes, f)
    assert cell(h, x, graph.edge_index, graph.weight()).shape == (graph.num_nodes, c)
    # the recurrent weight W [C, C], the input weight U [F, C] and the bias b [C]
    assert contract.count_parameters(cell) == c * c + f * c + (c if bias else 0)


@pytest.mark.parametrize("normalize", ["gcn", "none"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_adjacency_forms_agree(graph, adj_form, weighted, fused, normalize):
    torch.manual_seed(0)
    cell = ImplicitCell(5, 4, normalize=normalize, fused=fused)
    h, x = torch.randn(graph.num_nodes, 4), torch.randn(graph.num_nodes, 5)
    expected = cell(h, x, *graph.form("edge_index", weighted))
    torch.testing.assert_close(cell(h, x, *graph.form(adj_form, weighted)), expected, atol=1e-6, rtol=0)


def test_reset_parameters_restores_determinism(graph, contract):
    cell = ImplicitCell(5, 4)
    h, x = torch.randn(graph.num_nodes, 4), torch.randn(graph.num_nodes, 5)
    contract.assert_reset_restores_determinism(cell, lambda: cell(h, x, graph.edge_index))


@pytest.mark.parametrize("normalize", ["gcn", "none"])
@pytest.mark.parametrize("mode", MODES)
def test_every_gradient_mode_matches_the_dense_implicit_gradient(graph, contract, mode, normalize):
    torch.manual_seed(0)
    cell = ImplicitCell(3, 4, kappa=0.7, normalize=normalize, act="tanh").double()
    with torch.no_grad():
        cell.weight.mul_(5.0)  # far outside the bound: the projection acts (and is differentiated)
    x = torch.randn(graph.num_nodes, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    contract.assert_modes_match_reference(cell, x, graph.edge_index, graph.weight(DT), mode)

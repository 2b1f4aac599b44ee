"""PPRCell's layer contract: repr, shapes, adjacency forms, no parameters, every gradient mode."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.engine import grad_mode_names
from pyg_rbp.nn import PPRCell

pytestmark = pytest.mark.usefixtures("one_thread")
MODES = grad_mode_names()  # the paper's five, gmres and phantom
DT = torch.float64


def test_repr():
    assert repr(PPRCell()) == "PPRCell(alpha=0.1)"
    assert repr(PPRCell(alpha=0.25, fused=False)) == "PPRCell(alpha=0.25)"


def test_output_shape_and_parameters(graph, contract):
    cell = PPRCell(alpha=0.3)
    x = torch.randn(graph.num_nodes, 5)
    assert cell(x, x, graph.edge_index).shape == (graph.num_nodes, 5)  # the width follows x
    assert cell(x[:, :2], x[:, :2], graph.edge_index, graph.weight()).shape == (graph.num_nodes, 2)
    assert contract.count_parameters(cell) == 0


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_adjacency_forms_agree(graph, adj_form, weighted, fused):
    cell = PPRCell(alpha=0.3, fused=fused)
    h, x = torch.randn(2, graph.num_nodes, 4).unbind(0)
    expected = cell(h, x, *graph.form("edge_index", weighted))
    torch.testing.assert_close(cell(h, x, *graph.form(adj_form, weighted)), expected, atol=1e-6, rtol=0)


def test_reset_parameters_keeps_the_step(graph):
    cell = PPRCell(alpha=0.3)
    h, x = torch.randn(2, graph.num_nodes, 4).unbind(0)
    before = cell(h, x, graph.edge_index)
    cell.reset_parameters()
    torch.testing.assert_close(cell(h, x, graph.edge_index), before, rtol=0, atol=0)


@pytest.mark.parametrize("mode", MODES)
def test_every_gradient_mode_matches_the_dense_implicit_gradient(graph, contract, mode):
    x = torch.randn(graph.num_nodes, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    contract.assert_modes_match_reference(PPRCell(alpha=0.3), x, graph.edge_index, graph.weight(DT), mode)

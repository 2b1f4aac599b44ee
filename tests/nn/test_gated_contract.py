"""GatedCell's layer contract: repr, shapes, adjacency forms, parameters, reset, every gradient mode."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.engine import grad_mode_names
from pyg_rbp.nn import GatedCell

pytestmark = pytest.mark.usefixtures("one_thread")
MODES = grad_mode_names()  # the paper's five, gmres and phantom
DT = torch.float64


def test_repr():
    assert repr(GatedCell(16)) == "GatedCell(16, aggr='add', inject_input=True, fused=True)"
    assert repr(GatedCell(8, aggr="mean", inject_input=False, fused=False, spectral_norm=True)) == (
        "GatedCell(8, aggr='mean', inject_input=False, fused=False, spectral_norm=True)")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_output_shape_and_parameters(graph, contract, bias, spectral_norm):
    c = 4
    cell = GatedCell(c, bias=bias, spectral_norm=spectral_norm)
    h, x = torch.randn(2, graph.num_nodes, c).unbind(0)
    assert cell(h, x, graph.edge_index, graph.weight()).shape == (graph.num_nodes, c)
    # one GRU: three gates, an input and a state matrix each, and two bias vectors each
    assert contract.count_parameters(cell) == 6 * c * c + (6 * c if bias else 0)


@pytest.mark.parametrize("aggr", ["add", "mean"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_adjacency_forms_agree(graph, adj_form, weighted, fused, aggr):
    torch.manual_seed(0)
    cell = GatedCell(4, aggr=aggr, fused=fused)
    h, x = torch.randn(2, graph.num_nodes, 4).unbind(0)
    expected = cell(h, x, *graph.form("edge_index", weighted))
    torch.testing.assert_close(cell(h, x, *graph.form(adj_form, weighted)), expected, atol=1e-6, rtol=0)


def test_reset_parameters_restores_determinism(graph, contract):
    cell = GatedCell(4)
    h, x = torch.randn(2, graph.num_nodes, 4).unbind(0)
    contract.assert_reset_restores_determinism(cell, lambda: cell(h, x, graph.edge_index))


@pytest.mark.parametrize("mode", MODES)
def test_every_gradient_mode_matches_the_dense_implicit_gradient(graph, contract, mode):
    torch.manual_seed(0)
    cell = GatedCell(3, aggr="mean").double()
    with torch.no_grad():
        cell.gru.weight_ih.mul_(0.3)  # keeps the step a contraction on this graph
    x = torch.randn(graph.num_nodes, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    contract.assert_modes_match_reference(cell, x, graph.edge_index, graph.weight(DT), mode)

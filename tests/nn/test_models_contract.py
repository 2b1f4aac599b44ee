"""The ready-made models' layer contract: repr, output shapes, adjacency forms, parameter counts,
reset, and gradients reaching every parameter in every gradient mode."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.engine import grad_mode_names
from pyg_rbp.nn import FixedPointGraphModel, FixedPointNodeClassifier

pytestmark = pytest.mark.usefixtures("one_thread")
MODES = grad_mode_names()  # the paper's five, gmres and phantom
F_IN, HID, OUT = 5, 8, 3
CELLS = ("gated", "implicit", "ppr")


def _linear(i: int, o: int) -> int:
    return i * o + o


NODE_PARAMETERS = {  # encoder + GRU + decoder; U, W, b + decoder; a two-layer MLP
    "gated": _linear(F_IN, HID) + 6 * HID * HID + 6 * HID + _linear(HID, OUT),
    "implicit": HID * HID + _linear(F_IN, HID) + _linear(HID, OUT),
    "ppr": _linear(F_IN, HID) + _linear(HID, OUT),
}
GRAPH_CELL_PARAMETERS = {"gated": 6 * HID * HID + 6 * HID, "implicit": HID * HID + _linear(HID, HID),
                         "ppr": 0}


def _node_model(cell: str, **kw) -> FixedPointNodeClassifier:
    torch.manual_seed(0)
    return FixedPointNodeClassifier(F_IN, HID, OUT, cell=cell, max_iter=30, **kw)


def _graph_model(cell: str, **kw) -> FixedPointGraphModel:
    torch.manual_seed(0)
    return FixedPointGraphModel(F_IN, HID, OUT, cell=cell, max_iter=30, aggr="mean", **kw)


def test_repr():
    conv = "FixedPointConv(PPRCell(alpha=0.1), grad='neumann', max_iter=30, backward_iter=20, tol=0.0)"
    assert repr(_node_model("ppr")) == f"FixedPointNodeClassifier(cell='ppr', conv={conv})"
    assert repr(_graph_model("ppr", pool="add")) == (
        f"FixedPointGraphModel(cell='ppr', pool='add', conv={conv})")


@pytest.mark.parametrize("cell", CELLS)
def test_output_shapes_and_parameters(graph, contract, cell):
    x = torch.randn(graph.num_nodes, F_IN)
    node = _node_model(cell)
    assert node(x, graph.edge_index).shape == (graph.num_nodes, OUT)
    assert contract.count_parameters(node) == NODE_PARAMETERS[cell]
    model = _graph_model(cell)
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    assert model(x, graph.edge_index, batch).shape == (2, OUT)
    assert model(x, graph.edge_index).shape == (1, OUT)  # no batch: one graph
    expected = _linear(F_IN, HID) + GRAPH_CELL_PARAMETERS[cell] + _linear(HID, HID) + _linear(HID, OUT)
    assert contract.count_parameters(model) == expected


@pytest.mark.parametrize("cell", CELLS)
def test_adjacency_forms_agree(graph, adj_form, cell):
    x = torch.randn(graph.num_nodes, F_IN)
    node = _node_model(cell).eval()
    expected = node(x, *graph.form("edge_index"))
    torch.testing.assert_close(node(x, *graph.form(adj_form)), expected, atol=1e-6, rtol=1e-5)
    model = _graph_model(cell).eval()
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    ei, w = graph.form("edge_index")
    expected = model(x, ei, batch, edge_weight=w)
    adj, _ = graph.form(adj_form)
    torch.testing.assert_close(model(x, adj, batch), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_reset_parameters_restores_determinism(graph, contract, cell):
    x = torch.randn(graph.num_nodes, F_IN)
    node = _node_model(cell)
    contract.assert_reset_restores_determinism(node, lambda: node(x, graph.edge_index))
    model = _graph_model(cell)
    contract.assert_reset_restores_determinism(model, lambda: model(x, graph.edge_index))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
def test_every_parameter_gets_a_gradient_in_every_mode(graph, cell, mode):
    """Exactness is the cells' contract (tests/nn/test_*_contract.py); here: the model wires the
    solve so that a gradient reaches every parameter, finite, in every mode."""
    x = torch.randn(graph.num_nodes, F_IN)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for model, args in ((_node_model(cell, grad=mode), ()),
                        (_graph_model(cell, grad=mode), (torch.tensor([0, 0, 0, 1, 1, 1]),))):
        out = model(x, graph.edge_index, *args)
        target = y if out.size(0) == graph.num_nodes else y[:2]
        torch.nn.functional.cross_entropy(out, target).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{type(model).__name__}/{cell}/{mode}: no gradient for {name}"
            assert bool(torch.isfinite(p.grad).all()) and float(p.grad.abs().sum()) > 0, name

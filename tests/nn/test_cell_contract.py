"""FixedPointCell's contract for subclasses: a cell that writes only ``step`` and ``initial_state``
gets validation, every adjacency form, the CSR and scatter paths and ``forward = step(prepare)``."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.nn import CellInputs, FixedPointCell, FixedPointConv

pytestmark = pytest.mark.usefixtures("one_thread")


class HalfMean(FixedPointCell):
    """h' = 0.5 * mean_j h_j + x: the smallest cell, to test the base class alone."""

    channels = 3

    def __init__(self, fused: bool = True) -> None:
        super().__init__(fused=fused, aggr="mean")

    def in_channels_expected(self) -> int:
        return 3

    def step(self, h, inputs: CellInputs):
        return 0.5 * self.aggregate_neighbours(h, inputs.graph) + inputs.x

    def initial_state(self, inputs: CellInputs):
        return torch.zeros_like(inputs.x)


def _dense_mean(graph, weighted: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    n = graph.num_nodes
    a = torch.zeros(n, n, dtype=dtype)
    w = graph.weight(dtype) if weighted else torch.ones(graph.num_edges, dtype=dtype)
    for k, (j, i) in enumerate(graph.edge_index.T.tolist()):
        a[i, j] += w[k]
    deg = torch.bincount(graph.edge_index[1], minlength=n).clamp_min(1)
    return a / deg.view(-1, 1)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_subclass_gets_every_form_and_both_paths(graph, adj_form, weighted, fused):
    cell = HalfMean(fused=fused)
    h, x = torch.randn(2, graph.num_nodes, 3).unbind(0)
    expected = 0.5 * _dense_mean(graph, weighted) @ h + x
    for form in ("edge_index", adj_form):
        out = cell(h, x, *graph.form(form, weighted))
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
        inputs = cell.prepare(x, *graph.form(form, weighted))
        assert isinstance(inputs, CellInputs) and inputs.num_nodes == graph.num_nodes
        assert (inputs.graph.csr is not None) == fused
        torch.testing.assert_close(cell.step(h, inputs), out, rtol=0, atol=0)


def test_bad_inputs_are_refused_with_their_names(graph):
    cell = HalfMean()
    x = torch.randn(graph.num_nodes, 3)
    with pytest.raises(ValueError, match=r"x must be a 2-D tensor of shape \[num_nodes, 3\]"):
        cell(x, x[:, :2], graph.edge_index)
    with pytest.raises(ValueError, match=r"h must have shape \[num_nodes, channels\] = \[6, 3\]"):
        cell(x[:4], x, graph.edge_index)
    with pytest.raises(ValueError, match="edge_index out of range"):
        cell(x, x, graph.edge_index + 1)
    with pytest.raises(ValueError, match=r"h0 must have shape"):
        FixedPointConv(cell)(x, graph.edge_index, h0=x[:, :2])


def test_the_fixed_point_of_a_subclass(graph):
    """The conv solves the subclass's map: h* = (I - 0.5 A_mean)^-1 x."""
    cell = HalfMean().double()
    x = torch.randn(graph.num_nodes, 3, dtype=torch.float64)
    out = FixedPointConv(cell, max_iter=80)(x, graph.edge_index)
    expected = torch.linalg.solve(torch.eye(graph.num_nodes, dtype=x.dtype)
                                  - 0.5 * _dense_mean(graph, False, x.dtype), x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)

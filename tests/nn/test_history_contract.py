"""The historical fixed points' contract: reprs, shapes of batches, buffer and outputs, what graph
forms are taken, and every gradient mode of a batch solve against the dense implicit gradient of
the batch's map with its halo held at the buffer's states."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.engine import grad_mode_names
from pyg_rbp.nn import FixedPointConv, FixedPointNodeClassifier, ImplicitCell
from pyg_rbp.nn.history import (
    HistoryBuffer,
    build_halo_batches,
    history_forward,
    partition_nodes,
    solve_batch,
    sweep,
)

pytestmark = pytest.mark.usefixtures("one_thread")
MODES = grad_mode_names()  # the paper's five, gmres and phantom
DT = torch.float64


def test_repr(graph):
    assert repr(HistoryBuffer(6)) == "HistoryBuffer(6, channels=None, dtype=None, device=None)"
    assert repr(HistoryBuffer(6, 4, torch.float64, "cpu")) == (
        "HistoryBuffer(6, channels=4, dtype=torch.float64, device=cpu)")
    batches = build_halo_batches(ImplicitCell(3, 4), graph.edge_index, 6, [torch.tensor([0, 1, 2]),
                                                                           torch.tensor([3, 4, 5])])
    # node 0 has the sources 1, 2, 4 (4 outside), 1 has 0, 2; 2 has 1, 3, 0 (3 outside)
    assert [repr(b) for b in batches] == ["HaloBatch(nodes=3, halo=2)", "HaloBatch(nodes=3, halo=2)"]


def test_shapes_of_batches_buffer_and_outputs(graph):
    n = graph.num_nodes
    parts = partition_nodes(graph.edge_index, n, batch_size=2)
    assert [p.numel() for p in parts] == [2, 2, 2]
    model = FixedPointNodeClassifier(3, 4, 5, cell="implicit", max_iter=20)
    batches = build_halo_batches(model.conv.cell, graph.edge_index, n, parts)
    buffer = HistoryBuffer(n)
    x = torch.randn(n, 3)
    for b in batches:
        assert b.adj.to_dense().shape == (b.num_nodes, b.num_nodes)
        assert b.halo_adj is None or b.halo_adj.to_dense().shape == (b.num_nodes, b.num_halo)
        assert history_forward(model, x[b.nodes], b, buffer).shape == (b.num_nodes, 5)
    assert buffer.states.shape == (n, 4) and buffer.writes == len(batches)
    assert sweep(model, x, batches, buffer).shape == (n, 5)


def test_batches_from_every_adjacency_form_agree(graph, adj_form):
    cell, n = ImplicitCell(3, 4), graph.num_nodes
    parts = partition_nodes(graph.edge_index, n, batch_size=3)
    adj, _ = graph.form(adj_form, weighted=False)
    assert [p.tolist() for p in partition_nodes(adj, n, batch_size=3)] == [p.tolist() for p in parts]
    expected = build_halo_batches(cell, graph.edge_index, n, parts)
    for got, want in zip(build_halo_batches(cell, adj, n, parts), expected):
        torch.testing.assert_close(got.adj.to_dense(), want.adj.to_dense())


@pytest.mark.parametrize("mode", MODES)
def test_every_gradient_mode_matches_the_dense_implicit_gradient_of_the_batch(graph, contract, mode):
    torch.manual_seed(0)
    n = graph.num_nodes
    cell = ImplicitCell(3, 4, kappa=0.7, act="tanh").double()
    x = torch.randn(n, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    parts = [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])]
    batches = build_halo_batches(cell, graph.edge_index, n, parts, dtype=DT)
    conv = FixedPointConv(cell, grad=mode, max_iter=150, backward_iter=300 if mode == "phantom" else 100)
    buffer = HistoryBuffer(n)
    with torch.no_grad():  # a few sweeps: the halo's states are no longer zero
        for _ in range(3):
            for b in batches:
                solve_batch(conv, x[b.nodes], b, buffer)
    batch = batches[0]
    held = buffer.states.clone()
    x_b = x[batch.nodes].clone().requires_grad_()
    out = solve_batch(conv, x_b, batch, buffer, write=False)
    r = torch.randn(out.shape, dtype=DT, generator=torch.Generator().manual_seed(7))
    params = list(cell.parameters())
    got = torch.autograd.grad((out * r).sum(), [x_b, *params])

    def step(h_b):  # the full-graph map with the batch's rows free and the others held
        h = held.index_put((batch.nodes,), h_b)
        x_full = x.index_put((batch.nodes,), x_b)
        return cell(h, x_full, graph.edge_index)[batch.nodes]

    want, radius = contract.dense_implicit_gradients(step, out, r, [x_b, *params])
    assert radius < 0.8
    torch.testing.assert_close(out.detach(), step(out).detach(), rtol=1e-9, atol=1e-11)
    for name, g, w in zip(["x", *(k for k, _ in cell.named_parameters())], got, want):
        assert float(w.norm()) > 0
        err = float((g - w).norm() / w.norm())
        assert err <= 1e-6, f"{mode}: gradient of {name} off by {err:.1e} (relative)"

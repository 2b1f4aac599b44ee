"""Historical fixed points: sweeps reach the full-graph fixed point; batch gradients are implicit ones."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.utils import to_undirected

from pyg_rbp.nn import FixedPointConv, FixedPointNodeClassifier, GatedCell, ImplicitCell, PPRCell
from pyg_rbp.nn.history import (
    HistoryAdjoint,
    HistoryBuffer,
    build_halo_batches,
    history_forward,
    partition_nodes,
    solve_batch,
    sweep,
)


def _graph(n: int = 120, e: int = 500, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    return to_undirected(ei, num_nodes=n)


@pytest.mark.parametrize("method", ["rcm", "random"])
def test_partition_covers_every_node_once(method):
    ei = _graph()
    batches = partition_nodes(ei, 120, batch_size=25, partition=method, multiple_of=2)
    assert len(batches) == 6 and len(batches) % 2 == 0
    allnodes = torch.cat(batches).sort().values
    assert torch.equal(allnodes, torch.arange(120))
    assert max(b.numel() for b in batches) - min(b.numel() for b in batches) <= 1


def test_halo_blocks_rebuild_the_full_adjacency():
    """A_BB and A_BH of all batches, put back at their global positions, are the cell's full A."""
    n = 60
    ei = _graph(n, 200)
    cell = ImplicitCell(3, 4)
    full = cell._prepare_graph(ei, None, n, torch.empty(n, 0)).csr.to_dense()
    batches = build_halo_batches(cell, ei, n, partition_nodes(ei, n, 16))
    rebuilt = torch.zeros(n, n)
    for b in batches:
        rebuilt[b.nodes.view(-1, 1), b.nodes.view(1, -1)] += b.adj.to_dense()
        if b.halo_adj is not None:
            rebuilt[b.nodes.view(-1, 1), b.halo.view(1, -1)] += b.halo_adj.to_dense()
        assert not bool(torch.isin(b.halo, b.nodes).any())
    torch.testing.assert_close(rebuilt, full)


@pytest.mark.parametrize("method", ["rcm", "random", "spectral"])
def test_sweeps_converge_to_the_full_graph_fixed_point(method):
    """Block Gauss-Seidel on a contractive ImplicitCell: 1e-5 relative to the full-graph solve."""
    torch.manual_seed(0)
    n = 150
    ei = _graph(n, 700, seed=1)
    cell = ImplicitCell(5, 8, kappa=0.9).double()
    x = torch.randn(n, 5, dtype=torch.float64)
    full = FixedPointConv(cell, grad="neumann", max_iter=2000, tol=1e-13)
    with torch.no_grad():
        h_full = full(x, ei)
    assert full.stats.residual < 1e-12
    batches = build_halo_batches(cell, ei, n, partition_nodes(ei, n, 40, partition=method, seed=3),
                                 dtype=torch.float64)
    assert all(b.num_halo > 0 for b in batches)
    conv = FixedPointConv(cell, grad="neumann", max_iter=500, tol=1e-13)
    buffer = HistoryBuffer(n)
    errors = []
    with torch.no_grad():
        for _ in range(40):
            for b in batches:
                solve_batch(conv, x.index_select(0, b.nodes), b, buffer)
            errors.append(float((buffer.states - h_full).norm() / h_full.norm()))
    assert errors[-1] < 1e-5, errors
    assert errors[0] > 1e-3  # one sweep is not enough: the halos were stale
    assert errors[5] < errors[1] < errors[0]


def test_ppr_and_gated_cells_sweep_to_their_full_fixed_points():
    n = 80
    ei = _graph(n, 300, seed=2)
    x = torch.randn(n, 4, dtype=torch.float64)
    for cell in (PPRCell(alpha=0.2), GatedCell(4, aggr="mean", inject_input=True).double()):
        with torch.no_grad():
            for p in cell.parameters():
                p.mul_(0.3)  # a small GRU is a contraction
            h_full = FixedPointConv(cell, max_iter=3000, tol=1e-13)(x, ei)
            conv = FixedPointConv(cell, max_iter=500, tol=1e-13)
            batches = build_halo_batches(cell, ei, n, partition_nodes(ei, n, 20), dtype=torch.float64)
            buffer = HistoryBuffer(n)
            for _ in range(60):
                for b in batches:
                    solve_batch(conv, x.index_select(0, b.nodes), b, buffer)
        rel = float((buffer.states - h_full).norm() / h_full.norm())
        assert rel < 1e-5, (cell, rel)


def test_batch_gradient_is_the_implicit_gradient_with_the_halo_constant():
    """Against a dense reference: F_B(h) = relu(A_BB h W + c W + X_B U + b), c = A_BH h_H fixed."""
    torch.manual_seed(1)
    n = 40
    ei = _graph(n, 160, seed=4)
    cell = ImplicitCell(3, 4, kappa=0.6).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    batches = build_halo_batches(cell, ei, n, partition_nodes(ei, n, 12), dtype=torch.float64)
    b = batches[1]
    buffer = HistoryBuffer(n, 4, torch.float64, "cpu")
    buffer.states.copy_(torch.randn(n, 4, dtype=torch.float64))
    halo_before = buffer.states[b.halo].clone()
    conv = FixedPointConv(cell, grad="neumann", max_iter=400, tol=1e-14, backward_iter=120)
    x_b = x.index_select(0, b.nodes).requires_grad_()
    out = solve_batch(conv, x_b, b, buffer)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), [cell.weight, cell.lin_in.weight, x_b])
    # the buffer's batch rows now hold the solve, the halo rows are untouched
    torch.testing.assert_close(buffer.states[b.nodes], out.detach())
    torch.testing.assert_close(buffer.states[b.halo], halo_before)

    # dense reference: implicit function theorem on the batch map
    a_bb = b.adj.to_dense()
    c = b.halo_adj.to_dense() @ halo_before
    nb = b.num_nodes

    def f(h, weight, u, xb):
        w = cell.projected_weight(torch.ones((), dtype=torch.float64)) if weight is None else weight
        return torch.relu((a_bb @ h + c) @ w + xb @ u.t() + cell.lin_in.bias)

    h = out.detach()
    w_k = cell.projected_weight(torch.ones((), dtype=torch.float64)).detach()
    jac = torch.autograd.functional.jacobian(lambda v: f(v.view(nb, 4), w_k, cell.lin_in.weight.detach(),
                                                         x_b.detach()).reshape(-1), h.reshape(-1))
    z = torch.linalg.solve(torch.eye(nb * 4, dtype=torch.float64) - jac.t(), g.reshape(-1)).view(nb, 4)
    weight = cell.weight.detach().requires_grad_()
    u = cell.lin_in.weight.detach().requires_grad_()
    xb = x_b.detach().requires_grad_()
    w_proj = cell.projected_weight.__func__(type("W", (), {"weight": weight, "kappa": cell.kappa})(),
                                            torch.ones((), dtype=torch.float64))
    ref = torch.autograd.grad((f(h, w_proj, u, xb) * z).sum(), [weight, u, xb])
    for got, want in zip(grads, ref):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def _history_gradients(cell, x, ei, batches, weight_g, adjoint, sweeps):
    """Per sweep: the parameter and input gradients summed over the batches of that sweep."""
    n = x.size(0)
    conv = FixedPointConv(cell, grad="neumann", max_iter=400, tol=1e-14, backward_iter=300,
                          backward_tol=1e-14)
    buffer = HistoryBuffer(n)
    params = list(cell.parameters())
    out_grads = []
    for _ in range(sweeps):
        total = [torch.zeros_like(p) for p in params]
        gx = torch.zeros_like(x)
        for b in batches:
            x_b = x.index_select(0, b.nodes).requires_grad_()
            for p in params:
                p.grad = None
            out = solve_batch(conv, x_b, b, buffer, adjoint=adjoint)
            (out * weight_g[b.nodes]).sum().backward()
            if adjoint is not None:
                adjoint.commit()
            total = [t + p.grad for t, p in zip(total, params)]
            gx[b.nodes] = x_b.grad
        out_grads.append([*total, gx])
    return out_grads


def test_historical_adjoint_sweeps_reach_the_full_graph_gradient():
    """With HistoryAdjoint the batch gradients of one sweep sum to the full-graph implicit gradient
    (1e-6 relative) once states and adjoints have settled; holding the halo constant alone misses
    the cross-batch terms by far more."""
    torch.manual_seed(2)
    n = 90
    ei = _graph(n, 400, seed=5)
    cell = ImplicitCell(3, 4, kappa=0.7).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    weight_g = torch.randn(n, 4, dtype=torch.float64)
    full = FixedPointConv(cell, grad="neumann", max_iter=2000, tol=1e-14, backward_iter=600,
                          backward_tol=1e-14)
    xf = x.clone().requires_grad_()
    (full(xf, ei) * weight_g).sum().backward()
    want = [p.grad.clone() for p in cell.parameters()] + [xf.grad]
    batches = build_halo_batches(cell, ei, n, partition_nodes(ei, n, 30), dtype=torch.float64)
    assert all(b.num_halo > 0 for b in batches)

    def rel(got):
        return max(float((g - w).norm() / w.norm()) for g, w in zip(got, want))

    with_adjoint = _history_gradients(cell, x, ei, batches, weight_g, HistoryAdjoint(batches), 40)
    halo_constant = _history_gradients(cell, x, ei, batches, weight_g, None, 40)
    assert rel(with_adjoint[-1]) < 1e-6, [rel(g) for g in with_adjoint]
    assert rel(with_adjoint[5]) < rel(with_adjoint[0])
    assert rel(halo_constant[-1]) > 1e-2  # the cross-batch terms matter


def test_history_adjoint_refuses_a_foreign_batch():
    ei = _graph(30, 100)
    cell = ImplicitCell(3, 4)
    batches = build_halo_batches(cell, ei, 30, partition_nodes(ei, 30, 10))
    other = build_halo_batches(cell, ei, 30, partition_nodes(ei, 30, 10))
    with pytest.raises(ValueError, match="not one of the batches"):
        HistoryAdjoint(batches).hook(other[0])


def test_history_forward_runs_the_whole_model_and_buffer_can_live_elsewhere():
    torch.manual_seed(2)
    n = 70
    ei = _graph(n, 300, seed=5)
    x = torch.randn(n, 6)
    model = FixedPointNodeClassifier(6, 8, 3, cell="implicit", max_iter=200, tol=1e-7).eval()
    with torch.no_grad():
        full = model(x, ei)
    batches = build_halo_batches(model.conv.cell, ei, n, partition_nodes(ei, n, 20))
    buffer = HistoryBuffer(n, device="cpu", dtype=torch.float64)  # another dtype: kept apart
    out = sweep(model, x, batches, buffer, sweeps=30)
    assert buffer.states.dtype == torch.float64 and out.shape == (n, 3)
    torch.testing.assert_close(out, full, rtol=1e-4, atol=1e-4)
    # the model's own forward is untouched after the batch solves
    assert "forward" not in vars(model.conv)
    with torch.no_grad():
        torch.testing.assert_close(model(x, ei), full)


def test_history_saves_only_batch_sized_tensors_for_backward():
    from pyg_rbp.profiling import SavedTensorBytes

    torch.manual_seed(3)
    n = 2000
    ei = _graph(n, 12000, seed=6)
    x = torch.randn(n, 50)
    model = FixedPointNodeClassifier(50, 32, 4, cell="implicit", max_iter=20)
    with SavedTensorBytes() as full_mem:
        model(x, ei).sum()
    batches = build_halo_batches(model.conv.cell, ei, n, partition_nodes(ei, n, 200))
    buffer = HistoryBuffer(n)
    peak = 0
    for b in batches:
        with SavedTensorBytes() as mem:
            history_forward(model, x.index_select(0, b.nodes), b, buffer).sum()
        peak = max(peak, mem.bytes)
    assert peak * 5 < full_mem.bytes, (peak, full_mem.bytes)


def test_bad_inputs_are_refused():
    ei = _graph(30, 80)
    with pytest.raises(ValueError, match="cover every node"):
        build_halo_batches(ImplicitCell(2, 2), ei, 30, [torch.arange(20)])
    with pytest.raises(ValueError, match="repeats nodes"):
        build_halo_batches(ImplicitCell(2, 2), ei, 30, [torch.arange(20), torch.arange(15, 30)])
    with pytest.raises(ValueError, match="normalize='gcn'"):
        build_halo_batches(ImplicitCell(2, 2, normalize="none"), ei, 30, [torch.arange(30)])
    with pytest.raises(ValueError, match="sum or mean"):
        build_halo_batches(GatedCell(2, aggr="max"), ei, 30, [torch.arange(30)])
    with pytest.raises(ValueError, match="batch_size"):
        partition_nodes(ei, 30, 0)
    buffer = HistoryBuffer(30, 5, torch.float32, "cpu")
    with pytest.raises(ValueError, match="5-wide"):
        buffer.ensure(4, torch.float32, torch.device("cpu"))


def test_batch_solves_use_the_layers_solver_and_strictness():
    """The layer's forward solver, its options and ``strict`` apply to batch solves too."""
    from pyg_rbp.engine import ConvergenceError

    n = 60
    ei = _graph(n, 200)
    cell = ImplicitCell(3, 4, kappa=0.9).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    batches = build_halo_batches(cell, ei, n, partition_nodes(ei, n, 20), dtype=torch.float64)
    conv = FixedPointConv(cell, grad="neumann", max_iter=200, tol=1e-10, solver="anderson",
                          solver_options={"m": 3})
    with torch.no_grad():
        solve_batch(conv, x.index_select(0, batches[0].nodes), batches[0], HistoryBuffer(n))
    assert conv.stats.solver == "anderson"
    strict = FixedPointConv(cell, grad="neumann", max_iter=1, tol=1e-12, strict=True)
    with pytest.raises(ConvergenceError):
        solve_batch(strict, x.index_select(0, batches[0].nodes), batches[0], HistoryBuffer(n))

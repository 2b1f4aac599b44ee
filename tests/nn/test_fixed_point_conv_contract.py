"""FixedPointConv's layer contract: repr, shapes, adjacency forms after a full solve (values and
gradients), parameters, reset, and every gradient mode against independent references."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.engine import grad_mode_names
from pyg_rbp.nn import FixedPointConv, GatedCell, ImplicitCell, PPRCell

pytestmark = pytest.mark.usefixtures("one_thread")
MODES = grad_mode_names()  # the paper's five, gmres and phantom
DT = torch.float64


def _cell(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "gated":
        cell = GatedCell(4, aggr="mean")
        with torch.no_grad():
            cell.gru.weight_ih.mul_(0.3)
        return cell
    if name == "implicit":
        return ImplicitCell(4, 5, kappa=0.7)
    return PPRCell(alpha=0.3)


def test_repr():
    conv = FixedPointConv(PPRCell())
    assert repr(conv) == ("FixedPointConv(PPRCell(alpha=0.1), grad='neumann', max_iter=100, "
                          "backward_iter=20, tol=0.0)")
    conv = FixedPointConv(GatedCell(8), grad="cg", max_iter=30, backward_iter=10, tol=1e-6,
                          solver="anderson")
    assert repr(conv) == ("FixedPointConv(GatedCell(8, aggr='add', inject_input=True, fused=True), "
                          "grad='cg', max_iter=30, backward_iter=10, tol=1e-06, solver='anderson')")


@pytest.mark.parametrize(("name", "channels", "params"),
                         [("gated", 4, 6 * 16 + 6 * 4), ("implicit", 5, 25 + 20 + 5), ("ppr", 4, 0)])
def test_output_shape_parameters_and_stats(graph, contract, name, channels, params):
    conv = FixedPointConv(_cell(name), max_iter=12)
    x = torch.randn(graph.num_nodes, 4)
    assert conv(x, graph.edge_index, graph.weight()).shape == (graph.num_nodes, channels)
    assert conv.stats.forward_iters == 12
    assert contract.count_parameters(conv) == contract.count_parameters(conv.cell) == params
    assert all(key.startswith("cell.") for key in conv.state_dict())


@pytest.mark.parametrize("name", ["gated", "implicit", "ppr"])
@pytest.mark.parametrize("weighted", [False, True])
def test_adjacency_forms_agree_after_the_solve(graph, adj_form, weighted, name):
    """The fixed point and the gradients to x and the parameters do not depend on the form."""
    conv = FixedPointConv(_cell(name), grad="cg", max_iter=60, backward_iter=40)
    x = torch.randn(graph.num_nodes, 4)
    r = torch.randn(graph.num_nodes, conv.cell.channels if name != "ppr" else 4)
    results = []
    for form in ("edge_index", adj_form):
        xs = x.clone().requires_grad_()
        out = conv(xs, *graph.form(form, weighted))
        grads = torch.autograd.grad((out * r).sum(), [xs, *conv.parameters()])
        results.append((out.detach(), *grads))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_reset_parameters_restores_determinism(graph, contract):
    conv = FixedPointConv(ImplicitCell(4, 5), max_iter=20)
    x = torch.randn(graph.num_nodes, 4)
    contract.assert_reset_restores_determinism(conv, lambda: conv(x, graph.edge_index))


def _dense_ppr_operator(graph, alpha: float) -> torch.Tensor:
    """(1 - alpha) D^-1/2 (A + I) D^-1/2 built entry by entry: independent of the layer's kernels."""
    n = graph.num_nodes
    a = torch.eye(n, dtype=DT)  # the graph has no self loops: every node gets one of weight 1
    for k in range(graph.num_edges):
        j, i = graph.edge_index[:, k].tolist()
        a[i, j] += float(graph.edge_weight[k])
    d = a.sum(dim=1).rsqrt()
    return (1 - alpha) * d.view(-1, 1) * a * d.view(1, -1)


@pytest.mark.parametrize("mode", MODES)
def test_ppr_fixed_point_and_input_gradient_equal_the_closed_form(graph, mode):
    """H* = alpha (I - M)^-1 X and dL/dX = alpha (I - M)^-T dL/dH* with M = (1 - alpha) A_hat:
    the layer's solve and every gradient mode against a dense solve in float64."""
    alpha = 0.3
    m = _dense_ppr_operator(graph, alpha)
    eye = torch.eye(graph.num_nodes, dtype=DT)
    x = torch.randn(graph.num_nodes, 3, dtype=DT, requires_grad=True)
    r = torch.randn(graph.num_nodes, 3, dtype=DT)
    conv = FixedPointConv(PPRCell(alpha=alpha), grad=mode, max_iter=150,
                          backward_iter=300 if mode == "phantom" else 100)
    out = conv(x, graph.edge_index, graph.weight(DT))
    torch.testing.assert_close(out.detach(), alpha * torch.linalg.solve(eye - m, x.detach()),
                               rtol=1e-10, atol=1e-12)
    (grad_x,) = torch.autograd.grad((out * r).sum(), [x])
    torch.testing.assert_close(grad_x, alpha * torch.linalg.solve((eye - m).T, r), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize(("mode", "solver", "damping"),
                         [(m, "iteration", 0.8) for m in MODES]
                         + [(m, "anderson", 1.0) for m in MODES if m != "bptt"])  # bptt needs plain steps
def test_solver_and_damping_keep_the_exact_gradient(graph, contract, mode, solver, damping):
    """The options FixedPointConv passes to the engine (forward solver, damping) change how the
    fixed point is reached, not the fixed point or its implicit gradient."""
    torch.manual_seed(0)
    cell = ImplicitCell(3, 4, kappa=0.7, act="tanh").double()
    x = torch.randn(graph.num_nodes, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    contract.assert_modes_match_reference(cell, x, graph.edge_index, graph.weight(DT), mode,
                                          solver=solver, damping=damping, max_iter=200)

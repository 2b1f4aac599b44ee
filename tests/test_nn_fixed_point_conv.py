"""FixedPointConv as a layer: batches, sparse inputs, dtypes, memory, settings, devices."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from pyg_rbp import GRAD_MODES
from pyg_rbp.nn import FixedPointConv, GatedCell, ImplicitCell, PPRCell
from pyg_rbp.profiling import saved_bytes

DT = torch.float64
IMPLICIT = ("rbp", "cg", "neumann")


@pytest.fixture(autouse=True)
def _one_thread():
    """Small problems: one intra-op thread avoids OpenMP stalls on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cell(name: str, channels: int = 4):
    torch.manual_seed(0)
    if name == "gated":
        cell = GatedCell(channels, inject_input=True)
        with torch.no_grad():
            cell.gru.weight_ih.mul_(0.3)
        return cell
    if name == "implicit":
        return ImplicitCell(3, channels, kappa=0.8)
    return PPRCell(alpha=0.2)


def _graph(n: int, seed: int, in_channels: int, dtype=DT) -> Data:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, 3 * n), generator=g)
    return Data(x=torch.randn(n, in_channels, generator=g, dtype=dtype), edge_index=ei,
                edge_weight=torch.rand(3 * n, generator=g, dtype=dtype) + 0.5)


def _in_channels(name: str) -> int:
    return 3 if name == "implicit" else 4


@pytest.mark.parametrize("name", ["gated", "implicit", "ppr"])
def test_batch_equals_graphs_one_by_one(name):
    cell = _cell(name).double()
    graphs = [_graph(n, seed, _in_channels(name)) for seed, n in enumerate((5, 8, 6))]
    batch = Batch.from_data_list(graphs)
    conv = FixedPointConv(cell, grad="neumann", max_iter=60, backward_iter=30)
    out = conv(batch.x, batch.edge_index, batch.edge_weight)
    singles = [conv(g.x, g.edge_index, g.edge_weight) for g in graphs]
    torch.testing.assert_close(out, torch.cat(singles), rtol=1e-12, atol=1e-12)
    # and the gradients of a sum of per-graph losses agree too
    params = list(cell.parameters()) or [batch.x.requires_grad_()]
    r = torch.randn(out.shape, dtype=DT, generator=torch.Generator().manual_seed(1))
    g_batch = torch.autograd.grad((conv(batch.x, batch.edge_index, batch.edge_weight) * r).sum(),
                                  params)
    parts = r.split([g.num_nodes for g in graphs])
    if params[0] is batch.x:
        xs = batch.x.split([g.num_nodes for g in graphs])
        loss = sum((conv(xi, g.edge_index, g.edge_weight) * ri).sum()
                   for xi, g, ri in zip(xs, graphs, parts))
    else:
        loss = sum((conv(g.x, g.edge_index, g.edge_weight) * ri).sum() for g, ri in zip(graphs, parts))
    g_single = torch.autograd.grad(loss, params)
    for a, b in zip(g_batch, g_single):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", IMPLICIT)
def test_implicit_mode_saved_bytes_do_not_depend_on_max_iter(mode):
    cell = GatedCell(16)
    data = _graph(200, 0, 16, dtype=torch.float32)
    w = data.edge_weight.requires_grad_()

    def run(max_iter: int, grad: str) -> int:
        conv = FixedPointConv(cell, grad=grad, max_iter=max_iter, backward_iter=5)
        return saved_bytes(lambda: conv(data.x, data.edge_index, w))

    assert run(5, mode) == run(50, mode) > 0
    bptt5, bptt50 = run(5, "bptt"), run(50, "bptt")
    assert bptt50 > 5 * bptt5  # the unrolled baseline grows with the number of steps
    assert run(50, mode) < bptt50 / 10


@pytest.mark.parametrize("name", ["gated", "implicit", "ppr"])
def test_float32_gradients_match_float64(name):
    data = _graph(10, 3, _in_channels(name))
    for mode in GRAD_MODES:
        grads = {}
        for dtype in (torch.float32, DT):
            cell = _cell(name).to(dtype)
            conv = FixedPointConv(cell, grad=mode, max_iter=80, backward_iter=40)
            x = data.x.to(dtype).requires_grad_()
            w = data.edge_weight.to(dtype).requires_grad_()
            out = conv(x, data.edge_index, w)
            assert out.dtype == dtype
            grads[dtype] = torch.autograd.grad(out.sin().sum(), [x, w])
        for a, b in zip(grads[torch.float32], grads[DT]):
            torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4)


def test_sparse_adjacency_inputs_give_the_same_states_and_gradients():
    cell = _cell("implicit").double()
    data = _graph(9, 4, 3)
    n = data.num_nodes
    conv = FixedPointConv(cell, grad="cg", max_iter=60, backward_iter=40)
    ref = conv(data.x, data.edge_index, data.edge_weight)
    adj_t = torch.sparse_coo_tensor(data.edge_index.flip(0), data.edge_weight, (n, n))
    for sparse in (adj_t, adj_t.to_sparse_csr()):
        torch.testing.assert_close(conv(data.x, sparse), ref, rtol=1e-12, atol=1e-12)
    x = data.x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(conv(x, adj_t.to_sparse_csr()).sum(), [x])
    x2 = data.x.clone().requires_grad_()
    (gx2,) = torch.autograd.grad(conv(x2, data.edge_index, data.edge_weight).sum(), [x2])
    torch.testing.assert_close(gx, gx2, rtol=1e-10, atol=1e-12)


def test_settings_are_plain_attributes_and_stats_describe_the_last_call():
    cell = _cell("ppr")
    data = _graph(12, 5, 4, dtype=torch.float32)
    conv = FixedPointConv(cell, grad="neumann", max_iter=30)
    conv(data.x, data.edge_index)
    assert conv.stats.grad == "neumann" and conv.stats.forward_iters == 30
    conv.grad, conv.max_iter, conv.backward_iter = "tbptt", 12, 4
    conv(data.x, data.edge_index)
    assert conv.stats.grad == "tbptt" and conv.stats.forward_iters == 12
    conv.grad, conv.tol, conv.max_iter = "cg", 1e-5, 500
    x = data.x.clone().requires_grad_()
    conv(x, data.edge_index).sum().backward()
    assert conv.stats.converged and conv.stats.forward_iters < 500
    assert conv.stats.residual <= 1e-5
    assert conv.stats.backward_iters == conv.backward_iter


def test_h0_changes_the_start_not_the_fixed_point_of_a_contraction():
    cell = _cell("implicit")
    data = _graph(10, 6, 3, dtype=torch.float32)
    conv = FixedPointConv(cell, max_iter=150)
    with torch.no_grad():
        a = conv(data.x, data.edge_index)
        b = conv(data.x, data.edge_index, h0=torch.randn(10, 4) * 5)
        one = FixedPointConv(cell, max_iter=1)(data.x, data.edge_index, h0=torch.zeros(10, 4))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one, cell(torch.zeros(10, 4), data.x, data.edge_index))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["gated", "implicit", "ppr"])
def test_cuda_matches_cpu_in_every_mode(name):
    data = _graph(20, 7, _in_channels(name), dtype=torch.float32)
    for mode in GRAD_MODES:
        results = []
        for device in ("cpu", "cuda"):
            cell = _cell(name).to(device)
            conv = FixedPointConv(cell, grad=mode, max_iter=60, backward_iter=30)
            x = data.x.to(device).requires_grad_()
            w = data.edge_weight.to(device).requires_grad_()
            out = conv(x, data.edge_index.to(device), w)
            grads = torch.autograd.grad(out.square().sum(), [x, w, *cell.parameters()])
            results.append([out, *grads])
        for a, b in zip(*results):
            torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["gated", "implicit", "ppr"])
def test_graph_without_edges(name):
    """No edges: every node evolves alone; the CSR kernel handles an empty matrix."""
    cell = _cell(name).double()
    x = torch.randn(5, _in_channels(name), dtype=DT)
    empty = torch.empty(2, 0, dtype=torch.long)
    conv = FixedPointConv(cell, grad="cg", max_iter=100, backward_iter=30)
    xs = x.clone().requires_grad_()
    out = conv(xs, empty)
    singles = torch.cat([conv(x[i:i + 1], empty) for i in range(5)])
    torch.testing.assert_close(out, singles, rtol=1e-12, atol=1e-12)
    out.sum().backward()
    assert torch.isfinite(xs.grad).all()
    if name == "ppr":  # only self loops: the fixed point of h = 0.8 h + 0.2 x is x
        torch.testing.assert_close(out, x, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("mode", GRAD_MODES)
def test_adjacency_is_built_once_per_solve(mode, monkeypatch):
    """A and its transpose are laid out once, whatever max_iter and backward_iter are."""
    import pyg_rbp.nn.adjacency as adjacency

    built = []
    original = adjacency.CSRAdjacency.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(adjacency.CSRAdjacency, "__init__", counting_init)
    data = _graph(15, 8, 4, dtype=torch.float32)
    conv = FixedPointConv(_cell("gated"), grad=mode, max_iter=40, backward_iter=15)
    w = data.edge_weight.float().requires_grad_()
    conv(data.x, data.edge_index, w).square().sum().backward()
    assert len(built) == 2  # A for the forward steps, A^T for every backward product
    assert w.grad is not None and float(w.grad.abs().sum()) > 0


def test_autocast_runs_the_solve_in_the_parameters_precision():
    """Under CPU bfloat16 autocast the layer matches its float32 output (the fused CSR
    kernel has no bfloat16 version, and the state must keep one dtype)."""
    data = _graph(12, 3, 4, dtype=torch.float32)
    conv = FixedPointConv(_cell("gated"), grad="neumann", max_iter=30, backward_iter=10)
    ref = conv(data.x, data.edge_index, data.edge_weight)
    lin = torch.nn.Linear(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = lin(data.x)
        assert x.dtype == torch.bfloat16
        out = conv(x, data.edge_index, data.edge_weight)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = conv(data.x, data.edge_index, data.edge_weight)
    torch.testing.assert_close(same, ref, rtol=1e-6, atol=1e-6)
    # float64 is not autocast's doing: it is left alone (no silent downcast)
    ppr, data64 = FixedPointConv(_cell("ppr"), max_iter=30), _graph(12, 3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out64 = ppr(data64.x, data64.edge_index, data64.edge_weight)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, ppr(data64.x, data64.edge_index, data64.edge_weight))


def test_integer_sparse_adjacency_is_weighted_by_its_values():
    data = _graph(9, 5, 4)
    n = data.num_nodes
    conv = FixedPointConv(_cell("ppr").double(), max_iter=40)
    counts = torch.randint(1, 3, (data.edge_index.size(1),))
    adj_t = torch.sparse_coo_tensor(data.edge_index.flip(0), counts, (n, n)).coalesce()
    ref = conv(data.x, adj_t.indices().flip(0), adj_t.values().double())
    torch.testing.assert_close(conv(data.x, adj_t), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", GRAD_MODES)
def test_a_frozen_layer_gives_an_output_that_needs_no_grad(mode):
    data = _graph(10, 6, 3)
    conv = FixedPointConv(_cell("implicit").double(), grad=mode, max_iter=20, backward_iter=5)
    conv.requires_grad_(False)
    assert not conv(data.x, data.edge_index, data.edge_weight).requires_grad
    x = data.x.clone().requires_grad_()
    assert conv(x, data.edge_index, data.edge_weight).requires_grad  # a differentiable input


@pytest.mark.parametrize("mode", GRAD_MODES)
def test_a_training_step_leaves_no_adjacency_behind(mode):
    """The CSR matrix and its transpose are freed with the step, without the cycle collector."""
    import gc
    import weakref

    import pyg_rbp.nn.adjacency as adjacency

    alive = weakref.WeakSet()
    original = adjacency.CSRAdjacency.__init__

    def tracking_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        alive.add(self)

    data = _graph(15, 7, 4, dtype=torch.float32)
    conv = FixedPointConv(_cell("gated"), grad=mode, max_iter=20, backward_iter=5)
    gc.collect()
    gc.disable()
    try:
        adjacency.CSRAdjacency.__init__ = tracking_init
        for _ in range(3):
            w = data.edge_weight.float().requires_grad_()
            conv(data.x, data.edge_index, w).square().sum().backward()
        del w
        assert len(alive) == 0
    finally:
        adjacency.CSRAdjacency.__init__ = original
        gc.enable()

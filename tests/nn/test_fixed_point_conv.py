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


pytestmark = pytest.mark.usefixtures("one_thread")


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


# --- issue 15: nothing silent; issue 19: per-graph convergence; issue 18: solvers in layers ---

def test_gated_cell_injects_its_input_by_default_and_the_paper_cell_says_so():
    import warnings as _w

    data = _graph(30, 1, 4)
    assert GatedCell(4).inject_input and GatedCell(4).reads_input
    torch.manual_seed(0)
    paper = GatedCell(4, aggr="mean", inject_input=False).double()
    conv = FixedPointConv(paper, max_iter=300)
    with pytest.warns(UserWarning, match="cannot depend on x"):
        a = conv(data.x, data.edge_index)
    b = conv(2 * data.x + 1, data.edge_index)  # warned once per layer
    assert (a - b).abs().max() < 1e-6  # the claim is true: the output forgot x
    torch.manual_seed(0)
    default = FixedPointConv(GatedCell(4, aggr="mean").double(), max_iter=300)
    with _w.catch_warnings():
        _w.simplefilter("error")
        a = default(data.x, data.edge_index)
    assert (a - default(2 * data.x + 1, data.edge_index)).abs().max() > 1e-3


def test_the_models_build_the_paper_cell_explicitly():
    from pyg_rbp.nn import FixedPointNodeClassifier

    paper = FixedPointNodeClassifier(8, 8, 3, cell="gated", encoder=False)
    assert paper.conv.cell.inject_input is False
    assert FixedPointNodeClassifier(5, 8, 3, cell="gated").conv.cell.inject_input is True


def test_convergence_warnings_are_per_layer_and_strict_raises():
    import warnings as _w

    from pyg_rbp.engine import ConvergenceError, ConvergenceWarning

    data = _graph(20, 2, 4)
    convs = [FixedPointConv(_cell("gated").double(), max_iter=2, tol=1e-12) for _ in range(2)]
    with _w.catch_warnings(record=True) as caught:
        _w.simplefilter("always")
        for conv in convs + convs:
            conv(data.x, data.edge_index)
    assert sum(issubclass(w.category, ConvergenceWarning) for w in caught) == 2
    assert convs[0].stats.residual > 1e-12 and convs[0].stats.converged is False
    strict = FixedPointConv(_cell("gated").double(), max_iter=2, tol=1e-12, strict=True)
    with pytest.raises(ConvergenceError, match="missed tol"):
        strict(data.x, data.edge_index)


@pytest.mark.parametrize("solver", ["iteration", "anderson"])
def test_batched_and_one_by_one_graph_outputs_agree_to_the_tolerance(solver):
    """The batch's solve stops on the worst graph's residual, so every graph is solved to tol
    whatever shares its batch (a tiny graph beside large ones used to stop early)."""
    from pyg_rbp.nn import FixedPointGraphModel

    torch.manual_seed(0)
    tol = 1e-4
    model = FixedPointGraphModel(3, 8, 2, cell="gated", aggr="mean", max_iter=500, tol=tol,
                                 solver=solver).double().eval()
    graphs = [_graph(n, s, 3) for n, s in [(60, 1), (80, 2), (3, 3)]]
    batch = Batch.from_data_list(graphs)
    with torch.no_grad():
        exact_model = FixedPointGraphModel(3, 8, 2, cell="gated", aggr="mean", max_iter=5000,
                                           tol=1e-13).double().eval()
        exact_model.load_state_dict(model.state_dict())
        # through the model: pooled outputs
        batched = model(batch.x, batch.edge_index, batch.batch)
        alone = torch.cat([model(g.x, g.edge_index) for g in graphs])
        exact = torch.cat([exact_model(g.x, g.edge_index) for g in graphs])
        scale = exact.abs().max()
        assert (batched - alone).abs().max() / scale < 20 * tol
        assert (batched - exact).abs().max() / scale < 20 * tol
        # node states of the small graph: per-graph stopping vs the old global residual
        h = model.encoder(batch.x)
        tiny = slice(140, 143)
        per_graph = model.conv(h, batch.edge_index, batch=batch.batch)[tiny]
        glob = model.conv(h, batch.edge_index)[tiny]
        one = model.conv(h[tiny], graphs[2].edge_index)
        ref = exact_model.conv(h[tiny], graphs[2].edge_index)

    def err(a):
        return float((a - ref).norm() / ref.norm())

    assert err(per_graph) < 20 * tol and err(one) < 20 * tol
    if solver == "iteration":
        assert err(per_graph) <= 1.5 * err(one) + 1e-12
        assert err(glob) > err(per_graph)  # the global residual stopped this graph earlier


def test_solver_and_modes_through_the_layer_match_iteration():
    data = _graph(40, 4, 3)
    ref_conv = FixedPointConv(_cell("implicit").double(), grad="neumann", max_iter=400,
                              tol=1e-12, backward_iter=300)
    x = data.x.clone().requires_grad_(True)
    ref = ref_conv(x, data.edge_index)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    for solver in ("anderson", "broyden"):
        for grad in ("gmres", "cg"):
            conv = FixedPointConv(ref_conv.cell, grad=grad, solver=solver, max_iter=400,
                                  tol=1e-12, backward_iter=60)
            out = conv(x, data.edge_index)
            (g,) = torch.autograd.grad(out.square().sum(), x)
            assert conv.stats.forward_iters < ref_conv.stats.forward_iters
            torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
            torch.testing.assert_close(g, g_ref, rtol=1e-7, atol=1e-9)
    assert "solver='anderson'" in repr(FixedPointConv(ref_conv.cell, solver="anderson"))
    with pytest.raises(ValueError, match="unknown solver"):
        FixedPointConv(ref_conv.cell, solver="newton")


def test_layer_jacobian_penalty_reaches_the_cell_parameters():
    data = _graph(30, 5, 4)
    conv = FixedPointConv(_cell("gated").double(), max_iter=50)
    h = conv(data.x, data.edge_index)
    pen = conv.jacobian_penalty(h, data.x, data.edge_index, num_samples=2,
                                generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad(pen, list(conv.cell.parameters()), allow_unused=True)
    assert float(pen) > 0 and any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_spectral_norm_gated_cell_has_unit_norm_weights():
    torch.manual_seed(0)
    cell = GatedCell(6, spectral_norm=True).double()
    conv = FixedPointConv(cell, max_iter=20)
    data = _graph(20, 6, 6)
    conv.train()
    for _ in range(30):  # power iteration runs one step per training forward
        conv(data.x, data.edge_index)
    for w in (cell.gru.weight_ih, cell.gru.weight_hh):
        assert abs(float(torch.linalg.matrix_norm(w.detach(), 2)) - 1.0) < 1e-3
    assert "spectral_norm=True" in repr(cell)


def test_a_cell_that_is_not_a_fixed_point_cell_is_refused_by_name():
    with pytest.raises(TypeError, match="must be a pyg_rbp.nn.FixedPointCell, got Linear"):
        FixedPointConv(torch.nn.Linear(4, 4))

"""Cells and their gradients against independent references.

* ``torch.autograd.gradcheck`` / ``gradgradcheck`` in float64 for every cell step (the second
  because CG-RBP's Jacobian-vector products differentiate the backward pass).
* Every gradient mode of :class:`FixedPointConv` against the exact implicit gradient, computed
  here by a dense Jacobian and ``torch.linalg.solve`` in float64, for parameters, ``x`` and edge
  weights, on small graphs where the map is a contraction (asserted, not assumed).
* The CSR kernel path equals PyG's gather/scatter path; the ImplicitCell bound holds; PPR
  reaches its closed form; bad input fails before any iteration.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.autograd.functional import jacobian

import pyg_rbp.nn as pnn
from pyg_rbp import GRAD_MODES, spectral_radius
from pyg_rbp.nn import FixedPointConv, GatedCell, ImplicitCell, PPRCell
from pyg_rbp.nn.adjacency import gcn_normalize

DT = torch.float64
HopfieldCell = getattr(pnn, "HopfieldCell", None)
CASES = ["gated", "gated_mean", "implicit", "implicit_none", "ppr"]
if HopfieldCell is not None:
    CASES.append("hopfield")


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_graph(n: int, seed: int, undirected: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if undirected:  # no loops, no duplicates (HopfieldCell's requirement)
        pairs = torch.combinations(torch.arange(n), 2)
        keep = pairs[torch.randperm(pairs.size(0), generator=g)[: 2 * n]]
        return torch.cat([keep.T, keep.T.flip(0)], dim=1)
    ei = torch.randint(0, n, (2, 3 * n), generator=g)
    return torch.cat([ei, torch.tensor([[0, 0], [1, 1]])], dim=1)  # a duplicate edge


def make_case(name: str, n: int = 8, seed: int = 0, dtype: torch.dtype = DT, fused: bool = True):
    """A cell on a small graph where its map is a contraction; returns (cell, x, ei, w)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 100)
    ei = _random_graph(n, seed, undirected=name == "hopfield")
    w = (torch.rand(ei.size(1), generator=g, dtype=dtype) + 0.5)
    if name in ("gated", "gated_mean"):
        cell = GatedCell(4, aggr="mean" if name == "gated_mean" else "add",
                         inject_input=name == "gated", fused=fused)
        with torch.no_grad():
            cell.gru.weight_ih.mul_(0.3)  # keeps the step a contraction on this graph
        x = torch.randn(n, 4, generator=g, dtype=dtype)
    elif name.startswith("implicit"):
        normalize = "none" if name == "implicit_none" else "gcn"
        cell = ImplicitCell(3, 4, kappa=0.9, normalize=normalize, act="tanh", fused=fused,
                            aggr="mean" if name == "implicit_mean" else "add")
        with torch.no_grad():
            cell.weight.mul_(5.0)  # far outside the bound: the projection must act
        x = torch.randn(n, 3, generator=g, dtype=dtype)
        if normalize == "none":  # signed weights: the bound must use |A|
            w = torch.randn(ei.size(1), generator=g, dtype=dtype)
    elif name in ("ppr", "ppr_mean"):
        cell = PPRCell(alpha=0.2, fused=fused, aggr="mean" if name == "ppr_mean" else "add")
        x = torch.randn(n, 4, generator=g, dtype=dtype)
    elif name == "hopfield":
        cell = HopfieldCell(n, ei, a=1.0, b=0.5, init_std=0.5)
        x = torch.randn(n, 3, generator=g, dtype=dtype)
    else:  # pragma: no cover
        raise KeyError(name)
    return cell.to(dtype), x, ei, w


def _default_h0(cell, x):
    if isinstance(cell, ImplicitCell):
        return torch.zeros(x.size(0), cell.channels, dtype=x.dtype)
    return x


def _fixed_point_by_iteration(cell, x, ei, w, iters: int = 3000) -> torch.Tensor:
    h = _default_h0(cell, x)
    if isinstance(cell, pnn.FixedPointCell):  # prepared once, only to find h* quickly
        inputs = cell.prepare(x, ei, w)

        def step(h):
            return cell.step(h, inputs)
    else:
        def step(h):
            return cell(h, x, ei, w)
    with torch.no_grad():
        for _ in range(iters):
            h_new = step(h)
            if float((h_new - h).norm()) <= 1e-15 * max(float(h.norm()), 1.0):
                return h_new
            h = h_new
    raise AssertionError("reference iteration did not converge")


@functools.cache
def reference_case(name: str):
    """A case, its loss weights r and its exact implicit gradients (computed once per case)."""
    cell, x, ei, w = make_case(name)
    r = torch.randn(_default_h0(cell, x).shape, generator=torch.Generator().manual_seed(7),
                    dtype=DT)
    h_star, ref, radius = exact_implicit_gradients(cell, x, ei, w, r)
    return r, h_star, ref, radius


def exact_implicit_gradients(cell, x, ei, w, r):
    """d<r, h*>/d(x, w, params) by a dense solve of (I - J^T) z = r (independent reference)."""
    h_star = _fixed_point_by_iteration(cell, x, ei, w)
    x0, w0 = x.detach(), w.detach()
    jac = jacobian(lambda h: cell(h, x0, ei, w0), h_star)
    n = h_star.numel()
    j = jac.reshape(n, n)
    z = torch.linalg.solve(torch.eye(n, dtype=DT) - j.T, r.reshape(-1)).view_as(h_star)
    xs, ws = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    params = list(cell.parameters())
    out = cell(h_star, xs, ei, ws)
    grads = torch.autograd.grad(out, [xs, ws, *params], z, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, [xs, ws, *params])]
    radius = float(torch.linalg.eigvals(j).abs().max())
    return h_star, grads, radius


# ------------------------------------------------------------------ gradcheck of one step


@pytest.mark.parametrize("name", CASES)
def test_gradcheck_and_gradgradcheck_of_cell_step(name):
    cell, x, ei, w = make_case(name, n=6)
    h = torch.randn(_default_h0(cell, x).shape, dtype=DT)
    inputs = [t.clone().requires_grad_() for t in (h, x, w)]
    params = list(cell.parameters())

    def step(h, x, w, *ps):
        return cell(h, x, ei, w)

    assert gradcheck(step, (*inputs, *params))
    assert gradgradcheck(step, (*inputs, *params))  # CG-RBP's JVPs differentiate the backward


# ------------------------------------------------------------------ modes vs exact gradient


@pytest.mark.parametrize("mode", GRAD_MODES)
@pytest.mark.parametrize("name", CASES)
def test_every_mode_matches_exact_implicit_gradient(name, mode):
    cell, x, ei, w = make_case(name)
    r, h_star, ref, radius = reference_case(name)
    assert radius <= 0.8 + 1e-9, f"test precondition: the map must contract (rho={radius})"

    # rho <= 0.8: 0.8^150 ~ 3e-15 (forward, BPTT), 0.8^100 ~ 2e-10 (truncated/adjoint series)
    conv = FixedPointConv(cell, grad=mode, max_iter=150, backward_iter=100)
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    params = list(cell.parameters())
    out = conv(xs, ei, ws)
    torch.testing.assert_close(out, h_star, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad((out * r).sum(), [xs, ws, *params], allow_unused=True)
    names = ["x", "edge_weight"] + [n for n, _ in cell.named_parameters()]
    for label, got, want in zip(names, grads, ref):
        got = torch.zeros_like(want) if got is None else got
        err = float((got - want).norm()) / max(float(want.norm()), 1e-3)
        assert err <= 1e-6, f"{name}/{mode}: gradient of {label} off by {err:.2e} (relative)"
    # the gradient must actually reach what the cell uses
    assert float(ref[2 if params else 0].norm()) > 0
    if name != "gated_mean":  # without injection, x only sets h0: no implicit gradient
        assert float(ref[0].norm()) > 0
    assert float(ref[1].norm()) > 0


# ------------------------------------------------------------------ CSR vs scatter


@pytest.mark.parametrize(
    "name", ["gated", "gated_mean", "implicit", "implicit_mean", "implicit_none", "ppr", "ppr_mean"]
)
def test_csr_path_equals_scatter_path(name):
    """The fused CSR kernel and PyG's scatter aggregation agree, ``aggr="mean"`` included."""
    fused, x, ei, w = make_case(name, fused=True)
    scatter, *_ = make_case(name, fused=False)
    scatter.load_state_dict(fused.state_dict())
    assert fused.prepare(x, ei, w).graph.csr is not None
    assert scatter.prepare(x, ei, w).graph.csr is None
    h = torch.randn(_default_h0(fused, x).shape, dtype=DT)
    outs, grads = [], []
    for cell in (fused, scatter):
        hs, ws = h.clone().requires_grad_(), w.clone().requires_grad_()
        out = cell(hs, x, ei, ws)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), [hs, ws, *cell.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_max_aggregation_runs_through_scatter_path():
    cell = GatedCell(4, aggr="max").double()
    x = torch.randn(5, 4, dtype=DT)
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 1, 4]])
    inputs = cell.prepare(x, ei)
    assert inputs.graph.csr is None
    m = cell.aggregate_neighbours(x, inputs.graph)
    torch.testing.assert_close(m[1], torch.maximum(x[0], x[2]))
    torch.testing.assert_close(m[0], torch.zeros(4, dtype=DT))


# ------------------------------------------------------------------ ImplicitCell bound


@pytest.mark.parametrize("normalize", ["gcn", "none"])
def test_implicit_projection_gives_a_contraction(normalize):
    torch.manual_seed(3)
    n, kappa = 10, 0.8
    ei = torch.randint(0, n, (2, 30))
    w = torch.randn(30, dtype=DT) * 3 if normalize == "none" else torch.rand(30, dtype=DT) * 3
    cell = ImplicitCell(5, 6, kappa=kappa, normalize=normalize, act="tanh").double()
    with torch.no_grad():
        cell.weight.normal_(0.0, 10.0)  # huge: contraction only through the projection
    x = torch.randn(n, 5, dtype=DT)
    inputs = cell.prepare(x, ei, w)
    wk = inputs.extra["weight"]
    bound = float(cell.perron_bound(inputs))
    assert float(wk.abs().sum(1).max()) <= kappa / bound * (1 + 1e-12)
    adj = inputs.graph.csr.to_dense()
    lam_pf = float(torch.linalg.eigvals(adj.abs()).abs().max())
    assert lam_pf <= bound * (1 + 1e-12)
    for seed in range(2):  # at arbitrary states, not just at the fixed point
        h = torch.randn(n, 6, dtype=DT, generator=torch.Generator().manual_seed(seed)) * 3
        j = jacobian(lambda s: cell.step(s, inputs), h).reshape(n * 6, n * 6)
        assert float(torch.linalg.eigvals(j).abs().max()) <= kappa + 1e-12
        power = spectral_radius(lambda s: cell.step(s, inputs), h, iters=100,
                                generator=torch.Generator().manual_seed(seed))
        assert power <= kappa + 1e-6
    # the iteration converges to one fixed point from different starts at rate <= kappa
    conv = FixedPointConv(cell, max_iter=200)  # 0.8^200 ~ 4e-20
    with torch.no_grad():
        a = conv(x, ei, w)
        b = conv(x, ei, w, h0=torch.randn(n, 6, dtype=DT) * 10)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_implicit_bound_is_tight_for_a_scaled_identity():
    """With W = c I, the projection lands exactly at kappa: rho(J) = kappa where ReLU is active."""
    n, kappa = 10, 0.9
    ei = torch.randint(0, n, (2, 30), generator=torch.Generator().manual_seed(0))
    cell = ImplicitCell(2, 3, kappa=kappa).double()
    with torch.no_grad():
        cell.weight.copy_(5.0 * torch.eye(3))
        cell.lin_in.weight.zero_()
        cell.lin_in.bias.fill_(1.0)  # positive pre-activations: ReLU is the identity
    x = torch.randn(n, 2, dtype=DT)
    inputs = cell.prepare(x, ei)
    h = torch.rand(n, 3, dtype=DT)
    j = jacobian(lambda s: cell.step(s, inputs), h).reshape(n * 3, n * 3)
    assert abs(float(torch.linalg.eigvals(j).abs().max()) - kappa) < 1e-10


# ------------------------------------------------------------------ PPR closed form


def test_ppr_fixed_point_equals_closed_form():
    n, alpha = 9, 0.15
    ei = torch.randint(0, n, (2, 25), generator=torch.Generator().manual_seed(5))
    w = torch.rand(25, dtype=DT) + 0.1
    x = torch.randn(n, 3, dtype=DT)
    a = torch.zeros(n, n, dtype=DT)
    for k in range(ei.size(1)):
        a[ei[1, k], ei[0, k]] += w[k]
    a = a + torch.diag((a.diagonal() == 0).to(DT))
    d = a.sum(1)
    a_hat = a / torch.sqrt(d[:, None] * d[None, :])
    ref = alpha * torch.linalg.solve(torch.eye(n, dtype=DT) - (1 - alpha) * a_hat, x)
    conv = FixedPointConv(PPRCell(alpha), max_iter=400)
    torch.testing.assert_close(conv(x, ei, w), ref, rtol=1e-10, atol=1e-12)
    ei2, w2 = gcn_normalize(ei, w, n, dtype=DT)  # the module's normalisation agrees
    assert ei2.size(1) == w2.numel()


# ------------------------------------------------------------------ bad input


def _counting_conv(cell):
    conv = FixedPointConv(cell, max_iter=5)
    calls = []
    original = cell.step

    def step(h, inputs):
        calls.append(1)
        return original(h, inputs)

    cell.step = step
    return conv, calls


@pytest.mark.parametrize(
    ("cell_factory", "x_shape", "edge_index", "edge_weight", "h0_shape", "message"),
    [
        (lambda: GatedCell(4), (5, 4), torch.tensor([[0, 1], [1, 5]]), None, None, "out of range"),
        (lambda: GatedCell(4), (5, 4), torch.tensor([[0, 1], [1, -1]]), None, None, "out of range"),
        (lambda: GatedCell(4), (5, 4), torch.tensor([0, 1, 2]), None, None, "shape"),
        (lambda: GatedCell(4), (5, 4), torch.tensor([[0.0, 1.0], [1.0, 2.0]]), None, None, "dtype"),
        (lambda: GatedCell(4), (5, 3), torch.tensor([[0, 1], [1, 2]]), None, None,
         "x must be a 2-D tensor of shape"),
        (lambda: ImplicitCell(3, 4), (5, 4), torch.tensor([[0, 1], [1, 2]]), None, None,
         "x must be a 2-D tensor of shape"),
        (lambda: PPRCell(), (5, 4), torch.tensor([[0, 1], [1, 2]]), torch.ones(3), None, "edge_weight"),
        (lambda: PPRCell(), (5, 4), torch.tensor([[0, 1], [1, 2]]), -torch.ones(2), None,
         "non-negative"),
        (lambda: GatedCell(4), (5, 4), torch.tensor([[0, 1], [1, 2]]), None, (5, 3), "h0 must have shape"),
        (lambda: ImplicitCell(3, 4), (5, 3), torch.tensor([[0, 1], [1, 2]]), None, (4, 4),
         "h0 must have shape"),
    ],
)
def test_bad_input_raises_before_any_iteration(cell_factory, x_shape, edge_index, edge_weight,
                                               h0_shape, message):
    conv, calls = _counting_conv(cell_factory())
    h0 = None if h0_shape is None else torch.zeros(h0_shape)
    with pytest.raises(ValueError, match=message):
        conv(torch.randn(x_shape), edge_index, edge_weight, h0=h0)
    assert calls == []


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="kappa"):
        ImplicitCell(3, 4, kappa=1.0)
    with pytest.raises(ValueError, match="alpha"):
        PPRCell(alpha=0.0)
    with pytest.raises(ValueError, match="channels"):
        GatedCell(0)
    with pytest.raises(ValueError, match="gradient mode"):
        FixedPointConv(PPRCell(), grad="backprop")


def test_reprs_and_reset():
    cell = GatedCell(8)
    assert repr(cell) == "GatedCell(8, aggr='add', inject_input=True, fused=True)"
    assert "ImplicitCell(3, 4, kappa=0.95" in repr(ImplicitCell(3, 4))
    assert repr(PPRCell(0.2)) == "PPRCell(alpha=0.2)"
    conv = FixedPointConv(cell, grad="cg", max_iter=7)
    assert repr(conv).startswith("FixedPointConv(GatedCell(8") and "grad='cg'" in repr(conv)
    before = cell.gru.weight_hh.clone()
    conv.reset_parameters()
    assert not torch.equal(before, cell.gru.weight_hh)

"""The CSR adjacency built once per solve: validation, values, gradients, double backward."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from pyg_rbp.nn import CSRAdjacency, validate_edge_index, validate_edge_weight
from pyg_rbp.nn.adjacency import as_edge_index, gcn_normalize

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _graph(num_nodes: int = 9, num_edges: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    # guarantee a duplicate edge, a self loop and an isolated node (the last one)
    ei = ei % (num_nodes - 1)
    return torch.cat([ei, torch.tensor([[0, 0, 3], [1, 1, 3]])], dim=1)


def _dense_reference(ei: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=w.dtype)
    for k in range(ei.size(1)):  # explicit loop: independent of the kernels under test
        a[ei[1, k], ei[0, k]] += w[k]
    return a


def test_matmul_equals_dense_product_with_duplicates_and_isolated_nodes():
    n = 9
    ei = _graph(n)
    w = torch.rand(ei.size(1), dtype=DT)
    x = torch.randn(n, 5, dtype=DT)
    adj = CSRAdjacency(ei, w, n, dtype=DT)
    ref = _dense_reference(ei, w, n)
    torch.testing.assert_close(adj.to_dense(), ref)
    torch.testing.assert_close(adj.matmul(x), ref @ x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(adj.t().matmul(x), ref.T @ x, rtol=1e-12, atol=1e-12)
    assert adj.matmul(x)[n - 1].abs().max() == 0  # isolated node receives nothing


def test_unweighted_and_rectangular():
    ei = torch.tensor([[0, 1, 2, 4], [0, 0, 2, 1]])  # 5 sources -> 3 targets
    adj = CSRAdjacency(ei, None, 3, 5, dtype=DT)
    x = torch.randn(5, 2, dtype=DT)
    ref = torch.zeros(3, 5, dtype=DT)
    ref[0, 0] = ref[0, 1] = ref[2, 2] = ref[1, 4] = 1
    torch.testing.assert_close(adj.matmul(x), ref @ x)
    assert adj.t().t() is adj


def test_gradcheck_and_gradgradcheck_values_and_features():
    n = 7
    ei = _graph(n, 18, seed=1)
    w = torch.rand(ei.size(1), dtype=DT, requires_grad=True)
    x = torch.randn(n, 3, dtype=DT, requires_grad=True)

    b = torch.randn(n, 3, dtype=DT, requires_grad=True)

    def f(w: torch.Tensor, x: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        adj = CSRAdjacency(ei, w, n, dtype=DT)
        return adj.matmul(x), adj.matmul(x, bias=b)

    assert gradcheck(f, (w, x, b))
    assert gradgradcheck(f, (w, x, b))  # CG-RBP's double-VJP trick differentiates the backward
    with torch.no_grad():  # the fused no-grad kernel computes the same bias + A x
        adj = CSRAdjacency(ei, w, n, dtype=DT)
        torch.testing.assert_close(adj.matmul(x, bias=b), b + _dense_reference(ei, w, n) @ x)


def test_gradient_matches_dense_reference():
    n = 8
    ei = _graph(n, 20, seed=2)
    w = torch.rand(ei.size(1), dtype=DT, requires_grad=True)
    x = torch.randn(n, 4, dtype=DT, requires_grad=True)
    r = torch.randn(n, 4, dtype=DT)
    gw, gx = torch.autograd.grad((CSRAdjacency(ei, w, n, dtype=DT).matmul(x) * r).sum(), (w, x))
    w2, x2 = w.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    rw, rx = torch.autograd.grad((_dense_reference(ei, w2, n) @ x2 * r).sum(), (w2, x2))
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gx, rx)


def test_gcn_normalize_keeps_parallel_self_loops_and_has_unit_spectral_radius():
    n = 6
    ei = torch.tensor([[0, 1, 2, 2, 2, 4, 5], [1, 2, 0, 2, 2, 5, 4]])  # node 2: two self loops
    w = torch.rand(ei.size(1), dtype=DT) + 0.1
    ei2, w2 = gcn_normalize(ei, w, n, add_self_loops=True, dtype=DT)
    a = _dense_reference(ei, w, n)
    for i in range(n):  # loops added exactly where missing, existing loops kept (and summed)
        if a[i, i] == 0:
            a[i, i] = 1.0
    d = a.sum(1)
    ref = a / torch.sqrt(d[:, None] * d[None, :])
    torch.testing.assert_close(_dense_reference(ei2, w2, n), ref)
    rho = torch.linalg.eigvals(ref).abs().max()
    assert abs(float(rho) - 1.0) < 1e-10  # directed graph: similar to a row-stochastic matrix


@pytest.mark.parametrize(
    ("edge_index", "message"),
    [
        ([[0, 1], [1, 0]], "torch.Tensor"),
        (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "integer dtype"),
        (torch.tensor([0, 1, 2]), "shape [2, num_edges]"),
        (torch.tensor([[0, 1, 2], [1, 0, 2], [0, 0, 0]]), "shape [2, num_edges]"),
        (torch.tensor([[0, 1], [1, 5]]), "out of range"),
        (torch.tensor([[0, -1], [1, 0]]), "out of range"),
    ],
)
def test_validate_edge_index_names_the_problem(edge_index, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_edge_index(edge_index, 5)


def test_validate_edge_weight():
    validate_edge_weight(torch.ones(3), 3)
    with pytest.raises(ValueError, match="shape"):
        validate_edge_weight(torch.ones(4), 3)
    with pytest.raises(ValueError, match="floating"):
        validate_edge_weight(torch.ones(3, dtype=torch.long), 3)


def test_sparse_adjacency_inputs_equal_edge_index():
    n = 6
    ei = torch.tensor([[0, 1, 2, 3, 5], [1, 2, 0, 4, 4]])
    w = torch.rand(5, dtype=DT)
    adj_t = torch.sparse_coo_tensor(torch.stack([ei[1], ei[0]]), w, (n, n))  # PyG's adj_t
    for sparse in (adj_t, adj_t.to_sparse_csr()):
        ei2, w2 = as_edge_index(sparse, None, n)
        x = torch.randn(n, 3, dtype=DT)
        torch.testing.assert_close(CSRAdjacency(ei2, w2, n, dtype=DT).matmul(x),
                                   _dense_reference(ei, w, n) @ x)
    with pytest.raises(ValueError, match="edge_weight must be None"):
        as_edge_index(adj_t, w, n)
    with pytest.raises(ValueError, match="sparse adjacency has shape"):
        as_edge_index(adj_t, None, n + 1)

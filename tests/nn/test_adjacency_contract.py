"""The adjacency's contract: every graph form reads as the same weighted edges, CSRAdjacency's repr
and product, and the gradient to a torch.sparse adjacency's values."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.nn import CSRAdjacency
from pyg_rbp.nn.adjacency import as_edge_index

pytestmark = pytest.mark.usefixtures("one_thread")


def _dense(edge_index, edge_weight, n):
    a = torch.zeros(n, n, dtype=torch.float64)
    w = torch.ones(edge_index.size(1)) if edge_weight is None else edge_weight
    for (j, i), v in zip(edge_index.T.tolist(), w.tolist()):  # A[i, j] weighs j -> i
        a[i, j] += v
    return a


def test_repr(graph):
    assert repr(CSRAdjacency(graph.edge_index, None, 6)) == "CSRAdjacency(6x6, nnz=14)"
    assert repr(CSRAdjacency(graph.edge_index[:, :5], None, 6, 4)) == "CSRAdjacency(6x4, nnz=5)"


@pytest.mark.parametrize("weighted", [False, True])
def test_every_form_reads_as_the_same_weighted_edges(graph, adj_form, weighted):
    n = graph.num_nodes
    x = torch.randn(n, 3)
    ei, w = as_edge_index(*graph.form(adj_form, weighted), n, like=x)
    assert ei.dtype == torch.long and ei.shape == (2, graph.num_edges)
    assert w is None or w.dtype == x.dtype
    torch.testing.assert_close(_dense(ei, w, n), _dense(*graph.form("edge_index", weighted), n))
    adj = CSRAdjacency(ei, w, n)
    torch.testing.assert_close(adj.matmul(x).double(), _dense(ei, w, n) @ x.double(), atol=1e-6, rtol=0)
    assert adj.num_edges == graph.num_edges
    torch.testing.assert_close(adj.t().to_dense(), adj.to_dense().T)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_gradient_reaches_the_values_of_a_torch_sparse_adjacency(graph, layout):
    n = graph.num_nodes
    values = graph.weight(torch.float64).requires_grad_()
    ei = graph.edge_index
    adj_t = torch.sparse_coo_tensor(ei.flip(0), values, (n, n)).coalesce()
    if layout == "csr":
        adj_t = adj_t.to_sparse_csr()
    x = torch.randn(n, 2, dtype=torch.float64)
    ei2, w = as_edge_index(adj_t, None, n, like=x)
    out = CSRAdjacency(ei2, w, n, dtype=x.dtype).matmul(x)
    (grad,) = torch.autograd.grad(out.sum(), [values])
    # d sum(A x) / d A[i, j] = sum_c x[j, c]: the source's feature sum for every edge j -> i
    torch.testing.assert_close(grad, x.sum(dim=1)[ei[0]])


def test_a_sparse_adjacency_of_the_wrong_size_or_with_edge_weight_is_refused(graph):
    adj, _ = graph.form("csr")
    with pytest.raises(ValueError, match="shape \\[6, 6\\] but there are 7 nodes"):
        as_edge_index(adj, None, 7)
    with pytest.raises(ValueError, match="edge_weight must be None"):
        as_edge_index(adj, graph.weight(), 6)

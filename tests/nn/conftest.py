"""Fixtures of the layer contract tests (PyG's style: repr, shapes, adjacency forms, parameters).

Every layer takes its graph as an ``edge_index`` (with optional ``edge_weight``), as a
``torch.sparse`` adjacency (COO or CSR) or as a ``torch_sparse.SparseTensor``, all in PyG's
transposed ``adj_t`` convention (entry ``(i, j)`` weighs the message ``j -> i``). The contract
tests run a layer on :data:`SMALL_GRAPH` in every form (the ``adj_form`` fixture) and compare
with the ``edge_index`` result. The ``SparseTensor`` form runs where ``torch_sparse`` imports and
is skipped with its reason elsewhere, except under CI (``PYG_RBP_CI=1``), which installs it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.autograd.functional import jacobian
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csc_tensor

from pyg_rbp.nn import FixedPointConv

needs_torch_sparse = pytest.mark.skipif(
    not WITH_TORCH_SPARSE and os.environ.get("PYG_RBP_CI") != "1",
    reason="torch_sparse is not installed, so the SparseTensor form is not checked here "
           "(pip install 'pyg_rbp[sampling]'); CI (PYG_RBP_CI=1) installs it and checks it",
)

ADJ_FORMS = ("coo", "csr", "sparse_tensor")
"""The sparse forms every layer must accept besides ``edge_index``."""


@dataclass(frozen=True)
class SmallGraph:
    """An undirected graph without self loops or duplicate edges (what every cell accepts,
    HopfieldCell included): a 5-ring with one chord, and node 5 hanging off node 3."""

    edge_index: Tensor
    edge_weight: Tensor
    num_nodes: int

    @property
    def num_edges(self) -> int:
        return self.edge_index.size(1)

    def weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return self.edge_weight.to(dtype)

    def form(self, name: str, weighted: bool = True,
             dtype: torch.dtype = torch.float32) -> tuple[Any, Tensor | None]:
        """``(graph, edge_weight)`` to call a layer with: the graph in form ``name``."""
        ei, n = self.edge_index, self.num_nodes
        w = self.weight(dtype) if weighted else None
        if name == "edge_index":
            return ei, w
        with warnings.catch_warnings():  # torch's notices: invariant checks off, CSC in beta
            warnings.filterwarnings("ignore", message=".*([Ss]parse invariant checks|support is in beta)")
            if name == "coo":  # PyG: A[j, i] for the edge j -> i; adj_t is its transpose
                return to_torch_coo_tensor(ei, w, size=(n, n)).t(), None
            if name == "csr":  # the transpose of the CSC matrix is a CSR adj_t (PyG's own tests)
                return to_torch_csc_tensor(ei, w, size=(n, n)).t(), None
        if name == "sparse_tensor":
            return SparseTensor.from_edge_index(ei, w, sparse_sizes=(n, n)).t(), None
        raise KeyError(name)


def _small_graph() -> SmallGraph:
    pairs = torch.tensor([[0, 1, 2, 3, 4, 0, 3], [1, 2, 3, 4, 0, 2, 5]])
    edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
    weight = 0.5 + torch.rand(edge_index.size(1), generator=torch.Generator().manual_seed(0))
    return SmallGraph(edge_index, weight, 6)


SMALL_GRAPH = _small_graph()


@pytest.fixture
def graph() -> SmallGraph:
    return SMALL_GRAPH


@pytest.fixture(params=[ADJ_FORMS[0], ADJ_FORMS[1], pytest.param(ADJ_FORMS[2], marks=needs_torch_sparse)])
def adj_form(request) -> str:
    """Each sparse form of the graph in turn: ``"coo"``, ``"csr"``, ``"sparse_tensor"``."""
    return request.param


PHANTOM_STEPS = 300
"""Steps of the phantom gradient in the exactness checks: its damped steps (damping 0.5) contract
by ``0.5 + 0.5 rho``, 0.9 for ``rho = 0.8``, so 300 of them reach the implicit gradient to 1e-13."""


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def dense_implicit_gradients(step: Callable[[Tensor], Tensor], h_star: Tensor, r: Tensor,
                             wrt: Sequence[Tensor]) -> tuple[list[Tensor], float]:
    r"""Gradients of :math:`\langle r, h^*\rangle` with respect to ``wrt`` at the fixed point
    ``h_star`` of ``step``, and the spectral radius of the step's Jacobian there.

    A dense solve of :math:`(I - J^\top) z = r` (``J`` built column by column by autograd), then
    one vector-Jacobian product of the step: a float64 reference on graphs of a few nodes,
    independent of every solver and gradient mode."""
    h_star = h_star.detach()
    n = h_star.numel()
    j = jacobian(step, h_star).reshape(n, n)
    eye = torch.eye(n, dtype=h_star.dtype)
    z = torch.linalg.solve(eye - j.T, r.reshape(-1)).view_as(h_star)
    grads = torch.autograd.grad(step(h_star), list(wrt), z, allow_unused=True)
    radius = float(torch.linalg.eigvals(j).abs().max())
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, wrt)], radius


def assert_modes_match_reference(cell: torch.nn.Module, x: Tensor, edge_index: Tensor,
                                 edge_weight: Tensor | None, mode: str, max_radius: float = 0.8,
                                 **conv_kwargs: Any) -> None:
    """``FixedPointConv(cell, grad=mode)``: its fixed point and the gradients of a random linear
    loss to ``x``, ``edge_weight`` and every parameter equal the dense implicit reference (1e-6
    relative), and every one of them is non-zero (the gradient reaches what the cell uses)."""
    budget = {"max_iter": 150, "backward_iter": PHANTOM_STEPS if mode == "phantom" else 100}
    conv = FixedPointConv(cell, grad=mode, **{**budget, **conv_kwargs})
    leaves = [x.detach().clone().requires_grad_()]
    if edge_weight is not None:
        leaves.append(edge_weight.detach().clone().requires_grad_())
    params = list(cell.parameters())
    weight = leaves[1] if edge_weight is not None else None
    out = conv(leaves[0], edge_index, weight)
    r = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(7))
    got = torch.autograd.grad((out * r).sum(), [*leaves, *params], allow_unused=True)

    def step(h: Tensor) -> Tensor:
        return cell(h, leaves[0], edge_index, weight)

    want, radius = dense_implicit_gradients(step, out, r, [*leaves, *params])
    assert radius <= max_radius, f"test precondition: the map must contract (rho={radius:.3f})"
    torch.testing.assert_close(out, step(out).detach(), rtol=1e-9, atol=1e-11)  # a fixed point
    names = ["x", "edge_weight"][: len(leaves)] + [name for name, _ in cell.named_parameters()]
    for name, g, w in zip(names, got, want):
        assert g is not None, f"{mode}: no gradient reaches {name}"
        assert float(w.norm()) > 0, f"the reference gradient of {name} is zero: a useless check"
        err = float((g - w).norm()) / float(w.norm())
        assert err <= 1e-6, f"{mode}: gradient of {name} off by {err:.1e} (relative)"


def assert_reset_restores_determinism(module: torch.nn.Module, run: Callable[[], Tensor]) -> None:
    """After ``reset_parameters()`` under one seed the module computes the same output as
    after another reset under that seed, and a different one under another seed."""
    torch.manual_seed(1)
    module.reset_parameters()
    first = run().detach()
    torch.manual_seed(2)
    module.reset_parameters()
    other = run().detach()
    torch.manual_seed(1)
    module.reset_parameters()
    again = run().detach()
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert not torch.allclose(other, first), "reset_parameters() drew the same parameters"


@pytest.fixture
def contract():
    """The shared checks: ``count_parameters``, ``dense_implicit_gradients``,
    ``assert_modes_match_reference``, ``assert_reset_restores_determinism``."""
    return _Contract()


class _Contract:
    count_parameters = staticmethod(count_parameters)
    dense_implicit_gradients = staticmethod(dense_implicit_gradients)
    assert_modes_match_reference = staticmethod(assert_modes_match_reference)
    assert_reset_restores_determinism = staticmethod(assert_reset_restores_determinism)

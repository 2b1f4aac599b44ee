r"""The graph of one fixed-point solve, validated and laid out once for every step.

A fixed-point layer applies the same message-passing step tens or hundreds of times, and its
implicit backward pass applies the step's vector-Jacobian product tens of times more. Checking
``edge_index``, normalising edge weights and sorting edges into a compressed sparse row (CSR)
layout is therefore done once per solve here, in :func:`prepare_graph`, and the result is
reused by every forward iteration and every backward VJP.

Conventions follow PyG: ``edge_index[0]`` are sources :math:`j`, ``edge_index[1]`` targets
:math:`i`; messages flow :math:`j \to i`. A sparse adjacency (``torch.sparse`` or
``torch_sparse.SparseTensor``) is read as PyG's *transposed* adjacency ``adj_t`` of shape
``[num_targets, num_sources]`` whose entry ``(i, j)`` weighs the message :math:`j \to i`.

Sum aggregation is the product :math:`A h` with :math:`A_{ij} = w_{j \to i}`. On CPU the
fastest kernel for it is a CSR sparse-dense matmul (``torch.sparse.mm``), about 20-30x faster
than gather-then-scatter. :class:`CSRAdjacency` wraps it in an autograd function whose backward
is itself differentiable (it calls the same kernel on the transposed CSR, built once), so the
double-VJP trick that CG-RBP uses for Jacobian-vector products works through it, and gradients
reach the edge weights. Where torch has no CSR kernel for a dtype (MKL lacks float16 and
bfloat16), the product runs in float32 and is rounded back, instead of crashing.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor

_INT32_MAX = 2**31 - 1


def validate_edge_index(edge_index: Any, num_nodes: int) -> None:
    """Raise a :class:`ValueError` naming the problem unless ``edge_index`` is a valid graph.

    Checks the type (a :class:`torch.Tensor`), the shape ``[2, num_edges]``, the dtype (an
    integer type) and that every index lies in ``[0, num_nodes)``. The range check reads two
    numbers back from the device: call it once per solve, not inside an iteration.
    """
    if not isinstance(edge_index, Tensor):
        raise ValueError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.layout != torch.strided:
        raise ValueError(f"edge_index must be a [2, num_edges] index tensor here, got a {edge_index.layout} "
                         "adjacency (as_edge_index converts one)")
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise ValueError(f"edge_index must have an integer dtype (torch.long), got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f"edge_index must have shape [2, num_edges], got {list(edge_index.shape)}"
        )
    if not isinstance(num_nodes, int) or num_nodes < 0:
        raise ValueError(f"num_nodes must be a non-negative integer, got {num_nodes!r}")
    if edge_index.numel() == 0:
        return
    lo, hi = torch.aminmax(edge_index)
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi >= num_nodes:
        raise ValueError(
            f"edge_index out of range: node indices span [{lo}, {hi}] but there are "
            f"{num_nodes} nodes (valid indices 0..{num_nodes - 1})"
        )


def validate_edge_weight(edge_weight: Any, num_edges: int, like: Tensor | None = None) -> None:
    """Raise a :class:`ValueError` unless ``edge_weight`` is a floating vector of ``num_edges``."""
    if not isinstance(edge_weight, Tensor):
        raise ValueError(f"edge_weight must be a torch.Tensor or None, got {type(edge_weight).__name__}")
    if not edge_weight.is_floating_point():
        raise ValueError(f"edge_weight must be a floating-point tensor, got {edge_weight.dtype}")
    if edge_weight.dim() != 1 or edge_weight.numel() != num_edges:
        raise ValueError(
            f"edge_weight must have shape [num_edges] = [{num_edges}], got {list(edge_weight.shape)}"
        )
    if like is not None and edge_weight.device != like.device:
        raise ValueError(
            f"edge_weight is on {edge_weight.device} but the features are on {like.device}"
        )


def sparse_to_edge_index(adj_t: Any) -> tuple[Tensor, Tensor | None]:
    """Turn a PyG-style transposed sparse adjacency into ``(edge_index, edge_weight)``.

    Accepts ``torch.sparse`` (COO/CSR/CSC) tensors and, when ``torch_sparse`` is installed,
    ``SparseTensor``. Entry ``(i, j)`` becomes the edge :math:`j \\to i`. Gradients flow to the
    values of a ``torch.sparse`` COO/CSR input.
    """
    if WITH_TORCH_SPARSE and isinstance(adj_t, SparseTensor):
        row, col, value = adj_t.coo()
        return torch.stack([col, row], dim=0), value
    if isinstance(adj_t, Tensor) and adj_t.layout != torch.strided:
        if adj_t.dim() != 2:
            raise ValueError(f"a sparse adjacency must be two-dimensional, got {adj_t.dim()} dims")
        if adj_t.layout == torch.sparse_csr:
            crow, col = adj_t.crow_indices(), adj_t.col_indices()
            row = torch.repeat_interleave(
                torch.arange(adj_t.size(0), device=crow.device), crow.diff()
            )
            return torch.stack([col.long(), row], dim=0), adj_t.values()
        coo = adj_t.to_sparse_coo().coalesce()
        row, col = coo.indices()
        return torch.stack([col, row], dim=0), coo.values()
    raise ValueError(
        "edge_index must be a [2, num_edges] integer tensor, a torch.sparse adjacency or a "
        f"torch_sparse.SparseTensor, got {type(adj_t).__name__}"
    )


def _index_dtype(num_nodes: int, num_edges: int, device: torch.device) -> torch.dtype:
    # MKL's CSR kernels run on 32-bit indices; handing them int32 avoids a conversion per call.
    if device.type == "cpu" and max(num_nodes, num_edges) < _INT32_MAX:
        return torch.int32
    return torch.long


_CSR_FALLBACK: set[tuple[str, torch.dtype]] = {
    ("cpu", torch.float16), ("cpu", torch.bfloat16),  # MKL has no half/bfloat16 CSR kernel
}
"""(device type, dtype) pairs whose CSR kernel is missing: their products run in float32 (the
values upcast once and cached) and are rounded back to the input's dtype. Pairs found missing at
run time (``NotImplementedError`` from the kernel) are added."""


def _csr_mm(adj: CSRAdjacency, x: Tensor, bias: Tensor | None) -> Tensor:
    """``bias + A @ x`` with torch's CSR kernel, or in float32 where the kernel lacks the dtype."""
    key = (x.device.type, x.dtype)
    if key not in _CSR_FALLBACK:
        try:
            if bias is None:
                return torch.sparse.mm(adj.matrix, x)
            return torch.addmm(bias, adj.matrix, x)
        except NotImplementedError:
            _CSR_FALLBACK.add(key)
    matrix = adj.float32_matrix()
    out = torch.sparse.mm(matrix, x.float()) if bias is None else torch.addmm(bias.float(), matrix, x.float())
    return out.to(x.dtype)


class _CSRMatmul(torch.autograd.Function):
    """``bias + A @ x`` with a prebuilt CSR ``A``; the backward is again a CSR matmul, so it is
    itself differentiable (double backward, as CG-RBP's JVPs need)."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, x: Tensor, bias: Tensor | None, adj: CSRAdjacency) -> Tensor:
        ctx.adj = adj
        ctx.save_for_backward(x if value.requires_grad else None)
        return _csr_mm(adj, x, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        adj: CSRAdjacency = ctx.adj
        (x,) = ctx.saved_tensors
        grad_value = grad_x = grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_x = adj.t().matmul(grad_out)
        if ctx.needs_input_grad[0]:
            row, col = adj.coo_indices()
            grad_value = (grad_out.index_select(0, row) * x.index_select(0, col)).sum(-1)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_out
        return grad_value, grad_x, grad_bias, None


class CSRAdjacency:
    r"""A weighted adjacency :math:`A \in \mathbb{R}^{n_t \times n_s}` in CSR layout.

    ``A[i, j]`` weighs the message from source ``j`` to target ``i``. Built once per solve from
    ``edge_index`` and (possibly differentiable) ``edge_weight``; :meth:`matmul` computes
    :math:`A x` with ``torch.sparse.mm`` and back-propagates to ``x`` and to the weights. The
    transposed matrix used by the backward pass is built lazily, once, and cached.

    Args:
        edge_index: ``[2, E]`` edges ``j -> i`` (validated by the caller).
        edge_weight: ``[E]`` weights or ``None`` (all ones).
        num_targets: rows of ``A``. num_sources: columns (default ``num_targets``).
        dtype: dtype of the values when ``edge_weight`` is ``None``.
    """

    def __init__(self, edge_index: Tensor, edge_weight: Tensor | None, num_targets: int,
                 num_sources: int | None = None, dtype: torch.dtype = torch.float32) -> None:
        num_sources = num_targets if num_sources is None else num_sources
        device = edge_index.device
        src, dst = edge_index[0].long(), edge_index[1].long()
        order = torch.argsort(dst * max(num_sources, 1) + src)
        self.num_targets = num_targets
        self.num_sources = num_sources
        self.row = dst[order]
        self.col = src[order]
        if edge_weight is None:
            self.value = torch.ones(order.numel(), dtype=dtype, device=device)
        else:
            self.value = edge_weight[order]
        counts = torch.bincount(self.row, minlength=num_targets)
        crow = torch.zeros(num_targets + 1, dtype=torch.long, device=device)
        torch.cumsum(counts, 0, out=crow[1:])
        index_dtype = _index_dtype(max(num_targets, num_sources), order.numel(), device)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and tested here
            warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support")
            self.matrix = torch.sparse_csr_tensor(
                crow.to(index_dtype), self.col.to(index_dtype), self.value.detach(),
                (num_targets, num_sources), check_invariants=False,
            )
        self._matrix_f32: Tensor | None = None
        self._transposed: CSRAdjacency | None = None
        self._transpose_of: weakref.ref[CSRAdjacency] | None = None

    @property
    def num_edges(self) -> int:
        return self.row.numel()

    def coo_indices(self) -> tuple[Tensor, Tensor]:
        """Row (target) and column (source) of every stored entry, in CSR order."""
        return self.row, self.col

    def in_degree(self) -> Tensor:
        """Number of stored entries per row (unweighted in-degree of each target)."""
        return torch.bincount(self.row, minlength=self.num_targets)

    def t(self) -> CSRAdjacency:
        """The transposed adjacency (built once, cached), differentiable in the same values.

        The transpose points back to ``self`` through a weak reference only: a strong one would
        form a cycle that keeps both matrices (and the graph of their values) alive until
        Python's cycle collector runs, one pair per training step."""
        if self._transpose_of is not None:
            original = self._transpose_of()
            if original is not None:
                return original
        if self._transposed is None:
            flipped = torch.stack([self.row, self.col], dim=0)
            self._transposed = CSRAdjacency(
                flipped, self.value, self.num_sources, self.num_targets, dtype=self.value.dtype
            )
            self._transposed._transpose_of = weakref.ref(self)
        return self._transposed

    def matmul(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        r""":math:`A x` (or ``bias`` :math:`+ A x`, fused in one kernel) for ``x`` of shape
        ``[num_sources, C]``; differentiable in ``x``, ``bias`` and the weights."""
        if self.value.requires_grad or x.requires_grad or (bias is not None and bias.requires_grad):
            return _CSRMatmul.apply(self.value, x, bias, self)
        return _csr_mm(self, x, bias)

    def float32_matrix(self) -> Tensor:
        """The CSR matrix with float32 values (built once): for dtypes without a CSR kernel."""
        if self.matrix.dtype == torch.float32:
            return self.matrix
        if self._matrix_f32 is None:
            self._matrix_f32 = torch.sparse_csr_tensor(
                self.matrix.crow_indices(), self.matrix.col_indices(), self.matrix.values().float(),
                self.matrix.shape, check_invariants=False,
            )
        return self._matrix_f32

    def to_dense(self) -> Tensor:
        """Dense ``[num_targets, num_sources]`` matrix (for tests and small problems)."""
        dense = torch.zeros(self.num_targets, self.num_sources, dtype=self.value.dtype,
                            device=self.value.device)
        return dense.index_put((self.row, self.col), self.value, accumulate=True)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.num_targets}x{self.num_sources}, "
                f"nnz={self.num_edges})")


def gcn_normalize(edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int,
                  add_self_loops: bool = True, dtype: torch.dtype = torch.float32,
                  ) -> tuple[Tensor, Tensor]:
    r"""GCN normalisation :math:`\hat A = D^{-1/2} (A + I) D^{-1/2}`, differentiable in the weights.

    ``A[i, j]`` is the total weight of the edges :math:`j \to i` (parallel edges add up, as in
    a sparse matrix) and :math:`D_{ii} = \sum_j (A + I)_{ij}` the weighted in-degree. With
    ``add_self_loops`` a loop of weight 1 is added to every node that has none (existing loops
    keep their weights). Unlike :func:`torch_geometric.nn.conv.gcn_conv.gcn_norm`, parallel
    self loops are kept and summed rather than one of them dropped, so the result is a
    well-defined function of every weight. With non-negative weights :math:`\hat A` is
    similar to the row-stochastic :math:`D^{-1}(A + I)`, so its spectral radius is exactly 1
    (for rows with :math:`D_{ii} > 0`).
    """
    device = edge_index.device
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.size(1), dtype=dtype, device=device)
    elif edge_weight.numel() and bool((edge_weight.detach() < 0).any()):
        raise ValueError("GCN normalisation needs non-negative edge weights; got negative ones")
    if add_self_loops:
        has_loop = torch.zeros(num_nodes, dtype=torch.bool, device=device)
        is_loop = edge_index[0] == edge_index[1]
        has_loop[edge_index[0][is_loop]] = True
        missing = (~has_loop).nonzero().view(-1)
        edge_index = torch.cat([edge_index, missing.view(1, -1).expand(2, -1)], dim=1)
        edge_weight = torch.cat([edge_weight, edge_weight.new_ones(missing.numel())])
    src, dst = edge_index[0], edge_index[1]
    deg = torch.zeros(num_nodes, dtype=edge_weight.dtype, device=device).index_add(0, dst, edge_weight)
    inv_sqrt = deg.pow(-0.5)
    inv_sqrt = inv_sqrt.masked_fill(torch.isinf(inv_sqrt), 0.0)
    return edge_index, inv_sqrt.index_select(0, src) * edge_weight * inv_sqrt.index_select(0, dst)


@dataclass
class PreparedGraph:
    """One graph, ready for repeated aggregation: both layouts over the same weighted edges.

    Attributes:
        num_nodes: number of nodes.
        edge_index: ``[2, E]`` edges (after any self loops a cell adds), for the scatter path.
        edge_weight: ``[E]`` message weights (after normalisation), or ``None`` for all ones.
        csr: the same weighted adjacency as :class:`CSRAdjacency`, or ``None`` when the cell
            uses the gather/scatter path only.
    """

    num_nodes: int
    edge_index: Tensor
    edge_weight: Tensor | None
    csr: CSRAdjacency | None = None


def as_edge_index(edge_index: Any, edge_weight: Tensor | None, num_nodes: int,
                  like: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Validate a graph given in any supported form; return ``(edge_index, edge_weight)``.

    ``edge_index`` may be a ``[2, E]`` integer tensor (with optional ``edge_weight``), a
    ``torch.sparse`` adjacency or a ``SparseTensor`` (PyG's ``adj_t``, its values are the
    weights and ``edge_weight`` must then be ``None``).
    """
    is_sparse = (isinstance(edge_index, Tensor) and edge_index.layout != torch.strided) or (
        WITH_TORCH_SPARSE and isinstance(edge_index, SparseTensor)
    )
    if is_sparse:
        if edge_weight is not None:
            raise ValueError("edge_weight must be None when the graph is a sparse adjacency "
                             "(its values are the edge weights)")
        size = tuple(edge_index.sizes()) if not isinstance(edge_index, Tensor) else tuple(edge_index.shape)
        if size != (num_nodes, num_nodes):
            raise ValueError(
                f"the sparse adjacency has shape {list(size)} but there are {num_nodes} nodes "
                f"(expected [{num_nodes}, {num_nodes}])"
            )
        edge_index, edge_weight = sparse_to_edge_index(edge_index)
        if edge_weight is not None and not edge_weight.is_floating_point():
            # an integer or boolean adjacency holds edge counts / indicators: weigh by them
            edge_weight = edge_weight.to(like.dtype if like is not None else torch.get_default_dtype())
    validate_edge_index(edge_index, num_nodes)
    if like is not None and edge_index.device != like.device:
        raise ValueError(f"edge_index is on {edge_index.device} but the features are on {like.device}")
    if edge_weight is not None:
        validate_edge_weight(edge_weight, edge_index.size(1), like)
        if like is not None and edge_weight.dtype != like.dtype:
            edge_weight = edge_weight.to(like.dtype)
    return edge_index.long(), edge_weight

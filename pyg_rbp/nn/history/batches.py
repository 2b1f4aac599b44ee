"""The pieces of a historical fixed-point solve: the state buffer and each batch's slice of the
full-graph adjacency with its halo (:func:`build_halo_batches`); the batches themselves come from
a node partition (:func:`pyg_rbp.nn.partition.partition_nodes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pyg_rbp.nn.adjacency import CSRAdjacency, as_edge_index
from pyg_rbp.nn.cell import SUM_AGGRS, FixedPointCell


class HistoryBuffer:
    """The latest solved state of every node: ``[num_nodes, channels]``, never requiring grad.

    The width, dtype and device are fixed at the first :meth:`read` (or given): on the compute
    device, or elsewhere (``device="cpu"`` beside a CUDA model) to keep a large graph's states
    off the accelerator; rows are moved to the compute device when read. Unvisited rows are 0.

    Args:
        num_nodes (int): rows of the buffer.
        channels (int, optional): state width (default: from the first read).
        dtype (torch.dtype, optional): default: that of the first read.
        device (torch.device or str, optional): where the buffer lives (default: first read's).
    """

    def __init__(self, num_nodes: int, channels: int | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        if not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive integer, got {num_nodes!r}")
        self.num_nodes = num_nodes
        self.channels = channels
        self.dtype = dtype
        self.device = None if device is None else torch.device(device)
        self.states: Tensor | None = None
        self.writes = 0
        if channels is not None and dtype is not None and device is not None:
            self._allocate(channels, dtype, self.device)

    def _allocate(self, channels: int, dtype: torch.dtype, device: torch.device) -> None:
        self.channels, self.dtype, self.device = channels, dtype, device
        self.states = torch.zeros(self.num_nodes, channels, dtype=dtype, device=device)

    def ensure(self, channels: int, dtype: torch.dtype, device: torch.device) -> None:
        """Allocate on first use (width/dtype/device from the caller unless fixed); check after."""
        if self.states is None:
            self._allocate(self.channels or channels, self.dtype or dtype, self.device or device)
        if self.channels != channels:
            raise ValueError(f"the history buffer holds {self.channels}-wide states, the layer's "
                             f"state is {channels} wide")

    def read(self, index: Tensor, device: torch.device | None = None,
             dtype: torch.dtype | None = None) -> Tensor:
        """Rows ``index`` (a copy, no grad) on ``device`` in ``dtype``."""
        assert self.states is not None, "read before the buffer was allocated (call ensure)"
        rows = self.states.index_select(0, index.to(self.states.device))
        return rows.to(device=device or rows.device, dtype=dtype or rows.dtype)

    @torch.no_grad()
    def write(self, index: Tensor, values: Tensor) -> None:
        """Overwrite rows ``index`` with ``values`` (detached, moved to the buffer's device)."""
        assert self.states is not None
        self.states.index_copy_(0, index.to(self.states.device),
                                values.detach().to(self.states.device, self.states.dtype))
        self.writes += 1

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.num_nodes}, channels={self.channels}, "
                f"dtype={self.dtype}, device={self.device})")


class HaloCSR(CSRAdjacency):
    r"""The batch block :math:`\hat A_{BB}` of the adjacency plus the halo's constant messages:
    ``matmul(h)`` is :math:`\hat A_{BB} h + c_B`. Its transpose (used by every backward VJP)
    is that of :math:`\hat A_{BB}` alone, since :math:`c_B` is a constant."""

    def __init__(self, block: CSRAdjacency, constant: Tensor) -> None:  # noqa: D107 - no super()
        self.__dict__.update(block.__dict__)
        self.block = block
        self.constant = constant

    def t(self) -> CSRAdjacency:
        return self.block.t()

    def matmul(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        return self.block.matmul(x, self.constant if bias is None else bias + self.constant)


@dataclass
class HaloBatch:
    """One mini-batch of target nodes and its 1-hop halo, sliced from the full graph once.

    Attributes:
        nodes: ``[B]`` global ids of the batch's nodes (sorted).
        adj: :math:`\\hat A_{BB}` (``B x B``, local ids), the cell's normalisation on the full graph.
        halo: ``[H]`` global ids of the out-of-batch sources of edges into the batch.
        halo_adj: :math:`\\hat A_{BH}` (``B x H``), or ``None`` when the halo is empty.
        edge_index: ``[2, E_BB]`` local edges inside the batch (what the model is called with).
    """

    nodes: Tensor
    adj: CSRAdjacency
    halo: Tensor
    halo_adj: CSRAdjacency | None
    edge_index: Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.numel())

    @property
    def num_halo(self) -> int:
        return int(self.halo.numel())

    def to(self, device: torch.device | str) -> HaloBatch:
        device = torch.device(device)
        if self.nodes.device == device:
            return self

        def move(a: CSRAdjacency | None) -> CSRAdjacency | None:
            if a is None:
                return None
            return CSRAdjacency(torch.stack([a.col, a.row]).to(device), a.value.to(device),
                                a.num_targets, a.num_sources, dtype=a.value.dtype)

        return HaloBatch(self.nodes.to(device), move(self.adj), self.halo.to(device),
                         move(self.halo_adj), self.edge_index.to(device))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(nodes={self.num_nodes}, halo={self.num_halo})"


def _full_graph(cell: FixedPointCell, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int,
                dtype: torch.dtype) -> CSRAdjacency:
    """The cell's own adjacency of the full graph (its normalisation, self loops, mean division)."""
    if not isinstance(cell, FixedPointCell):
        raise ValueError(f"historical batches need a FixedPointCell, got {type(cell).__name__}")
    if not cell.fused or cell.aggr not in SUM_AGGRS:
        raise ValueError(
            f"historical batches split the aggregation into batch and halo parts, which needs a "
            f"(weighted) sum or mean on the CSR kernel; {cell.__class__.__name__} has "
            f"aggr={cell.aggr!r}, fused={cell.fused}")
    if getattr(cell, "normalize", None) == "none" and hasattr(cell, "perron_bound"):
        raise ValueError(
            f"{cell.__class__.__name__}(normalize='none') bounds its weight by the graph's row "
            "sums, which a batch does not know; use normalize='gcn' for historical batches")
    like = torch.empty(num_nodes, 0, dtype=dtype, device=edge_index.device)
    with torch.no_grad():
        graph = cell._prepare_graph(edge_index, edge_weight, num_nodes, like)
    assert graph.csr is not None
    return graph.csr


@torch.no_grad()
def build_halo_batches(cell: FixedPointCell, edge_index: Tensor, num_nodes: int,
                       batches: Sequence[Tensor], edge_weight: Tensor | None = None,
                       dtype: torch.dtype = torch.float32) -> list[HaloBatch]:
    r"""Slice the cell's full-graph adjacency into one :class:`HaloBatch` per batch of nodes.

    ``batches`` must partition ``0..num_nodes-1`` (:func:`partition_nodes`). The edge weights are
    those the cell's map uses on the *full* graph (GCN normalisation with full degrees, PPR's
    :math:`1-\alpha` factor, mean division by the full in-degree), computed once here; they do
    not carry gradients. Total memory is that of the full graph's CSR, once. ``edge_index`` may
    also be a ``torch.sparse`` or ``SparseTensor`` adjacency (its values are the edge weights).
    """
    edge_index, edge_weight = as_edge_index(edge_index, edge_weight, num_nodes)
    csr = _full_graph(cell, edge_index, edge_weight, num_nodes, dtype)
    device = edge_index.device
    batch_of = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
    local = torch.empty(num_nodes, dtype=torch.long, device=device)
    for b, nodes in enumerate(batches):
        nodes = nodes.to(device)
        if bool((batch_of[nodes] >= 0).any()):
            raise ValueError(f"batch {b} repeats nodes of an earlier batch: batches must partition the nodes")
        batch_of[nodes] = b
        local[nodes] = torch.arange(nodes.numel(), device=device)
    if bool((batch_of < 0).any()):
        raise ValueError(f"{int((batch_of < 0).sum())} nodes are in no batch: batches must cover every node")
    row, col, value = csr.row, csr.col, csr.value.detach()
    owner = batch_of[row]
    order = torch.argsort(owner, stable=True)
    counts = torch.bincount(owner, minlength=len(batches)).tolist()
    out = []
    for b, (nodes, idx) in enumerate(zip(batches, torch.split(order, counts))):
        nodes = nodes.to(device)
        r, c, v = row[idx], col[idx], value[idx]
        inside = batch_of[c] == b
        n_b = nodes.numel()
        bb = torch.stack([local[c[inside]], local[r[inside]]])
        adj = CSRAdjacency(bb, v[inside], n_b, dtype=dtype)
        halo, halo_local = torch.unique(c[~inside], return_inverse=True)
        halo_adj = None
        if halo.numel():
            bh = torch.stack([halo_local, local[r[~inside]]])
            halo_adj = CSRAdjacency(bh, v[~inside], n_b, halo.numel(), dtype=dtype)
        out.append(HaloBatch(nodes, adj, halo, halo_adj, bb))
    return out



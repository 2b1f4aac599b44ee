r"""Historical fixed points: solve a graph's fixed point one mini-batch of nodes at a time.

A fixed-point layer on the full graph keeps every node's state on one device. Here a per-node
state buffer (:class:`HistoryBuffer`, no gradient, on the compute device or another one) holds
the latest solved state of every node instead, and a mini-batch :math:`B` of target nodes is
solved with the states of its 1-hop halo :math:`H` (the out-of-batch nodes with an edge into
:math:`B`) read from the buffer as constants:

.. math::
    \mathbf{h}_B^* = F_B\left(\mathbf{h}_B^*, \bar{\mathbf{h}}_H\right),
    \qquad
    \hat A \mathbf{h} \big|_B = \hat A_{BB} \mathbf{h}_B + \underbrace{\hat A_{BH}
    \bar{\mathbf{h}}_H}_{\text{constant } \mathbf{c}_B}

where :math:`F` is the full-graph map (its adjacency normalised on the *full* graph, so a
node's degree is its full degree) and :math:`\bar{\mathbf{h}}_H` the buffer's rows. The solved
:math:`\mathbf{h}_B^*` is written back. The halo enters only through the constant
:math:`\mathbf{c}_B`, computed once per solve without gradient, so one step's memory is
:math:`O(|B| + |H|)` (the halo's states are read once; nothing of the halo is saved for
backward) and the batch solve starts warm from the buffer's rows of :math:`B`.

**Convergence.** A sweep over a partition :math:`B_1, \dots, B_m` of the nodes, each solved to
its fixed point with the latest states of the others, is one step of block Gauss-Seidel on the
full-graph map. When the map is a contraction in a (weighted) max-norm, as
:class:`~pyg_rbp.nn.ImplicitCell`'s projection guarantees, every block update is too, and
repeated sweeps converge to the full-graph fixed point from any buffer
(``tests/test_nn_history.py`` checks 1e-5 relative).

**Gradients.** The gradient of a batch's output is the implicit gradient of the *batch's* fixed
point with the halo held constant: :math:`z = (I - J_{BB}^\top)^{-1} g_B` with
:math:`J_{BB} = \partial F_B / \partial \mathbf{h}_B` at :math:`\mathbf{h}_B^*`, then
:math:`\partial L / \partial w = (\partial F_B / \partial w)^\top z`, computed by the layer's
gradient mode (Neumann, CG, ...) on the batch alone. The dependence of the halo's states on the
parameters is ignored (they are treated as data, as in GNNAutoScale); at the full-graph fixed
point this drops the cross-batch terms :math:`J_{BH}` of the exact implicit gradient.

Works without ``pyg-lib``/``torch-sparse``: halos are sliced from the CSR layout of the full
graph (:func:`build_halo_batches`), and the partition is a locality-preserving node order
(reverse Cuthill-McKee, :func:`partition_nodes`) cut into contiguous batches.

Example::

    model = FixedPointNodeClassifier(F, 64, C, cell="implicit")
    batches = build_halo_batches(model.conv.cell, edge_index, N,
                                 partition_nodes(edge_index, N, batch_size=1024))
    buffer = HistoryBuffer(N)
    for batch in batches:
        logits = history_forward(model, x.index_select(0, batch.nodes), batch, buffer)
        loss_fn(logits[batch_train_mask], y_batch).backward()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pyg_rbp.engine import fixed_point
from pyg_rbp.nn.adjacency import CSRAdjacency, PreparedGraph, as_edge_index
from pyg_rbp.nn.cell import SUM_AGGRS, CellInputs, FixedPointCell
from pyg_rbp.nn.fixed_point_conv import FixedPointConv

PARTITIONS: tuple[str, ...] = ("rcm", "random")
"""Node orders cut into batches: reverse Cuthill-McKee (small halos) or a random permutation."""


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


class _AddToGrad(torch.autograd.Function):
    """Identity whose backward adds a constant to the arriving gradient (the historical adjoint)."""

    @staticmethod
    def forward(ctx: Any, out: Tensor, extra: Tensor) -> Tensor:
        ctx.save_for_backward(extra)
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (extra,) = ctx.saved_tensors
        return grad + extra.to(grad.dtype), None


class HistoryAdjoint:
    r"""Historical adjoints: the gradient each node's state receives from *other* batches.

    With the halo held constant, batch :math:`B`'s backward solves
    :math:`z_B = J_{BB}^\top z_B + g_B` and drops what the losses of other batches send to
    :math:`h_B` through the edges :math:`B \to B'`. This buffer keeps that part as a constant too,
    the dual of :class:`HistoryBuffer`: after batch :math:`B'`'s backward the gradient reaching its
    halo constant, :math:`\partial L / \partial c_{B'}` (the cell's VJP at its fixed point), is
    sent to the halo nodes as :math:`u_{H'} = \hat A_{B'H'}^\top \, \partial L/\partial c_{B'}`
    (one slot per (batch, halo node), the latest per batch kept); batch :math:`B` then solves

    .. math::
        z_B = J_{BB}^\top z_B + g_B + \textstyle\sum_{B'} u_{B' \to B}

    so sweeps are block Gauss-Seidel on the *full-graph* adjoint system as well, and the batch's
    parameter gradient :math:`(\partial F_B / \partial w)^\top z_B` sums over the batches to the
    full-graph implicit gradient once states and adjoints have settled (tested on a
    contraction against the full-graph gradient). Memory: one row per (batch, halo node), no
    autograd graph; the step's own memory is unchanged (the constant is one ``[B, C]`` tensor).

    Contributions are collected during backward (:attr:`pending`, slot ids and values) and
    applied by :meth:`commit`, so several processes can all-gather them first exactly like the
    states (:func:`pyg_rbp.training.distributed.gather_rows`).

    Status: a measured building block, not wired into ``--loader history``. On Amazon Computers
    (PPR, batches of 3072, weights fixed) the halo-constant gradient summed over a sweep is 0.76
    relative error from the full-graph gradient (cosine 0.915); with this buffer 0.12 after 8
    sweeps (cosine 0.999). But *training* with it (Adam, lr 0.01, a step per batch or per epoch)
    diverged there (training loss 2.3 -> 5-270 within 15-40 epochs): the stale adjoint enters the
    step as a linear term that the optimiser follows for a whole epoch before it is refreshed.
    """

    def __init__(self, batches: Sequence[HaloBatch]) -> None:
        if not batches:
            raise ValueError("HistoryAdjoint needs at least one batch")
        self.num_nodes = int(max(int(b.nodes.max()) for b in batches)) + 1
        self._offset: dict[int, int] = {}
        start = 0
        for b in batches:
            self._offset[id(b)] = start
            start += b.num_halo
        self.num_slots = start
        device = batches[0].nodes.device
        self.slot_node = (torch.cat([b.halo for b in batches]) if start
                          else torch.zeros(0, dtype=torch.long, device=device))
        self.slots = HistoryBuffer(max(start, 1))
        self.incoming: Tensor | None = None
        self.pending: list[tuple[Tensor, Tensor]] = []

    def read(self, nodes: Tensor, channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The adjoint the other batches send to ``nodes`` (zeros before any was sent)."""
        if self.incoming is None:
            return torch.zeros(nodes.numel(), channels, dtype=dtype, device=device)
        return self.incoming.index_select(0, nodes.to(self.incoming.device)).to(device, dtype)

    def hook(self, batch: HaloBatch) -> Any:
        r"""A gradient hook for batch's halo constant: queues :math:`\hat A_{BH}^\top g`."""
        offset = self._offset.get(id(batch))
        if offset is None:
            raise ValueError("this HaloBatch is not one of the batches the HistoryAdjoint was built for")
        slots = torch.arange(offset, offset + batch.num_halo, device=batch.halo.device)

        def send(grad: Tensor) -> None:
            with torch.no_grad():
                self.pending.append((slots, batch.halo_adj.t().matmul(grad.detach())))
        return send

    @torch.no_grad()
    def commit(self, rows: Sequence[tuple[Tensor, Tensor]] | None = None) -> None:
        """Store the queued contributions (or ``rows``, e.g. all-gathered from every process)
        and recompute every node's incoming adjoint."""
        rows = self.pending if rows is None else rows
        for slots, values in rows:
            self.slots.ensure(values.size(1), values.dtype, values.device)
            self.slots.write(slots, values)
        self.pending = []
        if self.slots.states is None or not self.num_slots:
            return
        states = self.slots.states[: self.num_slots]
        incoming = states.new_zeros(self.num_nodes, states.size(1))
        incoming.index_add_(0, self.slot_node.to(states.device), states)
        self.incoming = incoming

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(nodes={self.num_nodes}, slots={self.num_slots})"


def partition_nodes(edge_index: Tensor, num_nodes: int, batch_size: int, method: str = "rcm",
                    seed: int = 0, multiple_of: int = 1) -> list[Tensor]:
    """Cut the nodes into batches of at most ``batch_size`` (each sorted), covering every node once.

    ``method="rcm"``: contiguous chunks of the reverse Cuthill-McKee order of the symmetrised
    graph (scipy), which keeps neighbours together and the halos small; ``"random"``: chunks of
    a random permutation drawn with ``seed``. The number of batches is rounded up to a multiple
    of ``multiple_of`` (the number of processes sharing them), sizes balanced within one node.
    ``edge_index`` may also be a ``torch.sparse`` or ``SparseTensor`` adjacency.
    """
    edge_index, _ = as_edge_index(edge_index, None, num_nodes)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if method not in PARTITIONS:
        raise ValueError(f"partition method must be one of {PARTITIONS}, got {method!r}")
    if method == "rcm":
        import numpy as np
        import scipy.sparse as sp
        from scipy.sparse.csgraph import reverse_cuthill_mckee

        row, col = edge_index.cpu().numpy()
        adj = sp.coo_matrix((np.ones(row.size, dtype=np.int8), (row, col)), shape=(num_nodes, num_nodes))
        adj = (adj + adj.T).tocsr()
        order = torch.from_numpy(reverse_cuthill_mckee(adj, symmetric_mode=True).astype("int64"))
    else:
        order = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(int(seed)))
    count = -(-num_nodes // batch_size)
    count = -(-count // multiple_of) * multiple_of
    if count > num_nodes:
        raise ValueError(f"{num_nodes} nodes cannot fill {count} non-empty batches")
    return [chunk.sort().values for chunk in torch.tensor_split(order, count)]


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


def solve_batch(conv: FixedPointConv, x: Tensor, batch: HaloBatch, buffer: HistoryBuffer,
                write: bool = True, adjoint: HistoryAdjoint | None = None) -> Tensor:
    r"""The fixed point of ``conv``'s map on ``batch`` with its halo held at the buffer's states.

    ``x`` holds the batch's node inputs ``[B, F]`` (rows in ``batch.nodes`` order). The solve
    starts from the buffer's rows of the batch and uses ``conv``'s gradient mode and budgets;
    the result (differentiable: implicit gradient with the halo constant) is written back to
    the buffer unless ``write=False``. ``conv.stats`` holds the solve's diagnostics. With
    ``adjoint`` (and gradients enabled) the backward also takes the other batches' historical
    adjoint and sends this batch's to its halo (:class:`HistoryAdjoint`).
    """
    cell = conv.cell
    if not isinstance(cell, FixedPointCell):
        raise ValueError(f"historical batches need a FixedPointCell, got {type(cell).__name__}")
    cell._check_features(x)
    if x.size(0) != batch.num_nodes:
        raise ValueError(f"x has {x.size(0)} rows, the batch {batch.num_nodes} nodes")
    graph = PreparedGraph(num_nodes=batch.num_nodes, edge_index=batch.edge_index,
                          edge_weight=None, csr=batch.adj)
    inputs = CellInputs(x=x, graph=graph)
    inputs.extra = cell._prepare_extra(inputs)
    channels = cell.state_channels(inputs)
    buffer.ensure(channels, x.dtype, x.device)
    with torch.no_grad():
        if batch.halo_adj is not None:
            constant = batch.halo_adj.matmul(buffer.read(batch.halo, x.device, x.dtype))
        else:
            constant = torch.zeros(batch.num_nodes, channels, dtype=x.dtype, device=x.device)
    track_adjoint = adjoint is not None and torch.is_grad_enabled() and batch.halo_adj is not None
    if track_adjoint:
        constant.requires_grad_(True)
        constant.register_hook(adjoint.hook(batch))
    inputs.graph = PreparedGraph(num_nodes=batch.num_nodes, edge_index=batch.edge_index,
                                 edge_weight=None, csr=HaloCSR(batch.adj, constant))
    h0 = buffer.read(batch.nodes, x.device, x.dtype)

    def step(h: Tensor) -> Tensor:
        return cell.step(h, inputs)

    out, conv.stats = fixed_point(
        step, h0, grad=conv.grad, max_iter=conv.max_iter, tol=conv.tol,
        backward_iter=conv.backward_iter, damping=conv.damping, backward_tol=conv.backward_tol,
        return_stats=True, track=conv.track, solver=conv.solver, solver_options=conv.solver_options,
        grad_options=conv.grad_options, strict=conv.strict, warn_key=conv._warn_key)
    if write:
        buffer.write(batch.nodes, out)
    if adjoint is not None and torch.is_grad_enabled():
        out = _AddToGrad.apply(out, adjoint.read(batch.nodes, channels, out.dtype, out.device))
    return out


def find_fixed_point_conv(model: torch.nn.Module) -> FixedPointConv:
    """The model's one :class:`FixedPointConv` (a ValueError if it has none or several)."""
    convs = [m for m in model.modules() if isinstance(m, FixedPointConv)]
    if len(convs) != 1:
        raise ValueError(f"historical batches need a model with exactly one FixedPointConv, "
                         f"{type(model).__name__} has {len(convs)}")
    return convs[0]


@contextlib.contextmanager
def batch_solves(model: torch.nn.Module, batch: HaloBatch, buffer: HistoryBuffer,
                 writes: list[tuple[Tensor, Tensor]] | None = None,
                 adjoint: HistoryAdjoint | None = None) -> Iterator[None]:
    """Inside this block, the model's :class:`FixedPointConv` solves ``batch`` against ``buffer``
    (:func:`solve_batch`) whatever graph it is called with; the rest of the model runs unchanged.

    With ``writes`` given, solved states are appended to it as ``(nodes, states)`` instead of
    being written to the buffer (several batches solved against one snapshot, then written
    together: what several processes do in one round).
    """
    conv = find_fixed_point_conv(model)

    def forward(x: Tensor, edge_index: Any = None, edge_weight: Tensor | None = None,
                h0: Tensor | None = None) -> Tensor:
        out = solve_batch(conv, x, batch, buffer, write=writes is None, adjoint=adjoint)
        if writes is not None:
            writes.append((batch.nodes, out.detach()))
        return out

    conv.forward = forward  # an instance attribute shadows the class's forward for this block
    try:
        yield
    finally:
        del conv.forward


def history_forward(model: torch.nn.Module, x: Tensor, batch: HaloBatch, buffer: HistoryBuffer,
                    writes: list[tuple[Tensor, Tensor]] | None = None,
                    adjoint: HistoryAdjoint | None = None) -> Tensor:
    """The model's output on ``batch``'s nodes, its fixed point solved with the halo from ``buffer``.

    ``x``: the batch's input features ``[B, F]``; returns ``model(x, ...)`` (e.g. logits ``[B, C]``).
    """
    with batch_solves(model, batch, buffer, writes, adjoint):
        return model(x, batch.edge_index, None)


@torch.no_grad()
def sweep(model: torch.nn.Module, x: Tensor, batches: Sequence[HaloBatch], buffer: HistoryBuffer,
          sweeps: int = 1) -> Tensor:
    """``sweeps`` block Gauss-Seidel sweeps over all batches without gradient; the model's
    outputs ``[N, ...]`` from the last sweep (rows in node order)."""
    out: Tensor | None = None
    for _ in range(sweeps):
        for batch in batches:
            x_b = x.index_select(0, batch.nodes.to(x.device))
            y = history_forward(model, x_b, batch, buffer)
            if out is None:
                out = y.new_zeros((buffer.num_nodes, *y.shape[1:]))
            out.index_copy_(0, batch.nodes.to(y.device), y)
    assert out is not None, "no batch to sweep"
    return out

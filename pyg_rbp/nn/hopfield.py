r"""A continuous Hopfield network as a message-passing cell: :class:`HopfieldCell`.

Liao et al. (2018) test recurrent back-propagation on associative memory: a continuous Hopfield
network whose neurons settle to a fixed point. A Hopfield network *is* a graph problem: neurons
are nodes, synapses are undirected edges with one symmetric weight each, and one update of the
dynamics is one round of message passing. Expressing it as a
:class:`~pyg_rbp.nn.cell.FixedPointCell` (a PyG ``MessagePassing``) lets
:class:`pyg_rbp.nn.FixedPointConv` (or :func:`pyg_rbp.fixed_point`) run it with any of the five
gradient modes, on the paper's fully connected network and on sparse topologies alike.

Symmetry is structural, not a penalty: the cell stores one parameter per *undirected* synapse
and reads it for both directions, so :math:`w_{ij} = w_{ji}` holds after any optimiser step.
A fully connected graph is detected automatically and run as a dense symmetric matrix product
(the fast path); every other graph runs as sparse message passing (CSR kernel or PyG
gather-scatter). Both give the same states.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_rbp.nn.adjacency import PreparedGraph, as_edge_index, validate_edge_weight
from pyg_rbp.nn.cell import CellInputs, FixedPointCell

__all__ = ["HopfieldCell"]


class _WeightBlock(torch.autograd.Function):
    r"""A dense block ``W[rows][:, cols]`` of the symmetric matrix held as one weight per pair.

    ``flat`` lists, for every entry the block holds, its position in the flattened block and
    ``pair`` the synapse it reads (``None``: the block holds every synapse in order, once per
    orientation: ``flat = [upper; lower]``). Built with one scatter, without an autograd graph
    of its own; the backward sums the block's gradient back onto the synapses
    (:math:`\partial L/\partial w_{ij} = G_{ij} + G_{ji}`) with differentiable ops, so double
    backward (CG-RBP's Jacobian-vector products) works. The matrix product that follows is
    PyTorch's, which skips the :math:`g s^\top` outer product whenever only state gradients are
    asked for (every vector-Jacobian product of the adjoint solvers).
    """

    @staticmethod
    def forward(ctx: Any, weight: Tensor, pair: Tensor | None, flat: Tensor,
                shape: tuple[int, int]) -> Tensor:
        ctx.index = (pair, flat)  # graph structure, not activations: kept off the saved tensors
        ctx.num_pairs = weight.numel()
        block = weight.new_zeros(shape[0] * shape[1])
        block[flat] = weight.repeat(2) if pair is None else weight[pair]
        return block.view(shape)

    @staticmethod
    def backward(ctx: Any, grad_block: Tensor) -> tuple[Tensor, None, None, None]:
        pair, flat = ctx.index
        g = grad_block.reshape(-1)[flat]
        if pair is None:
            return g[: ctx.num_pairs] + g[ctx.num_pairs:], None, None, None
        return g.new_zeros(ctx.num_pairs).index_add(0, pair, g), None, None, None


class HopfieldCell(FixedPointCell):
    r"""One synchronous update of a continuous Hopfield network on a graph of neurons.

    .. math::
        h'_i = \begin{cases}
            x_i & i \text{ clamped} \\
            (1 - a)\, h_i + \sum_{j \in \mathcal{N}(i)} w_{ij}\, \sigma(b\, h_j) + x_i
            & \text{otherwise}
        \end{cases}

    with :math:`\sigma` the logistic sigmoid and one learned weight per undirected synapse,
    :math:`w_{ij} = w_{ji}`, no self-connections. ``x`` is the external input: clamped neurons
    are held at it (they are read at :math:`h_j = x_j` whatever the incoming state holds, so the
    step does not depend on their entries of ``h``), free neurons receive it as a constant input
    current (zero in the paper's protocol, where ``x`` is the image padded with zeros). The
    default initial state (in :class:`~pyg_rbp.nn.FixedPointConv`) is :math:`h^{(0)} = x`, the
    paper's "image padded with zeros". All five gradient modes work, CG-RBP included (every
    op supports double backward).

    The dynamics have the Lyapunov function of :meth:`energy` in continuous time
    (:math:`\dot h = F(h) - h`); the synchronous discrete update with :math:`a = 1` is not
    guaranteed to decrease it.

    The cell owns the synapses, so it is built for one graph and checks that it is given that
    graph. A complete graph (every pair of distinct neurons connected, as in the paper's
    784 + 1024 + 784 network) runs as a dense matrix product over the free neurons, the
    free x free weight block and the clamped neurons' constant input built once per solve in
    :meth:`prepare`; other graphs run as sparse message passing (the CSR kernel when ``fused``,
    else PyG's gather/scatter). Both paths give the same states (on the paper's network: equal
    to 1.5e-6 in float32, about 30x faster dense).

    Args:
        num_nodes (int): number of neurons :math:`N`.
        edge_index (Tensor): synapses ``[2, E]``, undirected in PyG's convention: every
            :math:`(i, j)` also appears as :math:`(j, i)`, no duplicates, no self-loops
            (``torch_geometric.utils.to_undirected`` produces this). ``E / 2`` weights are
            learned.
        clamp (Tensor, optional): neurons held at their input ``x``: a boolean mask ``[N]`` or
            an index tensor. (default: ``None``, none clamped)
        a (float, optional): leak :math:`a`. (default: ``1.0``, the paper)
        b (float, optional): sigmoid gain :math:`b > 0`. (default: ``0.5``, the paper)
        init_std (float, optional): weights start :math:`\mathcal{N}(0, \text{init\_std}^2)`.
            (default: ``1e-3``, the paper)
        dense (bool, optional): ``None`` picks the dense path exactly when the graph is
            complete; ``True``/``False`` force a path (same results, different speed/memory).
        fused (bool, optional): sparse path through the CSR kernel rather than
            gather/scatter. (default: ``True``)

    Shapes:
        - **input:** state ``h`` :math:`(N, C)`, input ``x`` :math:`(N, C)`, ``edge_index``
          :math:`(2, E)` (the cell's own graph, ``cell.edge_index``) or that graph as a
          ``torch.sparse`` / ``SparseTensor`` adjacency :math:`(N, N)` in PyG's ``adj_t``
          convention (any entry order; values other than one act as ``edge_weight``),
          ``edge_weight`` :math:`(E)` *(optional, a fixed multiplier per directed edge; forces
          the sparse path)*. The ``C`` channels are independent patterns: they never mix.
        - **output:** next state :math:`(N, C)`

    Example:
        >>> from torch_geometric.utils import to_undirected
        >>> edge_index = to_undirected(torch.tensor([[0, 1, 2], [1, 2, 3]]))  # a 4-neuron chain
        >>> cell = HopfieldCell(4, edge_index, clamp=torch.tensor([0]))
        >>> conv = FixedPointConv(cell, grad="neumann", max_iter=50)
        >>> conv(torch.randn(4, 2), edge_index).shape  # two patterns, retrieved independently
        torch.Size([4, 2])
    """

    def __init__(self, num_nodes: int, edge_index: Tensor, clamp: Tensor | None = None,
                 a: float = 1.0, b: float = 0.5, init_std: float = 1e-3,
                 dense: bool | None = None, fused: bool = True) -> None:
        super().__init__(fused=fused, aggr="add", flow="source_to_target")
        if not isinstance(num_nodes, int) or isinstance(num_nodes, bool) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive integer, got {num_nodes!r}")
        for name, value in (("a", a), ("b", b), ("init_std", init_std)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if b <= 0:
            raise ValueError(f"b (the sigmoid gain) must be > 0, got {b!r}")
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {init_std!r}")
        if dense not in (None, True, False):
            raise ValueError(f"dense must be None, True or False, got {dense!r}")
        self.num_nodes = num_nodes
        self.a = float(a)
        self.b = float(b)
        self.init_std = float(init_std)

        edge_index, pair_index, edge_pair = _undirected_pairs(edge_index, num_nodes)
        self.is_complete = pair_index.size(1) == num_nodes * (num_nodes - 1) // 2
        self.dense = self.is_complete if dense is None else bool(dense)
        # Derived from the constructor arguments: not part of the state dict.
        self.register_buffer("edge_index", edge_index, persistent=False)
        self.register_buffer("pair_index", pair_index, persistent=False)
        self.register_buffer("edge_pair", edge_pair, persistent=False)
        self.register_buffer("clamp_mask", _clamp_mask(clamp, num_nodes), persistent=False)
        self._register_dense_blocks()
        self.weight = torch.nn.Parameter(torch.empty(pair_index.size(1)))
        self._checked_graphs: dict[tuple, bool] = {}
        self.reset_parameters()

    def _register_dense_blocks(self) -> None:
        r"""Index the blocks the dense path multiplies with: free x free and free x clamped.

        Clamped neurons never change, so their rows are never computed and their constant
        input :math:`W_{fc}\,\sigma(b x_c)` is computed once per solve: each step multiplies
        by the ``F x F`` block only (``F`` free neurons).
        """
        n = self.num_nodes
        i, j = self.pair_index
        if not self.dense or self.clamp_mask is None:
            self.free_index = None
            self.clamp_index = None
            return
        free = ~self.clamp_mask
        free_index = torch.nonzero(free).flatten()
        clamp_index = torch.nonzero(self.clamp_mask).flatten()
        pos = torch.full((n,), -1, dtype=torch.long, device=free.device)
        pos[free_index] = torch.arange(free_index.numel(), device=free.device)
        pos[clamp_index] = torch.arange(clamp_index.numel(), device=free.device)
        nf, nc = free_index.numel(), clamp_index.numel()
        fi, fj = free[i], free[j]
        ids = torch.arange(i.numel(), device=i.device)
        both = fi & fj  # free-free synapses, both orientations in W_ff
        ff_pair = torch.cat([ids[both], ids[both]])
        ff_flat = torch.cat([pos[i[both]] * nf + pos[j[both]], pos[j[both]] * nf + pos[i[both]]])
        a_free, b_free = fi & ~fj, fj & ~fi  # one end clamped: rows free, columns clamped
        fc_pair = torch.cat([ids[a_free], ids[b_free]])
        fc_flat = torch.cat([pos[i[a_free]] * nc + pos[j[a_free]], pos[j[b_free]] * nc + pos[i[b_free]]])
        for name, value in (("free_index", free_index), ("clamp_index", clamp_index),
                            ("ff_pair", ff_pair), ("ff_flat", ff_flat),
                            ("fc_pair", fc_pair), ("fc_flat", fc_flat)):
            self.register_buffer(name, value, persistent=False)

    def reset_parameters(self) -> None:
        """Draw every synapse from :math:`\\mathcal{N}(0, \\text{init\\_std}^2)`."""
        super().reset_parameters()
        with torch.no_grad():
            self.weight.normal_(0.0, self.init_std)

    @property
    def num_synapses(self) -> int:
        """Number of undirected synapses (= learned weights)."""
        return self.pair_index.size(1)

    @property
    def num_clamped(self) -> int:
        return 0 if self.clamp_mask is None else int(self.clamp_mask.sum())

    def weight_matrix(self) -> Tensor:
        """The symmetric ``[N, N]`` weight matrix (zero diagonal), differentiable."""
        n = self.num_nodes
        i, j = self.pair_index
        flat = torch.cat([i * n + j, j * n + i])
        return _WeightBlock.apply(self.weight, None, flat, (n, n))

    def dense_blocks(self) -> tuple[Tensor, Tensor]:
        r"""The blocks of the weight matrix the dense path multiplies with, differentiable:
        free x free :math:`W_{ff}` and free x clamped :math:`W_{fc}` (a cell with clamped
        neurons only)."""
        nf, nc = self.free_index.numel(), self.clamp_index.numel()
        W_ff = _WeightBlock.apply(self.weight, self.ff_pair, self.ff_flat, (nf, nf))
        W_fc = _WeightBlock.apply(self.weight, self.fc_pair, self.fc_flat, (nf, nc))
        return W_ff, W_fc

    def sparse_graph(self, x: Tensor, edge_weight: Tensor | None = None) -> PreparedGraph:
        """The sparse path's adjacency: one weight per directed edge (the synapse's, times
        ``edge_weight`` where given) in the layout the kernel multiplies with."""
        w = self.weight.index_select(0, self.edge_pair)
        if edge_weight is not None:
            w = w * edge_weight.to(w.dtype)
        return self._prepare_graph(self.edge_index, w, self.num_nodes, x)

    # --- once per solve --------------------------------------------------------------------

    def _aligned_sparse_weights(self, adj: Any, edge_weight: Tensor | None, x: Tensor) -> Tensor | None:
        """The per-edge multipliers of a ``torch.sparse`` / ``SparseTensor`` adjacency of the
        cell's own graph, in the order of :attr:`edge_index` (``None`` when they are all one).

        The adjacency follows PyG's ``adj_t`` convention (``adj_t[i, j]``: edge ``j -> i``); its
        sparsity pattern must be exactly the cell's synapses, in any order."""
        ei, w = as_edge_index(adj, edge_weight, self.num_nodes, like=x)
        n = self.num_nodes
        own = self.edge_index[0] * n + self.edge_index[1]
        given = ei[0].to(own.device) * n + ei[1].to(own.device)
        same = given.numel() == own.numel() and bool(torch.equal(given.sort().values, own.sort().values))
        if not same:
            raise ValueError(
                "HopfieldCell owns the weights of the graph it was built for: the sparse adjacency "
                f"has {given.numel()} entries that are not exactly the cell's {own.numel()} directed "
                "synapses (cell.edge_index)"
            )
        if w is None or bool((w == 1).all()):
            return None
        # position of each of the cell's edges in the given order
        order_given = given.argsort()
        order_own = own.argsort()
        pos = torch.empty_like(order_own)
        pos[order_own] = order_given
        return w.to(own.device).index_select(0, pos)

    def _check_graph(self, edge_index: Any) -> None:
        if edge_index is None or edge_index is self.edge_index:
            return
        if not isinstance(edge_index, Tensor):
            raise ValueError(
                "HopfieldCell needs its own graph as a [2, E] edge_index (cell.edge_index), got "
                f"{type(edge_index).__name__}"
            )
        key = (edge_index.data_ptr(), edge_index._version, tuple(edge_index.shape), edge_index.device)
        if key in self._checked_graphs:
            return
        same = (
            edge_index.shape == self.edge_index.shape
            and edge_index.device == self.edge_index.device
            and not edge_index.is_floating_point()
            and bool(torch.equal(edge_index.long(), self.edge_index))
        )
        if not same:
            raise ValueError(
                "HopfieldCell owns the weights of the graph it was built for: pass that graph "
                f"(cell.edge_index, shape {list(self.edge_index.shape)}), got edge_index of "
                f"shape {list(edge_index.shape)}"
            )
        if len(self._checked_graphs) > 8:
            self._checked_graphs.clear()
        self._checked_graphs[key] = True

    def prepare(self, x: Tensor, edge_index: Any = None, edge_weight: Tensor | None = None) -> CellInputs:
        """Validate ``x`` and the graph; build the dense matrix or the sparse adjacency once."""
        self._check_features(x)
        if x.size(0) != self.num_nodes:
            raise ValueError(f"x must have {self.num_nodes} rows (one per neuron), got {x.size(0)}")
        if x.dtype != self.weight.dtype or x.device != self.weight.device:
            raise ValueError(f"x ({x.dtype}, {x.device}) must match the cell's weights "
                             f"({self.weight.dtype}, {self.weight.device})")
        if isinstance(edge_index, Tensor) and edge_index.layout != torch.strided or (
                edge_index is not None and not isinstance(edge_index, Tensor)
                and hasattr(edge_index, "sizes")):  # torch.sparse or SparseTensor adjacency
            edge_weight = self._aligned_sparse_weights(edge_index, edge_weight, x)
            edge_index = self.edge_index
        self._check_graph(edge_index)
        extra: dict[str, Tensor] = {}
        if self.dense and edge_weight is None:
            if self.free_index is None:
                extra["W"] = self.weight_matrix()
            else:
                W_ff, W_fc = self.dense_blocks()
                x_c = x.index_select(0, self.clamp_index)
                extra["W_ff"] = W_ff
                # Constant over the solve: input from the clamped neurons plus input currents.
                extra["drive"] = W_fc @ torch.sigmoid(self.b * x_c) + x.index_select(0, self.free_index)
            graph = PreparedGraph(num_nodes=self.num_nodes, edge_index=self.edge_index, edge_weight=None)
        else:
            if edge_weight is not None:
                validate_edge_weight(edge_weight, self.edge_index.size(1), x)
            graph = self.sparse_graph(x, edge_weight)
        return CellInputs(x=x, graph=graph, extra=extra)

    def state_channels(self, inputs: CellInputs) -> int:
        return inputs.x.size(1)

    def initial_state(self, inputs: CellInputs) -> Tensor:
        return inputs.x

    # --- per iteration ---------------------------------------------------------------------

    def _synaptic_input(self, s: Tensor, inputs: CellInputs) -> Tensor:
        r""":math:`\sum_j w_{ij} s_j` for every neuron."""
        W = inputs.extra.get("W")
        if W is not None:
            return W @ s
        return self.aggregate_neighbours(s, inputs.graph)

    def step(self, h: Tensor, inputs: CellInputs) -> Tensor:
        W_ff = inputs.extra.get("W_ff")
        if W_ff is not None:  # dense path with clamped neurons: only free rows change
            h_f = h.index_select(0, self.free_index)
            out_f = W_ff @ torch.sigmoid(self.b * h_f) + inputs.extra["drive"]
            if self.a != 1.0:
                out_f = out_f + (1.0 - self.a) * h_f
            return inputs.x.index_put((self.free_index,), out_f)
        if self.clamp_mask is not None:
            h = torch.where(self.clamp_mask.unsqueeze(-1), inputs.x, h)
        s = torch.sigmoid(self.b * h)
        out = self._synaptic_input(s, inputs) + inputs.x
        if self.a != 1.0:
            out = out + (1.0 - self.a) * h
        if self.clamp_mask is not None:
            out = torch.where(self.clamp_mask.unsqueeze(-1), inputs.x, out)
        return out

    def energy(self, h: Tensor, x: Tensor, edge_index: Any = None,
               edge_weight: Tensor | None = None) -> Tensor:
        r"""Hopfield energy of each of the ``C`` patterns, shape ``[C]``.

        .. math::
            E = -\tfrac12 \sum_{i,j} w_{ij} s_i s_j - \sum_{i\ \mathrm{free}} x_i s_i
                + \frac{a}{b} \sum_{i\ \mathrm{free}} \big[s_i \ln s_i + (1 - s_i)\ln(1 - s_i)\big]

        with :math:`s = \sigma(b h)` and clamped neurons read at their input,
        :math:`s_i = \sigma(b x_i)`. Because the weights are symmetric, it never increases
        along the continuous-time dynamics :math:`\dot h = F(h) - h`
        (:math:`\dot E = -\sum_{i\ \mathrm{free}} b\,\sigma'(b h_i)\,\dot h_i^2`).
        """
        inputs = self.prepare(x, edge_index, edge_weight)
        self.check_state(h, inputs)
        return self._energy(h, self.energy_inputs(inputs))

    def energy_inputs(self, inputs: CellInputs) -> CellInputs:
        """``inputs`` as the energy reads them: a clamped dense cell's step needs only the free
        rows (``W_ff``), the energy every row, so a copy with the full matrix is built once here
        (the prepared inputs themselves are never written after :meth:`prepare`)."""
        if "W_ff" not in inputs.extra or "W" in inputs.extra:
            return inputs
        return CellInputs(x=inputs.x, graph=inputs.graph, extra={**inputs.extra, "W": self.weight_matrix()})

    def _energy(self, h: Tensor, inputs: CellInputs) -> Tensor:
        """:meth:`energy` for inputs from :meth:`energy_inputs` (no validation; for per-step
        tracking)."""
        x = inputs.x
        if self.clamp_mask is not None:
            h = torch.where(self.clamp_mask.unsqueeze(-1), x, h)
        z = self.b * h
        s = torch.sigmoid(z)
        quad = 0.5 * (s * self._synaptic_input(s, inputs)).sum(0)
        if self.clamp_mask is None:
            free = torch.ones_like(s[:, :1])
        else:
            free = (~self.clamp_mask).unsqueeze(-1).to(s.dtype)
        # s ln s + (1 - s) ln(1 - s) through log-sigmoids: finite for saturated neurons.
        neg_entropy = s * F.logsigmoid(z) + (1 - s) * F.logsigmoid(-z)
        return -quad - (free * x * s).sum(0) + (self.a / self.b) * (free * neg_entropy).sum(0)

    def __repr__(self) -> str:
        path = "dense" if self.dense else ("sparse-csr" if self.fused else "sparse-scatter")
        return (
            f"{self.__class__.__name__}({self.num_nodes} neurons, {self.num_synapses} synapses, "
            f"clamped={self.num_clamped}, a={self.a:g}, b={self.b:g}, path={path})"
        )


def _clamp_mask(clamp: Tensor | None, num_nodes: int) -> Tensor | None:
    if clamp is None:
        return None
    if not isinstance(clamp, Tensor):
        raise ValueError(f"clamp must be a boolean mask or an index tensor, got {type(clamp).__name__}")
    if clamp.dtype == torch.bool:
        if clamp.shape != (num_nodes,):
            raise ValueError(f"a boolean clamp mask must have shape [{num_nodes}], got {tuple(clamp.shape)}")
        return clamp.clone()
    if clamp.dtype not in (torch.int32, torch.int64) or clamp.dim() != 1:
        raise ValueError("clamp must be a boolean mask [N] or a 1-D integer index tensor")
    if clamp.numel() and (int(clamp.min()) < 0 or int(clamp.max()) >= num_nodes):
        raise ValueError(f"clamp indices must lie in [0, {num_nodes}), got range "
                         f"[{int(clamp.min())}, {int(clamp.max())}]")
    mask = torch.zeros(num_nodes, dtype=torch.bool, device=clamp.device)
    mask[clamp.long()] = True
    return mask


def _undirected_pairs(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Validate an undirected edge list; return it, its pairs ``i < j`` and edge -> pair map."""
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__
        raise ValueError(f"edge_index must have shape [2, E], got {shape}")
    if edge_index.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"edge_index must hold integers, got {edge_index.dtype}")
    edge_index = edge_index.long()
    if edge_index.numel() == 0:
        empty = edge_index.new_empty(2, 0)
        return edge_index, empty, edge_index.new_empty(0)
    lo_node, hi_node = int(edge_index.min()), int(edge_index.max())
    if lo_node < 0 or hi_node >= num_nodes:
        raise ValueError(f"edge_index refers to nodes outside [0, {num_nodes}): range [{lo_node}, {hi_node}]")
    row, col = edge_index
    if bool((row == col).any()):
        raise ValueError("edge_index has self-loops; a Hopfield network has no self-connections "
                         "(torch_geometric.utils.remove_self_loops)")
    directed = row * num_nodes + col
    if torch.unique(directed).numel() != directed.numel():
        raise ValueError("edge_index has duplicate edges (torch_geometric.utils.coalesce)")
    lo, hi = torch.minimum(row, col), torch.maximum(row, col)
    keys, edge_pair, counts = torch.unique(lo * num_nodes + hi, return_inverse=True, return_counts=True)
    if bool((counts != 2).any()):
        raise ValueError(
            "edge_index must be undirected: every (i, j) also as (j, i) "
            "(torch_geometric.utils.to_undirected); "
            f"{int((counts != 2).sum())} synapses appear in one direction only"
        )
    pair_index = torch.stack([keys // num_nodes, keys % num_nodes])
    return edge_index, pair_index, edge_pair

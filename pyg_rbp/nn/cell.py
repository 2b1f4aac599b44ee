r"""The contract every fixed-point message-passing cell follows: :class:`FixedPointCell`.

A cell is one step :math:`h' = F(h, x)` of a graph dynamical system. It is split in two so a
solver can run it hundreds of times cheaply:

* :meth:`FixedPointCell.prepare` does everything that does not depend on the state, once per
  solve: validate the inputs, normalise edge weights, build the CSR adjacency, compute the
  input injection (e.g. :math:`x U`). What it returns is differentiable, so gradients of the
  solve still reach ``x``, the edge weights and the input weights.
* :meth:`FixedPointCell.step` is the cheap part that the solver iterates.

``cell(h, x, edge_index, edge_weight=None)`` runs both, i.e. one complete step, as a plain PyG
layer call. :class:`~pyg_rbp.nn.FixedPointConv` calls ``prepare`` once and ``step`` per
iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing

from pyg_rbp.nn.adjacency import CSRAdjacency, PreparedGraph, as_edge_index, gcn_normalize

SUM_AGGRS = ("add", "sum", "mean")
"""Aggregations the CSR kernel computes (a weighted sum; ``mean`` divides by the in-degree)."""


@dataclass
class CellInputs:
    """Everything about one solve that does not change between iterations.

    Attributes:
        x: the node input features ``[N, F]``.
        graph: the prepared adjacency (CSR and/or edge list) with the cell's normalisation.
        extra: per-cell precomputed tensors (input injection, projected weights, ...).
    """

    x: Tensor
    graph: PreparedGraph
    extra: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return self.graph.num_nodes


class FixedPointCell(MessagePassing):
    """Base class of the cells: one message-passing step of a fixed-point iteration.

    Subclasses set ``channels`` (the state width), implement :meth:`_prepare_extra`,
    :meth:`step` and :meth:`initial_state`, and choose their adjacency with
    :meth:`_prepare_graph`.

    Args:
        fused: aggregate with the CSR sparse-dense matmul kernel (:meth:`message_and_aggregate`)
            when the aggregation is a (weighted) sum or mean. ``False`` uses PyG's
            gather/scatter path (``propagate``), which every aggregation supports.
        **kwargs: passed to :class:`torch_geometric.nn.conv.MessagePassing` (``aggr``, ...).
    """

    channels: int

    def __init__(self, fused: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fused = bool(fused)

    # --- the part that runs once per solve ---------------------------------------------------

    def prepare(self, x: Tensor, edge_index: Any, edge_weight: Tensor | None = None) -> CellInputs:
        """Validate the inputs and precompute everything that does not depend on the state.

        Raises:
            ValueError: malformed ``edge_index`` / ``edge_weight``, or features whose shape
                does not match the cell.
        """
        self._check_features(x)
        num_nodes = x.size(0)
        edge_index, edge_weight = as_edge_index(edge_index, edge_weight, num_nodes, like=x)
        graph = self._prepare_graph(edge_index, edge_weight, num_nodes, x)
        inputs = CellInputs(x=x, graph=graph)
        inputs.extra = self._prepare_extra(inputs)
        return inputs

    def _check_features(self, x: Any) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got "
                             f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
        expected = self.in_channels_expected()
        if x.dim() != 2 or (expected is not None and x.size(1) != expected):
            width = "channels" if expected is None else expected
            raise ValueError(
                f"{self.__class__.__name__}: x must be a 2-D tensor of shape [num_nodes, {width}], "
                f"got {list(x.shape)}"
            )

    def in_channels_expected(self) -> int | None:
        """Width of ``x`` the cell needs (``None``: any width)."""
        return None

    @property
    def reads_input(self) -> bool:
        """Whether :meth:`step` reads ``x`` (else the fixed point, once reached, cannot depend
        on ``x``: it only sets the initial state)."""
        return True

    def _prepare_graph(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int,
                       x: Tensor, normalize: str = "none",
                       add_self_loops: bool = False) -> PreparedGraph:
        """Normalise the edge weights and build the CSR layout the step will reuse.

        ``normalize="gcn"`` gives :math:`\\hat A = D^{-1/2}(A + I)D^{-1/2}` (self loops added
        where missing when ``add_self_loops``); with ``aggr="mean"`` the CSR weights of each row are
        divided by its in-degree (the scatter path divides itself, through PyG's mean aggregation).
        """
        if normalize == "gcn":
            edge_index, edge_weight = gcn_normalize(
                edge_index, edge_weight, num_nodes, add_self_loops=add_self_loops, dtype=x.dtype
            )
        csr = None
        mean = self.aggr == "mean"
        if self.fused and self.aggr in SUM_AGGRS:
            csr_weight = edge_weight
            if mean:
                deg = torch.bincount(edge_index[1], minlength=num_nodes).clamp_min(1).to(x.dtype)
                ones = torch.ones((), dtype=x.dtype, device=x.device)
                inv = (ones / deg).index_select(0, edge_index[1])
                csr_weight = inv if edge_weight is None else edge_weight * inv
            csr = CSRAdjacency(edge_index, csr_weight, num_nodes, dtype=x.dtype)
        return PreparedGraph(num_nodes=num_nodes, edge_index=edge_index,
                             edge_weight=edge_weight, csr=csr)

    def _prepare_extra(self, inputs: CellInputs) -> dict[str, Tensor]:
        return {}

    # --- the part the solver iterates ---------------------------------------------------------

    def step(self, h: Tensor, inputs: CellInputs) -> Tensor:
        """One application of the dynamics to state ``h`` (no validation: called per iteration)."""
        raise NotImplementedError

    def initial_state(self, inputs: CellInputs) -> Tensor:
        """The default ``h0`` of a solve."""
        raise NotImplementedError

    def aggregate_neighbours(self, h: Tensor, graph: PreparedGraph,
                             bias: Tensor | None = None) -> Tensor:
        r"""Aggregated messages :math:`\bigoplus_{j \to i} w_{ji} h_j` for every node ``i``
        (plus ``bias``, fused into the CSR kernel, when given)."""
        if graph.csr is not None:
            if bias is not None:
                return graph.csr.matmul(h, bias)
            return self.message_and_aggregate(graph.csr, h)
        out = self.propagate(graph.edge_index, x=h, edge_weight=graph.edge_weight,
                             size=(graph.num_nodes, graph.num_nodes))
        return out if bias is None else bias + out

    def message(self, x_j: Tensor, edge_weight: Tensor | None) -> Tensor:
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: Any, x: Tensor) -> Tensor:
        """Fused weighted-sum aggregation: one CSR sparse-dense matmul ``adj_t @ x``."""
        if isinstance(adj_t, CSRAdjacency):
            return adj_t.matmul(x)
        edge_index, edge_weight = as_edge_index(adj_t, None, x.size(0), like=x)
        return CSRAdjacency(edge_index, edge_weight, x.size(0), dtype=x.dtype).matmul(x)

    # --- one full step as a layer call ---------------------------------------------------------

    def state_channels(self, inputs: CellInputs) -> int:
        """Width of the state for these inputs (``channels`` unless the cell adapts to ``x``)."""
        return self.channels

    def check_state(self, h: Any, inputs: CellInputs, name: str = "h") -> None:
        """Raise a ValueError unless ``h`` is a ``[N, channels]`` state matching ``x``."""
        x = inputs.x
        if not isinstance(h, Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(h).__name__}")
        channels = self.state_channels(inputs)
        if h.shape != (inputs.num_nodes, channels):
            raise ValueError(
                f"{self.__class__.__name__}: {name} must have shape "
                f"[num_nodes, channels] = [{inputs.num_nodes}, {channels}], got {list(h.shape)}"
            )
        if h.dtype != x.dtype or h.device != x.device:
            raise ValueError(
                f"{name} ({h.dtype}, {h.device}) must match x ({x.dtype}, {x.device})"
            )

    def forward(self, h: Tensor, x: Tensor, edge_index: Any,
                edge_weight: Tensor | None = None) -> Tensor:
        """One step of the dynamics: ``step(h, prepare(x, edge_index, edge_weight))``."""
        inputs = self.prepare(x, edge_index, edge_weight)
        self.check_state(h, inputs)
        return self.step(h, inputs)

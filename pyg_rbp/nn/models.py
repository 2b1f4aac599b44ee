r"""Ready-made fixed-point graph models used by the tasks and benchmarks.

:class:`FixedPointNodeClassifier` covers the three node-classification designs the project
compares (the paper's gated GNN, an IGNN-style contractive network, APPNP propagated to its
exact limit); :class:`FixedPointGraphModel` adds global pooling for graph-level tasks (OGB).
Each model's :attr:`conv` is its :class:`~pyg_rbp.nn.FixedPointConv`, whose ``grad``,
``max_iter``, ``backward_iter`` and ``tol`` can be changed on a built model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MLP, global_add_pool, global_max_pool, global_mean_pool

from pyg_rbp.nn.fixed_point_conv import FixedPointConv
from pyg_rbp.nn.gated import GatedCell
from pyg_rbp.nn.implicit import ImplicitCell
from pyg_rbp.nn.ppr import PPRCell
from pyg_rbp.resolver import Registry

GRAPH_READOUTS: tuple[str, ...] = ("state", "mlp")
"""What :class:`FixedPointGraphModel` pools: the fixed point (``"state"``) or a per-node MLP of
it (``"mlp"``)."""

POOLS: tuple[str, ...] = ("mean", "add", "max")
"""Global read-outs of the graph models (``"sum"`` is accepted as an alias of ``"add"``)."""
_POOLS = {"mean": global_mean_pool, "add": global_add_pool, "sum": global_add_pool,
          "max": global_max_pool}


def check_float_features(x: Tensor, model: str) -> None:
    """Refuse integer node features where the model would multiply them by float weights.

    OGB's molecule datasets (``ogbg-mol*``) store categorical atom features as integers; they
    need an embedding (``ogb.graphproppred.mol_encoder.AtomEncoder``), not a ``Linear`` layer,
    and torch would only say "mat1 and mat2 must have the same dtype"."""
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(
            f"{model}: node features x have integer dtype {x.dtype} (categorical features, like OGB "
            f"molecules' atom features), which a Linear layer cannot take; pass "
            f"node_encoder=AtomEncoder(hidden_channels) (from ogb.graphproppred.mol_encoder) for OGB "
            f"molecules, or convert x to float (x.float()) if the values are really numbers"
        )


class NodeParts(NamedTuple):
    """The layers of a :class:`FixedPointNodeClassifier` around its fixed point, in the order
    the model applies them: ``encoder`` (features -> initial state), ``mlp`` (features ->
    predictions the solve propagates), ``conv`` (the fixed-point layer), ``decoder``."""

    encoder: torch.nn.Module | None
    mlp: torch.nn.Module | None
    conv: FixedPointConv
    decoder: torch.nn.Module | None


@dataclass(frozen=True)
class CellDesign:
    """How the ready-made models use one cell.

    ``node(in_channels, hidden_channels, out_channels, conv, **options)`` builds the
    :class:`NodeParts` of the node classifier (``conv`` wraps a cell in the model's
    :class:`FixedPointConv`; build the layers in the order they are applied, so that one seed
    gives the same weights); ``graph(hidden_channels, **options)`` the cell of the graph model,
    which runs on the encoded node features. ``options``: ``encoder``, ``aggr``, ``kappa``,
    ``alpha``, ``num_mlp_layers``, ``dropout`` (the node models), ``aggr``, ``kappa``, ``alpha``
    (the graph model); each design reads the ones it needs.
    """

    node: Callable[..., NodeParts]
    graph: Callable[..., torch.nn.Module]


CELLS: Registry[CellDesign] = Registry("cell")
"""The ``cell`` names of :class:`FixedPointNodeClassifier` and :class:`FixedPointGraphModel`."""


def _gated_node(in_channels: int, hidden_channels: int, out_channels: int,
                conv: Callable[[torch.nn.Module], FixedPointConv], *, encoder: bool = True,
                aggr: str = "add", **_: Any) -> NodeParts:
    if not encoder and in_channels != hidden_channels:
        raise ValueError(
            "with encoder=False the features are the initial state: in_channels "
            f"({in_channels}) must equal hidden_channels ({hidden_channels})"
        )
    enc = torch.nn.Linear(in_channels, hidden_channels) if encoder else None
    fixed_point = conv(GatedCell(hidden_channels, aggr=aggr, inject_input=encoder))
    return NodeParts(enc, None, fixed_point, torch.nn.Linear(hidden_channels, out_channels))


def _implicit_node(in_channels: int, hidden_channels: int, out_channels: int,
                   conv: Callable[[torch.nn.Module], FixedPointConv], *, kappa: float = 0.95,
                   **_: Any) -> NodeParts:
    fixed_point = conv(ImplicitCell(in_channels, hidden_channels, kappa=kappa))
    return NodeParts(None, None, fixed_point, torch.nn.Linear(hidden_channels, out_channels))


def _ppr_node(in_channels: int, hidden_channels: int, out_channels: int,
              conv: Callable[[torch.nn.Module], FixedPointConv], *, alpha: float = 0.1,
              num_mlp_layers: int = 2, dropout: float = 0.0, **_: Any) -> NodeParts:
    if num_mlp_layers < 1:
        raise ValueError(f"num_mlp_layers must be >= 1, got {num_mlp_layers}")
    mlp = MLP(in_channels=in_channels, hidden_channels=hidden_channels, out_channels=out_channels,
              num_layers=num_mlp_layers, dropout=dropout, norm=None)
    return NodeParts(None, mlp, conv(PPRCell(alpha=alpha)), None)


CELLS.register("gated", CellDesign(
    node=_gated_node,
    graph=lambda hidden, aggr="add", **_: GatedCell(hidden, aggr=aggr, inject_input=True)),
    aliases=("ggnn",))
CELLS.register("implicit", CellDesign(
    node=_implicit_node,
    graph=lambda hidden, kappa=0.95, **_: ImplicitCell(hidden, hidden, kappa=kappa)),
    aliases=("ignn",))
CELLS.register("ppr", CellDesign(
    node=_ppr_node,
    graph=lambda hidden, alpha=0.1, **_: PPRCell(alpha=alpha)),
    aliases=("pagerank",))


class FixedPointNodeClassifier(torch.nn.Module):
    r"""Node classifier around one fixed-point layer; ``forward`` returns logits ``[N, C_out]``.

    .. math::
        \mathbf{H}^* = F\left(\mathbf{H}^*, \mathrm{enc}(\mathbf{X})\right), \qquad
        \hat{\mathbf{Y}} = \mathrm{dec}(\mathbf{H}^*)

    with the cell :math:`F`, encoder and decoder of the chosen design (``"ppr"``: the encoder is
    an MLP, :math:`F` propagates its logits, no decoder).

    ``cell="gated"`` (Liao et al.'s GNN): an optional ``Linear`` encoder
    (``in_channels -> hidden_channels``) gives :math:`\mathbf{H}^{(0)}`; the
    :class:`~pyg_rbp.nn.GatedCell` is iterated to its fixed point; a ``Linear`` decoder gives
    the logits. With ``encoder=False`` the features themselves are the initial state (the
    paper's protocol with PCA features, ``in_channels == hidden_channels``). With an encoder,
    its output is also injected into every step (``inject_input=True``) so the encoder gets a
    gradient in the implicit modes too.

    ``cell="implicit"`` (IGNN-style): :class:`~pyg_rbp.nn.ImplicitCell` with ``x`` injected
    (``in_channels -> hidden_channels``), state starting at zero, then a ``Linear`` decoder.

    ``cell="ppr"`` (APPNP-style): an MLP (``num_mlp_layers`` layers, ``in -> hidden -> out``)
    predicts logits, then :class:`~pyg_rbp.nn.PPRCell` propagates them to the exact
    personalised-PageRank fixed point (starting from the predictions).

    Args:
        in_channels, hidden_channels, out_channels (int): feature sizes.
        cell (str): a name in :data:`CELLS`: ``"gated"``, ``"implicit"`` or ``"ppr"``.
        grad, max_iter, backward_iter, tol, damping, solver: of the :class:`FixedPointConv`.
        dropout (float): dropout on the features entering and leaving the fixed point.
        encoder (bool): ``"gated"`` only, see above.
        alpha (float): ``"ppr"`` teleport probability. kappa (float): ``"implicit"`` bound.
        num_mlp_layers (int): ``"ppr"`` MLP depth.
        aggr (str): ``"gated"`` neighbour aggregation; ``"add"`` is the paper's, ``"mean"``
            keeps the map contractive on graphs with large degrees.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`, edge indices
          :math:`(2, |\mathcal{E}|)` or a sparse adjacency, edge weights :math:`(|\mathcal{E}|)`
          *(optional)*
        - **output:** logits :math:`(|\mathcal{V}|, C_{out})`

    Example:
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> model = FixedPointNodeClassifier(8, 16, 3, cell="implicit", grad="cg", max_iter=50)
        >>> model(torch.randn(3, 8), edge_index).shape
        torch.Size([3, 3])
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 cell: str = "gated", grad: str = "neumann", max_iter: int = 100,
                 backward_iter: int = 20, tol: float = 0.0, dropout: float = 0.0,
                 encoder: bool = True, alpha: float = 0.1, kappa: float = 0.95,
                 num_mlp_layers: int = 2, damping: float = 1.0, aggr: str = "add",
                 solver: str = "iteration") -> None:
        super().__init__()
        self.cell_name = CELLS.canonical(cell)
        self.dropout = float(dropout)
        solve: dict[str, Any] = dict(grad=grad, max_iter=max_iter, backward_iter=backward_iter,
                                     tol=tol, damping=damping, solver=solver)
        parts = CELLS[cell].node(
            in_channels, hidden_channels, out_channels, lambda c: FixedPointConv(c, **solve),
            encoder=encoder, aggr=aggr, kappa=kappa, alpha=alpha, num_mlp_layers=num_mlp_layers,
            dropout=dropout)
        self.encoder: torch.nn.Module | None = parts.encoder
        self.mlp: torch.nn.Module | None = parts.mlp
        self.conv = parts.conv
        self.decoder: torch.nn.Module | None = parts.decoder

    def reset_parameters(self) -> None:
        for module in (self.encoder, self.mlp, self.decoder, self.conv):
            if module is not None:
                module.reset_parameters()

    def forward(self, x: Tensor, edge_index: Any, edge_weight: Tensor | None = None) -> Tensor:
        check_float_features(x, self.__class__.__name__)
        x = F.dropout(x, p=self.dropout, training=self.training)
        if self.mlp is not None:  # predictions propagated to the fixed point (ppr)
            return self.conv(self.mlp(x), edge_index, edge_weight)
        if self.encoder is not None:
            x = self.encoder(x)
        h = self.conv(x, edge_index, edge_weight)
        h = F.dropout(h, p=self.dropout, training=self.training)
        return self.decoder(h)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(cell={self.cell_name!r}, conv={self.conv})"


def graph_pool(name: str) -> Callable[..., Tensor]:
    """The PyG global pooling function called ``name`` (``"mean"``, ``"add"``/``"sum"``, ``"max"``)."""
    if name not in _POOLS:
        raise ValueError(f"pool must be one of {tuple(_POOLS)}, got {name!r}")
    return _POOLS[name]


class FixedPointGraphModel(torch.nn.Module):
    r"""Graph classifier/regressor: encoder, fixed-point layer, global pooling, MLP head.

    ``forward(x, edge_index, batch, edge_weight=None)`` returns ``[num_graphs, out_channels]``.
    Node features are encoded to ``hidden_channels`` (a ``Linear`` layer, or ``node_encoder``
    such as OGB's ``AtomEncoder`` for integer features, in which case ``in_channels`` is
    ignored); the cell runs on the encoded features (``"gated"``: initial state and injected
    input; ``"implicit"``: injected input, zero initial state; ``"ppr"``: initial state and
    teleport target); node states are pooled per graph (``pool``: ``"mean"``, ``"add"`` or
    ``"max"``) and a two-layer MLP gives the output. With ``batch`` the solve's tolerance
    applies to each graph's own residual, so batched and one-by-one outputs agree to it.

    ``readout`` (one of :data:`GRAPH_READOUTS`) says what is pooled:

    - ``"state"`` (default): the fixed point itself, :math:`\mathrm{pool}(\mathbf{h}^*)`;
    - ``"mlp"``: a per-node two-layer MLP of it (batch norm and ReLU after each layer),
      :math:`\mathrm{pool}(\phi(\mathbf{h}^*))`, the DeepSets form
      :math:`\rho(\sum_i \phi(\mathbf{h}_i))` that GIN's read-out of MLP-transformed node
      states also has. The solve is unchanged; only the read-out after it gains capacity.

    .. math::
        \mathbf{H}^* = F\left(\mathbf{H}^*, \mathrm{enc}(\mathbf{X})\right), \qquad
        \hat{\mathbf{y}}_g = \mathrm{MLP}\Big(\mathrm{pool}_{i \in g}\, \phi(\mathbf{h}^*_i)\Big)

    with :math:`\phi` the identity (``readout="state"``) or a per-node MLP (``"mlp"``).

    Args:
        in_channels, hidden_channels, out_channels (int): feature sizes.
        cell (str): ``"gated"``, ``"implicit"`` or ``"ppr"``.
        grad, max_iter, backward_iter, tol, damping, solver: of the :class:`FixedPointConv`.
        dropout (float): dropout after the encoder and in the head.
        pool (str): ``"mean"``, ``"add"`` (alias ``"sum"``) or ``"max"``.
        node_encoder (torch.nn.Module, optional): replaces the ``Linear`` encoder.
        alpha (float): ``"ppr"`` teleport probability. kappa (float): ``"implicit"`` bound.
        aggr (str): ``"gated"`` neighbour aggregation.
        readout (str): ``"state"`` or ``"mlp"`` (see above). (default: ``"state"``)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`, edge indices
          :math:`(2, |\mathcal{E}|)` or a sparse adjacency, batch vector :math:`(|\mathcal{V}|)`
          *(optional)*, edge weights :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** :math:`(|\mathcal{G}|, C_{out})`, one row per graph

    Example:
        >>> edge_index = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])  # two graphs of two nodes
        >>> model = FixedPointGraphModel(8, 16, 1, cell="ppr", grad="neumann", max_iter=50)
        >>> model(torch.randn(4, 8), edge_index, batch=torch.tensor([0, 0, 1, 1])).shape
        torch.Size([2, 1])
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 cell: str = "gated", grad: str = "neumann", max_iter: int = 100,
                 backward_iter: int = 20, tol: float = 0.0, dropout: float = 0.0,
                 pool: str = "mean", node_encoder: torch.nn.Module | None = None,
                 alpha: float = 0.1, kappa: float = 0.95, damping: float = 1.0,
                 aggr: str = "add", solver: str = "iteration", readout: str = "state") -> None:
        super().__init__()
        self.cell_name = CELLS.canonical(cell)
        graph_pool(pool)  # validates the name
        if readout not in GRAPH_READOUTS:
            raise ValueError(f"readout must be one of {GRAPH_READOUTS}, got {readout!r}")
        self.pool = pool
        self.readout = readout
        self.dropout = float(dropout)
        solve: dict[str, Any] = dict(grad=grad, max_iter=max_iter, backward_iter=backward_iter,
                                     tol=tol, damping=damping, solver=solver)
        self.encoder = node_encoder if node_encoder is not None else torch.nn.Linear(
            in_channels, hidden_channels)
        cell_module = CELLS[cell].graph(hidden_channels, aggr=aggr, kappa=kappa, alpha=alpha)
        self.conv = FixedPointConv(cell_module, **solve)
        self.node_mlp = (MLP([hidden_channels, hidden_channels, hidden_channels], norm="batch_norm",
                             plain_last=False) if readout == "mlp" else None)
        self.head = MLP([hidden_channels, hidden_channels, out_channels], dropout=dropout,
                        norm=None)

    def reset_parameters(self) -> None:
        if hasattr(self.encoder, "reset_parameters"):
            self.encoder.reset_parameters()
        self.conv.reset_parameters()
        if self.node_mlp is not None:
            self.node_mlp.reset_parameters()
        self.head.reset_parameters()

    def forward(self, x: Tensor, edge_index: Any, batch: Tensor | None = None,
                edge_weight: Tensor | None = None) -> Tensor:
        if isinstance(self.encoder, torch.nn.Linear):  # a node_encoder (AtomEncoder) takes integers
            check_float_features(x, self.__class__.__name__)
        h = self.encoder(x)
        h = F.dropout(h, p=self.dropout, training=self.training)
        # per-graph stopping: a graph's state does not depend on what shares its batch
        h = self.conv(h, edge_index, edge_weight, batch=batch)
        if self.node_mlp is not None:
            h = self.node_mlp(h)
        if batch is None:
            batch = torch.zeros(h.size(0), dtype=torch.long, device=h.device)
        return self.head(graph_pool(self.pool)(h, batch))

    def __repr__(self) -> str:
        readout = f", readout={self.readout!r}" if self.readout != "state" else ""
        return (f"{self.__class__.__name__}(cell={self.cell_name!r}, pool={self.pool!r}{readout}, "
                f"conv={self.conv})")

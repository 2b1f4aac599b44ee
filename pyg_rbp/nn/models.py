r"""Ready-made fixed-point graph models used by the tasks and benchmarks.

:class:`FixedPointNodeClassifier` covers the three node-classification designs the project
compares (the paper's gated GNN, an IGNN-style contractive network, APPNP propagated to its
exact limit); :class:`FixedPointGraphModel` adds global pooling for graph-level tasks (OGB).
Each model's :attr:`conv` is its :class:`~pyg_rbp.nn.FixedPointConv`, whose ``grad``,
``max_iter``, ``backward_iter`` and ``tol`` can be changed on a built model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MLP, global_add_pool, global_max_pool, global_mean_pool

from pyg_rbp.nn.fixed_point_conv import FixedPointConv
from pyg_rbp.nn.gated import GatedCell
from pyg_rbp.nn.implicit import ImplicitCell
from pyg_rbp.nn.ppr import PPRCell

GRAPH_READOUTS: tuple[str, ...] = ("state", "mlp")
"""What :class:`FixedPointGraphModel` pools: the fixed point (``"state"``) or a per-node MLP of
it (``"mlp"``)."""

CELL_NAMES = ("gated", "implicit", "ppr")
"""Names accepted by the ``cell`` argument of the models."""

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


def _check_cell_name(cell: str) -> str:
    if not isinstance(cell, str) or cell.lower() not in CELL_NAMES:
        raise ValueError(f"cell must be one of {CELL_NAMES}, got {cell!r}")
    return cell.lower()


class FixedPointNodeClassifier(torch.nn.Module):
    r"""Node classifier around one fixed-point layer; ``forward`` returns logits ``[N, C_out]``.

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
        cell (str): ``"gated"``, ``"implicit"`` or ``"ppr"``.
        grad, max_iter, backward_iter, tol, damping, solver: of the :class:`FixedPointConv`.
        dropout (float): dropout on the features entering and leaving the fixed point.
        encoder (bool): ``"gated"`` only, see above.
        alpha (float): ``"ppr"`` teleport probability. kappa (float): ``"implicit"`` bound.
        num_mlp_layers (int): ``"ppr"`` MLP depth.
        aggr (str): ``"gated"`` neighbour aggregation; ``"add"`` is the paper's, ``"mean"``
            keeps the map contractive on graphs with large degrees.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 cell: str = "gated", grad: str = "neumann", max_iter: int = 100,
                 backward_iter: int = 20, tol: float = 0.0, dropout: float = 0.0,
                 encoder: bool = True, alpha: float = 0.1, kappa: float = 0.95,
                 num_mlp_layers: int = 2, damping: float = 1.0, aggr: str = "add",
                 solver: str = "iteration") -> None:
        super().__init__()
        self.cell_name = _check_cell_name(cell)
        self.dropout = float(dropout)
        solve: dict[str, Any] = dict(grad=grad, max_iter=max_iter, backward_iter=backward_iter,
                                     tol=tol, damping=damping, solver=solver)
        self.encoder: torch.nn.Module | None = None
        self.mlp: torch.nn.Module | None = None
        self.decoder: torch.nn.Module | None = None
        if self.cell_name == "gated":
            if encoder:
                self.encoder = torch.nn.Linear(in_channels, hidden_channels)
            elif in_channels != hidden_channels:
                raise ValueError(
                    "with encoder=False the features are the initial state: in_channels "
                    f"({in_channels}) must equal hidden_channels ({hidden_channels})"
                )
            self.conv = FixedPointConv(
                GatedCell(hidden_channels, aggr=aggr, inject_input=encoder), **solve)
            self.decoder = torch.nn.Linear(hidden_channels, out_channels)
        elif self.cell_name == "implicit":
            self.conv = FixedPointConv(ImplicitCell(in_channels, hidden_channels, kappa=kappa),
                                       **solve)
            self.decoder = torch.nn.Linear(hidden_channels, out_channels)
        else:
            if num_mlp_layers < 1:
                raise ValueError(f"num_mlp_layers must be >= 1, got {num_mlp_layers}")
            self.mlp = MLP(in_channels=in_channels, hidden_channels=hidden_channels,
                           out_channels=out_channels, num_layers=num_mlp_layers,
                           dropout=dropout, norm=None)
            self.conv = FixedPointConv(PPRCell(alpha=alpha), **solve)

    def reset_parameters(self) -> None:
        for module in (self.encoder, self.mlp, self.decoder, self.conv):
            if module is not None:
                module.reset_parameters()

    def forward(self, x: Tensor, edge_index: Any, edge_weight: Tensor | None = None) -> Tensor:
        check_float_features(x, self.__class__.__name__)
        x = F.dropout(x, p=self.dropout, training=self.training)
        if self.cell_name == "ppr":
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

    Example::

        model = FixedPointGraphModel(7, 32, 2, cell="implicit", pool="add", readout="mlp")
        logits = model(batch.x, batch.edge_index, batch.batch)   # [num_graphs, 2]
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 cell: str = "gated", grad: str = "neumann", max_iter: int = 100,
                 backward_iter: int = 20, tol: float = 0.0, dropout: float = 0.0,
                 pool: str = "mean", node_encoder: torch.nn.Module | None = None,
                 alpha: float = 0.1, kappa: float = 0.95, damping: float = 1.0,
                 aggr: str = "add", solver: str = "iteration", readout: str = "state") -> None:
        super().__init__()
        self.cell_name = _check_cell_name(cell)
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
        if self.cell_name == "gated":
            cell_module: torch.nn.Module = GatedCell(hidden_channels, aggr=aggr, inject_input=True)
        elif self.cell_name == "implicit":
            cell_module = ImplicitCell(hidden_channels, hidden_channels, kappa=kappa)
        else:
            cell_module = PPRCell(alpha=alpha)
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

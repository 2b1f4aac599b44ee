"""The models the training harness knows (:data:`MODELS`) and building the one a config names.

Fixed-point models come from :mod:`pyg_rbp.nn.models`; the baselines (a linear classifier,
PyG's GCN, GIN and APPNP) are assembled here so that they train in exactly the same harness,
with the same optimiser, epochs and early stopping as the fixed-point models they are compared
with. Each model is one :data:`MODELS` entry (:class:`ModelSpec`): whether it solves a fixed
point (and so takes a gradient mode), and how to build it for node and for graph tasks; the
config's validation and defaults, and :func:`build_node_model` / :func:`build_graph_model`,
read it. Dropout is applied only before and after a fixed-point solve, never inside it (it
would make the map stochastic and the "fixed point" meaningless); the fixed-point models own
that rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch_geometric.nn.models as pyg_models
from torch import Tensor, nn
from torch_geometric.nn import MLP
from torch_geometric.nn.conv import APPNP

from pyg_rbp.nn.models import FixedPointGraphModel, FixedPointNodeClassifier, graph_pool
from pyg_rbp.resolver import Registry

if TYPE_CHECKING:  # config reads MODELS: importing it here would be a cycle
    from pyg_rbp.training.config import TrainConfig


class LinearNodeClassifier(nn.Module):
    """A linear classifier on the node features (on PCA features under the paper protocol)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.lin = nn.Linear(in_channels, out_channels)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        return self.lin(self.dropout(x))


class GCNNodeClassifier(nn.Module):
    """PyG's :class:`~torch_geometric.nn.models.GCN` (Kipf and Welling) as a node classifier.

    Dropout on the input features (attribute :attr:`dropout`, a float, as in the fixed-point
    models) and between the layers (inside PyG's GCN).
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int, num_layers: int,
                 dropout: float) -> None:
        super().__init__()
        self.gcn = pyg_models.GCN(in_channels, hidden, num_layers=num_layers, out_channels=out_channels,
                       dropout=dropout)
        self.dropout = float(dropout)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        x = torch.nn.functional.dropout(x, p=self.dropout, training=self.training)
        return self.gcn(x, edge_index, edge_weight=edge_weight)


APPNP_K = 10
"""Propagation steps of the APPNP baseline (Klicpera et al.'s published setting)."""


class APPNPNodeClassifier(nn.Module):
    r"""APPNP (Klicpera et al., 2019) as a baseline: an MLP, then ``K`` = :data:`APPNP_K` steps
    of personalised-PageRank propagation :math:`H \leftarrow (1-\alpha)\hat A H + \alpha Z`
    (PyG's :class:`~torch_geometric.nn.conv.APPNP`), back-propagated through all ``K`` steps.

    The truncated counterpart of the fixed-point ``ppr`` model, which solves the same
    propagation to its limit with recurrent back-propagation. Input dropout as in the others.
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int, num_layers: int,
                 dropout: float, alpha: float) -> None:
        super().__init__()
        self.mlp = MLP(in_channels=in_channels, hidden_channels=hidden, out_channels=out_channels,
                       num_layers=num_layers, dropout=dropout, norm=None)
        self.prop = APPNP(K=APPNP_K, alpha=alpha)
        self.dropout = float(dropout)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        x = torch.nn.functional.dropout(x, p=self.dropout, training=self.training)
        return self.prop(self.mlp(x), edge_index, edge_weight)


class _PooledGraphModel(nn.Module):
    """A PyG backbone (``BACKBONE``, kept as attribute ``NAME``) between an optional node
    encoder and a global pooling + linear read-out: the shared body of the graph baselines."""

    BACKBONE = "GIN"
    NAME = "gin"
    TAKES_EDGE_WEIGHT = False

    def __init__(self, in_channels: int, hidden: int, out_channels: int, num_layers: int,
                 dropout: float, node_encoder: nn.Module | None = None, pool: str = "mean") -> None:
        super().__init__()
        graph_pool(pool)  # validates the name
        self.pool = pool
        self.node_encoder = node_encoder
        backbone_in = hidden if node_encoder is not None else in_channels
        setattr(self, self.NAME, getattr(pyg_models, self.BACKBONE)(
            backbone_in, hidden, num_layers=num_layers, dropout=dropout, norm="batch_norm"))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, out_channels)

    @property
    def backbone(self) -> nn.Module:
        return getattr(self, self.NAME)

    def reset_parameters(self) -> None:
        if self.node_encoder is not None and hasattr(self.node_encoder, "reset_parameters"):
            self.node_encoder.reset_parameters()
        self.backbone.reset_parameters()
        self.head.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor,
                edge_weight: Tensor | None = None) -> Tensor:
        h = self.node_encoder(x) if self.node_encoder is not None else x.float()
        if self.TAKES_EDGE_WEIGHT:
            h = self.backbone(h, edge_index, edge_weight=edge_weight)
        else:
            h = self.backbone(h, edge_index)
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        return self.head(self.dropout(graph_pool(self.pool)(h, batch, size=num_graphs)))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.NAME}={self.backbone}, pool={self.pool!r})"


class GINGraphModel(_PooledGraphModel):
    """PyG's :class:`~torch_geometric.nn.models.GIN`, global pooling and a linear read-out.

    ``node_encoder`` (OGB's ``AtomEncoder`` for molecules) maps the raw node features to
    ``hidden`` channels first; without it the raw features go in directly. ``pool``: ``"mean"``,
    ``"add"`` or ``"max"`` over each graph's nodes.
    """

    BACKBONE = "GIN"
    NAME = "gin"


class GCNGraphModel(_PooledGraphModel):
    r"""PyG's :class:`~torch_geometric.nn.models.GCN` (Kipf and Welling), global pooling and a
    linear read-out: the graph-level GCN baseline, in the same form as :class:`GINGraphModel`.

    Each layer is :math:`H' = \mathrm{ReLU}(\hat D^{-1/2} (A + I) \hat D^{-1/2} H W)` (batch norm
    between layers, as the GIN baseline); node states are pooled per graph (``pool``: ``"mean"``,
    ``"add"`` or ``"max"``) and a linear layer gives the output.

    Args:
        in_channels, hidden, out_channels (int): feature sizes.
        num_layers (int): GCN layers.
        dropout (float): between layers and before the read-out.
        node_encoder (Module, optional): maps raw node features to ``hidden`` first (OGB's
            ``AtomEncoder`` for molecules).
        pool (str): the global read-out.

    Shapes: ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)`, ``batch`` :math:`(N)` ->
    :math:`(B, C_{out})`.

    Example::

        model = GCNGraphModel(7, 32, 2, num_layers=4, dropout=0.0, pool="add")
        logits = model(batch.x, batch.edge_index, batch.batch)
    """

    BACKBONE = "GCN"
    NAME = "gcn"
    TAKES_EDGE_WEIGHT = True


def _atom_encoder(dataset: str, hidden: int) -> nn.Module | None:
    if not dataset.startswith("ogbg-mol"):
        return None
    # imported here: ogb's encoders pull in pandas (seconds), and only molecule datasets need them
    from ogb.graphproppred.mol_encoder import AtomEncoder

    return AtomEncoder(hidden)


NodeBuilder = Callable[["TrainConfig", int, int], nn.Module]
GraphBuilder = Callable[["TrainConfig", int, int, "nn.Module | None"], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """One model of the harness.

    Attributes:
        fixed_point: whether its core is a fixed-point solve (it then takes a gradient mode,
            ``cfg.grad``; a baseline's ``grad`` is ``None``).
        node: ``node(cfg, in_channels, out_channels)`` builds it for node tasks (None: not a
            node-level model).
        graph: ``graph(cfg, in_channels, out_channels, node_encoder)`` for graph tasks.
        input_dropout: it drops out its input features first, by a float attribute ``dropout``
            (which full-graph training may take over for sparse features).
        closed_form: it is fitted in closed form (the linear-PCA baseline), not by the
            training loop.
    """

    fixed_point: bool
    node: NodeBuilder | None = None
    graph: GraphBuilder | None = None
    input_dropout: bool = False
    closed_form: bool = False


MODELS: Registry[ModelSpec] = Registry("model")
"""The ``--model`` names of ``pyg-rbp train`` (aliases in any case, ``-``/``_`` optional)."""


def _fixed_point_node(cfg: TrainConfig, in_channels: int, out_channels: int) -> nn.Module:
    # The paper protocol feeds the PCA features in as the initial state (no encoder): this
    # needs in_channels == hidden, which apply_protocol(..., hidden=cfg.hidden) guarantees.
    paper = cfg.protocol == "paper" and cfg.model == "gated"
    if paper and in_channels != cfg.hidden:
        raise ValueError(
            f"paper protocol: the gated GNN starts from the PCA features, so they must have "
            f"hidden={cfg.hidden} dims; got {in_channels}"
        )
    return FixedPointNodeClassifier(
        in_channels, cfg.hidden, out_channels, cell=cfg.model, grad=cfg.grad, max_iter=cfg.max_iter,
        backward_iter=cfg.backward_iter, tol=cfg.tol, dropout=cfg.dropout, encoder=not paper,
        alpha=cfg.alpha, kappa=cfg.kappa, num_mlp_layers=cfg.num_layers, damping=cfg.damping,
        aggr=cfg.aggr, solver=cfg.solver,
    )


def _fixed_point_graph(cfg: TrainConfig, in_channels: int, out_channels: int,
                       encoder: nn.Module | None) -> nn.Module:
    return FixedPointGraphModel(
        cfg.hidden if encoder is not None else in_channels, cfg.hidden, out_channels, cell=cfg.model,
        grad=cfg.grad, max_iter=cfg.max_iter, backward_iter=cfg.backward_iter, tol=cfg.tol,
        dropout=cfg.dropout, pool=cfg.pool, node_encoder=encoder, alpha=cfg.alpha, kappa=cfg.kappa,
        damping=cfg.damping, aggr=cfg.aggr, solver=cfg.solver, readout=cfg.readout,
    )


def _pooled(cls: type[_PooledGraphModel]) -> GraphBuilder:
    return lambda cfg, i, o, encoder: cls(i, cfg.hidden, o, cfg.num_layers, cfg.dropout, encoder,
                                          pool=cfg.pool)


MODELS.register("gated", ModelSpec(True, node=_fixed_point_node, graph=_fixed_point_graph),
                aliases=("ggnn",))
MODELS.register("implicit", ModelSpec(True, node=_fixed_point_node, graph=_fixed_point_graph),
                aliases=("ignn",))
MODELS.register("ppr", ModelSpec(True, node=_fixed_point_node, input_dropout=True))
MODELS.register("linear-pca", ModelSpec(
    False, node=lambda cfg, i, o: LinearNodeClassifier(i, o, cfg.dropout), closed_form=True),
    aliases=("linear",))
MODELS.register("gcn", ModelSpec(
    False, node=lambda cfg, i, o: GCNNodeClassifier(i, cfg.hidden, o, cfg.num_layers, cfg.dropout),
    graph=_pooled(GCNGraphModel), input_dropout=True))
MODELS.register("gin", ModelSpec(False, graph=_pooled(GINGraphModel)))
MODELS.register("appnp", ModelSpec(
    False, node=lambda cfg, i, o: APPNPNodeClassifier(i, cfg.hidden, o, cfg.num_layers, cfg.dropout,
                                                      cfg.alpha),
    input_dropout=True))


def build_node_model(cfg: TrainConfig, in_channels: int, out_channels: int) -> nn.Module:
    """The node-level model of ``cfg`` for ``in_channels`` input features."""
    spec = MODELS[cfg.model]
    if spec.node is None:
        raise ValueError(f"model {cfg.model!r} is not a node-level model")
    return spec.node(cfg, in_channels, out_channels)


def build_graph_model(cfg: TrainConfig, in_channels: int, out_channels: int) -> nn.Module:
    """The graph-level model of ``cfg``; molecules get OGB's ``AtomEncoder`` in front."""
    spec = MODELS[cfg.model]
    if spec.graph is None:
        raise ValueError(f"model {cfg.model!r} is not a graph-level model")
    return spec.graph(cfg, in_channels, out_channels, _atom_encoder(cfg.dataset, cfg.hidden))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def fixed_point_stats(model: nn.Module) -> dict | None:
    """The last solve's diagnostics of the model's fixed-point layer, if it has one."""
    for module in model.modules():
        stats = getattr(module, "stats", None)
        if stats is not None and hasattr(stats, "as_dict"):
            try:
                return stats.as_dict()
            except Exception:  # noqa: BLE001 - diagnostics must never break training
                return None
    return None


r"""A cell that is a contraction by construction: :class:`ImplicitCell` (IGNN-style).

Recurrent back-propagation is exact, and Neumann-RBP converges, only when the step's Jacobian
has spectral radius below one. Gu et al.'s implicit graph neural networks (IGNN, 2020) make
that true for every input by bounding the recurrent weight against the graph's Perron-Frobenius
eigenvalue. This cell does the same with a differentiable rescaling applied at every forward
pass, so the guarantee holds throughout training without an optimiser hook.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.resolver import activation_resolver

from pyg_rbp.nn.cell import CellInputs, FixedPointCell

_NORMALIZATIONS = ("gcn", "none")


class ImplicitCell(FixedPointCell):
    r"""IGNN-style contractive cell (PyG row layout):

    .. math::
        \mathbf{H}' = \phi\left(\hat{\mathbf{A}} \mathbf{H} \mathbf{W}_\kappa
        + \mathbf{X} \mathbf{U} + \mathbf{b}\right),
        \qquad
        \mathbf{W}_\kappa = \mathrm{diag}\left(\min\left(1,
        \frac{\kappa}{\lambda \, \|\mathbf{W}_{k,:}\|_1}\right)\right)_k \mathbf{W}

    :math:`\hat{\mathbf{A}}` is the adjacency (:math:`\hat A_{ij}` weighs the message
    :math:`j \to i`), by default GCN-normalised :math:`\mathbf{D}^{-1/2}(\mathbf{A} +
    \mathbf{I})\mathbf{D}^{-1/2}`, :math:`\phi` a 1-Lipschitz monotone activation (ReLU) and
    :math:`\lambda` an upper bound of the Perron-Frobenius eigenvalue
    :math:`\lambda_{pf}(|\hat{\mathbf{A}}|)`: exactly 1 for ``normalize="gcn"`` with
    non-negative weights; for ``normalize="none"`` the rigorous bound
    :math:`\min(\max_i \sum_j |\hat A_{ij}|, \max_j \sum_i |\hat A_{ij}|)`, recomputed per solve.

    **Contraction bound.** Each row of :math:`\mathbf{W}` is rescaled so that
    :math:`\|\mathbf{W}_\kappa\|_\infty \le \kappa / \lambda`. The Jacobian of the step is
    :math:`D (\hat{\mathbf{A}} \otimes \mathbf{W}_\kappa^\top)` with :math:`D` diagonal,
    entries in :math:`[0, 1]`, so entrywise :math:`|J| \le M := |\hat{\mathbf{A}}| \otimes
    |\mathbf{W}_\kappa|^\top` and :math:`\rho(J) \le \rho(M) = \lambda_{pf}(|\hat{\mathbf{A}}|)
    \, \rho(|\mathbf{W}_\kappa|) \le \lambda \, \|\mathbf{W}_\kappa\|_\infty \le \kappa < 1` at
    every state. Moreover the step is a :math:`(\kappa + \epsilon)`-contraction in the
    max-norm weighted by a positive (Perron) vector of :math:`M`, so the fixed point is
    unique, the iteration converges to it from any :math:`\mathbf{H}^{(0)}` at a rate
    :math:`\le \kappa` per step, and the Neumann/RBP adjoint series converges as well.

    Default initial state (in :class:`~pyg_rbp.nn.FixedPointConv`): zeros.

    Args:
        in_channels (int): size of the input features ``x``.
        channels (int): size of the state.
        kappa (float, optional): contraction bound in :math:`(0, 1)`. (default: ``0.95``)
        normalize (str, optional): ``"gcn"`` or ``"none"`` (use the edge weights as given).
            (default: ``"gcn"``)
        add_self_loops (bool, optional): add self loops before GCN normalisation.
            (default: ``True``)
        act (str or Callable, optional): 1-Lipschitz activation. (default: ``"relu"``)
        bias (bool, optional): learn the bias :math:`\mathbf{b}`. (default: ``True``)
        fused (bool, optional): CSR kernel (``True``) or gather/scatter path. (default: ``True``)

    Shapes:
        - **input:** state :math:`(|\mathcal{V}|, C)`, node features :math:`(|\mathcal{V}|,
          F_{in})`, edge indices :math:`(2, |\mathcal{E}|)`, edge weights
          :math:`(|\mathcal{E}|)` *(optional, non-negative with GCN normalisation)*
        - **output:** next state :math:`(|\mathcal{V}|, C)`

    Example:
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> conv = FixedPointConv(ImplicitCell(8, 16, kappa=0.9), grad="neumann", max_iter=100)
        >>> conv(torch.randn(3, 8), edge_index).shape
        torch.Size([3, 16])
        >>> conv.stats.residual < 1e-4  # a 0.9-contraction: 100 steps settle
        True
    """

    def __init__(self, in_channels: int, channels: int, kappa: float = 0.95,
                 normalize: str = "gcn", add_self_loops: bool = True, act: Any = "relu",
                 bias: bool = True, fused: bool = True, **kwargs: Any) -> None:
        for name, value in (("in_channels", in_channels), ("channels", channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (0 < kappa < 1):
            raise ValueError(f"kappa must lie in (0, 1) for a contraction, got {kappa!r}")
        if normalize not in _NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {_NORMALIZATIONS}, got {normalize!r}")
        kwargs.setdefault("aggr", "add")
        super().__init__(fused=fused, **kwargs)
        self.in_channels = in_channels
        self.channels = channels
        self.kappa = float(kappa)
        self.normalize = normalize
        self.add_self_loops = bool(add_self_loops)
        self.act = activation_resolver(act)
        self.weight = Parameter(torch.empty(channels, channels))
        self.lin_in = torch.nn.Linear(in_channels, channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        torch.nn.init.xavier_uniform_(self.weight)
        self.lin_in.reset_parameters()

    def in_channels_expected(self) -> int | None:
        return self.in_channels

    def _prepare_graph(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int,
                       x: Tensor, **kwargs: Any) -> Any:
        return super()._prepare_graph(edge_index, edge_weight, num_nodes, x,
                                      normalize=self.normalize,
                                      add_self_loops=self.add_self_loops)

    def perron_bound(self, inputs: CellInputs) -> Tensor:
        r"""The upper bound :math:`\lambda \ge \lambda_{pf}(|\hat A|)` used by the projection."""
        x = inputs.x
        if self.normalize == "gcn":
            return torch.ones((), dtype=x.dtype, device=x.device)
        graph = inputs.graph
        n = graph.num_nodes
        if n == 0 or graph.edge_index.size(1) == 0:
            return torch.zeros((), dtype=x.dtype, device=x.device)
        w = graph.edge_weight
        absw = (torch.ones(graph.edge_index.size(1), dtype=x.dtype, device=x.device)
                if w is None else w.abs())
        zeros = torch.zeros(n, dtype=x.dtype, device=x.device)
        row_sums = zeros.index_add(0, graph.edge_index[1], absw)
        col_sums = zeros.index_add(0, graph.edge_index[0], absw)
        return torch.minimum(row_sums.max(), col_sums.max())

    def projected_weight(self, bound: Tensor) -> Tensor:
        r""":math:`\mathbf{W}_\kappa`: rows rescaled to :math:`\ell_1`-norm at most
        :math:`\kappa / \lambda` (``bound`` is :math:`\lambda`)."""
        limit = self.kappa / bound.clamp_min(1e-12)
        row_norms = self.weight.abs().sum(dim=1)
        scale = (limit / row_norms.clamp_min(1e-12)).clamp(max=1.0)
        return self.weight * scale.unsqueeze(1)

    def _prepare_extra(self, inputs: CellInputs) -> dict[str, Tensor]:
        return {
            "injection": self.lin_in(inputs.x),
            "weight": self.projected_weight(self.perron_bound(inputs)),
        }

    def step(self, h: Tensor, inputs: CellInputs) -> Tensor:
        ah = self.aggregate_neighbours(h, inputs.graph)
        return self.act(torch.addmm(inputs.extra["injection"], ah, inputs.extra["weight"]))

    def initial_state(self, inputs: CellInputs) -> Tensor:
        x = inputs.x
        return torch.zeros(inputs.num_nodes, self.channels, dtype=x.dtype, device=x.device)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.channels}, "
                f"kappa={self.kappa}, normalize={self.normalize!r})")

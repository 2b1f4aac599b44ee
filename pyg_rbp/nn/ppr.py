r"""Personalised-PageRank propagation as a fixed point: :class:`PPRCell`.

APPNP (Klicpera et al., 2019) predicts with an MLP, then propagates the predictions for ``K``
steps of personalised PageRank as an approximation of its limit. Solved to the fixed point,
that limit is exact, and with recurrent back-propagation its memory does not grow with the
number of steps. The Jacobian of the step has spectral radius :math:`1-\alpha`, so every gradient
mode converges.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_geometric.utils import add_remaining_self_loops

from pyg_rbp.nn.adjacency import gcn_normalize
from pyg_rbp.nn.cell import CellInputs, FixedPointCell


class PPRCell(FixedPointCell):
    r"""One step of personalised-PageRank propagation (APPNP's step, iterated to its limit):

    .. math::
        \mathbf{H}' = (1 - \alpha) \hat{\mathbf{A}} \mathbf{H} + \alpha \mathbf{X},
        \qquad
        \mathbf{H}^* = \alpha \left(\mathbf{I} - (1-\alpha)\hat{\mathbf{A}}\right)^{-1}
        \mathbf{X}

    with :math:`\hat{\mathbf{A}} = \mathbf{D}^{-1/2}(\mathbf{A} + \mathbf{I})\mathbf{D}^{-1/2}`
    (self loops added where missing; optional non-negative edge weights). The spectral radius
    of :math:`\hat{\mathbf{A}}` is exactly 1 (it is similar to the row-stochastic
    :math:`\mathbf{D}^{-1}(\mathbf{A}+\mathbf{I})`), so the step's Jacobian
    :math:`(1-\alpha)\hat{\mathbf{A}}` has spectral radius :math:`1 - \alpha` and
    :math:`\mathbf{H}^*` is unique; on an undirected graph :math:`\hat{\mathbf{A}}` is
    symmetric and the step is a :math:`(1-\alpha)`-contraction in the 2-norm. The cell has no parameters; the
    gradient reaches ``x`` and the edge weights.

    Default initial state (in :class:`~pyg_rbp.nn.FixedPointConv`): :math:`\mathbf{H}^{(0)} =
    \mathbf{X}`, as in APPNP.

    Args:
        alpha (float, optional): teleport probability in :math:`(0, 1]`. (default: ``0.1``)
        add_self_loops (bool, optional): add self loops before normalising. (default: ``True``)
        normalize (bool, optional): GCN-normalise the adjacency; ``False`` uses the edge
            weights as given (the step is then a contraction only if
            :math:`(1-\alpha)\rho(\mathbf{A}) < 1`). (default: ``True``)
        fused (bool, optional): CSR kernel (``True``) or gather/scatter path. (default: ``True``)

    Shapes:
        - **input:** state :math:`(|\mathcal{V}|, F)`, node features :math:`(|\mathcal{V}|,
          F)`, edge indices :math:`(2, |\mathcal{E}|)`, edge weights :math:`(|\mathcal{E}|)`
          *(optional)*
        - **output:** next state :math:`(|\mathcal{V}|, F)`

    Example:
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> logits = torch.randn(3, 4)  # e.g. an MLP's predictions, as in APPNP
        >>> conv = FixedPointConv(PPRCell(alpha=0.1), grad="cg", max_iter=300)
        >>> conv(logits, edge_index).shape  # propagated to the exact PPR limit
        torch.Size([3, 4])
    """

    def __init__(self, alpha: float = 0.1, add_self_loops: bool = True, normalize: bool = True,
                 fused: bool = True, **kwargs: Any) -> None:
        if not (0 < alpha <= 1):
            raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
        kwargs.setdefault("aggr", "add")
        super().__init__(fused=fused, **kwargs)
        self.alpha = float(alpha)
        self.add_self_loops = bool(add_self_loops)
        self.normalize = bool(normalize)

    def reset_parameters(self) -> None:
        super().reset_parameters()

    def _prepare_graph(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int,
                       x: Tensor, **kwargs: Any) -> Any:
        # (1 - alpha) is folded into the weights, so a step is one fused kernel: alpha x + A' h
        if self.normalize:
            edge_index, edge_weight = gcn_normalize(edge_index, edge_weight, num_nodes,
                                                    add_self_loops=self.add_self_loops,
                                                    dtype=x.dtype)
        elif self.add_self_loops:
            edge_index, edge_weight = add_remaining_self_loops(edge_index, edge_weight, 1.0,
                                                               num_nodes)
        if edge_weight is None:
            edge_weight = torch.ones(edge_index.size(1), dtype=x.dtype, device=x.device)
        return super()._prepare_graph(edge_index, (1.0 - self.alpha) * edge_weight, num_nodes, x)

    def _prepare_extra(self, inputs: CellInputs) -> dict[str, Tensor]:
        return {"injection": self.alpha * inputs.x}

    def state_channels(self, inputs: CellInputs) -> int:
        return inputs.x.size(1)

    def step(self, h: Tensor, inputs: CellInputs) -> Tensor:
        return self.aggregate_neighbours(h, inputs.graph, bias=inputs.extra["injection"])

    def initial_state(self, inputs: CellInputs) -> Tensor:
        return inputs.x

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(alpha={self.alpha})"

r"""The alternatives our gradient modes are measured against, on the same graph and cell size.

* ``pyg_gatedgraphconv``: what a PyG user writes today for a weight-tied recurrent GNN: PyG's
  :class:`~torch_geometric.nn.conv.GatedGraphConv` with one layer, applied ``T`` times and
  trained by back-propagation through all steps.
* ``torchdeq``: the ``torchdeq`` package (Geng and Kolter) wrapping *our* cell, with its
  implicit (IFT) backward: a fixed-point iteration on the adjoint, the RBP of Liao et al.

Both replace the fixed-point layer of a :class:`~pyg_rbp.nn.models.FixedPointNodeClassifier`
(``model.conv``) and keep its encoder and head, so the only difference from our modes is the
recurrent part. The peers are benchmark extras: ``torch_geometric``'s conv is part of PyG,
``torchdeq`` is imported here, inside the functions, and nowhere in the library.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_geometric.nn import GatedGraphConv

PEERS = ("pyg_gatedgraphconv", "torchdeq")
"""Names of the peer rows in the benchmark results (the ``grad`` field)."""


class UnrolledGatedGraphConv(torch.nn.Module):
    """PyG's ``GatedGraphConv(channels, num_layers=1)`` applied ``steps`` times (plain BPTT)."""

    def __init__(self, channels: int, steps: int) -> None:
        super().__init__()
        self.conv = GatedGraphConv(channels, num_layers=1, aggr="add")
        self.steps = steps
        self.grad = "pyg_gatedgraphconv"
        self.stats = None

    def forward(self, x: Tensor, edge_index: Any, edge_weight: Tensor | None = None,
                h0: Tensor | None = None, **_: Any) -> Tensor:
        h = x if h0 is None else h0
        for _step in range(self.steps):
            h = self.conv(h, edge_index, edge_weight)
        return h


class TorchDEQConv(torch.nn.Module):
    r"""Our cell solved and differentiated by ``torchdeq`` (forward: ``steps`` plain fixed-point
    iterations; backward: its IFT mode, ``backward_iter`` iterations of
    :math:`z \leftarrow J^\top z + g` from :math:`z = 0`).

    ``backward_tol = 0`` runs all ``backward_iter`` iterations (torchdeq stops when the
    absolute change falls below the tolerance, which 0 never does).

    torchdeq reads the first dimension of the state as a batch of *independent* samples: its
    solvers stop, and keep the "lowest-residual" iterate, per sample. The nodes of a graph are
    coupled, so the state is handed over as one sample of shape ``[1, N, C]``. (With ``[N, C]``
    the backward solver freezes every node whose incoming gradient is zero at its first
    iterate, zero, and the gradient loses most of its mass.)
    """

    def __init__(self, cell: torch.nn.Module, steps: int, backward_iter: int,
                 backward_tol: float = 0.0) -> None:
        super().__init__()
        try:
            from torchdeq import get_deq
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the torchdeq peer needs the torchdeq package: pip install -e '.[bench]' from a clone "
                "(or pip install --no-deps torchdeq)"
            ) from exc
        self.cell = cell
        self.steps = steps
        self.backward_iter = backward_iter
        self.grad = "torchdeq"
        self.stats = None
        self.deq = get_deq(core="indexing", ift=True, f_solver="simple_fixed_point_iter",
                           f_max_iter=steps, b_solver="fixed_point_iter",
                           b_max_iter=backward_iter, b_tol=backward_tol, b_stop_mode="abs")

    def forward(self, x: Tensor, edge_index: Any, edge_weight: Tensor | None = None,
                h0: Tensor | None = None, **_: Any) -> Tensor:
        inputs = self.cell.prepare(x, edge_index, edge_weight)
        if h0 is None:
            h0 = self.cell.initial_state(inputs)
        cell = self.cell

        def f(z: Tensor) -> Tensor:
            return cell.step(z[0], inputs).unsqueeze(0)

        z_out, _info = self.deq(f, h0.unsqueeze(0))
        return z_out[-1][0]


def peer_model(name: str, model: torch.nn.Module, steps: int, backward_iter: int | None) -> torch.nn.Module:
    """Replace ``model.conv`` (a ``FixedPointConv`` with a ``GatedCell``) by peer ``name``.

    The encoder and the head stay; for ``torchdeq`` the cell (and its weights) stay too.
    """
    if name == "pyg_gatedgraphconv":
        model.conv = UnrolledGatedGraphConv(model.conv.cell.channels, steps).to(
            next(model.parameters()).device, next(model.parameters()).dtype)
    elif name == "torchdeq":
        if backward_iter is None:
            raise ValueError("the torchdeq peer needs backward_iter")
        model.conv = TorchDEQConv(model.conv.cell, steps, backward_iter)
    else:
        raise ValueError(f"unknown peer {name!r}; choose one of {', '.join(PEERS)}")
    return model

"""The gradients other batches send: :class:`HistoryAdjoint`, the backward dual of the state buffer.

Opt-in (``adjoint=`` of :func:`~pyg_rbp.nn.history.solve_batch`): with it, sweeps of batch
backwards reach the full-graph implicit gradient instead of the batch's with the halo held
constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from pyg_rbp.nn.history.batches import HaloBatch, HistoryBuffer


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


def add_to_grad(out: Tensor, extra: Tensor) -> Tensor:
    """``out`` unchanged forward; its gradient plus ``extra`` backward."""
    return _AddToGrad.apply(out, extra)


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



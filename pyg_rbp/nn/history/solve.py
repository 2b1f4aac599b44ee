"""Solving mini-batches against the history: :func:`solve_batch`, :func:`history_forward`,
:func:`sweep` (one block Gauss-Seidel sweep over the batches).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from pyg_rbp.engine import fixed_point
from pyg_rbp.nn.adjacency import PreparedGraph
from pyg_rbp.nn.cell import CellInputs, FixedPointCell
from pyg_rbp.nn.fixed_point_conv import FixedPointConv
from pyg_rbp.nn.history.adjoint import HistoryAdjoint, add_to_grad
from pyg_rbp.nn.history.batches import HaloBatch, HaloCSR, HistoryBuffer


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
        out = add_to_grad(out, adjoint.read(batch.nodes, channels, out.dtype, out.device))
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

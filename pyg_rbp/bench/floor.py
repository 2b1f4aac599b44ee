r"""The time floor of Neumann-RBP: ``T`` no-grad cell steps plus ``K`` VJPs on bare kernels.

A Neumann-RBP training step cannot be cheaper than the arithmetic it must do: ``T`` forward
applications of the cell without a graph, and ``K`` vector-Jacobian products of one recorded
step. This module times exactly that with nothing but the kernels (a CSR sparse-dense matmul
and the GRU update), no layer, solver, model or optimiser around them, so the benchmark can
print how close the full training step comes to it.
"""

from __future__ import annotations

import statistics
import warnings
from typing import Any

import torch
from torch import Tensor

from pyg_rbp.nn import gated
from pyg_rbp.profiling import timed_runs


class _BareSpMM(torch.autograd.Function):
    """``A @ x`` with a prebuilt CSR ``A`` and its prebuilt transpose for the backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, a: Tensor, a_t: Tensor) -> Tensor:
        ctx.a_t = a_t
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return torch.sparse.mm(ctx.a_t, grad), None, None


def _csr(row: Tensor, col: Tensor, values: Tensor, n: int) -> Tensor:
    order = torch.argsort(row * n + col)
    row, col, values = row[order], col[order], values[order]
    crow = torch.zeros(n + 1, dtype=torch.long, device=row.device)
    torch.cumsum(torch.bincount(row, minlength=n), 0, out=crow[1:])
    index_dtype = torch.int32 if row.device.type == "cpu" else torch.long
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow.to(index_dtype), col.to(index_dtype), values, (n, n),
                                       check_invariants=False)


def bare_gated_step(num_nodes: int, edge_index: Tensor, channels: int, *,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                    seed: int = 0, aggr: str = "add") -> tuple[Any, Tensor]:
    """The gated cell's step ``h' = GRU(A h, h)`` on bare kernels; returns ``(step, h0)``.

    ``aggr="mean"`` divides each row of ``A`` by the in-degree (same kernels, other values).
    """
    gen = torch.Generator().manual_seed(seed)
    edge_index = edge_index.to(device)
    src, dst = edge_index[0], edge_index[1]
    values = torch.ones(src.numel(), dtype=dtype, device=device)
    if aggr == "mean":
        deg = torch.bincount(dst, minlength=num_nodes).clamp_min(1).to(dtype)
        values = values / deg[dst]
    elif aggr != "add":
        raise ValueError(f"aggr must be 'add' or 'mean', got {aggr!r}")
    a = _csr(dst, src, values, num_nodes)
    a_t = _csr(src, dst, values, num_nodes)
    gru = torch.nn.GRUCell(channels, channels).to(device=device, dtype=dtype)
    h0 = (torch.randn(num_nodes, channels, generator=gen, dtype=dtype) * 0.1).to(device)

    # The layer's GRU arithmetic, with the weights split by gate once, as the layer does once
    # per solve.
    weights = gated.gru_weights(gru)

    def step(h: Tensor) -> Tensor:
        return gated.gru_update(_BareSpMM.apply(h, a, a_t), h, weights)

    step.gru = gru  # type: ignore[attr-defined]  # exposed so tests can compare with the layer
    return step, h0


def neumann_floor(num_nodes: int, edge_index: Tensor, channels: int, steps: int,
                  backward_iter: int, *, repeats: int = 5, warmup: int = 1,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                  aggr: str = "add") -> dict[str, float]:
    """Median times of ``steps`` no-grad steps and of ``backward_iter`` VJPs, and their sum
    (plus the minima, for load-robust cross-checks)."""
    step, h0 = bare_gated_step(num_nodes, edge_index, channels, dtype=dtype, device=device,
                               aggr=aggr)

    def forward() -> Tensor:
        with torch.no_grad():
            h = h0
            for _ in range(steps):
                h = step(h)
        return h

    h_star = forward().detach().requires_grad_(True)
    with torch.enable_grad():
        out = step(h_star)
    g = torch.ones_like(out) / out.numel()
    def vjps() -> Tensor:
        v = g
        for _ in range(backward_iter):
            (v,) = torch.autograd.grad(out, h_star, v, retain_graph=True)
        return v

    t_forward = timed_runs(forward, repeats=repeats, warmup=warmup, device=device)
    t_vjp = timed_runs(vjps, repeats=repeats, warmup=warmup, device=device) if backward_iter else [0.0]
    fwd, vjp = statistics.median(t_forward), statistics.median(t_vjp)
    return {"forward_s": fwd, "vjp_s": vjp, "floor_s": fwd + vjp,
            "forward_min_s": min(t_forward), "vjp_min_s": min(t_vjp),
            "steps": steps, "backward_iter": backward_iter}

"""Building and measuring one contender of ``bench scaling``: the model, its training step, its
activation memory and step time, its cell-parameter gradient, and the Neumann-RBP floor.

Every contender (a gradient mode of our layer, or a peer wrapping the same cell) is built by
:func:`build_model` from the same seed, so all of them start from the same weights; the grid,
the target pass and the accuracy study measure through these functions alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_rbp.bench.floor import neumann_floor
from pyg_rbp.bench.graphs import BenchGraph
from pyg_rbp.bench.peers import PEERS, peer_model
from pyg_rbp.bench.scaling.config import ScalingConfig
from pyg_rbp.engine import GRAD_MODES
from pyg_rbp.nn import GatedCell
from pyg_rbp.nn.models import FixedPointNodeClassifier
from pyg_rbp.profiling import CudaPeakMemory, SavedTensorBytes, synchronize, timed_runs


def build_model(graph: BenchGraph, cfg: ScalingConfig, contender: str, max_iter: int,
                backward_iter: int | None, tol: float = 0.0,
                dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The gated node classifier of ``contender`` (a gradient mode, or a peer wrapping the cell)
    at ``max_iter`` forward steps, seeded identically.

    With features as wide as the state (the paper's PCA protocol) they are the initial state
    and there is no encoder; otherwise a linear encoder feeds the cell. Every mode and peer
    starts from the same weights for the same seed.
    """
    in_channels = int(graph.x.size(1))
    encoder = in_channels != cfg.hidden
    torch.manual_seed(cfg.seed)
    model = FixedPointNodeClassifier(
        in_channels, cfg.hidden, graph.num_classes, cell="gated",
        grad=contender if contender in GRAD_MODES else "neumann", max_iter=max_iter,
        backward_iter=backward_iter or 1, tol=tol, encoder=encoder,
    )
    if cfg.aggr != "add":
        torch.manual_seed(cfg.seed + 1)
        model.conv.cell = GatedCell(cfg.hidden, aggr=cfg.aggr, inject_input=encoder)
    if contender in PEERS:
        torch.manual_seed(cfg.seed + 2)
        model = peer_model(contender, model, max_iter, backward_iter)
    return model.to(device=graph.x.device, dtype=dtype).train()


def loss_fn(model: torch.nn.Module, graph: BenchGraph) -> Callable[[], Tensor]:
    """The training loss: cross-entropy of ``model`` on the graph's training nodes."""
    mask = graph.train_mask
    y = graph.y[mask]

    def loss() -> Tensor:
        logits = model(graph.x, graph.edge_index)
        return F.cross_entropy(logits[mask], y)

    return loss


def make_train_step(model: torch.nn.Module, graph: BenchGraph, lr: float) -> Callable[[], None]:
    """One full-graph training step: forward, cross-entropy on train nodes, backward, SGD."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loss = loss_fn(model, graph)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    return train_step


def measure_model(model: torch.nn.Module, graph: BenchGraph, cfg: ScalingConfig) -> dict[str, Any]:
    """Activation bytes, CUDA peak and median step time of ``model``'s training step."""
    device = graph.x.device
    with SavedTensorBytes() as mem:
        loss = loss_fn(model, graph)()
    saved = mem.bytes
    del loss
    step = make_train_step(model, graph, cfg.lr)
    with CudaPeakMemory(device) as peak:
        step()
    times = timed_runs(step, repeats=cfg.repeats, warmup=cfg.warmup, device=device)
    stats = getattr(getattr(model, "conv", None), "stats", None)
    return {
        "saved_bytes": int(saved),
        "cuda_peak_bytes": peak.peak_bytes,
        "step_time_s": statistics.median(times),
        "step_time_min_s": min(times),
        "step_times_s": times,
        "forward_iters": None if stats is None else stats.forward_iters,
        "residual": None if stats is None else stats.residual,
    }


def measure_cell(graph: BenchGraph, cfg: ScalingConfig, contender: str, max_iter: int,
                 k: int | None, tol: float = 0.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One grid row: :func:`measure_model` of ``contender`` at ``(T, K, tol)``. A failing
    contender is a result (its row carries the error), not a crash."""
    model = build_model(graph, cfg, contender, max_iter, k, tol)
    row: dict[str, Any] = {"contender": contender, "max_iter": max_iter, "backward_iter": k,
                           "tol": tol}
    try:
        row.update(measure_model(model, graph, cfg))
    except Exception as exc:  # noqa: BLE001 - a failing mode is a result, not a crash
        row.update({"saved_bytes": None, "step_time_s": None,
                    "error": f"{type(exc).__name__}: {exc}"})
        log(f"[bench] {contender} T={max_iter} K={k}: {row['error']}")
    row["device"] = str(torch.device(cfg.device))
    return row


def measure_floor(graph: BenchGraph, cfg: ScalingConfig, max_iter: int, k: int,
                  warmup: int | None = None) -> dict[str, Any]:
    """Neumann-RBP's floor at ``(T, K)``: T no-grad steps plus K VJPs on the bare kernels."""
    out = neumann_floor(graph.num_nodes, graph.edge_index, cfg.hidden, max_iter, k,
                        repeats=cfg.repeats, warmup=cfg.warmup if warmup is None else warmup,
                        device=torch.device(cfg.device), aggr=cfg.aggr)
    out["max_iter"] = out.pop("steps")  # the floor's T, named as in the grid rows
    out["device"] = str(torch.device(cfg.device))
    return out


def cell_gradients(model: torch.nn.Module, graph: BenchGraph) -> tuple[Tensor, dict[str, Any]]:
    """The gradient of the training loss with respect to the cell's parameters (flattened), and
    the backward's wall time and the solve's statistics."""
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss_fn(model, graph)().backward()
    synchronize(graph.x.device)
    elapsed = time.perf_counter() - t0
    grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
             for p in model.conv.cell.parameters()]
    stats = getattr(model.conv, "stats", None)
    info: dict[str, Any] = {"time_s_float64": elapsed}
    if stats is not None:
        info.update(forward_iters=stats.forward_iters, residual=stats.residual,
                    backward_residual=stats.backward_residual)
    return torch.cat(grads), info


NOTES = [
    "saved_bytes: bytes of distinct tensors autograd saves during forward + loss "
    "(torch.autograd.graph.saved_tensors_hooks); cuda_peak_bytes: torch.cuda.max_memory_allocated "
    "over one training step (CUDA only).",
    "step_time_s: median over `repeats` training steps (forward + backward + SGD) after `warmup`.",
    "bptt and pyg_gatedgraphconv do not depend on K: measured once per T (backward_iter null).",
    "tbptt with K >= T back-propagates through all T steps, i.e. it is BPTT.",
    "torchdeq: our GatedCell inside torchdeq.get_deq(ift=True, f_solver='simple_fixed_point_iter', "
    "b_solver='fixed_point_iter', b_max_iter=K, b_tol=0): K adjoint iterations from z=0.",
    "targets: contenders timed round-robin at (target_max_iter, target_backward_iter); each value "
    "is the median "
    "of the per-round medians. floor: T no-grad steps + K VJPs of one recorded step on bare "
    "kernels (CSR SpMM + GRU update), no layer/solver/model/optimiser.",
]
"""How the numbers of a result were measured (written into every result)."""

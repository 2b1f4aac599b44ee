"""The maps ``bench solvers`` solves: each a step function on a graph with its initial state and
the tensors its gradient goes to, built by name with seeded weights (the same in every dtype).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pyg_rbp.nn import GatedCell, ImplicitCell, PPRCell


@dataclass
class BenchMap:
    """One step function with its initial state and the tensors its gradient goes to."""

    name: str
    step: Callable[[Tensor], Tensor]
    h0: Tensor
    params: list[Tensor]
    info: dict[str, Any]
    cap: int
    cell: Any = None
    x: Tensor | None = None
    edge_index: Tensor | None = None

    def fresh_step(self) -> Callable[[Tensor], Tensor]:
        """The step with the cell's inputs prepared anew (what one training step does)."""
        inputs = self.cell.prepare(self.x, self.edge_index)
        cell = self.cell

        def step(h: Tensor) -> Tensor:
            return cell.step(h, inputs)

        return step


def _path_graph(num_paths: int, length: int) -> Tensor:
    src, dst = [], []
    for p in range(num_paths):
        base = p * length
        idx = torch.arange(base, base + length - 1)
        src += [idx, idx + 1]
        dst += [idx + 1, idx]
    return torch.stack([torch.cat(src), torch.cat(dst)])


def build_map(name: str, x: Tensor, edge_index: Tensor, hidden: int, max_iter: int,
              seed: int = 0, dtype: torch.dtype = torch.float64) -> BenchMap:
    """The map ``name`` on the graph ``(x, edge_index)`` in ``dtype``, weights seeded (the same
    weights in every dtype)."""
    torch.manual_seed(seed)
    x = x.to(torch.float64)
    cap = max_iter
    info: dict[str, Any] = {}
    if name.startswith("gated"):
        aggr = "mean" if name == "gated_mean" else "add"
        if x.size(1) != hidden:
            raise ValueError(f"gated maps need features of width hidden={hidden}")
        cell: torch.nn.Module = GatedCell(hidden, aggr=aggr, inject_input=False).double()
        if aggr == "add":
            cap = min(max_iter, 300)  # the paper's sum-aggregated map does not settle
    elif name.startswith("implicit") or name == "long_paths":
        kappa = 0.99 if name == "long_paths" else float(name.split("k")[1])
        if name == "long_paths":
            g = torch.Generator().manual_seed(seed)
            n_paths, length = 8, 400
            edge_index = _path_graph(n_paths, length)
            x = torch.randn(n_paths * length, hidden, generator=g, dtype=torch.float64)
            info = {"graph": f"{n_paths} disjoint paths of {length} nodes"}
        cell = ImplicitCell(x.size(1), hidden, kappa=kappa).double()
        with torch.no_grad():
            # non-negative and large: every row's bound is active and the rescaled W_kappa has
            # spectral radius kappa (equal row sums), so the contraction factor is kappa itself
            cell.weight.abs_().mul_(10.0)
    else:
        cell = PPRCell(alpha=float(name.split("a")[1])).double()
    cell = cell.to(dtype)
    x = x.to(dtype).clone().requires_grad_(True)
    inputs = cell.prepare(x, edge_index)
    h0 = cell.initial_state(inputs).detach().clone()

    def step(h: Tensor) -> Tensor:
        return cell.step(h, inputs)

    params = [*cell.parameters(), x]
    info.update({"cell": repr(cell), "state": list(h0.shape),
                 "num_edges": int(edge_index.size(1))})
    return BenchMap(name, step, h0, params, info, cap, cell, x, edge_index)

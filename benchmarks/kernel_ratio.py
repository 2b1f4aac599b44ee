"""How close one step of a fixed-point solve runs to the bare kernels it must execute.

For each graph (Cora; a random graph with 20k nodes and 200k edges) at 64 channels this times
one step of :class:`pyg_rbp.nn.FixedPointConv` *inside a solve* (a ``max_iter``-step forward
divided by ``max_iter``, graph preparation included) and divides it by the time of the bare
kernels that step cannot avoid:

* ``GatedCell``: the CSR SpMM ``A h`` plus the GRU's two dense matmuls
  ``addmm(b_ih, m, W_ih^T)`` and ``addmm(b_hh, h, W_hh^T)`` (target: ratio <= 1.3);
* ``ImplicitCell``: the SpMM plus one ``addmm`` (``A h W + x U``, ``x U`` precomputed);
* ``PPRCell``: the SpMM alone.

The solve is measured in inference mode (``torch.no_grad``) and as the forward of a Neumann-RBP
training step (``max_iter - 1`` free steps, one recorded step). ``GatedCell(fused=False)``, the
gather/scatter path, is shown for comparison. Bare kernels and solve are timed alternately in
each round and the ratio is taken per round, so machine load shared by both cancels out as far
as possible; the median ratio over rounds is reported with its range.

Run: ``python benchmarks/kernel_ratio.py`` (one intra-op thread by default; ``--threads N``).
Writes ``benchmarks/results/kernel_ratio.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pyg_rbp.nn import FixedPointConv, GatedCell, ImplicitCell, PPRCell
from pyg_rbp.profiling import synchronize
from pyg_rbp.results import atomic_write_json, atomic_write_text, environment, markdown_table

RESULTS = Path(__file__).resolve().parent / "results"


def load_graph(name: str, seed: int = 0) -> tuple[torch.Tensor, int]:
    """``(edge_index, num_nodes)`` of Cora or of the seeded 20k-node / 200k-edge random graph."""
    if name == "cora":
        from pyg_rbp.data import load

        data = load("cora").data
        return data.edge_index, data.num_nodes
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 20_000, (2, 200_000), generator=g), 20_000


def _time(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bare_kernels(cell: torch.nn.Module, inputs: Any, h: torch.Tensor) -> Callable[[], Any]:
    """The unavoidable kernels of one step of ``cell`` (see the module docstring)."""
    adj = inputs.graph.csr
    if isinstance(cell, GatedCell):
        gru = cell.gru

        def run() -> Any:
            m = torch.sparse.mm(adj.matrix, h)
            torch.addmm(gru.bias_ih, m, gru.weight_ih.t())
            return torch.addmm(gru.bias_hh, h, gru.weight_hh.t())
    elif isinstance(cell, ImplicitCell):
        injection, weight = inputs.extra["injection"], inputs.extra["weight"]

        def run() -> Any:
            return torch.addmm(injection, torch.sparse.mm(adj.matrix, h), weight)
    else:
        def run() -> Any:
            return torch.sparse.mm(adj.matrix, h)
    return run


def measure(cell_name: str, cell: torch.nn.Module, edge_index: torch.Tensor, num_nodes: int,
            channels: int, max_iter: int, rounds: int, device: torch.device,
            bare_cell: torch.nn.Module | None = None) -> dict[str, Any]:
    torch.manual_seed(0)
    x = torch.randn(num_nodes, channels, device=device) * 0.5
    edge_index = edge_index.to(device)
    cell = cell.to(device)
    conv = FixedPointConv(cell, grad="neumann", max_iter=max_iter, backward_iter=5)
    reference = (bare_cell or cell).to(device)
    with torch.no_grad():
        inputs = reference.prepare(x, edge_index)
        h = conv(x, edge_index)  # a realistic state for the bare kernels
        bare = bare_kernels(reference, inputs, h)

        def solve() -> Any:
            return conv(x, edge_index)

    def train_forward() -> Any:
        return conv(x, edge_index)

    bare_t, infer_t, train_t, infer_r, train_r = [], [], [], [], []
    for _ in range(rounds):
        with torch.no_grad():
            b = _time(bare, 5, device)
            s = _time(solve, 1, device) / max_iter
        t = _time(train_forward, 1, device) / max_iter
        bare_t.append(b)
        infer_t.append(s)
        train_t.append(t)
        infer_r.append(s / b)
        train_r.append(t / b)
    return {
        "cell": cell_name,
        "num_nodes": num_nodes,
        "num_edges": int(edge_index.size(1)),
        "channels": channels,
        "max_iter": max_iter,
        "rounds": rounds,
        "bare_ms": 1e3 * statistics.median(bare_t),
        "step_ms": 1e3 * statistics.median(infer_t),
        "train_step_ms": 1e3 * statistics.median(train_t),
        "ratio": statistics.median(infer_r),
        "ratio_min": min(infer_r),
        "ratio_max": max(infer_r),
        "train_ratio": statistics.median(train_r),
        "train_ratio_min": min(train_r),
        "train_ratio_max": max(train_r),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", default="cora,random", help="comma list: cora, random")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(RESULTS / "kernel_ratio"),
                        help="output path without extension ('' to skip writing)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rows = []
    for graph in args.graphs.split(","):
        edge_index, num_nodes = load_graph(graph.strip())
        c = args.channels
        cells = [
            ("GatedCell", GatedCell(c), None),
            ("GatedCell (scatter path)", GatedCell(c, fused=False), GatedCell(c)),
            ("ImplicitCell", ImplicitCell(c, c), None),
            ("PPRCell", PPRCell(0.1), None),
        ]
        for name, cell, bare_cell in cells:
            if bare_cell is not None:
                bare_cell.load_state_dict(cell.state_dict())
            row = measure(name, cell, edge_index, num_nodes, c, args.max_iter, args.rounds,
                          device, bare_cell)
            row["graph"] = graph
            rows.append(row)
            print(f"{graph:7s} {name:26s} bare {row['bare_ms']:8.3f} ms  step {row['step_ms']:8.3f} ms"
                  f"  ratio {row['ratio']:.2f} [{row['ratio_min']:.2f}, {row['ratio_max']:.2f}]"
                  f"  training-forward ratio {row['train_ratio']:.2f}", flush=True)

    result = {"benchmark": "kernel_ratio", "threads": args.threads, "device": str(device),
              "environment": environment(device), "rows": rows}
    if args.out:
        atomic_write_json(args.out + ".json", result)
        table = markdown_table(
            rows,
            ["graph", "cell", "num_nodes", "num_edges", "bare_ms", "step_ms", "ratio",
             "ratio_min", "ratio_max", "train_ratio"],
            ["graph", "cell", "nodes", "edges", "bare kernels (ms)", "step in solve (ms)",
             "ratio", "min", "max", "training-forward ratio"],
            digits=3,
        )
        atomic_write_text(args.out + ".md", (
            "# Kernel ratio: one step inside a solve / its bare kernels\n\n"
            f"`python benchmarks/kernel_ratio.py` ({args.channels} channels, {args.max_iter} "
            f"steps per solve, {args.rounds} alternating rounds, {args.threads} thread(s), "
            f"{device}). Bare kernels: GatedCell = SpMM + the GRU's two addmm; ImplicitCell = "
            "SpMM + one addmm; PPRCell = SpMM. The scatter-path row divides by the same CSR "
            "kernels (what it would cost with the fused path). Target for GatedCell: <= 1.3.\n\n"
            + table + "\n"
        ))
    return result


if __name__ == "__main__":
    main()

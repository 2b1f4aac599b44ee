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
gather/scatter path, and a plain loop of ``torch.nn.GRUCell`` on the same SpMM are shown for
comparison. Bare kernels (``max_iter`` repetitions) and the solve are timed alternately in each
round and the ratio is taken per round; the median over rounds is reported with its range.
Times are this thread's CPU time (primary: robust to other processes sharing the machine) and
wall time.

Run: ``python benchmarks/kernel_ratio.py`` (one intra-op thread by default; ``--threads N``).
Writes ``benchmarks/results/kernel_ratio.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pyg_rbp import ConvergenceWarning
from pyg_rbp.nn import FixedPointConv, GatedCell, ImplicitCell, PPRCell
from pyg_rbp.profiling import synchronize
from pyg_rbp.results import atomic_write_json, atomic_write_text, environment, markdown_table
from pyg_rbp.runtime import set_threads

RESULTS = Path(__file__).resolve().parent / "results"


def load_graph(name: str, seed: int = 0) -> tuple[torch.Tensor, int]:
    """``(edge_index, num_nodes)`` of Cora or of the seeded 20k-node / 200k-edge random graph."""
    if name == "cora":
        from pyg_rbp.data import load

        data = load("cora").data
        return data.edge_index, data.num_nodes
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 20_000, (2, 200_000), generator=g), 20_000


def _time(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of one call of ``fn``; ``cpu`` is this thread's CPU time.

    On a shared machine the wall clock of a long call includes the time other processes held
    the core; the thread's CPU time does not, so it is the primary measure here (one thread).
    """
    synchronize(device)
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    synchronize(device)
    return time.perf_counter() - w0, time.thread_time() - c0


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


def _median(values: list[float]) -> float:
    return statistics.median(values)


def measure(cell_name: str, cell: torch.nn.Module, edge_index: torch.Tensor, num_nodes: int,
            channels: int, max_iter: int, rounds: int, device: torch.device,
            bare_cell: torch.nn.Module | None = None,
            step_override: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
            ) -> dict[str, Any]:
    """Time ``max_iter`` steps inside a solve against ``max_iter`` runs of the bare kernels.

    Both are timed as loops of the same length, alternately, ``rounds`` times; the ratio is
    taken per round and its median reported. ``step_override`` replaces the solve by a plain
    loop of a reference step (for the ``torch.nn.GRUCell`` comparison row).
    """
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

    def bare_loop() -> None:
        with torch.no_grad():
            for _ in range(max_iter):
                bare()

    def solve() -> Any:
        with torch.no_grad():
            if step_override is None:
                return conv(x, edge_index)
            state = x
            for _ in range(max_iter):
                state = step_override(inputs, state)
            return state

    def train_forward() -> Any:
        return conv(x, edge_index)

    bare_loop(), solve()  # warm-up
    rows: dict[str, list[float]] = {k: [] for k in (
        "bare_wall", "bare_cpu", "step_wall", "step_cpu", "train_wall", "train_cpu")}
    ratios: dict[str, list[float]] = {k: [] for k in ("cpu", "wall", "train_cpu")}
    for _ in range(rounds):
        bw, bc = _time(bare_loop, device)
        sw, sc = _time(solve, device)
        tw, tc = _time(train_forward, device) if step_override is None else (float("nan"),) * 2
        for key, value in zip(rows, (bw, bc, sw, sc, tw, tc)):
            rows[key].append(value / max_iter)
        ratios["cpu"].append(sc / bc)
        ratios["wall"].append(sw / bw)
        ratios["train_cpu"].append(tc / bc)
    return {
        "cell": cell_name,
        "num_nodes": num_nodes,
        "num_edges": int(edge_index.size(1)),
        "channels": channels,
        "max_iter": max_iter,
        "rounds": rounds,
        **{f"{k}_ms": 1e3 * _median(v) for k, v in rows.items()},
        "ratio_cpu": _median(ratios["cpu"]),
        "ratio_cpu_min": min(ratios["cpu"]),
        "ratio_cpu_max": max(ratios["cpu"]),
        "ratio_wall": _median(ratios["wall"]),
        "train_ratio_cpu": _median(ratios["train_cpu"]),
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
    set_threads(args.threads)
    device = torch.device(args.device)
    # GatedCell is not a contraction: an unsettled 50-step state is expected here, not news.
    warnings.simplefilter("ignore", ConvergenceWarning)

    load_before = os.getloadavg()
    rows = []
    for graph in args.graphs.split(","):
        edge_index, num_nodes = load_graph(graph.strip())
        c = args.channels
        gated = GatedCell(c, inject_input=False)  # the paper's cell, as measured
        cells = [
            ("GatedCell", gated, None, None),
            ("GatedCell (scatter path)", GatedCell(c, inject_input=False, fused=False), gated, None),
            ("SpMM + torch.nn.GRUCell (reference loop)", gated, None,
             lambda inputs, h, gru=gated.gru: gru(inputs.graph.csr.matmul(h), h)),
            ("ImplicitCell", ImplicitCell(c, c), None, None),
            ("PPRCell", PPRCell(0.1), None, None),
        ]
        for name, cell, bare_cell, override in cells:
            if bare_cell is not None:
                cell.load_state_dict(bare_cell.state_dict())
            row = measure(name, cell, edge_index, num_nodes, c, args.max_iter, args.rounds,
                          device, bare_cell, override)
            row["graph"] = graph
            rows.append(row)
            print(f"{graph:7s} {name:42s} bare {row['bare_cpu_ms']:8.3f} ms  step "
                  f"{row['step_cpu_ms']:8.3f} ms  ratio(cpu) {row['ratio_cpu']:.2f} "
                  f"[{row['ratio_cpu_min']:.2f}, {row['ratio_cpu_max']:.2f}]  ratio(wall) "
                  f"{row['ratio_wall']:.2f}  training-forward ratio(cpu) "
                  f"{row['train_ratio_cpu']:.2f}", flush=True)

    load_after = os.getloadavg()
    result = {"benchmark": "kernel_ratio", "threads": args.threads, "device": str(device),
              "load_average_1min": {"before": load_before[0], "after": load_after[0]},
              "environment": environment(device), "rows": rows}
    if args.out:
        atomic_write_json(args.out + ".json", result)
        table = markdown_table(
            rows,
            ["graph", "cell", "num_nodes", "num_edges", "bare_cpu_ms", "step_cpu_ms",
             "ratio_cpu", "ratio_cpu_min", "ratio_cpu_max", "ratio_wall", "train_ratio_cpu"],
            ["graph", "cell", "nodes", "edges", "bare kernels (ms CPU)", "step in solve (ms CPU)",
             "ratio (CPU time)", "min", "max", "ratio (wall)", "training-forward ratio (CPU)"],
            digits=3,
        )
        atomic_write_text(args.out + ".md", (
            "# Kernel ratio: one step inside a solve / its bare kernels\n\n"
            f"`python benchmarks/kernel_ratio.py` ({args.channels} channels, {args.max_iter} "
            f"steps per solve, {args.rounds} alternating rounds, {args.threads} thread(s), "
            f"{device}; 1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} "
            f"after, on {os.cpu_count()} cores). Bare kernels: GatedCell = SpMM + the GRU's "
            "two addmm; ImplicitCell = SpMM + one addmm; PPRCell = SpMM. The scatter-path "
            "and torch.nn.GRUCell rows divide by the same bare kernels as GatedCell. Times "
            "per step; the ratio is the median over rounds of (solve time / bare-kernel "
            "time), both timed as loops of the same length in the same round. Primary: this "
            "thread's CPU time (robust to other processes on a shared machine); wall-clock "
            "ratio beside it. Target for GatedCell: <= 1.3.\n\n"
            + table + "\n"
        ))
    return result


if __name__ == "__main__":
    main()

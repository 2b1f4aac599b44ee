"""Hopfield memories on sparse graphs: retrieval against the number of synapses, and speed.

The paper's memory is fully connected (784 + 1024 + 784 neurons, 3.36 M synapses). As a graph
problem it need not be: this study trains the same memory on sparse topologies
(:mod:`pyg_rbp.tasks.hopfield.graphs`: local receptive fields with random long-range synapses,
k nearest neurons) and records, for each, its number of synapses, its retrieval of the ten
MNIST digits from the paper's test (half of the "on" pixels switched off; success = at most 1 %
of the pixels wrong) and its time per forward step against the dense network's, measured
interleaved in one run (ratios, as the project measures speed).

Each topology's training is a :func:`pyg_rbp.tasks.hopfield.experiment.run_experiment` run with
its own resumable JSON under ``<out>/hopfield_sparse/``; the curve (JSON, markdown, PNG) is
rebuilt from those files after every point, so an interrupted study loses at most one point.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from pyg_rbp.numerics import flush_denormals
from pyg_rbp.results import atomic_save_figure, atomic_write_json, atomic_write_text, environment
from pyg_rbp.tasks.hopfield.data import load_patterns, switch_off
from pyg_rbp.tasks.hopfield.experiment import HopfieldConfig, run_experiment
from pyg_rbp.tasks.hopfield.graphs import build_topology, count_synapses
from pyg_rbp.tasks.hopfield.memory import HopfieldMemory

DEFAULT_POINTS: tuple[dict[str, Any], ...] = (
    {"topology": "local", "radius": 1.5, "long_range": 16},
    {"topology": "local", "radius": 2.0, "long_range": 16},
    {"topology": "local", "radius": 3.0, "long_range": 16},
    {"topology": "local", "radius": 4.0, "long_range": 16},
    {"topology": "local", "radius": 5.0, "long_range": 16},
)
"""The topologies of the committed curve (all at or under 10 % of the complete graph)."""

SPARSE_TRAINING: dict[str, Any] = {"epochs": 600, "lr": 3e-2}
"""Training of every sparse point (else the MNIST defaults: Adam, cosine, a = 0.5, corrupted
inputs at the test's 50 %). A neuron's fan-in is ~100x smaller than in the complete graph, so
Adam's per-synapse steps move a state ~100x less: the learning rate is raised accordingly."""

TARGET = {"max_fraction": 0.10, "min_success": 0.8, "min_speedup": 5.0}
"""The study's target: a sparse memory with <= 10 % of the complete graph's synapses that
retrieves >= 8 of 10 digits and whose forward steps are >= 5x faster."""


def point_label(point: dict[str, Any]) -> str:
    """A file-name-safe label of a topology point (``local_r3_lr16``, ``knn_k64``)."""
    if point["topology"] == "local":
        return f"local_r{point['radius']:g}_lr{point['long_range']}"
    if point["topology"] == "knn":
        return f"knn_k{point['knn_k']}"
    if point["topology"] == "random":
        return f"random_d{point['avg_degree']:g}"
    return point["topology"]


def _memory(num_pixels: int, shape: tuple[int, int], hidden: int, point: dict[str, Any]) -> HopfieldMemory:
    extra = {k: point[k] for k in ("radius", "long_range") if k in point}
    if "knn_k" in point:
        extra["k"] = point["knn_k"]
    if "avg_degree" in point:
        extra["avg_degree"] = point["avg_degree"]
    edge_index = build_topology(point["topology"], num_pixels, shape, hidden, seed=0, **extra)
    return HopfieldMemory(num_pixels, hidden, edge_index, a=0.5)


def time_steps(nets: dict[str, HopfieldMemory], images: torch.Tensor, repeats: int = 7,
               steps: int = 20) -> dict[str, dict[str, float]]:
    """Median seconds per forward step of each memory (first: the reference), interleaved on
    the same ``[P, D]`` inputs: this thread's CPU time (``step_s``, ``speedup`` against the
    first) and wall time (``step_wall_s``, ``speedup_wall``)."""
    prepared = {}
    for name, m in nets.items():
        x = m.node_input(images)
        prepared[name] = (m, m.cell.prepare(x, m.cell.edge_index), x)
    cpu: dict[str, list[float]] = {name: [] for name in nets}
    wall: dict[str, list[float]] = {name: [] for name in nets}
    with flush_denormals(True), torch.no_grad():
        for _ in range(repeats):
            for name, (m, inputs, x) in prepared.items():
                h = m.cell.step(x, inputs)  # warm
                c0, t0 = time.thread_time(), time.perf_counter()
                for _ in range(steps):
                    h = m.cell.step(h, inputs)
                cpu[name].append((time.thread_time() - c0) / steps)
                wall[name].append((time.perf_counter() - t0) / steps)
    ref = next(iter(nets))
    base, base_wall = statistics.median(cpu[ref]), statistics.median(wall[ref])
    return {name: {"step_s": statistics.median(v), "speedup": base / statistics.median(v),
                   "step_wall_s": statistics.median(wall[name]),
                   "speedup_wall": base_wall / statistics.median(wall[name])}
            for name, v in cpu.items()}


def step_times(points: Sequence[dict[str, Any]], images: torch.Tensor, shape: tuple[int, int],
               hidden: int = 1024, repeats: int = 7, steps: int = 20) -> dict[str, dict[str, float]]:
    """Median seconds per forward step of the complete network and of each point, measured
    interleaved (each repeat times every network in turn) on the same ``[P, D]`` inputs: this
    thread's CPU time (``step_s``, ``speedup``: robust to other processes on a shared machine)
    and wall time (``step_wall_s``, ``speedup_wall``)."""
    nets = {"complete": _memory(images.size(1), shape, hidden, {"topology": "complete"})}
    for p in points:
        nets[point_label(p)] = _memory(images.size(1), shape, hidden, p)
    times = time_steps(nets, images, repeats=repeats, steps=steps)
    return {name: {**times[name], **count_synapses(nets[name].cell.edge_index, nets[name].num_nodes)}
            for name in nets}


def curve_markdown(doc: dict[str, Any]) -> str:
    """The study's table and verdict."""
    lines = [
        "# Hopfield memory on sparse graphs: retrieval against synapses",
        "",
        f"MNIST, ten digits (one per class, test split), 784 input + 1024 hidden + 784 output neurons; "
        f"test: 50 % of each digit's on pixels switched off (seed 1234); success: at most 7 of 784 "
        f"pixels wrong. Sparse points: {doc['training']}. Time per step: one forward update of all "
        f"ten patterns, this thread's CPU time, median of interleaved repeats, ratio to the complete "
        f"graph measured in the same run ({doc['environment'].get('processor')}, "
        f"{doc['torch_threads']} thread, load average at the start {doc.get('load_average')}).",
        "",
        "| topology | synapses | of complete | success (off 50 %) | pixel error | s/step "
        "| speed-up vs complete | s/epoch (training) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["points"]:
        succ = "-" if r.get("success_rate") is None else f"{round(10 * r['success_rate'])}/10"
        pix = "-" if r.get("pixel_error") is None else f"{r['pixel_error']:.4f}"
        ep = "-" if r.get("epoch_time_s") is None else f"{r['epoch_time_s']:.3f}"
        lines.append(f"| {r['label']} | {r['synapses']:,} | {100 * r['fraction']:.2f} % | {succ} | {pix} | "
                     f"{r['step_s'] * 1e3:.2f} ms | {r['speedup']:.1f}x | {ep} |")
    lines += ["", "## Target", "", doc["verdict"], ""]
    return "\n".join(lines)


def verdict(points: list[dict[str, Any]]) -> str:
    """Whether some point meets :data:`TARGET`, and where retrieval breaks down."""
    ok = [p for p in points if p.get("success_rate") is not None
          and p["fraction"] <= TARGET["max_fraction"] and p["success_rate"] >= TARGET["min_success"] - 1e-9
          and p["speedup"] >= TARGET["min_speedup"]]
    if ok:
        best = min(ok, key=lambda p: p["synapses"])
        out = (f"**Met**: {best['label']} retrieves {round(10 * best['success_rate'])}/10 digits with "
               f"{best['synapses']:,} synapses ({100 * best['fraction']:.2f} % of the complete graph), "
               f"{best['speedup']:.1f}x faster per step (target: <= 10 %, >= 8/10, >= 5x).")
    else:
        out = ("**Not met** by any point (target: <= 10 % of the synapses, >= 8/10 digits, >= 5x faster "
               "per step).")
    failing = [p for p in points
               if p.get("success_rate") is not None and p["success_rate"] < TARGET["min_success"]]
    if failing:
        worst = max(failing, key=lambda p: p["synapses"])
        out += (f" Below the target at {worst['synapses']:,} synapses and fewer ({worst['label']}: "
                f"{round(10 * worst['success_rate'])}/10 in this training budget).")
    return out


def plot_curve(doc: dict[str, Any], path: Path) -> Path | None:
    pts = [p for p in doc["points"] if p.get("success_rate") is not None]
    return plot_retrieval_curve(pts, [("success_rate", "o-", "digits retrieved (of 10)")], path,
                                xlabel="synapses (annotated: speed-up per step vs complete)",
                                ylabel="retrieved at 50 % off", legend="lower right")


def plot_retrieval_curve(pts: Sequence[dict[str, Any]], series: Sequence[tuple[str, str, str]],
                         path: str | os.PathLike, *, xlabel: str, ylabel: str,
                         legend: str) -> Path | None:
    """Digits retrieved against synapses (log scale), one line per ``(key, style, label)`` of
    ``series`` (``key`` a success rate in the points, dotted for a nested ``"a.b"``), speed-ups
    annotated on the first, the 8-of-10 and 10 %-of-synapses lines drawn (None without
    matplotlib or points)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not pts:
        return None

    def rate(p: dict[str, Any], key: str) -> float:
        for part in key.split("."):
            p = p[part]
        return 10 * p  # type: ignore[operator]

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    xs = [p["synapses"] for p in pts]
    for key, style, label in series:
        ax.plot(xs, [rate(p, key) for p in pts], style, label=label)
    first = series[0][0]
    for p in pts:
        ax.annotate(f"{p['speedup']:.1f}x", (p["synapses"], rate(p, first)), fontsize=7,
                    textcoords="offset points", xytext=(0, 6), ha="center")
    ax.axhline(8, color="gray", ls=":", lw=1)
    ax.axvline(TARGET["max_fraction"] * pts[0]["complete_synapses"], color="gray", ls="--", lw=1,
               label="10 % of the complete graph")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.5, 10.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc=legend)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=110)


def run_sparse_study(out_dir: str | Path, points: Sequence[dict[str, Any]] = DEFAULT_POINTS, *,
                     training: dict[str, Any] | None = None, grad: str = "neumann",
                     data_root: str | Path | None = None, progress: bool = True,
                     log: Callable[[str], None] = print, name: str = "hopfield_sparse") -> dict[str, Any]:
    """Train every point (resumably), time every topology against the complete graph, and write
    ``<out_dir>/<name>.json``, ``.md`` and ``.png``."""
    out_dir = Path(out_dir)
    runs_dir = out_dir / name
    runs_dir.mkdir(parents=True, exist_ok=True)
    training = dict(SPARSE_TRAINING if training is None else training)
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    patterns = load_patterns("mnist", 1, root=data_root, split="test")
    timing = step_times(points, switch_off(patterns.images, 0.5, 1234), patterns.shape)
    doc: dict[str, Any] = {
        "task": "hopfield_sparse", "grad": grad, "training": training, "target": TARGET,
        "environment": environment("cpu"), "torch_threads": torch.get_num_threads(),
        "load_average": load, "complete": timing["complete"], "points": [],
    }

    def write() -> None:
        doc["verdict"] = verdict(doc["points"])
        atomic_write_json(out_dir / f"{name}.json", doc)
        atomic_write_text(out_dir / f"{name}.md", curve_markdown(doc))
        plot_curve(doc, out_dir / f"{name}.png")

    for point in points:
        label = point_label(point)
        cfg = HopfieldConfig(images="mnist", grad_check_images=0, **point, **training)
        res = run_experiment(cfg, [grad], json_path=runs_dir / f"{label}.json", data_root=data_root,
                             progress=progress, log=log)
        row = res["results"][0]
        doc["points"].append({"label": label, **point, **timing[label],
                              "success_rate": row["success_rate"], "pixel_error": row["pixel_error"],
                              "per_image_error": row["per_image_error"],
                              "epoch_time_s": row["epoch_time_s"], "train_time_s": row["train_time_s"],
                              "forward_residual": row["forward_residual"],
                              "spectral_radius": row["spectral_radius"], "run": f"{name}/{label}.json"})
        write()
    write()
    return doc

"""Rendering a ``bench scaling`` result: the markdown report (settings, target verdicts,
accuracy study, grid) and the PNG (memory and step time against T).

Both are drawn from the result dictionary alone, so a saved JSON renders the same report
without measuring anything (a file of the older vocabulary too: see
:func:`~pyg_rbp.bench.scaling.config.upgrade`). The tables keep their column names (``grad``,
``steps``) so that a result renders as it was committed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pyg_rbp.bench.common import write_markdown_and_png
from pyg_rbp.bench.peers import PEERS
from pyg_rbp.bench.scaling.config import upgrade
from pyg_rbp.engine import GRAD_MODES
from pyg_rbp.results import atomic_save_figure, human_bytes, markdown_table


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.2e}"


def _targets_section(targets: dict[str, Any] | None) -> list[str]:
    if not targets or not targets.get("verdicts"):
        return []
    marks = {True: "yes", False: "**no**", None: "-"}
    verdicts = [{**v, "pass": marks[v["pass"]]} for v in targets["verdicts"]]
    tm = targets.get("step_time_s", {})
    return ["## Targets", "",
            markdown_table(verdicts, ["target", "value", "bound", "pass", "value_from_minima"],
                           ["target", "value (medians)", "bound", "pass", "from minima"], digits=3),
            f"Interleaved step times at T={targets['max_iter']}, K={targets['backward_iter']}: "
            + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in tm.items()),
            ""]


_ACCURACY_COLUMNS = ["grad", "steps", "backward_iter", "tol", "forward_iters", "residual", "cosine",
                     "rel_error", "step_time_s"]
"""The accuracy table's headers (its first two columns are the rows' ``contender``, ``max_iter``)."""


def _accuracy_section(acc: dict[str, Any] | None) -> list[str]:
    if not acc:
        return []
    ref = acc["reference"]
    lines = ["## Gradient accuracy (float64, cell parameters)", "",
             f"Reference: CG-RBP, T={ref['max_iter']}, {ref['backward_iter']} iterations, "
             f"forward residual {_num(ref.get('residual'))}, adjoint residual "
             f"{_num(ref.get('backward_residual'))}; Neumann with the same budget agrees to "
             f"cosine {ref['neumann_same_budget_cosine']:.8f}.", "",
             markdown_table(acc["rows"], ["contender", "max_iter", *_ACCURACY_COLUMNS[2:]],
                            _ACCURACY_COLUMNS, digits=4)]
    if acc.get("torchdeq_comparison"):
        lines += ["", "Equal-accuracy comparison with torchdeq:", "",
                  markdown_table(acc["torchdeq_comparison"],
                                 ["torchdeq_k", "torchdeq_rel_error", "torchdeq_step_time_s",
                                  "neumann_k", "neumann_rel_error", "neumann_step_time_s",
                                  "time_ratio"], digits=4)]
    return lines


def _grid_section(rows: list[dict[str, Any]]) -> list[str]:
    bptt = {r["max_iter"]: r for r in rows if r["contender"] == "bptt" and r.get("step_time_s")}
    table = []
    for r in rows:
        b = bptt.get(r["max_iter"])
        t, m = r.get("step_time_s"), r.get("saved_bytes")
        table.append({
            **r,
            "memory": human_bytes(r.get("saved_bytes")),
            "time_ms": None if r.get("step_time_s") is None else r["step_time_s"] * 1e3,
            "time_vs_bptt": None if not b or not t else t / b["step_time_s"],
            "mem_vs_bptt": None if not b or not m else m / b["saved_bytes"],
            "floor_ms": None if r.get("floor_s") is None else r["floor_s"] * 1e3,
        })
    headers = ["grad", "steps", "backward_iter", "tol", "memory", "saved_bytes", "time_ms",
               "time_vs_bptt", "mem_vs_bptt", "floor_ms", "forward_iters"]
    if any(r.get("cuda_peak_bytes") for r in rows):
        headers.append("cuda_peak_bytes")
    cols = ["contender", "max_iter", *headers[2:]]
    return ["## Grid", "", markdown_table(table, cols, headers, digits=3)]


def markdown_report(result: dict[str, Any]) -> str:
    """Markdown: settings, the target verdicts, the accuracy study and the full grid."""
    result = upgrade(result)
    cfg = result["config"]
    g = result.get("graph") or {}
    env = result.get("environment") or {}
    lines = [f"# Scaling benchmark: {g.get('name', cfg['dataset'])}", ""]
    lines.append(
        f"Graph: {g.get('num_nodes')} nodes, {g.get('num_edges')} edges, {cfg['hidden']} channels, "
        f"GatedCell aggr={cfg['aggr']!r}. Device: {env.get('device_name')} ({env.get('device')}), "
        f"torch {env.get('torch')}, {cfg.get('threads')} thread(s). "
        f"Times: median of {cfg['repeats']} after {cfg['warmup']} warm-up."
    )
    for load in result.get("machine_load", []):
        lines.append(f"- machine load at {load.get('when')}: {load.get('uptime')}")
    lines.append("")
    lines += _targets_section(result.get("targets"))
    lines += _accuracy_section(result.get("accuracy"))
    lines += _grid_section(result.get("results", []))
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: str | os.PathLike, k: int | None = None) -> Path:
    """PNG: activation memory vs T and step time vs T, one line per mode (at truncation ``k``)."""
    import matplotlib  # optional dependency (the plot extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = upgrade(result)
    cfg = result["config"]
    k = cfg["target_backward_iter"] if k is None else k
    if k not in cfg["backward_iters"]:
        k = cfg["backward_iters"][-1]
    rows = [r for r in result["results"] if not r.get("tol") and r.get("step_time_s")
            and (r["backward_iter"] in (None, k))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [n for n in [*GRAD_MODES, *PEERS] if any(r["contender"] == n for r in rows)]
    markers = "osD^vP*X"
    for i, name in enumerate(names):
        pts = sorted((r["max_iter"], r["saved_bytes"], r["step_time_s"]) for r in rows
                     if r["contender"] == name)
        ts = [p[0] for p in pts]
        style = dict(linestyle="--" if name in PEERS else "-", marker=markers[i % len(markers)],
                     markersize=5, label=name)
        axes[0].plot(ts, [p[1] / 2**20 for p in pts], **style)
        axes[1].plot(ts, [p[2] * 1e3 for p in pts], **style)
    floors = sorted((f["max_iter"], f["floor_s"]) for f in result.get("floors", [])
                    if f["backward_iter"] == k)
    if floors:
        axes[1].plot([f[0] for f in floors], [f[1] * 1e3 for f in floors], ":", color="gray",
                     label="floor (bare kernels)")
    g = result.get("graph") or {}
    axes[0].set(xlabel="forward steps T", ylabel="activation memory (MiB, saved tensors)",
                yscale="log", title=f"memory, K={k}")
    axes[1].set(xlabel="forward steps T", ylabel="training step time (ms)", yscale="log",
                title=f"time per training step, K={k}")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[0].text(0.02, 0.1, "implicit modes (rbp, cg, neumann, torchdeq) overlap:\n"
                 "one recorded step whatever T", transform=axes[0].transAxes, fontsize=7,
                 va="bottom")
    axes[1].legend(fontsize=8)
    env = result.get("environment") or {}
    fig.suptitle(f"{g.get('name')}: {g.get('num_nodes')} nodes, {g.get('num_edges')} edges, "
                 f"{cfg['hidden']} channels ({env.get('device_name')}, {cfg.get('threads')} thread(s))",
                 fontsize=10)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=110)


def write_reports(result: dict[str, Any], json_path: str | os.PathLike) -> tuple[Path, Path]:
    """Markdown table and PNG next to the JSON (same stem, ``.md`` and ``.png``)."""
    return write_markdown_and_png(result, json_path, markdown_report, plot)

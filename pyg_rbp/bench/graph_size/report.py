"""What a ``bench graph-size`` result looks like to a reader: the markdown table (settings,
target verdicts, every configuration, the largest-``T`` searches) and the PNG (peak memory and
saved bytes vs nodes); and the check, before any work, that both can be written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pyg_rbp.bench.common import write_markdown_and_png
from pyg_rbp.bench.graph_size.config import PROBE, upgrade
from pyg_rbp.bench.graph_size.specs import REAL_GRAPHS
from pyg_rbp.bench.graph_size.targets import bptt_bytes, result_row
from pyg_rbp.results import atomic_save_figure, check_output_file, human_bytes, markdown_table


def _gib(v: Any) -> float | None:
    return None if v is None else v / 2**30


def markdown_report(result: dict[str, Any]) -> str:
    """Markdown: settings, the target verdicts, every configuration, the largest-T searches."""
    result = upgrade(result)
    cfg, env = result["config"], result.get("environment") or {}
    lines = ["# Graph-size benchmark: full-graph training step vs number of nodes", "",
             f"T={cfg['max_iter']} forward steps, K={cfg['backward_iter']} (tbptt truncation, neumann "
             f"terms), {cfg['hidden']} channels, GatedCell aggr={cfg['aggr']!r}, synthetic graphs "
             f"of average degree {cfg['degree']} (power-law exponent {cfg['exponent']}). Device: "
             f"{env.get('device_name')} ({env.get('device')}), torch {env.get('torch')}, "
             f"{cfg.get('threads')} thread(s), one fresh subprocess per configuration, memory limit "
             f"{cfg['memory_limit_gb']:g} GiB (RLIMIT_AS on CPU). Step time: median of up to "
             f"{cfg['repeats']} steps within {cfg['step_budget_s']:g} s.", ""]
    for load in result.get("machine_load", []):
        lines.append(f"- machine load at {load.get('when')}: {load.get('uptime')}")
    lines.append("")
    marks = {True: "yes", False: "**no**", None: "-"}
    if result.get("targets"):
        lines += ["## Targets", "",
                  markdown_table([{**v, "pass": marks[v["pass"]]} for v in result["targets"]],
                                 ["target", "value", "bound", "pass", "how"], digits=4), ""]
    table = []
    for r in result["results"]:
        if r["grad"] == PROBE:
            continue
        g = r.get("graph_info") or {}
        bb, how = bptt_bytes(result_row(result, r["graph"], "bptt"))
        fail = ""
        if r.get("status") not in ("ok", None):
            fail = f"{r.get('failed_phase', '-')}"
            if r.get("failed_after_forward_steps") is not None:
                fail += f" after {r['failed_after_forward_steps']} steps"
            if r.get("saved_bytes_at_failure") is not None:
                fail += f", {human_bytes(r['saved_bytes_at_failure'])} saved"
        table.append({
            "graph": r["graph"], "nodes": g.get("num_nodes"), "edges": g.get("num_edges"),
            "grad": r["grad"], "status": r.get("status"),
            "saved": human_bytes(r.get("saved_bytes")),
            "predicted": human_bytes(r.get("predicted_saved_bytes")),
            "vs_bptt": (r["saved_bytes"] / bb if r.get("saved_bytes") and bb else None),
            "bptt_from": how if r.get("saved_bytes") and bb else "-",
            "peak_rss": human_bytes(r.get("peak_rss_bytes")),
            "graph_peak": human_bytes(r.get("peak_rss_graph_bytes")),
            "cuda_peak": human_bytes(r.get("cuda_peak_bytes")),
            "step_s": r.get("step_time_s"), "steps_timed": len(r.get("step_times_s") or []) or None,
            "failure": fail or "-",
        })
    cols = ["graph", "nodes", "edges", "grad", "status", "saved", "predicted", "vs_bptt", "bptt_from",
            "peak_rss", "graph_peak", "step_s", "steps_timed", "failure"]
    if any(r.get("cuda_peak_bytes") is not None for r in result["results"]):
        cols.insert(cols.index("step_s"), "cuda_peak")
    lines += ["## Configurations", "", markdown_table(table, cols, digits=4), ""]
    errors = [r for r in result["results"] if r.get("error")]
    if errors:
        lines += ["Failures, as caught:", ""]
        lines += [f"- {r['graph']} {r['grad']}: {r['error'][:240]}" for r in errors]
        lines.append("")
    pred = [r for r in result["results"] if r.get("status") == "ok" and r.get("predicted_saved_bytes")]
    if pred:
        lines += ["Prediction check (unrolled modes that ran): "
                  + ", ".join(f"{r['graph']} {r['grad']} predicted/measured "
                              f"{r['predicted_saved_bytes'] / r['saved_bytes']:.3f}" for r in pred), ""]
    probes = [r for r in result["results"] if r["grad"] == PROBE]
    if probes:
        lines += ["Probes (BPTT forward at T=1 and T=2, own subprocess): "
                  + "; ".join(f"{r['graph']} " + (f"{human_bytes(r['probe']['per_step_bytes'])}/step + "
                                                  f"{human_bytes(r['probe']['base_bytes'])}"
                                                  if r.get("probe") else str(r.get("status")))
                              for r in probes), ""]
    for ls in result.get("largest_steps") or []:
        tries = ", ".join(f"T={t['max_iter']} {t.get('status')}" for t in ls["tries"])
        largest = f">= {ls['largest_steps']}" if ls["at_least"] else str(ls["largest_steps"])
        lines += [f"## Largest T for {ls['grad']} on {ls['graph']}", "",
                  f"Largest T that trains: **{largest}** (searched 1..{ls['searched_up_to']}, "
                  f"{'complete' if ls['complete'] else 'incomplete'}); tries: {tries}.", ""]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """PNG: peak memory vs nodes (left) and saved bytes vs nodes (right), one line per mode.

    Synthetic graphs are joined by lines; real graphs are single markers. A failed
    configuration is an ``x`` at its peak when it failed; predicted saved bytes are hollow.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = upgrade(result)
    cfg = result["config"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = {"bptt": "tab:red", "tbptt": "tab:orange", "neumann": "tab:blue"}
    for i, grad in enumerate(cfg["grads"]):
        color = colors.get(grad, f"C{i + 3}")
        rows = [r for r in result["results"] if r["grad"] == grad and r["max_iter"] == cfg["max_iter"]
                and r.get("graph_info")]
        for synthetic in (True, False):
            sel = sorted((r for r in rows if (r["graph"] in REAL_GRAPHS) != synthetic),
                         key=lambda r: r["graph_info"]["num_nodes"])
            if not sel:
                continue
            label = grad if synthetic else f"{grad} (real graphs)"
            style = dict(color=color, linestyle="-" if synthetic else "none",
                         marker="o" if synthetic else "s", markersize=5)
            ok = [r for r in sel if r.get("status") == "ok"]
            peak_key = "cuda_peak_bytes" if any(r.get("cuda_peak_bytes") for r in sel) else "peak_rss_bytes"
            axes[0].plot([r["graph_info"]["num_nodes"] for r in ok],
                         [_gib(r.get(peak_key)) for r in ok], label=label, **style)
            failed = [r for r in sel if r.get("status") != "ok" and r.get(peak_key)]
            axes[0].plot([r["graph_info"]["num_nodes"] for r in failed],
                         [_gib(r.get(peak_key)) for r in failed], color=color, linestyle="none",
                         marker="x", markersize=9)
            axes[1].plot([r["graph_info"]["num_nodes"] for r in ok],
                         [_gib(r.get("saved_bytes")) for r in ok], label=label, **style)
            pred = [r for r in sel if r.get("predicted_saved_bytes")]
            axes[1].plot([r["graph_info"]["num_nodes"] for r in pred],
                         [_gib(r["predicted_saved_bytes"]) for r in pred], color=color,
                         linestyle=":" if synthetic else "none", marker="o", markerfacecolor="none",
                         markersize=7)
    for ax in axes:
        ax.axhline(cfg["memory_limit_gb"], color="gray", linestyle="--", linewidth=1,
                   label=f"memory limit {cfg['memory_limit_gb']:g} GiB")
        ax.set(xscale="log", yscale="log", xlabel="nodes")
        ax.grid(True, alpha=0.3)
    axes[0].set(ylabel="peak memory (GiB)", title="process peak (x: where a mode failed)")
    axes[1].set(ylabel="saved for backward (GiB)", title="saved tensors (hollow: predicted)")
    axes[0].legend(fontsize=8)
    env = result.get("environment") or {}
    fig.suptitle(f"full-graph training step, T={cfg['max_iter']}, K={cfg['backward_iter']}, "
                 f"{cfg['hidden']} channels, limit {cfg['memory_limit_gb']:g} GiB "
                 f"({env.get('device_name')}, {cfg.get('threads')} thread(s))", fontsize=10)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=110)


def write_reports(result: dict[str, Any], json_path: str | os.PathLike) -> tuple[Path, Path]:
    """Markdown table and PNG next to the JSON (same stem, ``.md`` and ``.png``)."""
    return write_markdown_and_png(result, json_path, markdown_report, plot)


def check_outputs(json_path: str | os.PathLike) -> None:
    """Fail before any work if the JSON, markdown or PNG cannot be written
    (:class:`~pyg_rbp.results.OutputPathError`, a ``ValueError``; the checks of
    :func:`~pyg_rbp.results.check_output_file`)."""
    json_path = Path(json_path)
    for path in (json_path, json_path.with_suffix(".md"), json_path.with_suffix(".png")):
        check_output_file(path, "output")

"""What a ``bench solvers`` result looks like to a reader: the markdown tables (targets, forward,
adjoint, contractivity, training step) and the PNG (residual vs time, gradient error vs
Jacobian products, per map).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pyg_rbp.bench.common import write_markdown_and_png
from pyg_rbp.results import atomic_save_figure


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _ms(v: Any) -> str:
    return "-" if v is None else f"{1000 * v:.1f}"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A markdown table's lines: the header, the rule, one line per row of cells."""
    return [_line(header), "|" + "---|" * len(header), *(_line(cells) for cells in rows)]


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _verdict_cells(v: dict[str, Any]) -> list[str]:
    mark = {True: "met", False: "**missed**", None: "n/a"}[v["pass"]]
    extra = "".join(f"; {k} {v[k]}" for k in ("ours", "torchdeq", "note") if v.get(k))
    return [v["target"], _f(v["value"]), f"{v['bound']:g}", f"{mark}{extra}"]


def _forward_cells(name: str, r: dict[str, Any]) -> list[str]:
    return [name, r["impl"], r["solver"], _f(r["steps_0.0001"]), _ms(r["time_0.0001"]),
            _f(r["steps_1e-06"]), _ms(r["time_1e-06"]), str(r["evals"]), f"{r['best_residual']:.2e}"]


def _adjoint_cells(name: str, ref: dict[str, Any], r: dict[str, Any]) -> list[str]:
    errs = [c["error"] for c in r["curve"] if c["error"] is not None]
    return [f"{name} [{_f(ref.get('adjoint_residual'), 2)}]", r["impl"], r["mode"],
            _f(r["products_0.001"]), _ms(r["time_0.001"]), _f(r["products_0.0001"]),
            _ms(r["time_0.0001"]), _f(r["products_1e-06"]), _ms(r["time_1e-06"]),
            _f(min(errs) if errs else None, 2)]


def _contractivity_cells(r: dict[str, Any]) -> list[str]:
    return [r["aggr"], str(r["spectral_norm"]), f"{r['rho']:.3f}", f"{r['residual']:.2e}",
            str(r["steps"]), f"{r['w_ih_norm']:.3f}", f"{r['w_hh_norm']:.3f}"]


def _training_cells(name: str, r: dict[str, Any]) -> list[str]:
    return [name, r["impl"], r["solver"], r["mode"], _f(r["backward_iter"]),
            _f(r.get("forward_steps")), _f(r.get("grad_error"), 2), _ms(r.get("step_time"))]


def markdown_report(result: dict[str, Any]) -> str:
    cfg = result["config"]
    g = result.get("graph", {})
    lines = [f"# Forward solvers and adjoint modes: ours vs torchdeq ({cfg['dataset']})", "",
             f"Graph: {g.get('name')} ({g.get('num_nodes')} nodes, {g.get('num_edges')} edges), "
             f"{cfg['hidden']} channels, forward and training steps in float32, gradient errors in "
             f"float64, {cfg.get('threads') or 'default'} thread(s); "
             f"times are medians of {cfg['repeats']} interleaved repeats. Command: "
             f"`pyg-rbp bench solvers --dataset {cfg['dataset']}`.", "", "## Targets", ""]
    lines += _table(["target", "value", "bound", "verdict"],
                    (_verdict_cells(v) for v in result.get("verdicts", [])))
    lines += ["", "## Forward: steps and time (ms) to relative residual", ""]
    lines += _table(["map", "impl", "solver", "steps 1e-4", "ms 1e-4", "steps 1e-6", "ms 1e-6",
                     "evals", "best residual"],
                    (_forward_cells(name, r) for name, rows in result.get("forward", {}).items()
                     for r in rows))
    lines += ["", "## Adjoint: Jacobian products and time (ms) to relative gradient error", "",
              "Reference: GMRES at the fixed point (Anderson to residual 1e-12), adjoint residual "
              "in brackets. CG counts a VJP and a JVP per iteration.", ""]
    lines += _table(["map", "impl", "mode", "products 1e-3", "ms 1e-3", "products 1e-4", "ms 1e-4",
                     "products 1e-6", "ms 1e-6", "best error"],
                    (_adjoint_cells(name, result["adjoint_reference"].get(name, {}), r)
                     for name, rows in result.get("adjoint", {}).items() for r in rows))
    skipped = {k: v for k, v in result.get("adjoint_reference", {}).items() if v.get("skipped")}
    for name, v in skipped.items():
        lines.append(f"\n{name}: adjoint study skipped ({v['skipped']}; Anderson's best residual "
                     f"{_f(v.get('forward_residual'))}).")
    if result.get("contractivity"):
        lines += ["", "## Contractivity: GatedCell with spectral normalisation", "",
                  "Spectral radius of the step's Jacobian (power iteration, 60 VJPs) at the state "
                  "after the given plain steps (float32, the same seed's weights).", ""]
        lines += _table(["aggr", "spectral_norm", "rho(J)", "residual", "steps", "||W_ih||_2",
                         "||W_hh||_2"], (_contractivity_cells(r) for r in result["contractivity"]))
    lines += ["", f"## Training step at gradient error {cfg['train_tol']:g}", "",
              "Forward to residual 1e-6, backward with the budget that reached the gradient error "
              "in the adjoint study; the error is measured again on the full step.", ""]
    lines += _table(["map", "impl", "forward", "backward", "K", "forward steps", "grad error",
                     "ms / step"],
                    (_training_cells(name, r) for name, rows in result.get("training", {}).items()
                     for r in rows))
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    names = list(dict.fromkeys([*result.get("forward", {}), *result.get("adjoint", {})]))
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 2.6 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        ax = axes[i][0]
        for r in result.get("forward", {}).get(name, []):
            ls = "-" if r["impl"] == "ours" else "--"
            ax.semilogy([1000 * t for t in r["trace_time"]], r["trace"], ls,
                        label=f"{r['impl']} {r['solver']}")
        ax.set_title(f"{name}: forward residual vs ms", fontsize=9)
        ax.axhline(1e-6, color="gray", lw=0.5)
        ax.legend(fontsize=6)
        ax = axes[i][1]
        for r in result.get("adjoint", {}).get(name, []):
            pts = [(c["products"], c["error"]) for c in r["curve"] if c["error"] is not None]
            if pts:
                ls = "-" if r["impl"] == "ours" else "--"
                ax.loglog(*zip(*pts), ls, marker=".", label=f"{r['impl']} {r['mode']}")
        ax.set_title(f"{name}: gradient error vs Jacobian products", fontsize=9)
        ax.axhline(1e-4, color="gray", lw=0.5)
        ax.legend(fontsize=6)
    fig.tight_layout()
    out = atomic_save_figure(fig, path)
    plt.close(fig)
    return out


def write_reports(result: dict[str, Any], json_path: str | Path) -> tuple[Path, Path]:
    """Markdown tables and PNG next to the JSON (same stem, ``.md`` and ``.png``)."""
    return write_markdown_and_png(result, json_path, markdown_report, plot)

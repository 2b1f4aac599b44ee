"""How a hyperparameter-optimisation experiment is shown: a markdown report and PNG curves.

Both are rendered from the JSON document of :func:`~pyg_rbp.tasks.hyperopt.experiment.run_experiment`
alone, so they can be regenerated from a committed result without rerunning anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyg_rbp.results import atomic_save_figure, human_bytes, markdown_table

RENAMED = {"inner_steps": "max_iter", "truncation": "backward_iter", "truncations": "backward_iters",
           "cosine_vs_truncation": "cosine_vs_backward_iter"}
"""JSON keys of files written before the one vocabulary (old -> new); :func:`upgrade` reads them."""


def _renamed(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {RENAMED.get(k, k): v if k in ("results", "initial", "reference") else _renamed(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_renamed(v) for v in obj]
    return obj


def upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with the keys of an older file (``inner_steps``, ``truncation``, ...) under their
    names now (``max_iter``, ``backward_iter``, ...); a current document is returned unchanged."""
    return _renamed(doc)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(doc: dict[str, Any]) -> str:
    """The results table, memory scaling, cosine sweep and final hyperparameters as markdown."""
    doc = upgrade(doc)
    cfg = doc.get("config", {})
    env = doc.get("environment", {})
    episodes = "resampled per meta step" if cfg.get("resample") else f"fixed (seed {cfg.get('seed')})"
    lines = [
        f"# Hyperparameter optimisation: {doc.get('task')}",
        "",
        doc.get("description", ""),
        "",
        f"Inner steps T={cfg.get('max_iter')}, truncation K={cfg.get('backward_iter')}, "
        f"batch size {cfg.get('batch_size') or 'full'}, meta steps {cfg.get('meta_steps')} "
        f"(Adam lr {cfg.get('meta_lr')}, x0.1 at step {cfg.get('lr_decay_at')}), "
        f"episodes {episodes}, "
        f"{cfg.get('dtype')} on {env.get('device_name', env.get('device'))} "
        f"({env.get('torch_threads')} threads).",
        "",
    ]
    ref = doc.get("reference", {})
    if ref.get("last_step_spectral_radius") is not None:
        lines += [f"Spectral radius of the last inner step's Jacobian at the start: "
                  f"{ref['last_step_spectral_radius']:.4f} (the Neumann series converges only below 1).", ""]
    rows = []
    for r in doc.get("results", []):
        rows.append({
            **r,
            "meta": f"{_fmt(r.get('meta_objective_initial'))} -> {_fmt(r.get('meta_objective'))}",
            "meta_fresh": (f"{_fmt(r.get('meta_objective_fresh_initial'))} -> "
                           f"{_fmt(r.get('meta_objective_fresh'))}"),
            "val": f"{_fmt(r.get('val_acc_before'), 3)} -> {_fmt(r.get('val_acc_after'), 3)}",
            "test": f"{_fmt(r.get('test_acc_before'), 3)} -> {_fmt(r.get('test_acc_after'), 3)}",
            "mem": human_bytes(r.get("saved_bytes")),
        })
    if rows:
        lines += ["## Results", "", markdown_table(
            rows,
            ["grad", "status", "hypergrad_cosine_vs_bptt", "meta", "meta_fresh", "val", "test",
             "meta_step_time_s", "mem"],
            ["grad", "status", "cosine vs BPTT (1st hypergrad)", "meta objective (tuning episode)",
             "meta objective (fresh episodes)", "val acc (fresh)", "test acc (fresh)",
             "s / meta step", "saved for backward"], digits=3), ""]
    mem = doc.get("memory_scaling")
    if mem:
        steps = mem["max_iter"]
        table = []
        for grad, ratio in mem["ratio_last_to_first"].items():
            row: dict[str, Any] = {"grad": grad, "ratio": ratio}
            for r in mem["rows"]:
                if r["grad"] == grad:
                    row[f"T={r['max_iter']}"] = human_bytes(r["saved_bytes"])
            table.append(row)
        lines += [f"## Saved bytes of one hypergradient vs inner steps (K={mem['backward_iter']})", "",
                  markdown_table(table, ["grad", *[f"T={s}" for s in steps], "ratio"],
                                 ["grad", *[f"T={s}" for s in steps], f"ratio T={steps[-1]} / T={steps[0]}"],
                                 digits=2), ""]
    sweep = doc.get("cosine_vs_backward_iter")
    if sweep:
        lines += ["## Cosine with BPTT's first hypergradient vs truncation K", "",
                  markdown_table(sweep["rows"], ["backward_iter", "neumann_cosine_vs_bptt", "neumann_norm",
                                                 "tbptt_cosine_vs_bptt", "tbptt_norm"],
                                 ["K", "Neumann(K) cosine", "Neumann(K) norm", "TBPTT(K) cosine",
                                  "TBPTT(K) norm"], digits=3), ""]
    results = doc.get("results", [])
    initial = doc.get("initial", {}).get("hyperparameters")
    if results and initial:
        hyper_rows = []
        for kind, groups in initial.items():
            for group, value in groups.items():
                row = {"name": f"{kind}[{group}]", "initial": value}
                for r in results:
                    row[r["grad"]] = r["final_hyperparameters"].get(kind, {}).get(group)
                hyper_rows.append(row)
        columns = ["name", "initial", *[r["grad"] for r in results]]
        lines += ["## Final hyperparameters", "", markdown_table(hyper_rows, columns, digits=4), ""]
    return "\n".join(lines)


def plot_curves(doc: dict[str, Any], path: str | Path) -> Path:
    """Meta objective per meta step and against wall time, one line per gradient mode."""
    import matplotlib  # an optional dependency (the plot extra), needed only for the PNG

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = upgrade(doc)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in doc.get("results", []):
        curve = r.get("curve") or []
        if not curve:
            continue
        label = r["grad"]
        if r.get("hypergrad_cosine_vs_bptt") is not None:
            label += f" (cos {r['hypergrad_cosine_vs_bptt']:.2f})"
        axes[0].plot(range(len(curve)), curve, label=label)
        times, total = [], 0.0
        for t in r.get("step_times_s") or []:
            total += t
            times.append(total)
        axes[1].plot(times[: len(curve)], curve[: len(times)], label=r["grad"])
    cfg = doc.get("config", {})
    for ax, xlabel in zip(axes, ("meta step", "wall time (s)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"meta objective ({cfg.get('meta_split', '')} loss)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{doc.get('task')}: T={cfg.get('max_iter')} inner steps, K={cfg.get('backward_iter')}")
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=110)

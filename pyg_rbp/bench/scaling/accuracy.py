"""The float64 gradient-accuracy study of ``bench scaling``: how close each contender's gradient
is to the exact one, and what torchdeq's gradient costs at equal accuracy.

Every contender's gradient of the training loss with respect to the cell's parameters
(everything upstream of the fixed point) is compared, by cosine and relative error, with a long
CG-RBP solve at the grid's largest ``T`` (cross-checked against Neumann-RBP at the same budget).
A Neumann row with a forward tolerance shows what stopping the forward early buys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from pyg_rbp.bench.graphs import BenchGraph
from pyg_rbp.bench.scaling.config import K_INDEPENDENT, ScalingConfig, cell_key
from pyg_rbp.bench.scaling.measure import build_model, cell_gradients, measure_cell

REFERENCE_BACKWARD_TOL = 1e-13
"""Adjoint tolerance of the reference CG-RBP solve (float64)."""


def accuracy_jobs(cfg: ScalingConfig) -> list[tuple[str, int, int | None, float]]:
    """The ``(contender, T, K, tol)`` rows of the study: every mode and torchdeq at
    ``target_max_iter`` for each K, and the forward-tolerance row of Neumann at the grid's
    largest T."""
    t_acc = cfg.target_max_iter
    jobs: list[tuple[str, int, int | None, float]] = []
    for name in [*cfg.grads, *(p for p in cfg.peers if p == "torchdeq")]:
        if name in K_INDEPENDENT:
            jobs.append((name, t_acc, None, 0.0))
        else:
            jobs.extend((name, t_acc, k, 0.0) for k in cfg.backward_iters)
    if "neumann" in cfg.grads and cfg.forward_tol > 0:
        jobs.append(("neumann", max(cfg.max_iter), cfg.target_backward_iter, cfg.forward_tol))
    return jobs


def accuracy_study(graph: BenchGraph, cfg: ScalingConfig, rows: dict[str, dict[str, Any]],
                   progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Cell-parameter gradients in float64 against a long CG-RBP solve at the largest T.

    ``rows`` is the grid (by :func:`~pyg_rbp.bench.scaling.config.cell_key`): it gives every
    row its float32 step time, and the forward-tolerance row is measured into it when missing.
    """
    g64 = BenchGraph(graph.name, graph.x.double(), graph.edge_index, graph.y, graph.train_mask,
                     graph.num_classes)
    t_ref = max(cfg.max_iter)
    ref_model = build_model(g64, cfg, "cg", t_ref, cfg.reference_iters, dtype=torch.float64)
    ref_model.conv.track = True
    ref_model.conv.backward_tol = REFERENCE_BACKWARD_TOL
    ref, ref_info = cell_gradients(ref_model, g64)
    check_model = build_model(g64, cfg, "neumann", t_ref, cfg.reference_iters, dtype=torch.float64)
    check, _ = cell_gradients(check_model, g64)

    def compare(grad: Tensor) -> dict[str, float | None]:
        if not bool(torch.isfinite(grad).all()):
            return {"cosine": None, "rel_error": None}
        cos = float(F.cosine_similarity(grad, ref, dim=0))
        rel = float((grad - ref).norm() / ref.norm().clamp_min(1e-300))
        return {"cosine": cos, "rel_error": rel}

    out_rows: list[dict[str, Any]] = []
    for name, max_iter, k, tol in tqdm(accuracy_jobs(cfg), desc="gradient accuracy (float64)",
                                       disable=not progress):
        model = build_model(g64, cfg, name, max_iter, k, tol=tol, dtype=torch.float64)
        try:
            grad, info = cell_gradients(model, g64)
            row = {"contender": name, "max_iter": max_iter, "backward_iter": k, "tol": tol,
                   **compare(grad), **info}
        except Exception as exc:  # noqa: BLE001 - diverging modes are results
            row = {"contender": name, "max_iter": max_iter, "backward_iter": k, "tol": tol,
                   "cosine": None, "rel_error": None, "error": f"{type(exc).__name__}: {exc}"}
        out_rows.append(row)
    # The forward-tolerance row also gets a float32 timing in the main table.
    if "neumann" in cfg.grads and cfg.forward_tol > 0:
        k_tol = cfg.target_backward_iter
        key = cell_key("neumann", t_ref, k_tol, cfg.forward_tol)
        if key not in rows:
            rows[key] = measure_cell(graph, cfg, "neumann", t_ref, k_tol, cfg.forward_tol, log=log)
    for row in out_rows:
        timed = rows.get(cell_key(row["contender"], row["max_iter"], row["backward_iter"], row["tol"]))
        row["step_time_s"] = None if timed is None else timed.get("step_time_s")
        if timed is not None and row["tol"]:
            row["forward_iters_float32"] = timed.get("forward_iters")
    return {
        "parameters": "the GatedCell's (GRU) weights and biases: everything upstream of the "
                      "fixed point",
        "reference": {"contender": "cg", "max_iter": t_ref, "backward_iter": cfg.reference_iters,
                      "backward_tol": REFERENCE_BACKWARD_TOL, **ref_info,
                      "neumann_same_budget_cosine": float(F.cosine_similarity(check, ref, dim=0)),
                      "neumann_same_budget_rel_error": float((check - ref).norm() / ref.norm())},
        "max_iter": cfg.target_max_iter,
        "rows": out_rows,
        "torchdeq_comparison": torchdeq_comparison(out_rows),
    }


def torchdeq_comparison(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each torchdeq K: the fastest Neumann row at least as accurate, and the time ratio."""
    ours = [r for r in rows if r["contender"] == "neumann" and not r["tol"]
            and r.get("rel_error") is not None and r.get("step_time_s")]
    out = []
    for td in rows:
        if td["contender"] != "torchdeq" or td.get("rel_error") is None or not td.get("step_time_s"):
            continue
        good = [r for r in ours if r["rel_error"] <= td["rel_error"] * (1 + 1e-9)]
        best = min(good, key=lambda r: r["step_time_s"]) if good else None
        out.append({
            "torchdeq_k": td["backward_iter"], "torchdeq_rel_error": td["rel_error"],
            "torchdeq_cosine": td["cosine"], "torchdeq_step_time_s": td["step_time_s"],
            "neumann_k": None if best is None else best["backward_iter"],
            "neumann_rel_error": None if best is None else best["rel_error"],
            "neumann_cosine": None if best is None else best["cosine"],
            "neumann_step_time_s": None if best is None else best["step_time_s"],
            "time_ratio": None if best is None else best["step_time_s"] / td["step_time_s"],
            "how": "fastest Neumann K whose relative error is <= torchdeq's; step times from the grid",
        })
    return out

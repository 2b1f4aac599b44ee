"""The studies of ``bench solvers`` on one map: the forward solves (steps and time to a
residual), the adjoint (Jacobian products and time to a gradient error against a GMRES
reference), the training step at equal gradient accuracy, and the gated cell's contractivity
with and without spectral normalisation. Ours and torchdeq's run on the same step function.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pyg_rbp.bench.solvers.config import (
    DEQ_MODES,
    DEQ_OPTIONS,
    DEQ_SOLVERS,
    FORWARD_TOLS,
    GRAD_TOLS,
    K_GRID,
    PHANTOM_MAX_K,
)
from pyg_rbp.bench.solvers.maps import BenchMap
from pyg_rbp.engine import StepLinearization, fixed_point, get_grad_mode, gmres_solve, spectral_radius
from pyg_rbp.nn import GatedCell


class _Recorder:
    """Wraps a step: times every evaluation and computes its residual ||f(h)-h||/||h||."""

    def __init__(self, step: Callable[[Tensor], Tensor]) -> None:
        self.step = step
        self.times: list[float] = []
        self.residuals: list[float] = []
        self.t0 = time.perf_counter()

    def __call__(self, h: Tensor) -> Tensor:
        out = self.step(h)
        with torch.no_grad():
            base = torch.linalg.vector_norm(h)
            r = float(torch.linalg.vector_norm(out - h) / base.clamp_min(1e-30))
            if not (torch.isfinite(base) and torch.isfinite(out).all()):
                r = math.inf  # an overflowing iterate (inf / inf) is not a zero residual
        self.times.append(time.perf_counter() - self.t0)
        self.residuals.append(r)
        return out

    def first(self, tol: float) -> tuple[int | None, float | None]:
        for i, r in enumerate(self.residuals):
            if r <= tol:
                return i + 1, self.times[i]
        return None, None


def _run_forward(bm: BenchMap, impl: str, solver: str) -> _Recorder:
    tol = min(FORWARD_TOLS)
    rec = _Recorder(bm.step)
    with torch.no_grad():
        if impl == "ours":
            rec.t0 = time.perf_counter()
            fixed_point(rec, bm.h0, solver=solver, max_iter=bm.cap, tol=tol, grad="neumann")
        else:
            from torchdeq.solver import get_solver

            fn = get_solver(solver)
            rec.t0 = time.perf_counter()
            fn(lambda z: rec(z[0]).unsqueeze(0), bm.h0.unsqueeze(0), max_iter=bm.cap, tol=tol,
               stop_mode="rel", **DEQ_OPTIONS.get(solver, {}))
    return rec


def forward_study(bm: BenchMap, repeats: int, solvers: list[str]) -> list[dict[str, Any]]:
    """Steps (deterministic) and median time (interleaved repeats) to each forward tolerance."""
    entries = [("ours", s) for s in solvers] + [("torchdeq", s) for s in DEQ_SOLVERS]
    runs: dict[tuple[str, str], list[_Recorder]] = {e: [] for e in entries}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats):
            for e in entries:
                runs[e].append(_run_forward(bm, *e))
    rows = []
    for (impl, solver), recs in runs.items():
        row: dict[str, Any] = {"map": bm.name, "impl": impl, "solver": solver,
                               "evals": len(recs[0].residuals),
                               "best_residual": min(recs[0].residuals),
                               "trace": recs[0].residuals[:: max(1, len(recs[0].residuals) // 200)],
                               "trace_time": recs[0].times[:: max(1, len(recs[0].times) // 200)]}
        for tol in FORWARD_TOLS:
            steps, _ = recs[0].first(tol)
            times = [r.first(tol)[1] for r in recs]
            row[f"steps_{tol:g}"] = steps
            row[f"time_{tol:g}"] = (statistics.median(times) if all(t is not None for t in times)
                                    else None)
        rows.append(row)
    return rows


# --- the adjoint study -----------------------------------------------------------------------

def _rel(a: list[Tensor], b: list[Tensor]) -> float:
    num = math.sqrt(sum(float((x - y).pow(2).sum()) for x, y in zip(a, b)))
    den = math.sqrt(sum(float(y.pow(2).sum()) for y in b))
    return num / max(den, 1e-300)


class _Adjoint:
    """The linearisation at the fixed point and the reference gradient."""

    def __init__(self, bm: BenchMap, h_star: Tensor, reference_iters: int) -> None:
        self.bm = bm
        self.h_star = h_star.detach()
        self.h_in = self.h_star.clone().requires_grad_(True)
        with torch.enable_grad():
            self.out = bm.step(self.h_in)
        self.lin = StepLinearization((self.out,), (self.h_in,))
        g = torch.Generator().manual_seed(123)
        self.g = torch.randn(h_star.shape, generator=g, dtype=h_star.dtype)
        z, _ = gmres_solve(self.lin, (self.g,), reference_iters, 1e-13, restart=min(200, reference_iters))
        self.ref_residual = float(self.lin.adjoint_residual(z, (self.g,)))
        self.reference = self.param_grad(z[0])

    def param_grad(self, z: Tensor) -> list[Tensor]:
        grads = torch.autograd.grad(self.out, self.bm.params, z, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if gr is None else gr for gr, p in zip(grads, self.bm.params)]

    def run(self, impl: str, mode: str, k: int) -> tuple[list[Tensor], int]:
        """Gradient after ``k`` iterations of ``mode``; returns it and the Jacobian products."""
        g = (self.g,)
        if impl == "torchdeq":
            from torchdeq.solver import get_solver

            count = [0]

            def adj(y: Tensor) -> Tensor:
                count[0] += 1
                (jy,) = self.lin.vjp((y[0],))
                return (jy + self.g).unsqueeze(0)

            z, _, _ = get_solver(mode)(adj, torch.zeros_like(self.g).unsqueeze(0), max_iter=k,
                                       tol=0.0, stop_mode="abs")
            return self.param_grad(z[0]), count[0]
        spec = get_grad_mode(mode)
        if spec.records == "from_solution":
            lam = spec.options.get("damping", 1.0)
            h = self.h_star.clone()
            with torch.enable_grad():
                for _ in range(k):
                    h = (1 - lam) * h + lam * self.bm.step(h)
                grads = torch.autograd.grad(h, self.bm.params, self.g, allow_unused=True,
                                            retain_graph=True)
            return [torch.zeros_like(p) if gr is None else gr for gr, p in zip(grads, self.bm.params)], k
        before = self.lin.num_vjp + self.lin.num_jvp
        with torch.enable_grad():
            z, _ = spec.adjoint(self.lin, g, k, 0.0, **spec.options)
        return self.param_grad(z[0]), self.lin.num_vjp + self.lin.num_jvp - before


def adjoint_study(adj: _Adjoint, repeats: int, modes: list[str]) -> list[dict[str, Any]]:
    entries = [("ours", m) for m in modes] + [("torchdeq", m) for m in DEQ_MODES]
    rows = []
    for impl, mode in entries:
        curve = []
        unrolled = impl == "ours" and get_grad_mode(mode).records == "from_solution"
        for k in K_GRID:
            if unrolled and k > PHANTOM_MAX_K:
                break
            if impl == "torchdeq" and mode == "anderson" and k < 3:
                continue  # its first mixing step needs two evaluations
            t0 = time.perf_counter()
            grads, products = adj.run(impl, mode, k)
            elapsed = time.perf_counter() - t0
            err = _rel(grads, adj.reference)
            curve.append({"k": k, "products": products, "error": err if math.isfinite(err) else None,
                          "time": elapsed})
            if not math.isfinite(err) or err > 1e8 or err < 0.3 * min(GRAD_TOLS):
                break
        row: dict[str, Any] = {"map": adj.bm.name, "impl": impl, "mode": mode, "curve": curve}
        for tol in GRAD_TOLS:
            hit = next((c for c in curve if c["error"] is not None and c["error"] <= tol), None)
            row[f"products_{tol:g}"] = None if hit is None else hit["products"]
            row[f"k_{tol:g}"] = None if hit is None else hit["k"]
        rows.append(row)
    # interleaved re-timing of the runs that reached each tolerance
    timed: dict[tuple[int, float], list[float]] = {}
    for _ in range(repeats):
        for i, row in enumerate(rows):
            for tol in GRAD_TOLS:
                k = row[f"k_{tol:g}"]
                if k is not None:
                    t0 = time.perf_counter()
                    adj.run(row["impl"], row["mode"], k)
                    timed.setdefault((i, tol), []).append(time.perf_counter() - t0)
    for i, row in enumerate(rows):
        for tol in GRAD_TOLS:
            ts = timed.get((i, tol))
            row[f"time_{tol:g}"] = statistics.median(ts) if ts else None
    return rows


# --- the training step -----------------------------------------------------------------------

def _our_step(bm: BenchMap, solver: str, mode: str, k: int, c: Tensor) -> tuple[list[Tensor], int]:
    h, st = fixed_point(bm.fresh_step(), bm.h0, solver=solver, grad=mode, max_iter=bm.cap,
                        tol=min(FORWARD_TOLS), backward_iter=k, return_stats=True, track=False)
    loss = (c * h).sum()
    grads = torch.autograd.grad(loss, bm.params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, bm.params)], st.forward_iters


def _deq_step(bm: BenchMap, f_solver: str, b_solver: str, k: int, c: Tensor) -> tuple[list[Tensor], int]:
    from torchdeq import get_deq

    deq = get_deq(core="indexing", ift=True, f_solver=f_solver, f_max_iter=bm.cap,
                  f_tol=min(FORWARD_TOLS), f_stop_mode="rel", b_solver=b_solver, b_max_iter=k,
                  b_tol=0.0, b_stop_mode="abs")
    step = bm.fresh_step()
    z, info = deq(lambda z: step(z[0]).unsqueeze(0), bm.h0.unsqueeze(0))
    loss = (c * z[-1][0]).sum()
    grads = torch.autograd.grad(loss, bm.params, allow_unused=True)
    nstep = info.get("nstep") if isinstance(info, dict) else None
    steps = int(nstep.max()) if isinstance(nstep, Tensor) and nstep.numel() else -1
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, bm.params)], steps


def training_study(bm: BenchMap, adj: _Adjoint, adjoint_rows: list[dict[str, Any]], tol: float,
                   repeats: int) -> list[dict[str, Any]]:
    """Forward to residual 1e-6 plus the backward budget that reaches gradient error ``tol``."""
    budget = {(r["impl"], r["mode"]): r.get(f"k_{tol:g}") for r in adjoint_rows}
    pairs: list[tuple[str, str, str]] = []
    for s in ("iteration", "anderson"):
        for m in ("neumann", "gmres"):
            pairs.append(("ours", s, m))
    for s in ("fixed_point_iter", "anderson"):
        for m in DEQ_MODES:
            pairs.append(("torchdeq", s, m))
    c = adj.g.to(bm.h0.dtype)
    rows = []
    runnable = []
    for impl, s, m in pairs:
        k = budget.get((impl, m))
        row: dict[str, Any] = {"map": bm.name, "impl": impl, "solver": s, "mode": m,
                               "backward_iter": k}
        rows.append(row)
        if k is not None:
            runnable.append(row)
    times: dict[int, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rnd in range(repeats + 1):
            for row in runnable:
                fn = _our_step if row["impl"] == "ours" else _deq_step
                t0 = time.perf_counter()
                grads, steps = fn(bm, row["solver"], row["mode"], row["backward_iter"], c)
                elapsed = time.perf_counter() - t0
                if rnd == 0:  # warm-up round: also the accuracy
                    row["grad_error"] = _rel(grads, adj.reference)
                    row["forward_steps"] = steps
                else:
                    times.setdefault(id(row), []).append(elapsed)
    for row in rows:
        ts = times.get(id(row))
        row["step_time"] = statistics.median(ts) if ts else None
    return rows


# --- contractivity: spectral normalisation of the gated cell ----------------------------------

def contractivity_study(x: Tensor, edge_index: Tensor, hidden: int, seed: int,
                        steps: int = 300) -> list[dict[str, Any]]:
    """rho(J) of the gated map with and without ``spectral_norm=True`` (same seed), measured by
    power iteration at the state after ``steps`` plain steps, with that state's residual."""
    rows = []
    for aggr in ("mean", "add"):
        for sn in (False, True):
            torch.manual_seed(seed)
            cell = GatedCell(hidden, aggr=aggr, inject_input=False, spectral_norm=sn)
            if sn:  # converge the parametrisation's power iteration, then freeze it
                for _ in range(30):
                    cell.gru.weight_ih, cell.gru.weight_hh  # noqa: B018
            cell.eval()
            xf = x.float()
            inputs = cell.prepare(xf, edge_index)

            def step(h: Tensor, inputs: Any = inputs, cell: Any = cell) -> Tensor:
                return cell.step(h, inputs)

            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                h, st = fixed_point(step, xf, max_iter=steps, return_stats=True)
            rho = spectral_radius(step, h, iters=60, generator=torch.Generator().manual_seed(0))
            rows.append({"aggr": aggr, "spectral_norm": sn, "rho": rho, "residual": st.residual,
                         "steps": steps,
                         "w_ih_norm": float(torch.linalg.matrix_norm(cell.gru.weight_ih.detach(), 2)),
                         "w_hh_norm": float(torch.linalg.matrix_norm(cell.gru.weight_hh.detach(), 2))})
    return rows

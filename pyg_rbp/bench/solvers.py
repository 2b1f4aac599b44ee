r"""`pyg-rbp bench solvers`: forward solvers and adjoint modes, ours against torchdeq's.

Neumann-RBP runs at its floor (T plain steps plus K VJPs); going faster means fewer operator
applications. This benchmark measures how many, and how long, on the maps the project trains:

* **Forward**: for every map, the steps and time each solver needs to reach a relative residual
  :math:`\|f(h) - h\| / \|h\|` of ``1e-4`` and ``1e-6``: our ``iteration``, ``anderson`` and
  ``broyden`` against torchdeq's ``fixed_point_iter``, ``anderson`` and ``broyden``, all on the
  same step function. Every evaluation of the step is timed and its residual computed by the
  same wrapper, so "time to residual r" means the same for every solver.
* **Adjoint**: at the fixed point, relative error of the parameter-and-input gradient
  :math:`(\partial f / \partial \theta)^\top z` against a high-budget GMRES reference, for
  ``K`` Jacobian products, per mode (Neumann, RBP, CG, GMRES, phantom; torchdeq's IFT backward
  with its fixed-point and Anderson solvers on the same VJP); VJPs and time to ``1e-3``,
  ``1e-4`` and ``1e-6``.
* **Training step** at equal gradient accuracy (``1e-4``): the cell's input preparation, the
  forward solve to residual ``1e-6`` and the backward to the parameters and inputs, our
  solver/mode pairs against torchdeq's ``get_deq`` pairs.

Forward solves and training steps run in float32 (as training does), the gradient-error study
in float64 (errors down to ``1e-6``), with the same weights; one thread, speeds as ratios
measured in the same run with repeats interleaved. Results are written atomically after every map, so an
interrupted run resumes.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FORWARD_TOLS = (1e-4, 1e-6)
GRAD_TOLS = (1e-3, 1e-4, 1e-6)
DEQ_SOLVERS = ("fixed_point_iter", "anderson", "broyden")
DEQ_OPTIONS = {"broyden": {"LBFGS_thres": 20}}
"""torchdeq's Broyden keeps ``max_iter`` rank-one updates by default (a 2000 x state buffer that
every product reads: 480 ms per step on Cora, 5 GB); it gets the memory of ours (20)."""
DEQ_MODES = ("fixed_point_iter", "anderson")
K_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
PHANTOM_MAX_K = 64  # its memory grows with K (autograd through K steps)

MAP_NAMES = ("gated_mean", "gated_add", "implicit_k0.95", "implicit_k0.99", "ppr_a0.1",
             "ppr_a0.02", "long_paths")
"""The benchmark's maps. ``gated_*``: the paper's GatedCell (no input injection) with mean or
sum aggregation; ``implicit_k*``: ImplicitCell with its contraction bound active (non-negative
weights scaled up, so that every row is rescaled to l1-norm kappa and the contraction factor is
kappa); ``ppr_a*``: PPRCell with teleport alpha; ``long_paths``: ImplicitCell (kappa 0.99) on
disjoint paths of 400 nodes, where information travels one hop per step."""


def _registered_solvers() -> list[str]:
    from pyg_rbp.engine import solver_names

    return list(solver_names())


def _registered_adjoint_modes() -> list[str]:
    """Every registered mode that differentiates the solution (not the forward's steps)."""
    from pyg_rbp.engine import get_grad_mode, grad_mode_names

    return [m for m in grad_mode_names() if get_grad_mode(m).records in ("one", "from_solution")]


@dataclass
class SolversConfig:
    """Settings of one run. ``solvers`` and ``modes`` default to every registered forward solver
    and every registered mode that differentiates the solution, so a user's own appear too."""

    dataset: str = "cora"
    root: str | None = None
    hidden: int = 64
    nodes: int = 2708
    edges: int = 10556
    maps: list[str] = field(default_factory=lambda: list(MAP_NAMES))
    solvers: list[str] = field(default_factory=_registered_solvers)
    modes: list[str] = field(default_factory=_registered_adjoint_modes)
    max_iter: int = 2000
    repeats: int = 3
    train_maps: list[str] = field(default_factory=lambda: ["gated_mean", "implicit_k0.99"])
    train_tol: float = 1e-4
    reference_iters: int = 600
    seed: int = 0
    threads: int | None = 1

    def validate(self) -> None:
        from pyg_rbp.engine import get_grad_mode, normalize_solver

        bad = [m for m in [*self.maps, *self.train_maps] if m not in MAP_NAMES]
        if bad:
            raise ValueError(f"unknown map(s) {bad}; choose from {', '.join(MAP_NAMES)}")
        self.solvers = [normalize_solver(s) for s in self.solvers]
        self.modes = [get_grad_mode(m).name for m in self.modes]
        wrong = [m for m in self.modes if get_grad_mode(m).records not in ("one", "from_solution")]
        if wrong:
            raise ValueError(f"modes {wrong} differentiate the forward's steps, not the solution")
        for name in ("hidden", "max_iter", "repeats", "reference_iters", "nodes", "edges"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.train_tol < 1:
            raise ValueError(f"train_tol must be in (0, 1), got {self.train_tol!r}")


# --- the maps --------------------------------------------------------------------------------

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
    from pyg_rbp.nn import GatedCell, ImplicitCell, PPRCell

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


# --- the forward study -----------------------------------------------------------------------

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
    from pyg_rbp.engine import fixed_point

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
    import warnings

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
        from pyg_rbp.engine import StepLinearization, gmres_solve

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
        from pyg_rbp.engine import get_grad_mode

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
    from pyg_rbp.engine import get_grad_mode

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
    from pyg_rbp.engine import fixed_point

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
    import warnings

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
    import warnings

    from pyg_rbp.engine import fixed_point, spectral_radius
    from pyg_rbp.nn import GatedCell

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


# --- the run ---------------------------------------------------------------------------------

def _best(rows: list[dict[str, Any]], impl: str, tol: float) -> dict[str, Any] | None:
    ok = [r for r in rows if r["impl"] == impl and r.get("step_time") is not None
          and r.get("grad_error") is not None and r["grad_error"] <= 2 * tol]
    return min(ok, key=lambda r: r["step_time"]) if ok else None


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: value, bound, pass (None where it does not apply)."""
    out: list[dict[str, Any]] = []
    fwd = result.get("forward", {})
    for name, rows in fwd.items():
        by = {(r["impl"], r["solver"]): r for r in rows}
        plain, ours = by[("ours", "iteration")], by[("ours", "anderson")]
        theirs = by[("torchdeq", "anderson")]
        if plain["steps_1e-06"] is not None and plain["steps_1e-06"] >= 100:
            s_ratio = (None if ours["steps_1e-06"] is None
                       else ours["steps_1e-06"] / plain["steps_1e-06"])
            t_ratio = (None if ours["time_1e-06"] is None
                       else ours["time_1e-06"] / plain["time_1e-06"])
            out.append({"target": f"{name}: Anderson steps / plain steps to 1e-6", "value": s_ratio,
                        "bound": 0.5, "pass": None if s_ratio is None else s_ratio <= 0.5})
            out.append({"target": f"{name}: Anderson time / plain time to 1e-6", "value": t_ratio,
                        "bound": 0.7, "pass": None if t_ratio is None else t_ratio <= 0.7})
        # ours vs torchdeq's Anderson at the tightest residual both reach
        for tol in sorted(FORWARD_TOLS):
            a, b = ours.get(f"time_{tol:g}"), theirs.get(f"time_{tol:g}")
            if a is not None and b is not None:
                out.append({"target": f"{name}: our Anderson / torchdeq Anderson time to {tol:g}",
                            "value": a / b, "bound": 0.5, "pass": a / b <= 0.5})
                break
        else:
            reached = ours.get("time_0.0001") is not None
            out.append({"target": f"{name}: our Anderson / torchdeq Anderson time",
                        "value": None, "bound": 0.5,
                        "pass": True if reached else None,
                        "note": ("only ours reached 1e-4" if reached else
                                 "neither Anderson reached 1e-4")})
    for name, rows in result.get("adjoint", {}).items():
        by = {(r["impl"], r["mode"]): r for r in rows}
        if ("ours", "neumann") not in by or ("ours", "gmres") not in by:
            continue
        n, g = by[("ours", "neumann")], by[("ours", "gmres")]
        if n["products_0.0001"] is not None:
            v = (None if g["products_0.0001"] is None else g["products_0.0001"] / n["products_0.0001"])
            out.append({"target": f"{name}: gmres VJPs / Neumann VJPs to grad error 1e-4",
                        "value": v, "bound": 0.5, "pass": None if v is None else v <= 0.5})
        else:
            # Neumann did not get there within the largest K: the ratio is an upper bound
            gp = g["products_0.0001"]
            v = None if gp is None else gp / max(K_GRID)
            out.append({"target": f"{name}: gmres VJPs / Neumann VJPs to grad error 1e-4 "
                                  f"(Neumann not there in {max(K_GRID)}: upper bound)",
                        "value": v, "bound": 0.5, "pass": None if v is None else v <= 0.5})
    for name, rows in result.get("training", {}).items():
        tol = result["config"]["train_tol"]
        ours, theirs = _best(rows, "ours", tol), _best(rows, "torchdeq", tol)
        v = None if ours is None or theirs is None else ours["step_time"] / theirs["step_time"]
        out.append({"target": f"{name}: our best training step / torchdeq's best at grad error "
                              f"{tol:g}", "value": v, "bound": 0.7,
                    "pass": None if v is None else v <= 0.7,
                    "note": (f"no torchdeq pair reached grad error {tol:g} within "
                             f"{max(K_GRID)} backward iterations" if theirs is None else None),
                    "ours": None if ours is None else f"{ours['solver']}+{ours['mode']}",
                    "torchdeq": None if theirs is None else f"{theirs['solver']}+{theirs['mode']}"})
    return out


def run_solvers_bench(cfg: SolversConfig, json_path: str | Path, *, progress: bool = True,
                      fresh: bool = False) -> dict[str, Any]:
    """Run (or resume) the benchmark; returns the result document, also written to ``json_path``."""
    from tqdm.auto import tqdm

    from pyg_rbp.bench.graphs import load_bench_graph
    from pyg_rbp.results import atomic_write_json, environment, read_json

    cfg.validate()
    json_path = Path(json_path)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    config = asdict(cfg)
    result: dict[str, Any] = {"config": config, "env": environment("cpu"), "forward": {},
                              "adjoint": {}, "adjoint_reference": {}, "training": {},
                              "contractivity": []}
    if json_path.exists() and not fresh:
        old = read_json(json_path)
        defaults = asdict(SolversConfig())
        old_cfg = {k: (old.get("config") or {}).get(k, defaults.get(k)) for k in config}
        if old_cfg == config:
            result.update({k: old.get(k, {}) for k in ("forward", "adjoint", "adjoint_reference",
                                                       "training")})
            result["contractivity"] = old.get("contractivity") or []
        else:
            raise ValueError(f"{json_path} holds a run with other settings; pass --fresh or "
                             "another --json")
    graph = load_bench_graph(cfg.dataset, root=cfg.root, hidden=cfg.hidden, seed=cfg.seed,
                             num_nodes=cfg.nodes, num_edges=cfg.edges)
    result["graph"] = graph.describe()
    names = list(dict.fromkeys([*cfg.maps, *cfg.train_maps]))
    bar = tqdm(names, desc="bench solvers", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        # forward solves and training steps in float32 (what training uses), the gradient-error
        # study in float64 (errors down to 1e-6); the same weights in both
        bm32 = build_map(name, graph.x, graph.edge_index, cfg.hidden, cfg.max_iter, cfg.seed,
                         dtype=torch.float32)
        bm = build_map(name, graph.x, graph.edge_index, cfg.hidden, cfg.max_iter, cfg.seed)
        result.setdefault("maps", {})[name] = {**bm.info, "cap": bm.cap}
        if name in cfg.maps and name not in result["forward"]:
            result["forward"][name] = forward_study(bm32, cfg.repeats, cfg.solvers)
            atomic_write_json(json_path, result)
        need_adjoint = name not in result["adjoint"] or (
            name in cfg.train_maps and name not in result["training"])
        if not need_adjoint:
            continue
        from pyg_rbp.engine import fixed_point

        with torch.no_grad():
            h_star, st = fixed_point(bm.step, bm.h0, solver="anderson", max_iter=cfg.max_iter,
                                     tol=1e-12, return_stats=True, solver_options={"m": 10})
        if not (st.residual is not None and st.residual < 1e-8):
            result["adjoint_reference"][name] = {"forward_residual": st.residual,
                                                 "skipped": "no fixed point reached"}
            result["adjoint"][name] = []
            atomic_write_json(json_path, result)
            continue
        adj = _Adjoint(bm, h_star, cfg.reference_iters)
        result["adjoint_reference"][name] = {"forward_residual": st.residual,
                                             "adjoint_residual": adj.ref_residual,
                                             "iters": cfg.reference_iters}
        if name not in result["adjoint"] or not result["adjoint"][name]:
            result["adjoint"][name] = adjoint_study(adj, cfg.repeats, cfg.modes)
            atomic_write_json(json_path, result)
        if name in cfg.train_maps and name not in result["training"]:
            result["training"][name] = training_study(bm32, adj, result["adjoint"][name],
                                                      cfg.train_tol, cfg.repeats)
            atomic_write_json(json_path, result)
    if not result.get("contractivity") and cfg.dataset in ("cora", "random"):
        result["contractivity"] = contractivity_study(graph.x, graph.edge_index, cfg.hidden, cfg.seed)
    result["adjoint"] = {k: v for k, v in result["adjoint"].items() if v}
    result["verdicts"] = verdicts(result)
    atomic_write_json(json_path, result)
    return result


# --- reports ---------------------------------------------------------------------------------

def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _ms(v: Any) -> str:
    return "-" if v is None else f"{1000 * v:.1f}"


def markdown_report(result: dict[str, Any]) -> str:
    cfg = result["config"]
    g = result.get("graph", {})
    lines = [f"# Forward solvers and adjoint modes: ours vs torchdeq ({cfg['dataset']})", "",
             f"Graph: {g.get('name')} ({g.get('num_nodes')} nodes, {g.get('num_edges')} edges), "
             f"{cfg['hidden']} channels, forward and training steps in float32, gradient errors in "
             f"float64, {cfg.get('threads') or 'default'} thread(s); "
             f"times are medians of {cfg['repeats']} interleaved repeats. Command: "
             f"`pyg-rbp bench solvers --dataset {cfg['dataset']}`.", "",
             "## Targets", "", "| target | value | bound | verdict |", "|---|---|---|---|"]
    for v in result.get("verdicts", []):
        mark = {True: "met", False: "**missed**", None: "n/a"}[v["pass"]]
        extra = "".join(f"; {k} {v[k]}" for k in ("ours", "torchdeq", "note") if v.get(k))
        lines.append(f"| {v['target']} | {_f(v['value'])} | {v['bound']:g} | {mark}{extra} |")
    lines += ["", "## Forward: steps and time (ms) to relative residual", "",
              "| map | impl | solver | steps 1e-4 | ms 1e-4 | steps 1e-6 | ms 1e-6 | evals | best residual |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in result.get("forward", {}).items():
        for r in rows:
            lines.append(f"| {name} | {r['impl']} | {r['solver']} | {_f(r['steps_0.0001'])} | "
                         f"{_ms(r['time_0.0001'])} | {_f(r['steps_1e-06'])} | {_ms(r['time_1e-06'])} | "
                         f"{r['evals']} | {r['best_residual']:.2e} |")
    lines += ["", "## Adjoint: Jacobian products and time (ms) to relative gradient error", "",
              "Reference: GMRES at the fixed point (Anderson to residual 1e-12), adjoint residual "
              "in brackets. CG counts a VJP and a JVP per iteration.", "",
              "| map | impl | mode | products 1e-3 | ms 1e-3 | products 1e-4 | ms 1e-4 | "
              "products 1e-6 | ms 1e-6 | best error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rows in result.get("adjoint", {}).items():
        ref = result["adjoint_reference"].get(name, {})
        for r in rows:
            errs = [c["error"] for c in r["curve"] if c["error"] is not None]
            lines.append(
                f"| {name} [{_f(ref.get('adjoint_residual'), 2)}] | {r['impl']} | {r['mode']} | "
                f"{_f(r['products_0.001'])} | {_ms(r['time_0.001'])} | {_f(r['products_0.0001'])} | "
                f"{_ms(r['time_0.0001'])} | {_f(r['products_1e-06'])} | {_ms(r['time_1e-06'])} | "
                f"{_f(min(errs) if errs else None, 2)} |")
    skipped = {k: v for k, v in result.get("adjoint_reference", {}).items() if v.get("skipped")}
    for name, v in skipped.items():
        lines.append(f"\n{name}: adjoint study skipped ({v['skipped']}; Anderson's best residual "
                     f"{_f(v.get('forward_residual'))}).")
    if result.get("contractivity"):
        lines += ["", "## Contractivity: GatedCell with spectral normalisation", "",
                  "Spectral radius of the step's Jacobian (power iteration, 60 VJPs) at the state "
                  "after the given plain steps (float32, the same seed's weights).", "",
                  "| aggr | spectral_norm | rho(J) | residual | steps | ||W_ih||_2 | ||W_hh||_2 |",
                  "|---|---|---|---|---|---|---|"]
        for r in result["contractivity"]:
            lines.append(f"| {r['aggr']} | {r['spectral_norm']} | {r['rho']:.3f} | "
                         f"{r['residual']:.2e} | {r['steps']} | {r['w_ih_norm']:.3f} | "
                         f"{r['w_hh_norm']:.3f} |")
    lines += ["", f"## Training step at gradient error {cfg['train_tol']:g}", "",
              "Forward to residual 1e-6, backward with the budget that reached the gradient error "
              "in the adjoint study; the error is measured again on the full step.", "",
              "| map | impl | forward | backward | K | forward steps | grad error | ms / step |",
              "|---|---|---|---|---|---|---|---|"]
    for name, rows in result.get("training", {}).items():
        for r in rows:
            lines.append(f"| {name} | {r['impl']} | {r['solver']} | {r['mode']} | "
                         f"{_f(r['backward_iter'])} | {_f(r.get('forward_steps'))} | "
                         f"{_f(r.get('grad_error'), 2)} | {_ms(r.get('step_time'))} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyg_rbp.results import atomic_save_figure

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
    from pyg_rbp.results import atomic_write_text

    json_path = Path(json_path)
    md = atomic_write_text(json_path.with_suffix(".md"), markdown_report(result))
    png = plot(result, json_path.with_suffix(".png"))
    return md, png

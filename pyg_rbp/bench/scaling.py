r"""Memory and time of one training step for every gradient mode, as ``T`` and ``K`` grow.

This is the measurement behind ``pyg-rbp bench scaling`` (issue 7). For each forward step
count ``T`` and truncation ``K`` it trains the gated node classifier for a few steps in every
gradient mode and records

* the activation memory: bytes of the tensors autograd saves during forward + loss
  (:class:`~pyg_rbp.profiling.SavedTensorBytes`), and on CUDA the peak allocated memory of
  one training step;
* the time of one training step (forward + backward + SGD update), median over ``repeats``
  runs after ``warmup`` runs.

Beside our modes, in the same run and on the same graph and cell size: PyG's
``GatedGraphConv`` unrolled ``T`` times (BPTT) and ``torchdeq`` wrapping our cell
(:mod:`pyg_rbp.bench.peers`). A second, interleaved pass measures the target ratios at one
``(T, K)`` with all contenders timed round-robin, so machine load hits them alike, and prints
Neumann-RBP beside its floor (:mod:`pyg_rbp.bench.floor`). A float64 study measures gradient
accuracy (cosine and relative error against a long CG-RBP solve) for our modes and torchdeq,
and what a forward tolerance buys.

Results are written after every measured cell (atomically), so an interrupted run resumes
where it stopped when started again with the same settings.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_rbp.bench.common import jsonable, load_record, machine_load, write_markdown_and_png
from pyg_rbp.bench.graphs import BenchGraph, load_bench_graph
from pyg_rbp.bench.peers import PEERS, peer_model
from pyg_rbp.engine import GRAD_MODES, grad_mode_names
from pyg_rbp.profiling import CudaPeakMemory, SavedTensorBytes, synchronize, timed_runs
from pyg_rbp.results import (
    atomic_save_figure,
    atomic_write_json,
    environment,
    human_bytes,
    markdown_table,
)

K_INDEPENDENT = ("bptt", "pyg_gatedgraphconv")
"""Rows whose cost does not depend on ``K`` (measured once per ``T``, ``backward_iter`` null)."""

SCHEMA = "pyg_rbp.bench.scaling/1"

REDO_PARTS = ("grid", "floors", "targets", "accuracy")
"""Parts of a saved run that ``redo`` re-measures (the rest is reused)."""


@dataclass
class ScalingConfig:
    """Everything that defines one scaling run (and decides whether saved rows can be reused)."""

    dataset: str = "cora"
    root: str | None = None
    nodes: int = 2708
    edges: int = 10556
    features: int | None = None
    classes: int = 7
    hidden: int = 64
    aggr: str = "mean"
    steps: list[int] = field(default_factory=lambda: [10, 50, 100])
    backward_iters: list[int] = field(default_factory=lambda: [5, 20])
    grads: list[str] = field(default_factory=lambda: list(GRAD_MODES))
    peers: list[str] = field(default_factory=lambda: list(PEERS))
    repeats: int = 5
    warmup: int = 1
    rounds: int = 3
    target_steps: int = 100
    target_k: int = 20
    accuracy: bool = True
    reference_iters: int = 400
    forward_tol: float = 1e-4
    device: str = "cpu"
    threads: int | None = 1
    seed: int = 0
    lr: float = 1e-3

    def validate(self) -> None:
        if not self.steps or any(int(t) < 1 for t in self.steps):
            raise ValueError(f"steps must be positive integers, got {self.steps}")
        if not self.backward_iters or any(int(k) < 1 for k in self.backward_iters):
            raise ValueError(f"backward_iters must be positive integers, got {self.backward_iters}")
        unknown = [g for g in self.grads if g not in grad_mode_names()]
        if unknown:
            raise ValueError(f"unknown gradient modes {unknown}; valid: {', '.join(grad_mode_names())}")
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            raise ValueError(f"unknown peers {unknown}; valid: {', '.join(PEERS)}")
        if self.repeats < 1 or self.warmup < 0 or self.rounds < 0:
            raise ValueError("repeats must be >= 1, warmup >= 0 and rounds >= 0")
        if self.aggr not in ("add", "mean"):
            raise ValueError(f"aggr must be 'add' or 'mean', got {self.aggr!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def fingerprint(self) -> dict[str, Any]:
        """The settings a saved row depends on: rows are reused only when these match."""
        keys = ("dataset", "nodes", "edges", "features", "classes", "hidden", "aggr",
                "repeats", "warmup", "device", "threads", "seed", "lr")
        out = {k: getattr(self, k) for k in keys}
        if self.dataset != "random":
            for k in ("nodes", "edges", "classes"):
                out.pop(k)
            if self.features is None:  # the dataset's own width; set, it is Cora's PCA width
                out.pop("features")
        return out


# --------------------------------------------------------------------------------------------
# building and measuring one model


def build_model(graph: BenchGraph, cfg: ScalingConfig, grad: str, steps: int,
                backward_iter: int | None, tol: float = 0.0,
                dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The gated node classifier in mode ``grad`` (or with peer ``grad``), seeded identically.

    With features as wide as the state (the paper's PCA protocol) they are the initial state
    and there is no encoder; otherwise a linear encoder feeds the cell. Every mode and peer
    starts from the same weights for the same seed.
    """
    from pyg_rbp.nn import GatedCell
    from pyg_rbp.nn.models import FixedPointNodeClassifier

    in_channels = int(graph.x.size(1))
    encoder = in_channels != cfg.hidden
    torch.manual_seed(cfg.seed)
    model = FixedPointNodeClassifier(
        in_channels, cfg.hidden, graph.num_classes, cell="gated",
        grad=grad if grad in GRAD_MODES else "neumann", max_iter=steps,
        backward_iter=backward_iter or 1, tol=tol, encoder=encoder,
    )
    if cfg.aggr != "add":
        torch.manual_seed(cfg.seed + 1)
        model.conv.cell = GatedCell(cfg.hidden, aggr=cfg.aggr, inject_input=encoder)
    if grad in PEERS:
        torch.manual_seed(cfg.seed + 2)
        model = peer_model(grad, model, steps, backward_iter)
    return model.to(device=graph.x.device, dtype=dtype).train()


def _loss_fn(model: torch.nn.Module, graph: BenchGraph) -> Callable[[], Tensor]:
    mask = graph.train_mask
    y = graph.y[mask]

    def loss() -> Tensor:
        logits = model(graph.x, graph.edge_index)
        return F.cross_entropy(logits[mask], y)

    return loss


def make_train_step(model: torch.nn.Module, graph: BenchGraph, lr: float) -> Callable[[], None]:
    """One full-graph training step: forward, cross-entropy on train nodes, backward, SGD."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loss_fn = _loss_fn(model, graph)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    return train_step


def measure_model(model: torch.nn.Module, graph: BenchGraph, cfg: ScalingConfig) -> dict[str, Any]:
    """Activation bytes, CUDA peak and median step time of ``model``'s training step."""
    device = graph.x.device
    loss_fn = _loss_fn(model, graph)
    with SavedTensorBytes() as mem:
        loss = loss_fn()
    saved = mem.bytes
    del loss
    step = make_train_step(model, graph, cfg.lr)
    with CudaPeakMemory(device) as peak:
        step()
    times = timed_runs(step, repeats=cfg.repeats, warmup=cfg.warmup, device=device)
    stats = getattr(getattr(model, "conv", None), "stats", None)
    return {
        "saved_bytes": int(saved),
        "cuda_peak_bytes": peak.peak_bytes,
        "step_time_s": statistics.median(times),
        "step_time_min_s": min(times),
        "step_times_s": times,
        "forward_iters": None if stats is None else stats.forward_iters,
        "residual": None if stats is None else stats.residual,
    }


# --------------------------------------------------------------------------------------------
# the grid


def grid_cells(cfg: ScalingConfig) -> list[tuple[str, int, int | None]]:
    """All ``(grad, T, K)`` cells of the run; K-independent rows get ``K = None``."""
    cells: list[tuple[str, int, int | None]] = []
    for name in [*cfg.grads, *cfg.peers]:
        for t in cfg.steps:
            if name in K_INDEPENDENT:
                cells.append((name, t, None))
            else:
                cells.extend((name, t, k) for k in cfg.backward_iters)
    return cells


def _key(grad: str, steps: int, k: int | None, tol: float = 0.0) -> str:
    return f"{grad}|{steps}|{k}|{tol:g}"


def _load_previous(path: Path | None, cfg: ScalingConfig) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    from pyg_rbp.results import read_json

    try:
        old = read_json(path)
    except (OSError, ValueError):
        return {}
    if old.get("schema") != SCHEMA or old.get("fingerprint") != jsonable(cfg.fingerprint()):
        return {}
    return old


# Settings the target pass and the accuracy study depend on beyond the fingerprint: a resumed
# run with other values measures that part again instead of reporting the old one. The
# contenders (grads, peers) may be a subset of those measured: their rows are all there.
_PART_SETTINGS = {
    "targets": ("target_steps", "target_k", "rounds"),
    "accuracy": ("reference_iters", "forward_tol"),
}
_CONTENDERS = ("grads", "peers")


def _stale_parts(old: dict[str, Any], cfg: ScalingConfig) -> list[str]:
    """The parts of a saved run measured with other settings than ``cfg``, or without some of
    its modes or peers."""
    saved, mine = old.get("config") or {}, jsonable(asdict(cfg))
    missing = any(not set(mine[k]) <= set(saved.get(k) or ()) for k in _CONTENDERS)
    return [part for part, keys in _PART_SETTINGS.items()
            if old.get(part) is not None and (missing or any(saved.get(k) != mine[k] for k in keys))]


class ScalingRun:
    """One scaling benchmark: the grid, the interleaved target pass, the accuracy study.

    ``run()`` measures what is missing, writes ``json_path`` after every cell and returns the
    result dictionary. Rows already in a JSON file written with the same settings are kept.
    """

    def __init__(self, cfg: ScalingConfig, json_path: str | os.PathLike | None = None,
                 progress: bool = True, log: Callable[[str], None] = print,
                 redo: Sequence[str] = ()) -> None:
        cfg.validate()
        self.cfg = cfg
        self.json_path = Path(json_path) if json_path is not None else None
        self.progress = progress
        self.log = log
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda requested but torch.cuda.is_available() is False")
        bad = set(redo) - set(REDO_PARTS)
        if bad:
            raise ValueError(f"unknown parts to redo {sorted(bad)}; choose from {', '.join(REDO_PARTS)}")
        old = _load_previous(self.json_path, cfg)
        for part in _stale_parts(old, cfg):
            log(f"{self.json_path}: the saved {part} were measured with other settings; measuring again")
            old.pop(part)
        for part in redo:
            old.pop({"grid": "results"}.get(part, part), None)
        self.rows: dict[str, dict[str, Any]] = {
            _key(r["grad"], r["steps"], r["backward_iter"], r.get("tol") or 0.0): r
            for r in old.get("results", [])
        }
        self.floors: dict[str, dict[str, Any]] = {
            _key("floor", f["steps"], f["backward_iter"]): f for f in old.get("floors", [])
        }
        self.targets: dict[str, Any] | None = old.get("targets")
        self.accuracy: dict[str, Any] | None = old.get("accuracy")
        self.loads: list[dict[str, Any]] = old.get("machine_load", [])
        self.started = time.time()
        self.graph: BenchGraph | None = None

    # -- output ---------------------------------------------------------------------------------

    def result(self, complete: bool) -> dict[str, Any]:
        rows = sorted(self.rows.values(), key=_row_order)
        return {
            "schema": SCHEMA,
            "complete": complete,
            "fingerprint": self.cfg.fingerprint(),
            "config": asdict(self.cfg),
            "graph": None if self.graph is None else self.graph.describe(),
            "environment": environment(self.device),
            "machine_load": self.loads,
            "results": rows,
            "floors": sorted(self.floors.values(), key=lambda f: (f["steps"], f["backward_iter"])),
            "targets": self.targets,
            "accuracy": self.accuracy,
            "notes": NOTES,
        }

    def save(self, complete: bool = False) -> dict[str, Any]:
        result = self.result(complete)
        if self.json_path is not None:
            atomic_write_json(self.json_path, result)
        return result

    # -- measuring ------------------------------------------------------------------------------

    def _threads(self) -> None:
        if self.cfg.threads is not None:
            torch.set_num_threads(self.cfg.threads)

    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        self._threads()
        cfg = self.cfg
        self.graph = load_bench_graph(
            cfg.dataset, root=cfg.root, hidden=cfg.hidden, num_nodes=cfg.nodes,
            num_edges=cfg.edges, num_features=cfg.features, num_classes=cfg.classes, seed=cfg.seed,
        ).to(self.device)
        self.loads.append(load_record("start"))
        cells = [c for c in grid_cells(cfg) if _key(*c) not in self.rows]
        floor_cells = [(t, k) for t in cfg.steps for k in cfg.backward_iters
                       if "neumann" in cfg.grads and _key("floor", t, k) not in self.floors]
        bar = tqdm(total=len(cells) + len(floor_cells), desc="bench scaling", unit="cell",
                   disable=not self.progress)
        for grad, steps, k in cells:
            bar.set_postfix_str(f"{grad} T={steps} K={k}")
            self.rows[_key(grad, steps, k)] = self._measure_cell(grad, steps, k)
            self.save()
            bar.update()
        for steps, k in floor_cells:
            bar.set_postfix_str(f"floor T={steps} K={k}")
            self.floors[_key("floor", steps, k)] = self._measure_floor(steps, k)
            self.save()
            bar.update()
        bar.close()
        self._attach_floors()
        if self.targets is None and cfg.rounds > 0:
            self.targets = self._target_pass()
            self.save()
        if self.accuracy is None and cfg.accuracy:
            self.accuracy = self._accuracy_study()
            self.save()
        if self.targets is not None:
            self.targets["verdicts"] = self._verdicts()
        self.loads.append(load_record("end", self.started))
        return self.save(complete=True)

    def _measure_cell(self, grad: str, steps: int, k: int | None, tol: float = 0.0) -> dict[str, Any]:
        assert self.graph is not None
        model = build_model(self.graph, self.cfg, grad, steps, k, tol)
        row: dict[str, Any] = {"grad": grad, "steps": steps, "backward_iter": k, "tol": tol}
        try:
            row.update(measure_model(model, self.graph, self.cfg))
        except Exception as exc:  # noqa: BLE001 - a failing mode is a result, not a crash
            row.update({"saved_bytes": None, "step_time_s": None,
                        "error": f"{type(exc).__name__}: {exc}"})
            self.log(f"[bench] {grad} T={steps} K={k}: {row['error']}")
        row["device"] = str(self.device)
        return row

    def _measure_floor(self, steps: int, k: int) -> dict[str, Any]:
        from pyg_rbp.bench.floor import neumann_floor

        assert self.graph is not None
        g = self.graph
        out = neumann_floor(g.num_nodes, g.edge_index, self.cfg.hidden, steps, k,
                            repeats=self.cfg.repeats, warmup=self.cfg.warmup, device=self.device,
                            aggr=self.cfg.aggr)
        out["device"] = str(self.device)
        return out

    def _attach_floors(self) -> None:
        for row in self.rows.values():
            if row["grad"] != "neumann" or row.get("tol"):
                continue
            floor = self.floors.get(_key("floor", row["steps"], row["backward_iter"]))
            if floor and row.get("step_time_s"):
                row["floor_s"] = floor["floor_s"]
                row["floor_ratio"] = row["step_time_s"] / floor["floor_s"]

    def _target_pass(self) -> dict[str, Any]:
        """Round-robin timing of the contenders at ``(target_steps, target_k)``."""
        from pyg_rbp.bench.floor import neumann_floor

        assert self.graph is not None
        cfg, g = self.cfg, self.graph
        t_star, k_star = cfg.target_steps, cfg.target_k
        names = [n for n in ("bptt", "tbptt", "neumann") if n in cfg.grads]
        names += [p for p in cfg.peers if p == "torchdeq"]
        steps_fns: dict[str, Callable[[], None]] = {}
        saved: dict[str, int] = {}
        for name in names:
            k = None if name in K_INDEPENDENT else k_star
            model = build_model(g, cfg, name, t_star, k)
            m = measure_model(model, g, cfg)  # also warms up
            saved[name] = m["saved_bytes"]
            steps_fns[name] = make_train_step(model, g, cfg.lr)
        times: dict[str, list[float]] = {n: [] for n in [*names, "floor"]}
        mins: dict[str, list[float]] = {n: [] for n in names}
        floor_parts: list[dict[str, float]] = []
        self.log(f"[bench] target pass at T={t_star}, K={k_star}: {cfg.rounds} rounds of "
                 f"{', '.join(names)} and the floor")
        for _ in range(cfg.rounds):
            for name in names:
                runs = timed_runs(steps_fns[name], repeats=cfg.repeats, warmup=1, device=self.device)
                times[name].append(statistics.median(runs))
                mins[name].append(min(runs))
            if "neumann" in names:
                f = neumann_floor(g.num_nodes, g.edge_index, cfg.hidden, t_star, k_star,
                                  repeats=cfg.repeats, warmup=1, device=self.device, aggr=cfg.aggr)
                floor_parts.append(f)
                times["floor"].append(f["floor_s"])
        med = {n: statistics.median(v) for n, v in times.items() if v}
        best = {n: min(v) for n, v in mins.items() if v}
        if floor_parts:
            best["floor"] = min(f["forward_min_s"] + f["vjp_min_s"] for f in floor_parts)
        # Neumann memory at the smallest and largest T of the grid, same K.
        mem_small = self.rows.get(_key("neumann", min(cfg.steps), k_star), {}).get("saved_bytes")
        mem_large = self.rows.get(_key("neumann", max(cfg.steps), k_star), {}).get("saved_bytes")
        return {
            "steps": t_star, "backward_iter": k_star, "rounds": cfg.rounds,
            "repeats_per_round": cfg.repeats,
            "step_time_s": med, "step_time_rounds_s": times, "step_time_min_s": best,
            "saved_bytes": saved,
            "floor_parts": floor_parts,
            "neumann_saved_bytes_small_T": mem_small, "neumann_saved_bytes_large_T": mem_large,
            "small_T": min(cfg.steps), "large_T": max(cfg.steps),
            "load": machine_load(),
        }

    def _verdicts(self) -> list[dict[str, Any]]:
        """The issue's target ratios, each with its value, bound and pass/fail.

        ``value`` (judged) uses medians; ``value_from_minima`` is the same ratio from the
        fastest runs, a cross-check that is less sensitive to other load on the machine.
        """
        t = self.targets or {}
        tm, mem = t.get("step_time_s", {}), t.get("saved_bytes", {})
        tmin = t.get("step_time_min_s", {})
        out: list[dict[str, Any]] = []

        def add(name: str, value: float | None, bound: float, how: str,
                value_min: float | None = None) -> None:
            ok = None if value is None or not math.isfinite(value) else bool(value <= bound)
            out.append({"target": name, "value": value, "bound": bound, "pass": ok, "how": how,
                        "value_from_minima": value_min})

        def ratio(a: float | None, b: float | None) -> float | None:
            return None if a is None or b in (None, 0) else a / b

        def times(a: str, b: str) -> tuple[float | None, float | None]:
            return ratio(tm.get(a), tm.get(b)), ratio(tmin.get(a), tmin.get(b))

        T, K = t.get("steps"), t.get("backward_iter")
        how = "median of round medians, interleaved"
        add(f"neumann/bptt step time (T={T}, K={K})", times("neumann", "bptt")[0], 0.4, how,
            times("neumann", "bptt")[1])
        add(f"neumann/bptt activation memory (T={T}, K={K})",
            ratio(mem.get("neumann"), mem.get("bptt")), 1 / 50, "saved-tensor bytes")
        small, large = t.get("neumann_saved_bytes_small_T"), t.get("neumann_saved_bytes_large_T")
        drift = None if small in (None, 0) or large is None else abs(large / small - 1)
        add(f"neumann memory drift, T={t.get('large_T')} vs T={t.get('small_T')} (K={K})", drift, 0.02,
            "saved-tensor bytes")
        add(f"neumann/tbptt step time (T={T}, same K={K})", times("neumann", "tbptt")[0], 1.2, how,
            times("neumann", "tbptt")[1])
        add(f"neumann step / floor (T no-grad steps + K VJPs on bare kernels, T={T}, K={K})",
            times("neumann", "floor")[0], 1.25, how, times("neumann", "floor")[1])
        acc = self.accuracy or {}
        errors = {(r["grad"], r["backward_iter"]): r.get("rel_error") for r in acc.get("rows", [])
                  if not r.get("tol") and r["steps"] == T}
        e_ours, e_td = errors.get(("neumann", K)), errors.get(("torchdeq", K))
        acc_note = "" if e_ours is None or e_td is None else (
            f"; gradient rel.err neumann {e_ours:.2e} vs torchdeq {e_td:.2e}")
        add(f"neumann/torchdeq step time, same T={T}, K={K}{acc_note}", times("neumann", "torchdeq")[0],
            1.0, how, times("neumann", "torchdeq")[1])
        for cmp in acc.get("torchdeq_comparison", []):
            add(f"neumann/torchdeq time at equal-or-better gradient accuracy, grid timings "
                f"(torchdeq K={cmp['torchdeq_k']}, rel.err {cmp['torchdeq_rel_error']:.2e}; "
                f"neumann K={cmp['neumann_k']}, rel.err {_num(cmp['neumann_rel_error'])})",
                cmp.get("time_ratio"), 1.0, cmp.get("how", ""))
        return out

    # -- gradient accuracy ------------------------------------------------------------------

    def _cell_grads(self, model: torch.nn.Module, graph: BenchGraph) -> tuple[Tensor, dict[str, Any]]:
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        _loss_fn(model, graph)().backward()
        synchronize(self.device)
        elapsed = time.perf_counter() - t0
        grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
                 for p in model.conv.cell.parameters()]
        stats = getattr(model.conv, "stats", None)
        info = {"time_s_float64": elapsed}
        if stats is not None:
            info.update(forward_iters=stats.forward_iters, residual=stats.residual,
                        backward_residual=stats.backward_residual)
        return torch.cat(grads), info

    def _accuracy_study(self) -> dict[str, Any]:
        """Cell-parameter gradients in float64 against a long CG-RBP solve at the largest T."""
        from tqdm.auto import tqdm

        assert self.graph is not None
        cfg = self.cfg
        g64 = BenchGraph(self.graph.name, self.graph.x.double(), self.graph.edge_index,
                         self.graph.y, self.graph.train_mask, self.graph.num_classes)
        t_ref, t_acc = max(cfg.steps), cfg.target_steps
        ref_model = build_model(g64, cfg, "cg", t_ref, cfg.reference_iters, dtype=torch.float64)
        ref_model.conv.track = True
        ref_model.conv.backward_tol = 1e-13
        ref, ref_info = self._cell_grads(ref_model, g64)
        check_model = build_model(g64, cfg, "neumann", t_ref, cfg.reference_iters, dtype=torch.float64)
        check, _ = self._cell_grads(check_model, g64)

        def compare(grad: Tensor) -> dict[str, float]:
            if not bool(torch.isfinite(grad).all()):
                return {"cosine": None, "rel_error": None}  # type: ignore[dict-item]
            cos = float(F.cosine_similarity(grad, ref, dim=0))
            rel = float((grad - ref).norm() / ref.norm().clamp_min(1e-300))
            return {"cosine": cos, "rel_error": rel}

        rows: list[dict[str, Any]] = []
        jobs: list[tuple[str, int, int | None, float]] = []
        for name in [*cfg.grads, *(p for p in cfg.peers if p == "torchdeq")]:
            if name in K_INDEPENDENT:
                jobs.append((name, t_acc, None, 0.0))
            else:
                jobs.extend((name, t_acc, k, 0.0) for k in cfg.backward_iters)
        if "neumann" in cfg.grads and cfg.forward_tol > 0:
            jobs.append(("neumann", t_ref, cfg.target_k, cfg.forward_tol))
        for name, steps, k, tol in tqdm(jobs, desc="gradient accuracy (float64)",
                                        disable=not self.progress):
            model = build_model(g64, cfg, name, steps, k, tol=tol, dtype=torch.float64)
            try:
                grad, info = self._cell_grads(model, g64)
                row = {"grad": name, "steps": steps, "backward_iter": k, "tol": tol,
                       **compare(grad), **info}
            except Exception as exc:  # noqa: BLE001 - diverging modes are results
                row = {"grad": name, "steps": steps, "backward_iter": k, "tol": tol,
                       "cosine": None, "rel_error": None, "error": f"{type(exc).__name__}: {exc}"}
            rows.append(row)
        # The forward-tolerance row also gets a float32 timing in the main table.
        if "neumann" in cfg.grads and cfg.forward_tol > 0:
            key = _key("neumann", t_ref, cfg.target_k, cfg.forward_tol)
            if key not in self.rows:
                self.rows[key] = self._measure_cell("neumann", t_ref, cfg.target_k, cfg.forward_tol)
        for row in rows:
            timed = self.rows.get(_key(row["grad"], row["steps"], row["backward_iter"], row["tol"]))
            row["step_time_s"] = None if timed is None else timed.get("step_time_s")
            if timed is not None and row["tol"]:
                row["forward_iters_float32"] = timed.get("forward_iters")
        return {
            "parameters": "the GatedCell's (GRU) weights and biases: everything upstream of the "
                          "fixed point",
            "reference": {"grad": "cg", "steps": t_ref, "backward_iter": cfg.reference_iters,
                          "backward_tol": 1e-13, **ref_info,
                          "neumann_same_budget_cosine": float(F.cosine_similarity(check, ref, dim=0)),
                          "neumann_same_budget_rel_error": float((check - ref).norm() / ref.norm())},
            "steps": t_acc,
            "rows": rows,
            "torchdeq_comparison": _torchdeq_comparison(rows),
        }


def _torchdeq_comparison(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each torchdeq K: the fastest Neumann row at least as accurate, and the time ratio."""
    ours = [r for r in rows if r["grad"] == "neumann" and not r["tol"]
            and r.get("rel_error") is not None and r.get("step_time_s")]
    out = []
    for td in rows:
        if td["grad"] != "torchdeq" or td.get("rel_error") is None or not td.get("step_time_s"):
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


def _row_order(row: dict[str, Any]) -> tuple:
    names = [*GRAD_MODES, *PEERS]
    g = row["grad"]
    return (names.index(g) if g in names else len(names), row["steps"],
            row["backward_iter"] or 0, row.get("tol") or 0.0)


NOTES = [
    "saved_bytes: bytes of distinct tensors autograd saves during forward + loss "
    "(torch.autograd.graph.saved_tensors_hooks); cuda_peak_bytes: torch.cuda.max_memory_allocated "
    "over one training step (CUDA only).",
    "step_time_s: median over `repeats` training steps (forward + backward + SGD) after `warmup`.",
    "bptt and pyg_gatedgraphconv do not depend on K: measured once per T (backward_iter null).",
    "tbptt with K >= T back-propagates through all T steps, i.e. it is BPTT.",
    "torchdeq: our GatedCell inside torchdeq.get_deq(ift=True, f_solver='simple_fixed_point_iter', "
    "b_solver='fixed_point_iter', b_max_iter=K, b_tol=0): K adjoint iterations from z=0.",
    "targets: contenders timed round-robin at (target_steps, target_k); each value is the median "
    "of the per-round medians. floor: T no-grad steps + K VJPs of one recorded step on bare "
    "kernels (CSR SpMM + GRU update), no layer/solver/model/optimiser.",
]


# --------------------------------------------------------------------------------------------
# reporting


def markdown_report(result: dict[str, Any]) -> str:
    """Markdown: settings, the target verdicts, the accuracy study and the full grid."""
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
    targets = result.get("targets")
    if targets and targets.get("verdicts"):
        marks = {True: "yes", False: "**no**", None: "-"}
        verdicts = [{**v, "pass": marks[v["pass"]]} for v in targets["verdicts"]]
        lines += ["## Targets", "",
                  markdown_table(verdicts, ["target", "value", "bound", "pass", "value_from_minima"],
                                 ["target", "value (medians)", "bound", "pass", "from minima"], digits=3)]
        tm = targets.get("step_time_s", {})
        lines.append(f"Interleaved step times at T={targets['steps']}, K={targets['backward_iter']}: "
                     + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in tm.items()))
        lines.append("")
    acc = result.get("accuracy")
    if acc:
        ref = acc["reference"]
        lines += ["## Gradient accuracy (float64, cell parameters)", "",
                  f"Reference: CG-RBP, T={ref['steps']}, {ref['backward_iter']} iterations, "
                  f"forward residual {_num(ref.get('residual'))}, adjoint residual "
                  f"{_num(ref.get('backward_residual'))}; Neumann with the same budget agrees to "
                  f"cosine {ref['neumann_same_budget_cosine']:.8f}.", ""]
        lines.append(markdown_table(acc["rows"], ["grad", "steps", "backward_iter", "tol", "forward_iters",
                                                  "residual", "cosine", "rel_error", "step_time_s"],
                                    digits=4))
        if acc.get("torchdeq_comparison"):
            lines += ["", "Equal-accuracy comparison with torchdeq:", "",
                      markdown_table(acc["torchdeq_comparison"],
                                     ["torchdeq_k", "torchdeq_rel_error", "torchdeq_step_time_s",
                                      "neumann_k", "neumann_rel_error", "neumann_step_time_s",
                                      "time_ratio"], digits=4)]
    rows = result.get("results", [])
    bptt = {r["steps"]: r for r in rows if r["grad"] == "bptt" and r.get("step_time_s")}
    table = []
    for r in rows:
        b = bptt.get(r["steps"])
        t, m = r.get("step_time_s"), r.get("saved_bytes")
        table.append({
            **r,
            "memory": human_bytes(r.get("saved_bytes")),
            "time_ms": None if r.get("step_time_s") is None else r["step_time_s"] * 1e3,
            "time_vs_bptt": None if not b or not t else t / b["step_time_s"],
            "mem_vs_bptt": None if not b or not m else m / b["saved_bytes"],
            "floor_ms": None if r.get("floor_s") is None else r["floor_s"] * 1e3,
        })
    cols = ["grad", "steps", "backward_iter", "tol", "memory", "saved_bytes", "time_ms",
            "time_vs_bptt", "mem_vs_bptt", "floor_ms", "forward_iters"]
    if any(r.get("cuda_peak_bytes") for r in rows):
        cols.append("cuda_peak_bytes")
    lines += ["## Grid", "", markdown_table(table, cols, digits=3)]
    return "\n".join(lines) + "\n"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.2e}"


def plot(result: dict[str, Any], path: str | os.PathLike, k: int | None = None) -> Path:
    """PNG: activation memory vs T and step time vs T, one line per mode (at truncation ``k``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    k = cfg["target_k"] if k is None else k
    if k not in cfg["backward_iters"]:
        k = cfg["backward_iters"][-1]
    rows = [r for r in result["results"] if not r.get("tol") and r.get("step_time_s")
            and (r["backward_iter"] in (None, k))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [n for n in [*GRAD_MODES, *PEERS] if any(r["grad"] == n for r in rows)]
    markers = "osD^vP*X"
    for i, name in enumerate(names):
        pts = sorted((r["steps"], r["saved_bytes"], r["step_time_s"]) for r in rows if r["grad"] == name)
        ts = [p[0] for p in pts]
        style = dict(linestyle="--" if name in PEERS else "-", marker=markers[i % len(markers)],
                     markersize=5, label=name)
        axes[0].plot(ts, [p[1] / 2**20 for p in pts], **style)
        axes[1].plot(ts, [p[2] * 1e3 for p in pts], **style)
    floors = sorted((f["steps"], f["floor_s"]) for f in result.get("floors", []) if f["backward_iter"] == k)
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

"""The targets ``bench scaling`` is judged by, as a table; the interleaved pass that measures
them; and the verdicts.

A target is data (:data:`TARGETS`: its sentence, what its value is, the bound and why the bound
is what it is); :func:`verdicts` computes each row's value from the saved target pass and
accuracy study and judges all of them alike: pass when the value is at most the bound.
:func:`target_pass` times the contenders round-robin at one ``(T, K)``, so that machine load
hits them alike.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pyg_rbp.bench.common import machine_load
from pyg_rbp.bench.graphs import BenchGraph
from pyg_rbp.bench.scaling.config import K_INDEPENDENT, ScalingConfig, cell_key, upgrade
from pyg_rbp.bench.scaling.measure import build_model, make_train_step, measure_floor, measure_model
from pyg_rbp.profiling import timed_runs

INTERLEAVED = "median of round medians, interleaved"


@dataclass(frozen=True)
class Target:
    """One target: the sentence of its verdict (``str.format`` fields of :func:`_fields`), the
    kind of its value (a key of :data:`VALUES`) and the contenders it compares, the bound the
    value must not exceed, and why the bound is what it is."""

    text: str
    value: str
    of: tuple[str, str]
    bound: float
    why: str


TARGETS: tuple[Target, ...] = (
    Target("neumann/bptt step time (T={T}, K={K})", "time_ratio", ("neumann", "bptt"), 0.4,
           "Neumann-RBP records one step and runs K vector-Jacobian products where BPTT records "
           "and back-propagates all T steps: at T=100, K=20 its training step must cost at most "
           "0.4 of BPTT's"),
    Target("neumann/bptt activation memory (T={T}, K={K})", "memory_ratio", ("neumann", "bptt"),
           1 / 50, "one recorded step against T=100: at least 50x less activation memory"),
    Target("neumann memory drift, T={large_T} vs T={small_T} (K={K})", "memory_drift",
           ("neumann", "neumann"), 0.02,
           "Neumann-RBP's activation memory must not grow with T (within 2 % over the grid)"),
    Target("neumann/tbptt step time (T={T}, same K={K})", "time_ratio", ("neumann", "tbptt"), 1.2,
           "at the same K, K adjoint products of one recorded step against K back-propagated "
           "steps: at most 20 % slower than TBPTT"),
    Target("neumann step / floor (T no-grad steps + K VJPs on bare kernels, T={T}, K={K})",
           "time_ratio", ("neumann", "floor"), 1.25,
           "what the layer, solver, model and optimiser add over the bare kernels of T no-grad "
           "steps and K VJPs: at most 25 %"),
    Target("neumann/torchdeq step time, same T={T}, K={K}{accuracy_note}", "time_ratio",
           ("neumann", "torchdeq"), 1.0,
           "at least as fast as torchdeq's implicit backward wrapping the same cell, same T and K"),
    Target("neumann/torchdeq time at equal-or-better gradient accuracy, grid timings "
           "(torchdeq K={torchdeq_k}, rel.err {torchdeq_rel_error:.2e}; "
           "neumann K={neumann_k}, rel.err {neumann_rel_error})", "equal_accuracy_time_ratio",
           ("neumann", "torchdeq"), 1.0,
           "at least as fast as torchdeq for a gradient at least as accurate (one row per "
           "torchdeq K of the accuracy study)"),
)
"""The targets of ``bench scaling``, in the order of the verdicts."""


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else a / b


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.2e}"


Values = Iterator[tuple[dict[str, Any], float | None, float | None, str]]
"""What a value kind yields per verdict: extra text fields, the value, the value from the
fastest runs (or ``None``) and how the value was obtained."""


def _time_ratio(target: Target, targets: dict[str, Any], accuracy: dict[str, Any]) -> Values:
    a, b = target.of
    tm, tmin = targets.get("step_time_s", {}), targets.get("step_time_min_s", {})
    yield {}, _ratio(tm.get(a), tm.get(b)), _ratio(tmin.get(a), tmin.get(b)), INTERLEAVED


def _memory_ratio(target: Target, targets: dict[str, Any], accuracy: dict[str, Any]) -> Values:
    a, b = target.of
    mem = targets.get("saved_bytes", {})
    yield {}, _ratio(mem.get(a), mem.get(b)), None, "saved-tensor bytes"


def _memory_drift(target: Target, targets: dict[str, Any], accuracy: dict[str, Any]) -> Values:
    small, large = targets.get("neumann_saved_bytes_small_T"), targets.get("neumann_saved_bytes_large_T")
    drift = None if small in (None, 0) or large is None else abs(large / small - 1)
    yield {}, drift, None, "saved-tensor bytes"


def _equal_accuracy(target: Target, targets: dict[str, Any], accuracy: dict[str, Any]) -> Values:
    for cmp in accuracy.get("torchdeq_comparison", []):
        fields = {**cmp, "neumann_rel_error": _num(cmp["neumann_rel_error"])}
        yield fields, cmp.get("time_ratio"), None, cmp.get("how", "")


VALUES: dict[str, Callable[[Target, dict[str, Any], dict[str, Any]], Values]] = {
    "time_ratio": _time_ratio,
    "memory_ratio": _memory_ratio,
    "memory_drift": _memory_drift,
    "equal_accuracy_time_ratio": _equal_accuracy,
}
"""How each kind of target value is computed from the target pass and the accuracy study."""


def _fields(targets: dict[str, Any], accuracy: dict[str, Any]) -> dict[str, Any]:
    """The text fields every target may use: ``T``, ``K``, the grid's smallest and largest T
    and the Neumann / torchdeq gradient errors at ``(T, K)`` when the accuracy study has them."""
    T, K = targets.get("max_iter"), targets.get("backward_iter")
    errors = {(r["contender"], r["backward_iter"]): r.get("rel_error")
              for r in accuracy.get("rows", []) if not r.get("tol") and r["max_iter"] == T}
    e_ours, e_td = errors.get(("neumann", K)), errors.get(("torchdeq", K))
    note = "" if e_ours is None or e_td is None else (
        f"; gradient rel.err neumann {e_ours:.2e} vs torchdeq {e_td:.2e}")
    return {"T": T, "K": K, "small_T": targets.get("small_T"), "large_T": targets.get("large_T"),
            "accuracy_note": note}


def judge(target: Target, value: float | None, how: str, value_from_minima: float | None = None,
          fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The verdict of ``target`` on ``value``: pass when it is at most the bound (``None`` where
    there is no finite value); ``fields`` fill the target's sentence."""
    ok = None if value is None or not math.isfinite(value) else bool(value <= target.bound)
    return {"target": target.text.format(**(fields or {})), "value": value, "bound": target.bound,
            "pass": ok, "how": how, "value_from_minima": value_from_minima}


def verdicts(targets: dict[str, Any] | None, accuracy: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every target of :data:`TARGETS` judged on a saved target pass and accuracy study (of
    either vocabulary: see :func:`~pyg_rbp.bench.scaling.config.upgrade`).

    ``value`` (judged) uses medians; ``value_from_minima`` is the same ratio from the fastest
    runs, a cross-check that is less sensitive to other load on the machine.
    """
    saved = upgrade({"targets": targets or {}, "accuracy": accuracy or {}})
    targets, accuracy = saved["targets"], saved["accuracy"]
    fields = _fields(targets, accuracy)
    return [judge(target, value, how, value_min, {**fields, **extra})
            for target in TARGETS
            for extra, value, value_min, how in VALUES[target.value](target, targets, accuracy)]


def target_names(cfg: ScalingConfig) -> list[str]:
    """The contenders the target pass times (besides the floor)."""
    names = [n for n in ("bptt", "tbptt", "neumann") if n in cfg.grads]
    return names + [p for p in cfg.peers if p == "torchdeq"]


def target_pass(graph: BenchGraph, cfg: ScalingConfig, rows: dict[str, dict[str, Any]],
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Round-robin timing of the contenders at ``(target_max_iter, target_backward_iter)``;
    ``rows`` (the grid) gives Neumann's memory at the grid's smallest and largest T."""
    t_star, k_star = cfg.target_max_iter, cfg.target_backward_iter
    names = target_names(cfg)
    steps_fns: dict[str, Callable[[], None]] = {}
    saved: dict[str, int] = {}
    for name in names:
        k = None if name in K_INDEPENDENT else k_star
        model = build_model(graph, cfg, name, t_star, k)
        m = measure_model(model, graph, cfg)  # also warms up
        saved[name] = m["saved_bytes"]
        steps_fns[name] = make_train_step(model, graph, cfg.lr)
    times: dict[str, list[float]] = {n: [] for n in [*names, "floor"]}
    mins: dict[str, list[float]] = {n: [] for n in names}
    floor_parts: list[dict[str, Any]] = []
    log(f"[bench] target pass at T={t_star}, K={k_star}: {cfg.rounds} rounds of "
        f"{', '.join(names)} and the floor")
    for _ in range(cfg.rounds):
        for name in names:
            runs = timed_runs(steps_fns[name], repeats=cfg.repeats, warmup=1, device=graph.x.device)
            times[name].append(statistics.median(runs))
            mins[name].append(min(runs))
        if "neumann" in names:
            f = measure_floor(graph, cfg, t_star, k_star, warmup=1)
            floor_parts.append(f)
            times["floor"].append(f["floor_s"])
    med = {n: statistics.median(v) for n, v in times.items() if v}
    best = {n: min(v) for n, v in mins.items() if v}
    if floor_parts:
        best["floor"] = min(f["forward_min_s"] + f["vjp_min_s"] for f in floor_parts)
    # Neumann memory at the smallest and largest T of the grid, same K.
    mem_small = rows.get(cell_key("neumann", min(cfg.max_iter), k_star), {}).get("saved_bytes")
    mem_large = rows.get(cell_key("neumann", max(cfg.max_iter), k_star), {}).get("saved_bytes")
    return {
        "max_iter": t_star, "backward_iter": k_star, "rounds": cfg.rounds,
        "repeats_per_round": cfg.repeats,
        "step_time_s": med, "step_time_rounds_s": times, "step_time_min_s": best,
        "saved_bytes": saved,
        "floor_parts": floor_parts,
        "neumann_saved_bytes_small_T": mem_small, "neumann_saved_bytes_large_T": mem_large,
        "small_T": min(cfg.max_iter), "large_T": max(cfg.max_iter),
        "load": machine_load(),
    }

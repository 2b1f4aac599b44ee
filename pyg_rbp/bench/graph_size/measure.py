"""Inside one configuration: build the graph, train one mode for a few steps and record saved
bytes, peak memory, step time and, where it does not fit, the point of failure; and the
launcher that runs this in a fresh, memory-capped subprocess
(``python -m pyg_rbp.bench.graph_size CONFIG_JSON GRAPH GRAD STEPS OUT_JSON``).

Kept apart from the driver (:mod:`~pyg_rbp.bench.graph_size.run`): this is the code the
subprocess runs, one configuration per process, so its peak memory is that configuration's own.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_rbp.bench.graph_size.config import PROBE, UNROLLED, GraphSizeConfig
from pyg_rbp.bench.graph_size.specs import GraphSpec, build_graph, parse_graph
from pyg_rbp.bench.graphs import BenchGraph
from pyg_rbp.bench.scaling import ScalingConfig, build_model
from pyg_rbp.profiling import SavedTensorBytes, synchronize
from pyg_rbp.results import atomic_write_json, human_bytes, read_json
from pyg_rbp.runtime import set_threads


def _proc_status(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes (``VmHWM``, ``VmRSS``, ``VmPeak``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """The process's peak resident set size since start or the last :func:`reset_peak_rss`."""
    hwm = _proc_status("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``/proc/self/clear_refs`` 5); ``False`` if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def limit_address_space(limit_bytes: int) -> None:
    """Cap this process's virtual address space, so an allocation beyond it raises instead of
    the kernel's OOM killer ending some process on the machine."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, hard))


_OOM_PATTERNS = ("out of memory", "can't allocate memory", "not enough memory",
                 "cannot allocate memory", "failed to allocate", "std::bad_alloc")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (host ``MemoryError``, allocator or CUDA OOM)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(p in text for p in _OOM_PATTERNS)


class _Done(Exception):
    """Ends :func:`measure_configuration` early (the probe) through the common epilogue."""


class _StepCounter:
    """Counts the cell's forward steps (patched onto one model instance only)."""

    def __init__(self, cell: torch.nn.Module) -> None:
        self.count = 0
        inner = cell.step

        def counted(*args: Any, **kwargs: Any) -> Tensor:
            self.count += 1
            return inner(*args, **kwargs)

        cell.step = counted  # type: ignore[method-assign]


def _scaling_config(cfg: GraphSizeConfig) -> Any:
    return ScalingConfig(hidden=cfg.hidden, aggr=cfg.aggr, seed=cfg.seed, lr=cfg.lr,
                         device=cfg.device, threads=cfg.threads)


def _model(graph: BenchGraph, cfg: GraphSizeConfig, grad: str, steps: int) -> torch.nn.Module:
    """The gated node classifier of ``bench scaling`` (same builder, same seeds)."""
    k = None if grad == "bptt" else cfg.backward_iter
    return build_model(graph, _scaling_config(cfg), grad, steps, k)


def _loss(model: torch.nn.Module, graph: BenchGraph) -> Tensor:
    logits = model(graph.x, graph.edge_index)
    return F.cross_entropy(logits[graph.train_mask], graph.y[graph.train_mask])


def probe_unrolled_bytes(graph: BenchGraph, cfg: GraphSizeConfig) -> dict[str, Any]:
    """Saved bytes of BPTT at ``T = 1`` and ``T = 2`` (forward + loss only) and the line through them.

    Unrolled modes save the same tensors at every recorded step, so the bytes are
    ``base + per_step * recorded_steps``.
    """
    out: dict[str, Any] = {}
    for t in (1, 2):
        model = _model(graph, cfg, "bptt", t)
        with SavedTensorBytes() as mem:
            loss = _loss(model, graph)
        out[f"saved_bytes_T{t}"] = int(mem.bytes)
        del loss, model
    per_step = out["saved_bytes_T2"] - out["saved_bytes_T1"]
    out["per_step_bytes"] = per_step
    out["base_bytes"] = out["saved_bytes_T1"] - per_step
    return out


def recorded_steps(grad: str, steps: int, backward_iter: int) -> int:
    """Steps an unrolled mode records: ``T`` for BPTT, ``min(K, T)`` for TBPTT(K)."""
    return steps if grad == "bptt" else min(backward_iter, steps)


def predict_saved_bytes(probe: dict[str, Any] | None, grad: str, steps: int,
                        backward_iter: int) -> int | None:
    """``base + per_step * recorded steps`` from a probe; ``None`` for other modes or no probe."""
    if not probe or grad not in UNROLLED:
        return None
    return int(probe["base_bytes"] + probe["per_step_bytes"] * recorded_steps(grad, steps, backward_iter))


def measure_configuration(spec: GraphSpec | str, grad: str, cfg: GraphSizeConfig,
                          max_iter: int | None = None) -> dict[str, Any]:
    """Build the graph, then train ``grad`` at ``max_iter`` (default ``cfg.max_iter``) for up to
    ``cfg.repeats`` steps (fewer once ``cfg.step_budget_s`` is spent), in this process.

    Allocation failures are caught and returned as ``status="out_of_memory"`` with the point
    of failure; any other exception as ``status="error"``. Meant to run in a fresh subprocess
    (:func:`run_configuration`), whose peak memory is then this configuration's alone.
    """
    spec = parse_graph(spec, cfg.degree) if isinstance(spec, str) else spec
    steps = cfg.max_iter if max_iter is None else max_iter
    device = torch.device(cfg.device)
    row: dict[str, Any] = {"graph": spec.name, "grad": grad, "max_iter": steps,
                           "backward_iter": None if grad == "bptt" else cfg.backward_iter,
                           "device": str(device)}
    phase = "graph"
    counter: _StepCounter | None = None
    mem: SavedTensorBytes | None = None
    try:
        t0 = time.perf_counter()
        graph = build_graph(spec, hidden=cfg.hidden, classes=cfg.classes, seed=cfg.seed,
                            exponent=cfg.exponent, root=cfg.root,
                            device=device if device.type == "cuda" else None).to(device)
        row["graph_info"] = graph.describe()
        row["graph_build_s"] = time.perf_counter() - t0
        row["peak_rss_graph_bytes"] = peak_rss_bytes()
        if grad == PROBE:
            phase = "probe"
            row["peak_rss_reset"] = reset_peak_rss()
            t0 = time.perf_counter()
            row["probe"] = probe_unrolled_bytes(graph, cfg)
            row.update(status="ok", probe_time_s=time.perf_counter() - t0, backward_iter=None)
            raise _Done
        phase = "model"
        row["peak_rss_reset"] = reset_peak_rss()
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        model = _model(graph, cfg, grad, steps)
        counter = _StepCounter(model.conv.cell)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
        times: list[float] = []
        spent = 0.0
        while len(times) < cfg.repeats and (not times or spent < cfg.step_budget_s):
            counter.count = 0
            synchronize(device)
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            phase = "forward"
            with SavedTensorBytes() as mem:
                loss = _loss(model, graph)
                phase = "backward"
                loss.backward()
            phase = "update"
            opt.step()
            del loss
            synchronize(device)
            times.append(time.perf_counter() - t)
            spent += times[-1]
            if len(times) == 1:
                row["saved_bytes"] = int(mem.bytes)
            mem = None
        stats = model.conv.stats
        row.update(status="ok", step_time_s=statistics.median(times), step_time_min_s=min(times),
                   step_times_s=times, forward_iters=stats.forward_iters if stats else None,
                   residual=stats.residual if stats else None)
    except _Done:
        pass
    except Exception as exc:  # noqa: BLE001 - running out of memory is a result
        oom = is_out_of_memory(exc)
        row.update(status="out_of_memory" if oom else "error", failed_phase=phase,
                   error=f"{type(exc).__name__}: {str(exc)[:400]}")
        if counter is not None and phase in ("forward", "backward", "update"):
            row["failed_after_forward_steps"] = counter.count
        if mem is not None:
            row["saved_bytes_at_failure"] = int(mem.current)
            row["saved_bytes_peak_at_failure"] = int(mem.bytes)
    row["peak_rss_bytes"] = peak_rss_bytes()
    row["process_peak_rss_bytes"] = max(row["peak_rss_bytes"], row.get("peak_rss_graph_bytes") or 0)
    if device.type == "cuda":
        row["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
        row["cuda_total_bytes"] = int(torch.cuda.get_device_properties(device).total_memory)
    return row


def _worker_main(argv: Sequence[str]) -> int:
    """``python -m pyg_rbp.bench.graph_size CONFIG_JSON GRAPH GRAD STEPS OUT_JSON``."""
    cfg_json, graph, grad, steps, out = argv
    cfg = GraphSizeConfig(**json.loads(cfg_json))
    if torch.device(cfg.device).type == "cpu":
        limit_address_space(cfg.memory_limit_bytes)
    set_threads(cfg.threads)

    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    warnings.filterwarnings("ignore", category=UserWarning, module="pyg_rbp")
    row = measure_configuration(graph, grad, cfg, max_iter=int(steps))
    atomic_write_json(out, row)
    return 0


def run_configuration(spec: GraphSpec, grad: str, cfg: GraphSizeConfig, max_iter: int | None = None,
                      scratch: str | os.PathLike | None = None) -> dict[str, Any]:
    """:func:`measure_configuration` in a fresh subprocess (one thread, memory-capped on CPU).

    A subprocess that dies (a signal, a crash before writing its result) or runs past
    ``cfg.timeout_s`` gives a row with ``status`` ``killed``, ``error`` or ``timeout``.
    """
    steps = cfg.max_iter if max_iter is None else max_iter
    env = dict(os.environ)
    threads = str(cfg.threads or "")
    if threads:
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    repo = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    fd, out = tempfile.mkstemp(prefix="graph_size_", suffix=".json", dir=scratch)
    os.close(fd)
    os.unlink(out)
    cmd = [sys.executable, "-m", "pyg_rbp.bench.graph_size", json.dumps(asdict(cfg)),
           spec.name if not spec.synthetic else f"{spec.kind}:{spec.num_nodes}:{spec.num_edges}",
           grad, str(steps), out]
    base = {"graph": spec.name, "grad": grad, "max_iter": steps,
            "backward_iter": None if grad == "bptt" else cfg.backward_iter, "device": cfg.device}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=cfg.timeout_s)
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout", "error": f"ran past {cfg.timeout_s:g} s",
                "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    try:
        if os.path.exists(out):
            row = read_json(out)
            row["wall_s"] = wall
            return row
        status = "killed" if proc.returncode < 0 else "error"
        tail = (proc.stderr or "").strip().splitlines()[-8:]
        return {**base, "status": status, "returncode": proc.returncode,
                "error": " | ".join(tail)[-600:] or f"exit status {proc.returncode}", "wall_s": wall}
    finally:
        if os.path.exists(out):
            os.unlink(out)


def describe_row(row: dict[str, Any]) -> str:
    status = row.get("status")
    peak = row.get("cuda_peak_bytes") or row.get("process_peak_rss_bytes")
    if status == "ok" and row.get("probe"):
        p = row["probe"]
        return (f"probe ok, BPTT saves {human_bytes(p['per_step_bytes'])} per step + "
                f"{human_bytes(p['base_bytes'])}, peak {human_bytes(peak)}")
    if status == "ok":
        return (f"ok, saved {human_bytes(row.get('saved_bytes'))}, peak {human_bytes(peak)}, "
                f"{row['step_time_s']:.2f} s/step")
    where = row.get("failed_phase")
    steps = row.get("failed_after_forward_steps")
    at = f" in {where}" + (f" after {steps} forward steps" if steps is not None else "") if where else ""
    return f"{status}{at}: {row.get('error') or row.get('reason')}"


NOTES = [
    "One fresh subprocess per configuration (graph, mode, T); on CPU it runs under "
    "resource.setrlimit(RLIMIT_AS, memory_limit_gb), so running out of memory is a caught "
    "allocation error (status out_of_memory), not the OOM killer.",
    "saved_bytes: peak bytes of distinct tensors autograd holds for backward during one training "
    "step (forward + loss + backward; torch.autograd.graph.saved_tensors_hooks).",
    "peak_rss_bytes: peak resident set size (VmHWM) of the training steps, reset (Linux "
    "clear_refs) after the graph is built, so it includes the graph, model and optimiser; "
    "peak_rss_graph_bytes: the peak while building the graph (PCA for the real graphs); "
    "process_peak_rss_bytes: the larger of the two. cuda_peak_bytes: "
    "torch.cuda.max_memory_allocated after reset_peak_memory_stats (CUDA only).",
    "step_time_s: median over up to `repeats` training steps (forward, cross-entropy on the "
    "training nodes, backward, SGD), fewer once `step_budget_s` is spent; the first includes "
    "the saved-tensor counter.",
    "probe (bptt, tbptt), its own subprocess per graph: saved bytes of BPTT at T=1 and T=2 "
    "(forward + loss); "
    "predicted_saved_bytes = base + per_step * recorded steps (T for bptt, min(K, T) for tbptt).",
    "Model: the gated node classifier of bench scaling (GatedCell, aggr as configured, fused CSR "
    "path), features = initial state (64 channels), no forward tolerance: exactly T steps.",
]

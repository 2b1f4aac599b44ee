r"""Memory and time of one full-graph training step as the graph grows: ``pyg-rbp bench graph-size``.

``bench scaling`` asks how memory grows with the number of forward steps ``T`` on one graph;
this benchmark asks the question users with large graphs have: at ``T = 100``, ``K = 20``, how
large a graph can each gradient mode train in full-graph mode, and where does BPTT stop? For
every graph (synthetic power-law or uniform random graphs of a given size, average degree 10,
and the real Amazon / Coauthor graphs) and every mode (``bptt``, ``tbptt``, ``neumann`` by
default) it runs one configuration in a **fresh subprocess** and records

* ``saved_bytes``: the bytes autograd saves during the training step
  (:class:`~pyg_rbp.profiling.SavedTensorBytes`, peak of the saved tensors alive at once);
* the process peak memory: the peak resident set size (``VmHWM``, reset after the graph is
  built so graph generation is reported separately) and, on CUDA,
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``;
* the time of one training step (forward, cross-entropy on the training nodes, backward, SGD);
* where a mode does not fit, the point where it failed: phase (graph, forward, backward),
  forward steps done, bytes saved so far, the error. On CPU every subprocess runs under
  ``resource.setrlimit(RLIMIT_AS, memory_limit)``, so running out of memory is a caught
  ``MemoryError`` / allocator error inside that subprocess, never the kernel's OOM killer.

For the unrolled modes a probe (its own subprocess, configuration ``probe``, before the modes
of that graph) measures BPTT's saved bytes at ``T = 1`` and ``T = 2`` (forward only); they grow
linearly in the recorded steps, so the bytes at ``T`` (``bptt``) or ``K`` (``tbptt``) are
predicted, and reported beside the observed outcome. Where BPTT could not
run, the Neumann/BPTT memory ratio uses that prediction (and says so).

``largest_steps`` bisects, for one mode and graph, the largest ``T`` that still trains within
the memory limit (each try its own subprocess): the GPU script uses it for BPTT on an
ogbn-products-sized graph.

Results are written atomically after every configuration; a rerun with the same settings
skips what is finished (graphs and modes may be added), a rerun with other settings is refused
unless the old file is discarded (``fresh``).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_rbp.bench.graphs import BenchGraph, powerlaw_graph, random_graph
from pyg_rbp.profiling import SavedTensorBytes, synchronize
from pyg_rbp.results import (
    atomic_save_figure,
    atomic_write_json,
    atomic_write_text,
    environment,
    human_bytes,
    markdown_table,
    read_json,
)

SCHEMA = "pyg_rbp.bench.graph_size/1"

GRAPH_SIZE_GRADS = ("bptt", "tbptt", "neumann")
"""The modes this benchmark compares (any engine mode is accepted)."""

UNROLLED = ("bptt", "tbptt")
"""Modes whose saved bytes grow with the recorded steps (probed and predicted)."""

PROBE = "probe"
"""The configuration that measures BPTT's bytes at T=1 and T=2 on a graph (no training)."""

DEFAULT_GRAPHS = ("powerlaw:10k", "powerlaw:100k", "powerlaw:1m",
                  "amazon-computers", "amazon-photo", "coauthor-cs")

FINISHED = ("ok", "out_of_memory", "skipped")
"""Statuses a resumed run keeps (``skipped`` only while predicted failures are still skipped);
``error``, ``timeout`` and ``killed`` rows are measured again."""


# --------------------------------------------------------------------------------------------
# graphs: a registry of synthetic generators and real graphs


@dataclass(frozen=True)
class RealGraph:
    """A real graph read from the raw ``.npz`` of Shchur et al.'s release (PyG's layout)."""

    folder: str
    filename: str


SYNTHETIC: dict[str, Callable[..., BenchGraph]] = {
    "powerlaw": powerlaw_graph,
    "random": random_graph,
}
"""Synthetic generators, ``KIND:NODES[:EDGES]`` in a graph spec."""

REAL_GRAPHS: dict[str, RealGraph] = {
    "amazon-computers": RealGraph("Amazon/Computers/raw", "amazon_electronics_computers.npz"),
    "amazon-photo": RealGraph("Amazon/Photo/raw", "amazon_electronics_photo.npz"),
    "coauthor-cs": RealGraph("Coauthor/CS/raw", "ms_academic_cs.npz"),
    "coauthor-physics": RealGraph("Coauthor/Physics/raw", "ms_academic_phy.npz"),
}
"""Real graphs by name; read with numpy (``allow_pickle=False``), nothing is written."""

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([km]?)$")


def parse_size(text: str) -> int:
    """``"10k" -> 10000``, ``"2.4m" -> 2400000``, ``"13752" -> 13752``."""
    m = _SIZE.match(text.strip().lower())
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 10000, 10k, 1m)")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2)]
    if value < 1 or value != int(value):
        raise ValueError(f"not a positive whole size: {text!r}")
    return int(value)


def _short(n: int) -> str:
    for div, unit in ((10**6, "m"), (10**3, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{unit}"
    return str(n)


@dataclass(frozen=True)
class GraphSpec:
    """One graph of the benchmark: a real graph by name, or ``kind:nodes[:edges]``."""

    kind: str
    num_nodes: int | None = None
    num_edges: int | None = None

    @property
    def synthetic(self) -> bool:
        return self.kind in SYNTHETIC

    @property
    def name(self) -> str:
        """The canonical name used as the key in the JSON (``powerlaw-1m``, ``amazon-photo``)."""
        if not self.synthetic:
            return self.kind
        assert self.num_nodes is not None and self.num_edges is not None
        return f"{self.kind}-{_short(self.num_nodes)}-{_short(self.num_edges)}e"


def parse_graph(text: str, degree: int = 10) -> GraphSpec:
    """``"powerlaw:1m"`` (``degree * nodes`` edges), ``"random:100k:500k"``, ``"coauthor-cs"``."""
    key = text.strip().lower()
    if key in REAL_GRAPHS:
        return GraphSpec(key)
    parts = key.split(":")
    if parts[0] not in SYNTHETIC or len(parts) not in (2, 3):
        raise ValueError(
            f"unknown graph {text!r}: use a real graph ({', '.join(REAL_GRAPHS)}) or "
            f"KIND:NODES[:EDGES] with KIND one of {', '.join(SYNTHETIC)} (e.g. powerlaw:1m)")
    nodes = parse_size(parts[1])
    edges = parse_size(parts[2]) if len(parts) == 3 else degree * nodes
    if nodes < 2:
        raise ValueError(f"graph {text!r}: at least 2 nodes")
    return GraphSpec(parts[0], nodes, edges)


def _find_raw(real: RealGraph, root: str | os.PathLike | None) -> Path:
    from pyg_rbp.data.storage import configured_root, mirror_roots

    candidates = [configured_root(root), *mirror_roots()]
    for base in candidates:
        path = Path(base) / real.folder / real.filename
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{real.folder}/{real.filename} not found under {', '.join(str(c) for c in candidates)}")


def load_real_graph(name: str, root: str | os.PathLike | None = None, hidden: int = 64,
                    seed: int = 0, train_fraction: float = 0.1) -> BenchGraph:
    """An Amazon / Coauthor graph from its raw ``.npz``, as PyG's ``Amazon``/``Coauthor`` build it.

    Self-loops are removed and the graph made undirected (PyG's ``read_npz``); the bag-of-words
    features are reduced to ``hidden`` dimensions by PCA (:func:`pyg_rbp.data.pca_features`, as
    the paper protocol does for Cora), so the features are the cell's initial state; a seeded
    random ``train_fraction`` of the nodes is the training set. Read with
    ``numpy.load(allow_pickle=False)``: nothing is unpickled, nothing is written.
    """
    import numpy as np
    from torch_geometric.utils import remove_self_loops, to_undirected

    from pyg_rbp.data import pca_features

    real = REAL_GRAPHS.get(name)
    if real is None:
        raise ValueError(f"unknown real graph {name!r}; choose one of {', '.join(REAL_GRAPHS)}")
    path = _find_raw(real, root)
    with np.load(path, allow_pickle=False) as z:
        n = int(z["adj_shape"][0])
        indptr, indices = z["adj_indptr"].astype(np.int64), z["adj_indices"].astype(np.int64)
        row = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        x = torch.sparse_csr_tensor(torch.from_numpy(z["attr_indptr"].astype(np.int64)),
                                    torch.from_numpy(z["attr_indices"].astype(np.int64)),
                                    torch.from_numpy(z["attr_data"].astype(np.float32)),
                                    size=tuple(int(s) for s in z["attr_shape"]))
        y = torch.from_numpy(z["labels"].astype(np.int64))
    edge_index = torch.from_numpy(np.stack([row, indices]))
    edge_index, _ = remove_self_loops(edge_index)
    edge_index = to_undirected(edge_index, num_nodes=n)
    width = int(x.size(1))
    x = pca_features(x.to_dense(), hidden, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    train_mask = torch.zeros(n, dtype=torch.bool)
    train_mask[perm[: max(1, int(train_fraction * n))]] = True
    return BenchGraph(name, x, edge_index, y, train_mask, int(y.max()) + 1,
                      {"features": f"PCA-{hidden} of {width} bag-of-words features",
                       "source": str(path.name)})


def build_graph(spec: GraphSpec, *, hidden: int = 64, classes: int = 7, seed: int = 0,
                exponent: float = 2.5, root: str | os.PathLike | None = None,
                device: torch.device | str | None = None) -> BenchGraph:
    """The graph of ``spec`` with ``hidden``-wide features (the cell's initial state).

    Power-law graphs are drawn on ``device`` (default CPU); the others are built on the CPU.
    """
    if spec.synthetic:
        assert spec.num_nodes is not None and spec.num_edges is not None
        kwargs: dict[str, Any] = {"exponent": exponent, "device": device} if spec.kind == "powerlaw" else {}
        g = SYNTHETIC[spec.kind](spec.num_nodes, spec.num_edges, hidden, classes, seed, **kwargs)
    else:
        g = load_real_graph(spec.kind, root=root, hidden=hidden, seed=seed)
    g.name = spec.name
    return g


# --------------------------------------------------------------------------------------------
# settings


@dataclass
class GraphSizeConfig:
    """Everything that defines one graph-size run (and decides whether saved rows are reused)."""

    graphs: list[str] = field(default_factory=lambda: list(DEFAULT_GRAPHS))
    grads: list[str] = field(default_factory=lambda: list(GRAPH_SIZE_GRADS))
    steps: int = 100
    backward_iter: int = 20
    hidden: int = 64
    degree: int = 10
    classes: int = 7
    exponent: float = 2.5
    aggr: str = "mean"
    repeats: int = 3
    step_budget_s: float = 60.0
    memory_limit_gb: float = 8.0
    predict: bool = True
    skip_predicted_oom: bool = False
    device: str = "cpu"
    threads: int | None = 1
    seed: int = 0
    lr: float = 1e-3
    root: str | None = None
    jobs: int = 1
    timeout_s: float = 3600.0

    def validate(self) -> None:
        from pyg_rbp.engine import GRAD_MODES

        if not self.graphs:
            raise ValueError("no graph given")
        for g in self.graphs:
            parse_graph(g, self.degree)
        unknown = [g for g in self.grads if g not in GRAD_MODES]
        if unknown or not self.grads:
            raise ValueError(f"unknown gradient modes {unknown or self.grads}; "
                             f"valid: {', '.join(GRAD_MODES)}")
        for name in ("steps", "backward_iter", "hidden", "degree", "classes", "repeats", "jobs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.jobs > 2:
            raise ValueError(f"jobs must be 1 or 2 (configurations share the machine), got {self.jobs}")
        if not self.memory_limit_gb > 0:
            raise ValueError(f"memory_limit_gb must be positive, got {self.memory_limit_gb!r}")
        if not self.step_budget_s > 0 or not self.timeout_s > 0:
            raise ValueError("step_budget_s and timeout_s must be positive")
        if self.aggr not in ("add", "mean"):
            raise ValueError(f"aggr must be 'add' or 'mean', got {self.aggr!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not self.exponent > 2:
            raise ValueError(f"exponent must be > 2, got {self.exponent!r}")

    def specs(self) -> list[GraphSpec]:
        return [parse_graph(g, self.degree) for g in self.graphs]

    def fingerprint(self) -> dict[str, Any]:
        """The settings every saved row depends on (graphs and modes may be added on resume)."""
        keys = ("steps", "backward_iter", "hidden", "degree", "classes", "exponent", "aggr",
                "repeats", "step_budget_s", "memory_limit_gb", "predict", "device", "threads",
                "seed", "lr")
        return {k: getattr(self, k) for k in keys}

    @property
    def memory_limit_bytes(self) -> int:
        return int(self.memory_limit_gb * 2**30)


# --------------------------------------------------------------------------------------------
# inside the subprocess: one configuration


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
    from pyg_rbp.bench.scaling import ScalingConfig

    return ScalingConfig(hidden=cfg.hidden, aggr=cfg.aggr, seed=cfg.seed, lr=cfg.lr,
                         device=cfg.device, threads=cfg.threads)


def _model(graph: BenchGraph, cfg: GraphSizeConfig, grad: str, steps: int) -> torch.nn.Module:
    """The gated node classifier of ``bench scaling`` (same builder, same seeds)."""
    from pyg_rbp.bench.scaling import build_model

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
                          steps: int | None = None) -> dict[str, Any]:
    """Build the graph, then train ``grad`` at ``steps`` (default ``cfg.steps``) for up to
    ``cfg.repeats`` steps (fewer once ``cfg.step_budget_s`` is spent), in this process.

    Allocation failures are caught and returned as ``status="out_of_memory"`` with the point
    of failure; any other exception as ``status="error"``. Meant to run in a fresh subprocess
    (:func:`run_configuration`), whose peak memory is then this configuration's alone.
    """
    spec = parse_graph(spec, cfg.degree) if isinstance(spec, str) else spec
    steps = cfg.steps if steps is None else steps
    device = torch.device(cfg.device)
    row: dict[str, Any] = {"graph": spec.name, "grad": grad, "steps": steps,
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
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    import warnings

    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    warnings.filterwarnings("ignore", category=UserWarning, module="pyg_rbp")
    row = measure_configuration(graph, grad, cfg, steps=int(steps))
    atomic_write_json(out, row)
    return 0


def run_configuration(spec: GraphSpec, grad: str, cfg: GraphSizeConfig, steps: int | None = None,
                      scratch: str | os.PathLike | None = None) -> dict[str, Any]:
    """:func:`measure_configuration` in a fresh subprocess (one thread, memory-capped on CPU).

    A subprocess that dies (a signal, a crash before writing its result) or runs past
    ``cfg.timeout_s`` gives a row with ``status`` ``killed``, ``error`` or ``timeout``.
    """
    import tempfile

    steps = cfg.steps if steps is None else steps
    env = dict(os.environ)
    threads = str(cfg.threads or "")
    if threads:
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    fd, out = tempfile.mkstemp(prefix="graph_size_", suffix=".json", dir=scratch)
    os.close(fd)
    os.unlink(out)
    cmd = [sys.executable, "-m", "pyg_rbp.bench.graph_size", json.dumps(asdict(cfg)),
           spec.name if not spec.synthetic else f"{spec.kind}:{spec.num_nodes}:{spec.num_edges}",
           grad, str(steps), out]
    base = {"graph": spec.name, "grad": grad, "steps": steps,
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


# --------------------------------------------------------------------------------------------
# the run: configurations, resume, largest T


def _key(graph: str, grad: str, steps: int) -> str:
    return f"{graph}|{grad}|{steps}"


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


class GraphSizeRun:
    """The benchmark: every ``(graph, grad)`` configuration in its own subprocess, then the
    optional largest-``T`` bisections, then the target verdicts.

    ``run()`` measures what is missing, writes ``json_path`` after every configuration and
    returns the result. An existing file written with other settings raises ``ValueError``
    (pass ``fresh=True`` to discard it).
    """

    def __init__(self, cfg: GraphSizeConfig, json_path: str | os.PathLike | None = None, *,
                 largest_steps: Sequence[str] = (), largest_steps_graphs: Sequence[str] = (),
                 fresh: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print,
                 runner: Callable[..., dict[str, Any]] = run_configuration) -> None:
        cfg.validate()
        self.cfg = cfg
        self.json_path = Path(json_path) if json_path is not None else None
        self.largest_steps = list(largest_steps)
        bad = [g for g in self.largest_steps if g not in UNROLLED and g not in cfg.grads]
        if bad:
            raise ValueError(f"largest_steps modes {bad} are not measured here")
        self.largest_steps_graphs = [parse_graph(g, cfg.degree).name for g in largest_steps_graphs]
        self.progress, self.log, self.runner = progress, log, runner
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device cuda requested but torch.cuda.is_available() is False")
        self.rows: dict[str, dict[str, Any]] = {}
        self.tries: dict[str, dict[str, Any]] = {}
        self.loads: list[dict[str, Any]] = []
        if self.json_path is not None and self.json_path.is_file() and not fresh:
            self._resume(read_json(self.json_path))
        self._lock = threading.Lock()
        self.started = time.time()

    def _resume(self, old: dict[str, Any]) -> None:
        if old.get("schema") != SCHEMA:
            raise ValueError(f"{self.json_path} is not a graph-size result ({old.get('schema')!r}); "
                             "pass --fresh to overwrite it or choose another --json")
        mine = _jsonable(self.cfg.fingerprint())
        theirs = old.get("fingerprint") or {}
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            shown = ", ".join(f"{k}: saved {theirs.get(k)!r}, now {mine.get(k)!r}" for k in diff)
            raise ValueError(f"{self.json_path} was measured with other settings ({shown}); "
                             "pass --fresh to discard it or choose another --json")
        finished = [s for s in FINISHED if s != "skipped" or self.cfg.skip_predicted_oom]
        self.rows = {_key(r["graph"], r["grad"], r["steps"]): r for r in old.get("results", [])
                     if r.get("status") in finished}
        self.tries = {_key(r["graph"], r["grad"], r["steps"]): r
                      for ls in old.get("largest_steps", []) for r in ls.get("tries", [])
                      if r.get("status") in finished}
        self.loads = list(old.get("machine_load", []))

    # -- output ---------------------------------------------------------------------------------

    def configurations(self) -> list[tuple[GraphSpec, str]]:
        """Every ``(graph, grad)`` to run; a graph's probe (unrolled modes) comes first."""
        probe = self.cfg.predict and any(g in UNROLLED for g in self.cfg.grads)
        return [(spec, grad) for spec in self.cfg.specs()
                for grad in ([PROBE] if probe else []) + list(self.cfg.grads)]

    def result(self, complete: bool) -> dict[str, Any]:
        order = {(s.name, g): i for i, (s, g) in enumerate(self.configurations())}
        rows = sorted(self.rows.values(),
                      key=lambda r: (order.get((r["graph"], r["grad"]), len(order)), r["steps"]))
        probes = {r["graph"]: r["probe"] for r in rows if r["grad"] == PROBE and r.get("probe")}
        for r in [*rows, *self.tries.values()]:
            predicted = predict_saved_bytes(probes.get(r["graph"]), r["grad"], r["steps"],
                                            self.cfg.backward_iter)
            if predicted is not None:
                r["predicted_saved_bytes"] = predicted
        out = {
            "schema": SCHEMA,
            "complete": complete,
            "fingerprint": self.cfg.fingerprint(),
            "config": asdict(self.cfg),
            "environment": environment(self.cfg.device),
            "machine_load": self.loads,
            "results": rows,
            "largest_steps": self._largest_summary(),
            "notes": NOTES,
        }
        out["targets"] = verdicts(out)
        return out

    def save(self, complete: bool = False) -> dict[str, Any]:
        with self._lock:
            result = self.result(complete)
            if self.json_path is not None:
                atomic_write_json(self.json_path, result)
        return result

    # -- measuring ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        from pyg_rbp.bench.scaling import machine_load

        self.loads.append({"when": "start", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           **machine_load()})
        todo = [(s, g) for s, g in self.configurations() if _key(s.name, g, self.cfg.steps) not in self.rows]
        bar = tqdm(total=len(todo), desc="bench graph-size", unit="config", disable=not self.progress)

        def one(item: tuple[GraphSpec, str]) -> None:
            spec, grad = item
            row = self._skip_predicted(spec, grad, self.cfg.steps) or self.runner(spec, grad, self.cfg)
            with self._lock:
                self.rows[_key(spec.name, grad, self.cfg.steps)] = row
            self.save()
            self.log(f"[graph-size] {spec.name} {grad}: {_describe(row)}")
            bar.update()

        # Probes first (the predictions, and --skip-predicted-oom, need them), then the modes.
        for batch in ([c for c in todo if c[1] == PROBE], [c for c in todo if c[1] != PROBE]):
            if self.cfg.jobs > 1:
                with ThreadPoolExecutor(self.cfg.jobs) as pool:
                    list(pool.map(one, batch))
            else:
                for item in batch:
                    one(item)
        bar.close()
        for grad in self.largest_steps:
            for spec in self.cfg.specs():
                if not self.largest_steps_graphs or spec.name in self.largest_steps_graphs:
                    self._bisect(spec, grad)
        self.loads.append({"when": "end", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "elapsed_s": time.time() - self.started, **machine_load()})
        return self.save(complete=True)

    def _skip_predicted(self, spec: GraphSpec, grad: str, steps: int) -> dict[str, Any] | None:
        """A ``skipped`` row when ``skip_predicted_oom`` is set and the probe predicts that
        ``grad`` needs more than the limit on the CPU; else ``None`` (run it)."""
        cfg = self.cfg
        if not cfg.skip_predicted_oom or grad not in UNROLLED or not cfg.device.startswith("cpu"):
            return None
        probe_row = self.rows.get(_key(spec.name, PROBE, cfg.steps)) or {}
        predicted = predict_saved_bytes(probe_row.get("probe"), grad, steps, cfg.backward_iter)
        graph_bytes = probe_row.get("peak_rss_graph_bytes") or 0
        if predicted is None or predicted + graph_bytes <= cfg.memory_limit_bytes:
            return None
        return {"graph": spec.name, "grad": grad, "steps": steps,
                "backward_iter": None if grad == "bptt" else cfg.backward_iter, "device": cfg.device,
                "graph_info": probe_row.get("graph_info"), "status": "skipped",
                "reason": f"predicted saved bytes plus the graph exceed the "
                          f"{cfg.memory_limit_gb:g} GiB limit"}

    def _try(self, spec: GraphSpec, grad: str, steps: int) -> dict[str, Any]:
        key = _key(spec.name, grad, steps)
        if key not in self.tries:
            if key in self.rows:
                self.tries[key] = self.rows[key]
            else:
                row = (self._skip_predicted(spec, grad, steps)
                       or self.runner(spec, grad, self.cfg, steps=steps))
                with self._lock:
                    self.tries[key] = row
                self.save()
                self.log(f"[graph-size] largest T of {grad} on {spec.name}: T={steps} {_describe(row)}")
        return self.tries[key]

    def _bisect(self, spec: GraphSpec, grad: str) -> None:
        """Largest ``T`` in ``[1, cfg.steps]`` at which ``grad`` trains within the limit."""
        top = self._try(spec, grad, self.cfg.steps)
        if top.get("status") == "ok":
            return
        lo, hi = 0, self.cfg.steps  # ok at lo (0: none yet), fails at hi
        # A forward that ran out of memory at step s fails for every T >= s (the first s steps
        # are the same computation whatever T): start the search below s.
        if top.get("failed_phase") == "forward" and top.get("failed_after_forward_steps"):
            hi = max(1, min(hi, int(top["failed_after_forward_steps"])))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._try(spec, grad, mid).get("status") == "ok":
                lo = mid
            else:
                hi = mid

    def _largest_summary(self) -> list[dict[str, Any]]:
        out = []
        for grad in self.largest_steps:
            for spec in self.cfg.specs():
                if self.largest_steps_graphs and spec.name not in self.largest_steps_graphs:
                    continue
                tries = sorted((r for r in self.tries.values()
                                if r["graph"] == spec.name and r["grad"] == grad), key=lambda r: r["steps"])
                if not tries:
                    continue
                ok = [r["steps"] for r in tries if r.get("status") == "ok"]
                bad = [r["steps"] for r in tries if r.get("status") != "ok"]
                # a forward that failed at step s shows that T = s fails too
                bad += [int(r["failed_after_forward_steps"]) for r in tries
                        if r.get("failed_phase") == "forward" and r.get("failed_after_forward_steps")]
                largest = max(ok) if ok else 0
                done = largest == self.cfg.steps or (bool(bad) and min(bad) == largest + 1)
                out.append({"graph": spec.name, "grad": grad, "largest_steps": largest,
                            "first_failing_steps": min(bad) if bad else None,
                            "at_least": largest == self.cfg.steps, "complete": done,
                            "searched_up_to": self.cfg.steps, "tries": tries})
        return out


def _describe(row: dict[str, Any]) -> str:
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


# --------------------------------------------------------------------------------------------
# targets and reports


def _row(result: dict[str, Any], graph: str, grad: str) -> dict[str, Any] | None:
    steps = result["config"]["steps"]
    for r in result["results"]:
        if r["graph"] == graph and r["grad"] == grad and r["steps"] == steps:
            return r
    return None


def bptt_bytes(row: dict[str, Any] | None) -> tuple[int | None, str]:
    """BPTT's saved bytes: measured if it ran, else the prediction; and which of the two."""
    if row is None:
        return None, "-"
    if row.get("status") == "ok" and row.get("saved_bytes"):
        return int(row["saved_bytes"]), "measured"
    if row.get("predicted_saved_bytes"):
        return int(row["predicted_saved_bytes"]), "predicted"
    return None, "-"


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets: Neumann/BPTT saved bytes <= 1/50 on every graph; Neumann trains the
    largest synthetic graph under the memory limit where BPTT cannot."""
    cfg = result["config"]
    graphs = [parse_graph(g, cfg["degree"]) for g in cfg["graphs"]]
    out: list[dict[str, Any]] = []
    for spec in graphs:
        n, b = _row(result, spec.name, "neumann"), _row(result, spec.name, "bptt")
        bb, how = bptt_bytes(b)
        nb = n.get("saved_bytes") if n and n.get("status") == "ok" else None
        value = None if nb is None or not bb else nb / bb
        out.append({"target": f"neumann/bptt saved bytes on {spec.name} (T={cfg['steps']}, "
                              f"K={cfg['backward_iter']})",
                    "value": value, "bound": 1 / 50,
                    "pass": None if value is None else bool(value <= 1 / 50),
                    "how": f"bptt {how}"})
    synthetic = [s for s in graphs if s.synthetic]
    if synthetic:
        big = max(synthetic, key=lambda s: s.num_nodes or 0)
        n, b = _row(result, big.name, "neumann"), _row(result, big.name, "bptt")
        if n is not None:
            cuda = n.get("cuda_peak_bytes") is not None
            # On CUDA the limit is the device's memory (RLIMIT_AS is not applied there).
            limit_gb = (n.get("cuda_total_bytes") or 0) / 2**30 if cuda else cfg["memory_limit_gb"]
            what = f"the device's {limit_gb:.0f} GiB" if cuda else f"{limit_gb:g} GiB"
            peak = n.get("cuda_peak_bytes") if cuda else n.get("process_peak_rss_bytes")
            ok = n.get("status") == "ok"
            b_fails = None if b is None else b.get("status") != "ok"
            value = None if peak is None else peak / 2**30
            out.append({"target": f"neumann trains {big.name} at T={cfg['steps']} with "
                                  f"{'CUDA' if cuda else 'process'} peak (GiB) < {what}",
                        "value": value, "bound": limit_gb,
                        "pass": None if peak is None else bool(ok and value < limit_gb),
                        "how": f"neumann status {n.get('status')}"})
            if b is not None:
                out.append({"target": f"bptt cannot fit {big.name} at T={cfg['steps']} within {what}",
                            "value": None, "bound": None, "pass": b_fails,
                            "how": f"bptt {_describe(b)}"[:300]})
    return out


def _gib(v: Any) -> float | None:
    return None if v is None else v / 2**30


def markdown_report(result: dict[str, Any]) -> str:
    """Markdown: settings, the target verdicts, every configuration, the largest-T searches."""
    cfg, env = result["config"], result.get("environment") or {}
    lines = ["# Graph-size benchmark: full-graph training step vs number of nodes", "",
             f"T={cfg['steps']} forward steps, K={cfg['backward_iter']} (tbptt truncation, neumann "
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
        bb, how = bptt_bytes(_row(result, r["graph"], "bptt"))
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
        tries = ", ".join(f"T={t['steps']} {t.get('status')}" for t in ls["tries"])
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

    cfg = result["config"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = {"bptt": "tab:red", "tbptt": "tab:orange", "neumann": "tab:blue"}
    for i, grad in enumerate(cfg["grads"]):
        color = colors.get(grad, f"C{i + 3}")
        rows = [r for r in result["results"] if r["grad"] == grad and r["steps"] == cfg["steps"]
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
    fig.suptitle(f"full-graph training step, T={cfg['steps']}, K={cfg['backward_iter']}, "
                 f"{cfg['hidden']} channels, limit {cfg['memory_limit_gb']:g} GiB "
                 f"({env.get('device_name')}, {cfg.get('threads')} thread(s))", fontsize=10)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=110)


def write_reports(result: dict[str, Any], json_path: str | os.PathLike) -> tuple[Path, Path]:
    """Markdown table and PNG next to the JSON (same stem, ``.md`` and ``.png``)."""
    json_path = Path(json_path)
    md = atomic_write_text(json_path.with_suffix(".md"), markdown_report(result))
    png = plot(result, json_path.with_suffix(".png"))
    return md, png


def check_outputs(json_path: str | os.PathLike) -> None:
    """Fail before any work if the JSON, markdown or PNG cannot be written."""
    json_path = Path(json_path)
    folder = json_path.parent if str(json_path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write results to {folder}")
    for p in (json_path, json_path.with_suffix(".md"), json_path.with_suffix(".png")):
        if p.exists() and not os.access(p, os.W_OK):
            raise ValueError(f"cannot overwrite {p}")


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))

"""The dataset leaderboard: a resumable matrix of models x gradient modes x seeds, and its board.

:func:`plan` lists the rows to run for each dataset (the paper protocol's five gradient modes and
linear-PCA baseline, the public split's best fixed-point model and GCN, graph datasets' fixed-
point model and GIN); :func:`run` trains every (row, seed) cell that is not finished yet and
writes each one atomically under ``results/cells/``, so an interrupted run loses nothing and a
rerun repeats nothing; :func:`render` aggregates the cells into ``results/leaderboard.json``
(machine-readable rows, each with the ``pyg-rbp train`` command that reproduces it),
``LEADERBOARD.md`` and a PNG. Nothing on the board is typed in: every number is read back from
the cells, and a row that could not run says why.

Budget profiles: ``full`` runs every row with the protocol's own settings and every seed;
``cpu`` shortens the secondary rows (fewer seeds for the other gradient modes of the public
split, fewer epochs and seeds for the molecules) and keeps the paper protocol whole, whose seeds
take many hours on a small CPU: a run cut short shows "partial: k of 10 seeds". The board
records the seeds and epochs each row actually ran. ``jobs`` trains several cells at once.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyg_rbp.engine import GRAD_MODES
from pyg_rbp.results import atomic_save_figure, try_lock
from pyg_rbp.training import tu_board
from pyg_rbp.training.config import PLANETOID, PROTOCOLS, SHCHUR, TrainConfig, build_config, dataset_task
from pyg_rbp.training.runner import diverged_seeds, mean_std

DEFAULT_DATASETS: tuple[str, ...] = ("cora", "citeseer", "pubmed", "ogbg-molbace", "ogbg-molesol",
                                     "ogbn-arxiv")
PROFILES: tuple[str, ...] = ("full", "cpu")
UNAVAILABLE = "not run: data unavailable offline"

# The `cpu` profile (what fits on a shared 2-core CPU, over several working sessions) shortens the
# secondary rows. The paper rows keep the protocol's 2000 SGD steps and every seed: they are the
# issue's target, so the board shows how many of them have finished ("partial: k of 10 seeds")
# rather than a smaller plan (one seed of the five modes costs about an hour per dataset here).
CPU_SECONDARY_SEEDS = 3
CPU_GRAPH_EPOCHS = 30
CPU_GRAPH_SEEDS = 3
# Per-class protocol (Amazon, Coauthor; issue 17): Coauthor CS (6,805 dense features) costs about
# 1.4 s per full-graph epoch on one busy core, so the cpu profile gives it 3 seeds and no
# IGNN-style row (about 3x dearer); Amazon Photo and Computers run every row with every seed.
CPU_PER_CLASS_SEEDS = {"coauthor-cs": 3, "coauthor-physics": 3}

# The `full` profile trains the molecules as OGB's own examples do: 100 epochs, the model of the
# best validation epoch (no early stopping).
FULL_GRAPH: dict[str, Any] = {"epochs": 100, "patience": 0}


@dataclass
class Entry:
    """One leaderboard row to run: a config, the seeds it gets, and why it deviates (if it does)."""

    config: TrainConfig
    seeds: list[int]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Short hash of the reproducing command: cells of a changed config never mix."""
        return hashlib.sha1(self.config.command().encode()).hexdigest()[:10]

    def cell_path(self, cells_dir: Path, seed: int) -> Path:
        c = self.config
        name = f"{c.protocol}__{c.model}__{c.grad or 'none'}__{self.key}__seed{seed}.json"
        return cells_dir / c.dataset / name


def _seeds(n: int, cap: int | None = None) -> list[int]:
    return list(range(min(n, cap) if cap else n))


def plan(datasets: Sequence[str], seeds: int = 10, profile: str = "cpu",
         protocols: Sequence[str] | None = None) -> list[Entry]:
    """The leaderboard rows of ``datasets`` with ``seeds`` seeds under a budget ``profile``
    (only the rows of ``protocols`` when given).

    Raises :class:`ValueError` on an unknown protocol, and when the selection leaves no row
    (a board with nothing to run is a mistake, not a success)."""
    entries = _plan(list(dict.fromkeys(d.strip().lower() for d in datasets)), seeds, profile)
    if protocols is not None:
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown:
            raise ValueError(f"unknown protocol(s) {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(PROTOCOLS)}")
        entries = [e for e in entries if e.config.protocol in protocols]
    if not entries:
        raise ValueError(f"no leaderboard row for datasets {', '.join(datasets)}"
                         + (f" under protocol(s) {', '.join(protocols)}" if protocols else ""))
    return entries


def _plan(datasets: Sequence[str], seeds: int, profile: str) -> list[Entry]:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    cpu = profile == "cpu"
    entries: list[Entry] = []
    for name in datasets:
        name = name.strip().lower()
        task = dataset_task(name)
        if name in PLANETOID:
            # paper protocol: gated GNN in the five modes + the linear-PCA baseline
            for g in GRAD_MODES:
                entries.append(Entry(build_config(name, task, protocol="paper", model="gated", grad=g),
                                     _seeds(seeds)))
            entries.append(Entry(build_config(name, task, protocol="paper", model="linear-pca"),
                                 _seeds(seeds)))
            # public split: APPNP-style fixed point (Neumann-RBP) vs GCN, plus other modes
            entries.append(Entry(build_config(name, task, protocol="public", model="ppr", grad="neumann"),
                                 _seeds(seeds)))
            other = ["bptt"] if cpu else [g for g in GRAD_MODES if g != "neumann"]
            for g in other:
                s = _seeds(seeds, CPU_SECONDARY_SEEDS) if cpu else _seeds(seeds)
                entries.append(Entry(build_config(name, task, protocol="public", model="ppr", grad=g), s,
                                     f"cpu budget: {len(s)} of {seeds} seeds"
                                     if cpu and len(s) < seeds else ""))
            entries.append(Entry(build_config(name, task, protocol="public", model="gcn"), _seeds(seeds)))
        elif name.startswith("tu-"):  # TU graph classification, 10-fold (pyg_rbp.training.tu_board)
            entries.extend(tu_board.tu_entries(name, seeds, cpu))
        elif name in SHCHUR:
            entries.extend(_per_class_rows(name, task, seeds, cpu))
        elif task == "graph":
            over: dict[str, Any] = {"epochs": CPU_GRAPH_EPOCHS} if cpu else dict(FULL_GRAPH)
            s = _seeds(seeds, CPU_GRAPH_SEEDS) if cpu else _seeds(seeds)
            note = (f"cpu budget: {CPU_GRAPH_EPOCHS} epochs, {len(s)} of {seeds} seeds (same for every row)"
                    if cpu else "")
            entries.append(Entry(build_config(name, task, model="gated", grad="neumann", **over), s, note))
            entries.append(Entry(build_config(name, task, model="gin", **over), s, note))
            entries.append(Entry(build_config(name, task, model="gcn", **over), s, note))
        else:
            entries.append(Entry(build_config(name, task, model="ppr", grad="neumann"), _seeds(seeds)))
            entries.append(Entry(build_config(name, task, model="gcn"), _seeds(seeds)))
    return entries


def _per_class_rows(name: str, task: str, seeds: int, cpu: bool) -> list[Entry]:
    """Per-class protocol rows: the fixed-point models with Neumann-RBP (APPNP-style ``ppr``
    solved to its limit, IGNN-style ``implicit``) against GCN and APPNP (K = 10) baselines."""
    cap = CPU_PER_CLASS_SEEDS.get(name) if cpu else None
    s = _seeds(seeds, cap)
    note = f"cpu budget: {len(s)} of {seeds} seeds (same for every row)" if len(s) < seeds else ""
    models = [("ppr", "neumann"), ("implicit", "neumann"), ("gcn", None), ("appnp", None)]
    if cpu and cap is not None:
        models.remove(("implicit", "neumann"))
    return [Entry(build_config(name, task, protocol="per-class", model=m, grad=g), s, note)
            for m, g in models]


def _expected_metric(dataset: str) -> str:
    """The metric of a dataset that could not be loaded (OGB's master table for ogbg/ogbn)."""
    if dataset.startswith("ogb"):
        try:
            import os

            import pandas as pd

            kind = "graphproppred" if dataset.startswith("ogbg") else "nodeproppred"
            mod = __import__(f"ogb.{kind}", fromlist=["x"])
            master = pd.read_csv(os.path.join(os.path.dirname(mod.__file__), "master.csv"), index_col=0,
                                 keep_default_na=False)
            return {"ROC-AUC": "rocauc", "rmse": "rmse", "Accuracy": "acc", "AP": "ap"}.get(
                master[dataset]["eval metric"], master[dataset]["eval metric"].lower())
        except Exception:  # noqa: BLE001 - only used to label a row that did not run
            return "?"
    return "acc"


class CellFailed(RuntimeError):
    """Cells of a leaderboard run raised; ``failures`` maps each cell's label to its error."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        lines = "\n".join(f"  {label}: {type(err).__name__}: {err}" for label, err in failures.items())
        super().__init__(f"{len(failures)} leaderboard cell(s) failed (finished cells are saved):\n{lines}")


def run(entries: Sequence[Entry], out_dir: str | Path, *, device: str = "cpu",
        root: str | Path | None = None, progress: bool = True,
        on_cell: Callable[[], None] | None = None, log: Callable[[str], None] = print,
        jobs: int = 1, threads: int | None = None, keep_going: bool = False) -> dict[str, int]:
    """Train every unfinished (entry, seed) cell; each result is written atomically when done.

    Returns counts ``{"run", "skipped", "unavailable"}``. A cell whose file exists (same
    command, same seed) is skipped, and each cell's file is checked again just before it starts,
    so several runs sharing one results folder skip what the others finished meanwhile.
    Datasets whose files are missing are skipped with a note.

    With ``jobs > 1`` the cells run in that many worker processes (``threads`` torch threads
    each; default: the usable cores divided among the workers), started in the same
    breadth-first order. A cell that raises stops the run: no new cell starts, the cells in
    flight finish and are saved, then :class:`CellFailed` is raised. With ``keep_going`` the other
    cells still run and :class:`CellFailed` lists every failure at the end. An interrupt
    (Ctrl-C) stops the workers at once; only the cells in flight are lost.
    """
    from tqdm.auto import tqdm

    from pyg_rbp.data import DataUnavailableError
    from pyg_rbp.training.runner import load_dataset

    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    cells_dir = Path(out_dir) / "cells"
    todo = [(e, s) for e in entries for s in e.seeds if not e.cell_path(cells_dir, s).is_file()]
    # Breadth first, so that a run cut short still covers every row: seed 0 of every row before
    # seed 1 of any; within a seed the baselines, then Neumann-RBP, then BPTT, then the rest.
    rank = {None: 0, "neumann": 1, "bptt": 2}
    todo.sort(key=lambda es: (es[1], rank.get(es[0].config.grad, 3)))
    counts = {"run": 0, "skipped": sum(len(e.seeds) for e in entries) - len(todo), "unavailable": 0}
    if counts["skipped"]:
        log(f"leaderboard: {counts['skipped']} finished cell(s) found, skipped")
    # Load every dataset once here: finds the unavailable ones, and processes each dataset's files
    # before any worker reads them (PyG/OGB write `processed/` non-atomically).
    loaded: dict[str, Any] = {}
    for name in dict.fromkeys(e.config.dataset for e, _ in todo):
        try:
            loaded[name] = load_dataset(name, root)
        except DataUnavailableError as err:
            log(f"leaderboard: {name}: {UNAVAILABLE} ({str(err).splitlines()[0]})")
    runnable = [(e, s) for e, s in todo if e.config.dataset in loaded]
    counts["unavailable"] = len(todo) - len(runnable)
    failures: dict[str, BaseException] = {}
    bar = tqdm(total=len(runnable), desc="leaderboard cells", disable=not progress, dynamic_ncols=True)

    def finished(entry: Entry, seed: int, outcome: bool | BaseException) -> bool:
        """Book one cell; whether to start more cells."""
        bar.update()
        bar.set_postfix_str(_cell_label(entry, seed))
        if isinstance(outcome, BaseException):
            failures[_cell_label(entry, seed)] = outcome
            log(f"leaderboard: {_cell_label(entry, seed)} failed: {type(outcome).__name__}: {outcome}")
            return keep_going
        counts["run" if outcome else "skipped"] += 1
        if outcome and on_cell is not None:
            on_cell()
        return True

    try:
        if jobs == 1 or len(runnable) <= 1:
            for entry, seed in runnable:
                bar.set_postfix_str(_cell_label(entry, seed))
                try:
                    outcome: bool | BaseException = _train_cell(
                        entry, seed, cells_dir, loaded[entry.config.dataset], device, progress, jobs=1)
                except Exception as err:  # noqa: BLE001 - booked, re-raised below as CellFailed
                    outcome = err
                if not finished(entry, seed, outcome):
                    break
        elif runnable:
            _run_parallel(runnable, cells_dir, jobs=min(jobs, len(runnable)), threads=threads,
                          device=device, root=root, finished=finished)
    finally:
        bar.close()
    if failures:
        raise CellFailed(failures) from next(iter(failures.values()))
    return counts


def _cell_label(entry: Entry, seed: int) -> str:
    c = entry.config
    return f"{c.dataset}/{c.protocol}/{c.model}/{c.grad or '-'}/s{seed}"


def _train_cell(entry: Entry, seed: int, cells_dir: Path, loaded: Any, device: str,
                progress: bool, jobs: int) -> bool:
    """Train one cell and write its JSON atomically; False (nothing done) when the cell was
    finished meanwhile, or is being trained right now, by another process sharing the results
    folder."""
    path = entry.cell_path(cells_dir, seed)
    if path.is_file():
        return False
    # The cell lock: of several runs sharing the results folder, one trains the cell; the others
    # skip it (it is finished by the holder). Checked again under the lock: it may just have been.
    with try_lock(path.with_name(path.name + ".lock")) as mine:
        if not mine or path.is_file():
            return False
        _train_locked_cell(entry, seed, path, loaded, device, progress, jobs)
    return True


def _train_locked_cell(entry: Entry, seed: int, path: Path, loaded: Any, device: str,
                       progress: bool, jobs: int) -> None:
    import os

    from pyg_rbp.results import atomic_write_json, environment
    from pyg_rbp.training import runner

    cfg = entry.config
    t0 = time.perf_counter()
    row = runner.run_one(cfg, loaded, seed, device=device, progress=progress)
    atomic_write_json(path, {
        "command": cfg.command(), "config": cfg.as_dict(), "seed": seed, "result": row,
        "wall_s": time.perf_counter() - t0, "env": environment(device),
        # cells trained side by side share the machine: their times are not a lone run's
        "jobs": jobs, "pid": os.getpid(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


_WORKER_DATA: dict[str, Any] = {}


class Terminated(BaseException):
    """The leaderboard process got SIGTERM/SIGHUP: its workers are stopped before it exits."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def _exit_with_parent(parent: int) -> None:
    """Make this worker die with the process that started it, even if that one is SIGKILLed.

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); everywhere a
    daemon thread also checks once a second that the parent is still ours and exits otherwise.
    """
    import os
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    if os.getppid() != parent:  # the parent died before we got here
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(threads: int, parent: int | None = None) -> None:
    import signal

    import torch

    # Ctrl-C reaches the whole process group: the parent handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _exit_with_parent(parent)
    torch.set_num_threads(threads)


def _worker_cell(entry: Entry, seed: int, cells_dir: Path, device: str, root: str | Path | None,
                 jobs: int) -> bool:
    """One cell in a worker process (each worker loads a dataset once); whether it was trained."""
    from pyg_rbp.training.runner import load_dataset

    name = entry.config.dataset
    if name not in _WORKER_DATA:
        _WORKER_DATA[name] = load_dataset(name, root)
    return _train_cell(entry, seed, cells_dir, _WORKER_DATA[name], device, progress=False, jobs=jobs)


def usable_cpus() -> int:
    """Cores this process may run on (affinity and cgroup-limited sets included where known)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run_parallel(cells: Sequence[tuple[Entry, int]], cells_dir: Path, *, jobs: int, threads: int | None,
                  device: str, root: str | Path | None,
                  finished: Callable[[Entry, int, bool | BaseException], bool]) -> None:
    """Run ``cells`` in ``jobs`` spawned worker processes, at most ``jobs`` at a time, in order.

    ``finished`` books each cell and says whether to start more. A worker that dies (killed,
    out of memory) fails its cell with ``BrokenProcessPool`` instead of hanging the run. No
    worker outlives this process: Ctrl-C, SIGTERM or SIGHUP stop them before it exits
    (:class:`Terminated` is raised after), and a worker whose parent is SIGKILLed exits at once
    (:func:`_exit_with_parent`).
    """
    import multiprocessing
    import os
    import signal
    import threading
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = threads or max(1, usable_cpus() // jobs)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads, os.getpid()))
    queue = list(reversed(cells))
    running: dict[Future, tuple[Entry, int]] = {}
    clean = False
    handled = (signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else (signal.SIGTERM,)
    previous = {}
    if threading.current_thread() is threading.main_thread():  # SIGTERM: stop the workers, then exit

        def terminated(signum: int, frame: Any) -> None:
            raise Terminated(signum)

        previous = {sig: signal.signal(sig, terminated) for sig in handled}
    try:
        more = True
        while queue or running:
            while more and queue and len(running) < jobs:
                entry, seed = queue.pop()
                running[pool.submit(_worker_cell, entry, seed, cells_dir, device, root, jobs)] = (entry, seed)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                entry, seed = running.pop(fut)
                err = fut.exception()
                more = finished(entry, seed, err if err is not None else fut.result()) and more
                more = more and not isinstance(err, BrokenProcessPool)  # no worker left to run more
        clean = True
    finally:
        if not clean:  # an interrupt: stop the workers now rather than wait for their cells
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _is_unavailable(dataset: str, root: str | Path | None) -> bool:
    from pyg_rbp.data import DataUnavailableError
    from pyg_rbp.data.manifest import entry

    if entry(dataset).folder is None:  # embedded datasets are always there
        return False
    try:
        from pyg_rbp.training.runner import load_dataset

        load_dataset(dataset, root)
    except DataUnavailableError:
        return True
    except Exception:  # noqa: BLE001 - any other failure shows as "not run yet", not "unavailable"
        return False
    return False


def rows(entries: Sequence[Entry], out_dir: str | Path, *, root: str | Path | None = None,
         availability: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """Leaderboard rows aggregated from the finished cells of ``entries``."""
    cells_dir = Path(out_dir) / "cells"
    availability = {} if availability is None else availability
    out = []
    for e in entries:
        c = e.config
        results = []
        for s in e.seeds:
            p = e.cell_path(cells_dir, s)
            if p.is_file():
                with open(p) as fh:
                    results.append(json.load(fh)["result"])
        if c.dataset not in availability:
            availability[c.dataset] = not _is_unavailable(c.dataset, root) if not results else True
        test_mean, test_std = mean_std([r["test"] for r in results])
        val_mean, val_std = mean_std([r["val"] for r in results])

        def med(key: str, results: list[dict[str, Any]] = results) -> float | None:
            vals = [r[key] for r in results if r.get(key) is not None]
            return statistics.median(vals) if vals else None

        if not availability[c.dataset]:
            status = UNAVAILABLE
        elif not results:
            status = "not run yet"
        elif len(results) < len(e.seeds):
            status = f"partial: {len(results)} of {len(e.seeds)} seeds"
        else:
            status = "ok"
        diverged = diverged_seeds(results)
        if diverged:
            unit = "in epoch" if dataset_task(c.dataset) == "graph" else "at step"
            status += "; diverged: " + ", ".join(f"seed {k} {unit} {v}" for k, v in diverged.items())
        out.append({
            "dataset": c.dataset, "protocol": c.protocol, "model": c.model, "grad": c.grad,
            "metric": results[0]["metric"] if results else _expected_metric(c.dataset),
            "test_mean": test_mean, "test_std": test_std, "val_mean": val_mean, "val_std": val_std,
            "seeds": sorted(r["seed"] for r in results), "seeds_planned": list(e.seeds),
            "test_by_seed": {str(r["seed"]): r["test"] for r in sorted(results, key=lambda r: r["seed"])},
            "diverged": diverged,
            "epochs": c.epochs, "epochs_run_mean": (sum(r["epochs_run"] for r in results) / len(results)
                                                    if results else None),
            "max_iter": c.max_iter if c.grad else None, "backward_iter": c.backward_iter if c.grad else None,
            "epoch_time_s": med("epoch_time_s"), "saved_bytes": med("saved_bytes"),
            "cuda_peak_bytes": med("cuda_peak_bytes"),
            "device": _devices(results),
            "val_curve": _mean_curve(results),
            "command": c.command(), "status": status, "note": e.note,
            **tu_board.fold_fields(results, c.protocol),
        })
    return out


def _mean_curve(results: list[dict[str, Any]], points: int = 100) -> list[list[float]]:
    """Validation score against epoch, averaged over the seeds that recorded it (at most
    ``points`` evaluations, evenly spaced): ``[[epoch, mean_val, seeds], ...]``."""
    by_epoch: dict[int, list[float]] = {}
    for r in results:
        for h in r.get("history") or []:
            if h.get("val") is not None:
                by_epoch.setdefault(int(h["epoch"]), []).append(float(h["val"]))
    epochs = sorted(by_epoch)
    if len(epochs) > points:
        step = len(epochs) / points
        epochs = sorted({epochs[int(i * step)] for i in range(points)} | {epochs[-1]})
    return [[e, statistics.fmean(by_epoch[e]), len(by_epoch[e])] for e in epochs]


def _devices(results: list[dict[str, Any]]) -> str | None:
    """The device the cells ran on; ``"mixed: cpu, cuda"`` when they differ."""
    devices = sorted({str(r.get("device")) for r in results})
    if not devices:
        return None
    return devices[0] if len(devices) == 1 else "mixed: " + ", ".join(devices)


def _pct(metric: str) -> bool:
    return metric in ("acc", "rocauc", "ap")


def _fmt_score(metric: str, mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    if _pct(metric):
        return f"{100 * mean:.2f} ± {100 * (std or 0):.2f}"
    return f"{mean:.4f} ± {(std or 0):.4f}"


def _row_label(r: dict[str, Any]) -> str:
    return f"{r['model']}/{r['grad']}" if r["grad"] else r["model"]


def _mean(rows_: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for r in rows_:
        if all(r.get(k) == v for k, v in match.items()) and r["test_mean"] is not None:
            return r
    return None


def _shared_seeds(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Seeds with a test score in both rows."""
    sa, sb = a.get("test_by_seed", {}), b.get("test_by_seed", {})
    return sorted((s for s in set(sa) & set(sb) if sa[s] is not None and sb[s] is not None), key=int)


def _paired_difference(a: dict[str, Any], b: dict[str, Any], name_a: str, name_b: str) -> str:
    """``a - b`` test difference over the seeds both rows finished (a seed fixes the split and the
    initialisation, so the pairs share their data): mean, sample std and the 95 % Student-t
    interval of the mean."""
    from scipy.stats import t as student_t

    common = _shared_seeds(a, b)
    if len(common) < 2:
        return ""
    diffs = [100 * (a["test_by_seed"][s] - b["test_by_seed"][s]) for s in common]
    mean, std = mean_std(diffs)
    assert mean is not None and std is not None
    half = float(student_t.ppf(0.975, len(diffs) - 1)) * std / len(diffs) ** 0.5
    verdict = ("includes zero" if abs(mean) <= half
               else f"excludes zero: {name_a} {'ahead' if mean > 0 else 'behind'}")
    wins = sum(d >= 0 for d in diffs)
    return (f" Paired by seed ({len(diffs)} seeds): {name_a} − {name_b} = {mean:+.2f} ± {std:.2f} points, "
            f"95 % interval of the mean {mean - half:+.2f} to {mean + half:+.2f} ({verdict}); "
            f"{name_a} >= {name_b} on {wins} of {len(diffs)} seeds.")


def _divergence_note(seeds: Sequence[str], a: dict[str, Any], b: dict[str, Any]) -> str:
    """Which compared seeds diverged in which row (they count, with their pre-divergence model),
    and the two means without them, so a reader sees whether the verdict rests on them. With no
    shared seeds (row means compared) every diverged seed of either row is named."""
    hits = [(_row_label(r), [s for s in (seeds or r.get("diverged", {})) if s in r.get("diverged", {})])
            for r in (a, b)]
    named = [(label, ss) for label, ss in hits if ss]
    if not named:
        return ""
    out = " Diverged and counted with the best model before it: " + "; ".join(
        f"{label} on seed(s) {', '.join(ss)}" for label, ss in named) + "."
    rest = [s for s in seeds if all(s not in r.get("diverged", {}) for r in (a, b))]
    if rest:
        ma, mb = (100 * statistics.fmean(r["test_by_seed"][s] for s in rest) for r in (a, b))
        out += (f" Without those seeds ({len(rest)} left): {_row_label(a)} {ma:.2f}% vs "
                f"{_row_label(b)} {mb:.2f}%.")
    return out


def target_checks(rows_: list[dict[str, Any]]) -> list[str]:
    """Plain-language verdicts on the issue's targets, computed from the rows (never typed in)."""
    lines = []
    for ds in ("cora", "citeseer"):
        nm, bp = _mean(rows_, dataset=ds, protocol="paper", grad="neumann"), _mean(
            rows_, dataset=ds, protocol="paper", grad="bptt")
        if nm and bp:
            # compare like with like: the seeds (splits) both rows finished, else the row means
            common = _shared_seeds(nm, bp)
            if common:
                a, b = (statistics.fmean(r["test_by_seed"][s] for s in common) for r in (nm, bp))
                basis = f"mean over the {len(common)} seed(s) both finished"
            else:
                a, b = nm["test_mean"], bp["test_mean"]
                basis = f"{len(nm['seeds'])} and {len(bp['seeds'])} seed(s), none shared"
            lines.append(
                f"- Paper claim on {ds} (paper protocol, Neumann-RBP at least as accurate as BPTT): "
                f"**{'holds' if a >= b else 'does not hold'}** here: Neumann {100 * a:.2f}% vs "
                f"BPTT {100 * b:.2f}% test ({basis}, {nm['epochs']} steps)."
                + _paired_difference(nm, bp, "Neumann", "BPTT") + _divergence_note(common, nm, bp)
                + (f" {nm['note']}." if nm["note"] else ""))
        elif any(r["dataset"] == ds and r["protocol"] == "paper" for r in rows_):
            missing = [g for g, r in (("Neumann-RBP", nm), ("BPTT", bp)) if r is None]
            lines.append(f"- Paper claim on {ds} (paper protocol, Neumann-RBP at least as accurate as "
                         f"BPTT): **not checked yet**: no finished {' or '.join(missing)} run.")
    for ds, target in (("cora", 0.83), ("citeseer", 0.72)):
        fp = [r for r in rows_ if r["dataset"] == ds and r["protocol"] == "public" and r["grad"]
              and r["test_mean"] is not None]
        if fp:
            best = max(fp, key=lambda r: r["val_mean"] if r["val_mean"] is not None else -1)
            top = max(fp, key=lambda r: r["test_mean"])
            ok = best["test_mean"] >= target
            lines.append(
                f"- Public split {ds}, target >= {100 * target:.1f}%: best fixed-point row by validation "
                f"({_row_label(best)}) reaches {100 * best['test_mean']:.2f} ± {100 * best['test_std']:.2f}% "
                f"test over {len(best['seeds'])} seed(s): **{'met' if ok else 'missed'}**"
                + ("" if ok else f" by {100 * (target - best['test_mean']):.2f} points")
                + (f" (highest test among fixed-point rows: {_row_label(top)} {100 * top['test_mean']:.2f}%)"
                   if top is not best else "") + ".")
    for ds in sorted({r["dataset"] for r in rows_ if r["dataset"].startswith("ogbg-")}):
        gin = _mean(rows_, dataset=ds, model="gin")
        fps = [r for r in rows_ if r["dataset"] == ds and r["grad"] and r["test_mean"] is not None]
        if gin and fps:
            metric = gin["metric"]
            hib = metric != "rmse"
            fp = max(fps, key=lambda r: r["test_mean"] if hib else -r["test_mean"])
            ok = fp["test_mean"] >= gin["test_mean"] if hib else fp["test_mean"] <= gin["test_mean"]
            lines.append(
                f"- {ds} ({metric}, {'higher' if hib else 'lower'} is better): fixed-point "
                f"{_row_label(fp)} {_fmt_score(metric, fp['test_mean'], fp['test_std'])} vs GIN "
                f"{_fmt_score(metric, gin['test_mean'], gin['test_std'])} (same harness and budget, "
                f"{len(fp['seeds'])} seed(s)): **{'matches or beats GIN' if ok else 'below GIN'}**.")
    lines += tu_board.target_lines(rows_)
    missing = sorted({r["dataset"] for r in rows_ if r["status"] == UNAVAILABLE})
    if missing:
        lines.append(f"- {', '.join(missing)}: {UNAVAILABLE}; the commands in their rows are the ones to run "
                     "on a machine with the data.")
    return lines


def render_markdown(rows_: list[dict[str, Any]], *, command: str, env: dict[str, Any], profile: str,
                    png_name: str | None = None, curves_name: str | None = None) -> str:
    """``LEADERBOARD.md``: per dataset and protocol, one row per model/grad."""
    from pyg_rbp.results import human_bytes

    out = [
        "# pyg_rbp leaderboard",
        "",
        "Generated by `pyg_rbp.training.leaderboard` from the per-cell results in "
        "`benchmarks/results/cells/`;",
        "machine-readable rows in `benchmarks/results/leaderboard.json`. Every row's `command` is the exact",
        "`pyg-rbp train ...` that reproduces it when `--seeds` and `--json` are appended.",
        "",
        f"- board command: `{command}` (budget profile `{profile}`)",
        f"- machine: {env.get('processor')} with {env.get('cpu_count')} CPU cores (shared), "
        f"torch {env.get('torch')}, torch_geometric {env.get('torch_geometric')}, device {env.get('device')}",
        "- test and validation: mean ± sample std over the seeds listed; accuracy and ROC-AUC in %, RMSE in "
        "the target's units. Test is taken at the best validation epoch.",
        "- s/epoch: median over seeds of each run's median seconds per training epoch (full-graph step "
        "for node tasks). On a shared CPU whose load changes during the run these times are only "
        "indicative; compare modes by the demo or `pyg-rbp bench`, measured in one run. "
        "saved: bytes autograd keeps for backward in one training forward (deterministic on any device); "
        "CUDA peak only on CUDA.",
        "",
    ]
    checks = target_checks(rows_)
    if checks:
        out += ["## Targets", "", *checks, ""]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows_:
        groups.setdefault((r["dataset"], r["protocol"]), []).append(r)
    for (ds, proto), rs in groups.items():
        metric = rs[0]["metric"]
        out += [f"## {ds}, protocol `{proto}` (metric: {metric})", ""]
        out.append("| model/grad | test | validation | seeds | epochs run / budget | s/epoch "
                   "| saved for backward | CUDA peak | status |")
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rs:
            seeds = f"{len(r['seeds'])}/{len(r['seeds_planned'])}"
            ep = (f"{r['epochs_run_mean']:.0f} / {r['epochs']}" if r["epochs_run_mean"] is not None
                  else f"- / {r['epochs']}")
            if r["model"] == "linear-pca":
                ep = "closed form"
            elif r.get("diverged"):
                ep += f" (mean; {len(r['diverged'])} stopped at divergence)"
            t = f"{r['epoch_time_s']:.3f}" if r["epoch_time_s"] is not None else "-"
            out.append(
                f"| {_row_label(r)} | {_fmt_score(metric, r['test_mean'], r['test_std'])} | "
                f"{_fmt_score(metric, r['val_mean'], r['val_std'])} | {seeds} | {ep} | {t} | "
                f"{human_bytes(r['saved_bytes']) if r['saved_bytes'] is not None else '-'} | "
                f"{human_bytes(r['cuda_peak_bytes']) if r['cuda_peak_bytes'] is not None else '-'} | "
                f"{r['status']} |")
        if proto == "paper":
            out += ["", *_per_seed_table(rs)]
        if proto == "10-fold":
            out += ["", *tu_board.fold_table(rs)]
        notes: dict[str, list[str]] = {}
        for r in rs:
            if r["note"]:
                notes.setdefault(r["note"], []).append(_row_label(r))
        out.append("")
        for n, labels in notes.items():
            out.append(f"Note ({', '.join(labels)}): {n}.")
        out.append("")
        out.append("Commands:")
        out.append("")
        out.append("```")
        for r in rs:
            runs = "--folds" if r["protocol"] == tu_board.KFOLD else "--seeds"
            out.append(f"{r['command']} {runs} {','.join(map(str, r['seeds_planned']))}")
        out.append("```")
        out.append("")
    if png_name:
        out += [f"![leaderboard]({png_name})", ""]
    if curves_name:
        out += ["Validation curves (mean over the seeds whose runs recorded them):", "",
                f"![validation curves]({curves_name})", ""]
    return "\n".join(out)


DIVERGED_MARK = "†"


def _per_seed_table(rs: list[dict[str, Any]]) -> list[str]:
    """Test score of every row per seed: a seed fixes the split, so columns compare like with like."""
    seeds = sorted({int(s) for r in rs for s in r.get("test_by_seed", {})})
    if not seeds:
        return []
    scale = 100.0 if _pct(rs[0]["metric"]) else 1.0
    lines = ["Test per seed (each seed is one random split; the same split in every row):", "",
             "| model/grad | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "| --- |" + " --- |" * len(seeds)]
    for r in rs:
        by_seed, diverged = r.get("test_by_seed", {}), r.get("diverged", {})
        cells = [f"{scale * by_seed[str(s)]:.2f}" + (DIVERGED_MARK if str(s) in diverged else "")
                 if by_seed.get(str(s)) is not None else "-" for s in seeds]
        lines.append(f"| {_row_label(r)} | " + " | ".join(cells) + " |")
    if any(r.get("diverged") for r in rs):
        lines += ["", f"{DIVERGED_MARK} the run diverged (NaN/inf loss, gradient or state; the step is in "
                  "the row's status) and stopped there; its score is that of the best model validated before "
                  "it, the initial model if none was (the reference code validates before step 1 and never "
                  "selects NaN weights). It counts in the row's mean as the protocol's outcome."]
    return lines


def _panels(rows_: list[dict[str, Any]],
            keep: Callable[[dict[str, Any]], bool]) -> tuple[Any, Any, dict] | None:
    """A figure with one panel per (dataset, protocol) group of the rows ``keep`` accepts:
    ``(fig, axes, groups)``; None without matplotlib or without such rows."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows_:
        if keep(r):
            groups.setdefault((r["dataset"], r["protocol"]), []).append(r)
    if not groups:
        return None
    cols = min(3, len(groups))
    nrows = (len(groups) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.2 * nrows), squeeze=False)
    return fig, axes, groups


def _save_panels(fig: Any, axes: Any, used: int, path: str | Path) -> Path:
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=110)


def render_png(rows_: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Bar chart of test mean ± std, one panel per dataset and protocol (None without matplotlib)."""
    panels = _panels(rows_, lambda r: r["test_mean"] is not None)
    if panels is None:
        return None
    fig, axes, groups = panels
    for ax, ((ds, proto), rs) in zip(axes.flat, groups.items()):
        metric = rs[0]["metric"]
        scale = 100.0 if _pct(metric) else 1.0
        labels = [_row_label(r) for r in rs]
        means = [scale * r["test_mean"] for r in rs]
        stds = [scale * (r["test_std"] or 0) for r in rs]
        colors = ["tab:blue" if r["grad"] else "tab:gray" for r in rs]
        ax.barh(range(len(rs)), means, xerr=stds, color=colors)
        ax.set_yticks(range(len(rs)), labels, fontsize=8)
        ax.invert_yaxis()
        lo = min(m - s for m, s in zip(means, stds))
        hi = max(m + s for m, s in zip(means, stds))
        pad = 0.1 * (hi - lo + 1e-9)
        ax.set_xlim(max(0.0, lo - pad - (hi - lo)), hi + pad)
        ax.set_title(f"{ds} ({proto}) test {metric}{' %' if scale == 100 else ''}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    return _save_panels(fig, axes, len(groups), path)


def render_curves_png(rows_: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Validation curves (mean over seeds) of every row with a recorded history, one panel per
    dataset and protocol (None without matplotlib or without any curve)."""
    panels = _panels(rows_, lambda r: bool(r.get("val_curve")))
    if panels is None:
        return None
    fig, axes, groups = panels
    for ax, ((ds, proto), rs) in zip(axes.flat, groups.items()):
        metric = rs[0]["metric"]
        scale = 100.0 if _pct(metric) else 1.0
        for r in rs:
            curve = r["val_curve"]
            seeds = max(c[2] for c in curve)
            ax.plot([c[0] for c in curve], [scale * c[1] for c in curve], lw=1.2,
                    label=f"{_row_label(r)} ({seeds} seed{'s' if seeds > 1 else ''})")
        ax.set_title(f"{ds} ({proto}): validation {metric}, mean over seeds", fontsize=9)
        ax.set_xlabel("epoch / step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save_panels(fig, axes, len(groups), path)


def render(entries: Sequence[Entry], out_dir: str | Path, board_path: str | Path, *,
           command: str, profile: str, device: str = "cpu", root: str | Path | None = None,
           availability: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """Write ``leaderboard.json``, the markdown board and its PNG from the finished cells.

    Rows of (dataset, protocol) groups that are in an existing ``leaderboard.json`` but not in
    ``entries`` are kept, so boards built by several runs (say, one per protocol) merge.
    """
    from pyg_rbp.results import atomic_write_json, atomic_write_text, environment, read_json

    out_dir = Path(out_dir)
    board_path = Path(board_path)
    new_rows = rows(entries, out_dir, root=root, availability=availability)
    json_path = out_dir / "leaderboard.json"
    groups = {(r["dataset"], r["protocol"]) for r in new_rows}
    kept: list[dict[str, Any]] = []
    if json_path.is_file():
        try:
            kept = [r for r in read_json(json_path) if (r["dataset"], r["protocol"]) not in groups]
        except (ValueError, KeyError, TypeError):
            kept = []
    order = {d: i for i, d in enumerate(DEFAULT_DATASETS)}
    proto = {p: i for i, p in enumerate(("paper", "public", "official"))}
    all_rows = sorted(kept + new_rows, key=lambda r: (order.get(r["dataset"], 99), r["dataset"],
                                                      proto.get(r["protocol"], 9)))
    atomic_write_json(json_path, all_rows)
    png = board_path.with_suffix(".png").with_name("leaderboard.png")
    made = render_png(all_rows, png)
    curves = render_curves_png(all_rows, png.with_name("leaderboard_curves.png"))
    md = render_markdown(all_rows, command=command, env=environment(device), profile=profile,
                         png_name=png.name if made else None,
                         curves_name=curves.name if curves else None)
    atomic_write_text(board_path, md)
    return all_rows

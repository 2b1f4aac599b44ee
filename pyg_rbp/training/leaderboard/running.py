"""Running the leaderboard's cells: serially or in a pool of worker processes, resumably.

:func:`run` trains every (row, seed) cell that is not finished yet and writes each one atomically
through :class:`~pyg_rbp.training.leaderboard.cells.CellStore`, so an interrupted run loses
nothing and a rerun repeats nothing. Several runs may share one results folder: each cell is
checked again just before it starts and trained under its lock by one process only. With
``jobs > 1`` the cells run in spawned worker processes; a worker that dies fails its cell instead
of hanging the run, and no worker outlives the run (Ctrl-C, SIGTERM, SIGHUP, or the parent being
SIGKILLed).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pyg_rbp.data import DataUnavailableError
from pyg_rbp.results import environment
from pyg_rbp.runtime import set_threads
from pyg_rbp.training import runner
from pyg_rbp.training.leaderboard.cells import CellStore, Entry, cell_label
from pyg_rbp.training.leaderboard.scores import UNAVAILABLE


class CellFailed(RuntimeError):
    """Cells of a leaderboard run raised; ``failures`` maps each cell's label to its error."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        lines = "\n".join(f"  {label}: {type(err).__name__}: {err}" for label, err in failures.items())
        super().__init__(f"{len(failures)} leaderboard cell(s) failed (finished cells are saved):\n{lines}")


def run(entries: Sequence[Entry], out_dir: str | Path, *, device: str = "cpu",
        root: str | Path | None = None, progress: bool = True,
        on_cell: Callable[[], None] | None = None, log: Callable[[str], None] = print,
        jobs: int = 1, threads: int | None = None, keep_going: bool = False,
        fresh: bool = False) -> dict[str, int]:
    """Train every unfinished (entry, seed) cell; each result is written atomically when done.

    Returns counts ``{"run", "skipped", "unavailable"}``. A cell whose file exists (same
    command, same seed) is skipped, and each cell's file is checked again just before it starts,
    so several runs sharing one results folder skip what the others finished meanwhile. A cell
    file recording another command or seed than its name says raises
    :class:`~pyg_rbp.results.ResultsFileConflict` before any training, unless ``fresh``, which
    trains every planned cell again and replaces its file (other cells are never touched).
    Datasets whose files are missing are skipped with a note.

    With ``jobs > 1`` the cells run in that many worker processes (``threads`` torch threads
    each; default: the usable cores divided among the workers), started in the same
    breadth-first order. A cell that raises stops the run: no new cell starts, the cells in
    flight finish and are saved, then :class:`CellFailed` is raised. With ``keep_going`` the other
    cells still run and :class:`CellFailed` lists every failure at the end. An interrupt
    (Ctrl-C) stops the workers at once; only the cells in flight are lost.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    store = CellStore(out_dir, fresh=fresh)
    todo = [(e, s) for e in entries for s in e.seeds if not store.done(e, s)]
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
            loaded[name] = runner.load_dataset(name, root)
        except DataUnavailableError as err:
            log(f"leaderboard: {name}: {UNAVAILABLE} ({str(err).splitlines()[0]})")
    runnable = [(e, s) for e, s in todo if e.config.dataset in loaded]
    counts["unavailable"] = len(todo) - len(runnable)
    failures: dict[str, BaseException] = {}
    bar = tqdm(total=len(runnable), desc="leaderboard cells", disable=not progress, dynamic_ncols=True)

    def finished(entry: Entry, seed: int, outcome: bool | BaseException) -> bool:
        """Book one cell; whether to start more cells."""
        bar.update()
        bar.set_postfix_str(cell_label(entry, seed))
        if isinstance(outcome, BaseException):
            failures[cell_label(entry, seed)] = outcome
            log(f"leaderboard: {cell_label(entry, seed)} failed: {type(outcome).__name__}: {outcome}")
            return keep_going
        counts["run" if outcome else "skipped"] += 1
        if outcome and on_cell is not None:
            on_cell()
        return True

    try:
        if jobs == 1 or len(runnable) <= 1:
            for entry, seed in runnable:
                bar.set_postfix_str(cell_label(entry, seed))
                try:
                    outcome: bool | BaseException = _train_cell(
                        entry, seed, store, loaded[entry.config.dataset], device, progress, jobs=1)
                except Exception as err:  # noqa: BLE001 - booked, re-raised below as CellFailed
                    outcome = err
                if not finished(entry, seed, outcome):
                    break
        elif runnable:
            _run_parallel(runnable, store, jobs=min(jobs, len(runnable)), threads=threads,
                          device=device, root=root, finished=finished)
    finally:
        bar.close()
    if failures:
        raise CellFailed(failures) from next(iter(failures.values()))
    return counts


def _train_cell(entry: Entry, seed: int, store: CellStore, loaded: Any, device: str,
                progress: bool, jobs: int) -> bool:
    """Train one cell and write its JSON atomically; False (nothing done) when the cell was
    finished meanwhile, or is being trained right now, by another process sharing the results
    folder (a fresh run only skips the latter)."""
    if not store.fresh and store.exists(entry, seed):
        return False
    # The cell lock: of several runs sharing the results folder, one trains the cell; the others
    # skip it (it is finished by the holder). Checked again under the lock: it may just have been.
    with store.claim(entry, seed) as mine:
        if not mine or (not store.fresh and store.exists(entry, seed)):
            return False
        _train_locked_cell(entry, seed, store, loaded, device, progress, jobs)
    return True


def _train_locked_cell(entry: Entry, seed: int, store: CellStore, loaded: Any, device: str,
                       progress: bool, jobs: int) -> None:
    cfg = entry.config
    t0 = time.perf_counter()
    row = runner.run_one(cfg, loaded, seed, device=device, progress=progress)
    store.write(entry, seed, {
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
    if sys.platform.startswith("linux"):
        try:
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
    # Ctrl-C reaches the whole process group: the parent handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _exit_with_parent(parent)
    set_threads(threads)


def _worker_cell(entry: Entry, seed: int, store: CellStore, device: str, root: str | Path | None,
                 jobs: int) -> bool:
    """One cell in a worker process (each worker loads a dataset once); whether it was trained."""
    name = entry.config.dataset
    if name not in _WORKER_DATA:
        _WORKER_DATA[name] = runner.load_dataset(name, root)
    return _train_cell(entry, seed, store, _WORKER_DATA[name], device, progress=False, jobs=jobs)


def usable_cpus() -> int:
    """Cores this process may run on (affinity and cgroup-limited sets included where known)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run_parallel(cells: Sequence[tuple[Entry, int]], store: CellStore, *, jobs: int, threads: int | None,
                  device: str, root: str | Path | None,
                  finished: Callable[[Entry, int, bool | BaseException], bool]) -> None:
    """Run ``cells`` in ``jobs`` spawned worker processes, at most ``jobs`` at a time, in order.

    ``finished`` books each cell and says whether to start more. A worker that dies (killed,
    out of memory) fails its cell with ``BrokenProcessPool`` instead of hanging the run. No
    worker outlives this process: Ctrl-C, SIGTERM or SIGHUP stop them before it exits
    (:class:`Terminated` is raised after), and a worker whose parent is SIGKILLed exits at once
    (:func:`_exit_with_parent`).
    """
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
                running[pool.submit(_worker_cell, entry, seed, store, device, root, jobs)] = (entry, seed)
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

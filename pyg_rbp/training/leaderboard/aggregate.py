"""Board rows aggregated from the finished cells: means over seeds, status, curves, the command.

:func:`rows` turns the cells of each planned row into one dict (the board's JSON row): test and
validation mean ± std over the seeds that finished, per-seed scores, divergences, median timings
and memory, the mean validation curve, the reproducing command, and a status that says what ran
("ok", "partial: k of n seeds", "not run yet", or that the data is unavailable offline). Nothing
is typed in: every number is read back from the cells.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyg_rbp.data import DataUnavailableError
from pyg_rbp.data.manifest import entry as manifest_entry
from pyg_rbp.training import runner
from pyg_rbp.training.config import dataset_task
from pyg_rbp.training.leaderboard import tu
from pyg_rbp.training.leaderboard.cells import CellStore, Entry
from pyg_rbp.training.leaderboard.scores import UNAVAILABLE
from pyg_rbp.training.runner import diverged_seeds, mean_std

OGB_METRICS = {"ROC-AUC": "rocauc", "rmse": "rmse", "Accuracy": "acc", "AP": "ap"}
"""OGB's metric names (its ``master.csv``) in the board's vocabulary."""


def _expected_metric(dataset: str) -> str:
    """The metric of a dataset that could not be loaded (OGB's master table for ogbg/ogbn)."""
    if dataset.startswith("ogb"):
        try:  # ogb and its pandas are only needed to label a row that did not run
            import pandas as pd

            kind = "graphproppred" if dataset.startswith("ogbg") else "nodeproppred"
            mod = __import__(f"ogb.{kind}", fromlist=["x"])
            master = pd.read_csv(os.path.join(os.path.dirname(mod.__file__), "master.csv"), index_col=0,
                                 keep_default_na=False)
            return OGB_METRICS.get(master[dataset]["eval metric"], master[dataset]["eval metric"].lower())
        except Exception:  # noqa: BLE001 - only used to label a row that did not run
            return "?"
    return "acc"


def _is_unavailable(dataset: str, root: str | Path | None) -> bool:
    if manifest_entry(dataset).folder is None:  # embedded datasets are always there
        return False
    try:
        runner.load_dataset(dataset, root)
    except DataUnavailableError:
        return True
    except Exception:  # noqa: BLE001 - any other failure shows as "not run yet", not "unavailable"
        return False
    return False


def rows(entries: Sequence[Entry], out_dir: str | Path, *, root: str | Path | None = None,
         availability: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """Leaderboard rows aggregated from the finished cells of ``entries``.

    ``availability`` caches, per dataset, whether its data could be loaded (asked only for a row
    without any finished cell). A cell file recording another command or seed than its name says
    raises :class:`~pyg_rbp.results.ResultsFileConflict`."""
    store = CellStore(out_dir)
    availability = {} if availability is None else availability
    out = []
    for e in entries:
        c = e.config
        results = [doc["result"] for doc in (store.read(e, s) for s in e.seeds) if doc is not None]
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
            **tu.fold_fields(results, c.protocol),
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

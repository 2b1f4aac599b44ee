"""Running a config over several seeds (and gradient modes), resumably: :func:`run_seeds`.

This is what ``pyg-rbp train`` does: load the dataset once, apply the protocol per seed (the
paper protocol draws a new random split per seed), train, and write the JSON after every
finished run, so that an interrupted run keeps everything it finished and a rerun with the same
settings skips it. The summary (mean and standard deviation over seeds) is computed from the
stored per-seed results, never typed in.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from pyg_rbp.data import apply_protocol, load
from pyg_rbp.results import ResultsFileConflict, ResumableResults, environment
from pyg_rbp.training.config import TrainConfig
from pyg_rbp.training.graph import train_graph
from pyg_rbp.training.node import train_node

__all__ = ["ResultsFileConflict", "diverged_seeds", "load_dataset", "run_one", "run_seeds", "summarize"]

RESULT_KEYS = ("dataset", "protocol", "model", "grad", "metric", "seed", "val", "test")


def load_dataset(name: str, root: str | Path | None = None) -> Any:
    """:func:`pyg_rbp.data.load` (the one place the runs read a dataset)."""
    return load(name, root=root)


def run_one(cfg: TrainConfig, loaded: Any, seed: int, *, device: str = "cpu",
            progress: bool = True) -> dict[str, Any]:
    """Train one seed of ``cfg`` on the already loaded dataset; the result row."""
    if loaded.task == "graph":
        res = train_graph(cfg, loaded, seed, device=device, progress=progress)
    else:
        data = apply_protocol(loaded, cfg.protocol, seed, hidden=cfg.hidden, features=cfg.features)
        res = train_node(cfg, loaded, data, seed, device=device, progress=progress)
    row = {"dataset": cfg.dataset, "protocol": cfg.protocol, "model": cfg.model, "grad": cfg.grad,
           "metric": loaded.metric, "device": str(device)}
    row.update(res)
    return row


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for one value) of the finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarize(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, grad): mean and std over seeds of test/val, medians of cost."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["protocol"], r["model"], r["grad"]), []).append(r)
    rows = []
    for (dataset, protocol, model, grad), rs in groups.items():
        test_mean, test_std = mean_std([r["test"] for r in rs])
        val_mean, val_std = mean_std([r["val"] for r in rs])
        times = [r["epoch_time_s"] for r in rs if r.get("epoch_time_s") is not None]
        saved = [r["saved_bytes"] for r in rs if r.get("saved_bytes") is not None]
        peaks = [r["cuda_peak_bytes"] for r in rs if r.get("cuda_peak_bytes") is not None]
        rows.append({
            "dataset": dataset, "protocol": protocol, "model": model, "grad": grad,
            "metric": rs[0]["metric"], "test_mean": test_mean, "test_std": test_std,
            "val_mean": val_mean, "val_std": val_std, "seeds": sorted(r["seed"] for r in rs),
            "epoch_time_s": statistics.median(times) if times else None,
            "saved_bytes": statistics.median(saved) if saved else None,
            "cuda_peak_bytes": max(peaks) if peaks else None,
            "epochs_run_mean": statistics.fmean(r["epochs_run"] for r in rs),
            "diverged": diverged_seeds(rs),
        })
    return rows


def diverged_seeds(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    """``{seed: step}`` of the runs that stopped on a NaN/inf loss, gradient or state."""
    return {str(r["seed"]): r["diverged"]["epoch"] for r in sorted(results, key=lambda r: r["seed"])
            if r.get("diverged")}


_RUN_FIELDS = ("grad", "seeds", "commands")  # what may differ between resumed runs


def _widen(base: dict[str, Any], old: dict[str, Any], results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``base`` widened to the modes, seeds and commands of the runs a resumed file holds."""
    old_grads = old.get("grad")
    old_grads = old_grads if isinstance(old_grads, list) else [old_grads] if old_grads else []
    commands = dict(zip(old_grads, old.get("commands") or []))
    grads = base["grad"] if isinstance(base["grad"], list) else [base["grad"]]
    commands.update(zip(grads, base["commands"]))
    merged = list(dict.fromkeys([*old_grads, *grads]))
    return {**base, "grad": merged if len(merged) > 1 else merged[0],
            "seeds": sorted({*base["seeds"], *(r["seed"] for r in results)}),
            "commands": [commands[g] for g in merged]}


def run_seeds(configs: Sequence[TrainConfig], seeds: Sequence[int], *, device: str = "cpu",
              root: str | Path | None = None, json_path: str | Path | None = None,
              progress: bool = True, resume: bool = True,
              log: Callable[[str], None] = print,
              skip: Callable[[set[tuple[Any, int]]], set[tuple[Any, int]]] | None = None
              ) -> dict[str, Any]:
    """Train every config (one per gradient mode) for every seed; write ``json_path`` as it goes.

    With ``resume`` and an existing ``json_path``, every run already in it is kept (whatever
    seeds or modes were asked for this time) and the (grad, seed) runs it holds are skipped.
    A file of other settings or another device raises :class:`ResultsFileConflict` unless
    ``resume=False``, which starts the file afresh. Returns the JSON document
    ``{"config", "env", "results", "summary"}``.

    ``skip`` maps this process's set of finished ``(grad, seed)`` runs to the set to skip: under
    data parallelism only rank 0 reads and writes ``json_path``, and ``skip`` hands its set to
    the other ranks (a broadcast), so that every rank trains the same runs.
    """
    if not configs:
        raise ValueError("no configuration to run")
    if not seeds:
        raise ValueError("no seeds to run")
    grads = [c.grad for c in configs]
    if len(set(grads)) != len(grads):
        raise ValueError(f"each gradient mode may be given once, got {grads}")
    base = configs[0].as_dict()
    base["grad"] = grads if len(configs) > 1 else grads[0]
    base["seeds"] = list(seeds)
    base["commands"] = [c.command() for c in configs]
    base["device"] = str(device)
    # A field the file predates counts at its default; the device is compared too, as the
    # epoch times of its runs sit side by side.
    predates = {f.name: f.default for f in fields(TrainConfig)}
    store = ResumableResults(json_path, base, key=lambda r: (r["grad"], r["seed"]),
                             fresh=not resume, varying=_RUN_FIELDS, defaults=predates,
                             settings_field="config", units_field="results", log=log)
    store.settings = _widen(base, store.previous_settings, store.units)
    done = store.keys()
    if skip is not None:
        done = skip(done)
    loaded = load_dataset(configs[0].dataset, root)
    store.extra = {"env": environment(device)}
    for cfg in configs:
        for seed in seeds:
            if (cfg.grad, seed) in done:
                continue
            store.units.append(run_one(cfg, loaded, seed, device=device, progress=progress))
            done.add((cfg.grad, seed))
            store.write(summary=summarize(store.units))
    store.write(summary=summarize(store.units))
    return store.document()

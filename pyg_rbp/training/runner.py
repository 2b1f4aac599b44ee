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
from pathlib import Path
from typing import Any

from pyg_rbp.training.config import TrainConfig

RESULT_KEYS = ("dataset", "protocol", "model", "grad", "metric", "seed", "val", "test")


def load_dataset(name: str, root: str | Path | None = None) -> Any:
    """:func:`pyg_rbp.data.load`, imported lazily."""
    from pyg_rbp.data import load

    return load(name, root=root)


def run_one(cfg: TrainConfig, loaded: Any, seed: int, *, device: str = "cpu",
            progress: bool = True) -> dict[str, Any]:
    """Train one seed of ``cfg`` on the already loaded dataset; the result row."""
    if loaded.task == "graph":
        from pyg_rbp.training.graph import train_graph

        res = train_graph(cfg, loaded, seed, device=device, progress=progress)
    else:
        from pyg_rbp.data import apply_protocol
        from pyg_rbp.training.node import train_node

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


def run_seeds(configs: Sequence[TrainConfig], seeds: Sequence[int], *, device: str = "cpu",
              root: str | Path | None = None, json_path: str | Path | None = None,
              progress: bool = True, resume: bool = True,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every config (one per gradient mode) for every seed; write ``json_path`` as it goes.

    With ``resume`` and an existing ``json_path`` written for the same configs, the (grad, seed)
    runs already in it are kept and skipped. Returns the JSON document
    ``{"config", "env", "results", "summary"}``.
    """
    from pyg_rbp.results import atomic_write_json, environment, read_json

    if not configs:
        raise ValueError("no configuration to run")
    if not seeds:
        raise ValueError("no seeds to run")
    base = configs[0].as_dict()
    base["grad"] = [c.grad for c in configs] if len(configs) > 1 else configs[0].grad
    base["seeds"] = list(seeds)
    base["commands"] = [c.command() for c in configs]
    base["device"] = str(device)
    results: list[dict[str, Any]] = []
    if json_path is not None and resume and Path(json_path).is_file():
        old = read_json(json_path)
        old_cmds = (old.get("config") or {}).get("commands")
        if old_cmds == base["commands"]:
            wanted = {(c.grad, s) for c in configs for s in seeds}
            results = [r for r in old.get("results", []) if (r["grad"], r["seed"]) in wanted]
            if results:
                log(f"resuming {json_path}: {len(results)} finished run(s) kept")
        else:
            log(f"{json_path} holds a different configuration: starting afresh")
    done = {(r["grad"], r["seed"]) for r in results}
    loaded = load_dataset(configs[0].dataset, root)
    doc: dict[str, Any] = {"config": base, "env": environment(device), "results": results}
    for cfg in configs:
        for seed in seeds:
            if (cfg.grad, seed) in done:
                continue
            results.append(run_one(cfg, loaded, seed, device=device, progress=progress))
            doc["summary"] = summarize(results)
            if json_path is not None:
                atomic_write_json(json_path, doc)
    doc["summary"] = summarize(results)
    if json_path is not None:
        atomic_write_json(json_path, doc)
    return doc

"""The ``bench scaling`` driver: resume a saved run, measure what is missing (grid, floors,
target pass, accuracy study) and write the result after every measured cell.

Resuming follows the project's one policy (:class:`pyg_rbp.results.ResumableResults`): a file
written with other settings is refused unless ``fresh``; every finished cell is kept; every
write is atomic. A rerun may add T, K values and contenders (their cells are measured) or ask
for a subset (nothing is measured again). The target pass and the accuracy study are one unit
each: kept when their own settings match, refused when they do not or when they lack a
contender asked for, unless that part is redone (``redo``). A file of the older vocabulary
(``steps``, ``target_steps``, ``target_k``, rows' ``grad``) resumes too: its keys are read under
today's names (:func:`~pyg_rbp.bench.scaling.config.upgrade`) and written back under them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pyg_rbp.bench.common import jsonable, load_record
from pyg_rbp.bench.graphs import BenchGraph, load_bench_graph
from pyg_rbp.bench.scaling.accuracy import accuracy_jobs, accuracy_study
from pyg_rbp.bench.scaling.config import (
    CONTENDERS,
    GRID_SETTINGS,
    PART_SETTINGS,
    REDO_PARTS,
    RENAMED,
    SCHEMA,
    ScalingConfig,
    cell_key,
    grid_cells,
    row_key,
    row_order,
    upgrade,
)
from pyg_rbp.bench.scaling.measure import NOTES, measure_cell, measure_floor
from pyg_rbp.bench.scaling.targets import target_names, target_pass, verdicts
from pyg_rbp.results import ResultsFileConflict, ResumableResults, environment
from pyg_rbp.runtime import set_threads

_ALWAYS_VARYING = ("root", "accuracy", *GRID_SETTINGS, *CONTENDERS)
"""Settings a rerun may change without touching what is saved (the data root, whether to run
the accuracy study, the grid's axes and the contenders)."""


def _varying(cfg: ScalingConfig) -> tuple[str, ...]:
    """The settings not compared with a saved file: :data:`_ALWAYS_VARYING`, the settings of
    the parts (checked per part) and the random graph's size where the dataset is a real one."""
    parts = {k for keys in PART_SETTINGS.values() for k in keys}
    size = () if cfg.dataset == "random" else ("nodes", "edges", "classes")
    return (*_ALWAYS_VARYING, *sorted(parts), *size)


def _missing_contenders(part: str, saved: dict[str, Any], cfg: ScalingConfig) -> list[str]:
    """The contenders this run asks the saved ``part`` for that it does not hold."""
    if part == "targets":
        have = set(saved.get("step_time_s") or {})
        need = target_names(cfg)
    else:
        have = {r["contender"] for r in saved.get("rows") or ()}
        need = [name for name, *_ in accuracy_jobs(cfg)]
    return sorted(set(need) - have)


def _widened(cfg: ScalingConfig, old: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` as a dict with its grid axes and contenders widened to those of the saved file,
    so that the file's ``config`` describes every row it holds."""
    mine = jsonable(asdict(cfg))
    for key in (*GRID_SETTINGS, *CONTENDERS):
        mine[key] = list(dict.fromkeys([*(old.get(key) or []), *mine[key]]))
    return mine


class ScalingRun:
    """One scaling benchmark: the grid, the floors, the interleaved target pass, the accuracy study.

    ``run()`` measures what is missing, writes ``json_path`` after every cell and returns the
    result dictionary. A file written with other settings raises
    :class:`~pyg_rbp.results.ResultsFileConflict` (``fresh=True`` starts it afresh); ``redo``
    names parts of a saved run to measure again (the rest is kept).
    """

    def __init__(self, cfg: ScalingConfig, json_path: str | os.PathLike | None = None,
                 progress: bool = True, log: Callable[[str], None] = print,
                 redo: Sequence[str] = (), fresh: bool = False) -> None:
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
        self.store = ResumableResults(self.json_path, jsonable(asdict(cfg)), key=row_key, fresh=fresh,
                                      varying=_varying(cfg), settings_field="config",
                                      units_field="results", log=log, renamed=RENAMED)
        saved = upgrade({**self.store.extra, "results": self.store.units})  # older keys too
        self.store.units = saved.pop("results")
        self.store.extra = old = saved
        if self.store.path is not None and self.store.path.is_file() and not fresh \
                and old.get("schema") != SCHEMA:
            raise ResultsFileConflict(f"{self.json_path} is not a bench scaling result (schema "
                                      f"{old.get('schema')!r}); pass --fresh to overwrite it, or "
                                      "write to another path")
        for part in redo:
            if part == "grid":
                self.store.units = []
            else:
                old.pop(part, None)
        self._check_parts()
        self.store.settings = _widened(cfg, self.store.previous_settings)
        self.rows: dict[str, dict[str, Any]] = {row_key(r): r for r in self.store.units}
        self.floors: dict[str, dict[str, Any]] = {
            cell_key("floor", f["max_iter"], f["backward_iter"]): f for f in old.get("floors", [])
        }
        self.targets: dict[str, Any] | None = old.get("targets")
        self.accuracy: dict[str, Any] | None = old.get("accuracy")
        self.loads: list[dict[str, Any]] = old.get("machine_load", [])
        self.started = time.time()
        self.graph: BenchGraph | None = None

    def _check_parts(self) -> None:
        """Refuse a saved target pass or accuracy study measured with other settings or
        without some contender of this run (``redo`` that part to measure it again)."""
        saved_cfg = self.store.previous_settings
        mine = jsonable(asdict(self.cfg))
        for part, keys in PART_SETTINGS.items():
            saved = self.store.extra.get(part)
            if saved is None:
                continue
            differ = [k for k in keys if saved_cfg.get(k) != mine[k]]
            missing = _missing_contenders(part, saved, self.cfg)
            if differ or missing:
                why = (f"other settings ({', '.join(differ)})" if differ
                       else f"without {', '.join(missing)}")
                raise ResultsFileConflict(
                    f"{self.json_path}: the saved {part} were measured with {why}; pass --redo "
                    f"{part} to measure them again (the rest is kept), or --fresh")

    # -- output ---------------------------------------------------------------------------------

    def result(self, complete: bool) -> dict[str, Any]:
        """The result document (what is written to ``json_path``)."""
        self.store.units = sorted(self.rows.values(), key=row_order)
        self.store.extra.update({
            "schema": SCHEMA,
            "complete": complete,
            "fingerprint": self.cfg.fingerprint(),
            "graph": self.store.extra.get("graph") if self.graph is None else self.graph.describe(),
            "environment": environment(self.device),
            "machine_load": self.loads,
            "floors": sorted(self.floors.values(), key=lambda f: (f["max_iter"], f["backward_iter"])),
            "targets": self.targets,
            "accuracy": self.accuracy,
            "notes": NOTES,
        })
        return self.store.document()

    def save(self, complete: bool = False) -> dict[str, Any]:
        """Write the result atomically (when there is a path) and return it."""
        result = self.result(complete)
        self.store.write()
        return result

    # -- measuring ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Measure what is missing; return the complete result."""
        cfg = self.cfg
        set_threads(cfg.threads)
        self.graph = graph = load_bench_graph(
            cfg.dataset, root=cfg.root, hidden=cfg.hidden, num_nodes=cfg.nodes,
            num_edges=cfg.edges, num_features=cfg.features, num_classes=cfg.classes, seed=cfg.seed,
        ).to(self.device)
        self.loads.append(load_record("start"))
        cells = [c for c in grid_cells(cfg) if cell_key(*c) not in self.rows]
        floor_cells = [(t, k) for t in cfg.max_iter for k in cfg.backward_iters
                       if "neumann" in cfg.grads and cell_key("floor", t, k) not in self.floors]
        bar = tqdm(total=len(cells) + len(floor_cells), desc="bench scaling", unit="cell",
                   disable=not self.progress)
        for contender, t, k in cells:
            bar.set_postfix_str(f"{contender} T={t} K={k}")
            self.rows[cell_key(contender, t, k)] = measure_cell(graph, cfg, contender, t, k, log=self.log)
            self.save()
            bar.update()
        for t, k in floor_cells:
            bar.set_postfix_str(f"floor T={t} K={k}")
            self.floors[cell_key("floor", t, k)] = measure_floor(graph, cfg, t, k)
            self.save()
            bar.update()
        bar.close()
        self._attach_floors()
        if self.targets is None and cfg.rounds > 0:
            self.targets = target_pass(graph, cfg, self.rows, log=self.log)
            self.save()
        if self.accuracy is None and cfg.accuracy:
            self.accuracy = accuracy_study(graph, cfg, self.rows, progress=self.progress, log=self.log)
            self.save()
        if self.targets is not None:
            self.targets["verdicts"] = verdicts(self.targets, self.accuracy)
        self.loads.append(load_record("end", self.started))
        return self.save(complete=True)

    def _attach_floors(self) -> None:
        for row in self.rows.values():
            if row["contender"] != "neumann" or row.get("tol"):
                continue
            floor = self.floors.get(cell_key("floor", row["max_iter"], row["backward_iter"]))
            if floor and row.get("step_time_s"):
                row["floor_s"] = floor["floor_s"]
                row["floor_ratio"] = row["step_time_s"] / floor["floor_s"]

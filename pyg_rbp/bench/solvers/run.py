"""The ``bench solvers`` driver: resume a saved result with the same settings (refuse one with
other settings unless ``fresh``), then for every map the studies it still lacks, writing the JSON
atomically after each, and the verdicts.

Resuming follows the one policy of :class:`pyg_rbp.results.ResumableResults`; a unit is one study
of one map, kept in the file's layout ``result[study][map]`` (see :class:`SolversResults`).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pyg_rbp.bench.graphs import load_bench_graph
from pyg_rbp.bench.solvers.config import SolversConfig
from pyg_rbp.bench.solvers.maps import build_map
from pyg_rbp.bench.solvers.measure import (
    _Adjoint,
    adjoint_study,
    contractivity_study,
    forward_study,
    training_study,
)
from pyg_rbp.bench.solvers.targets import verdicts
from pyg_rbp.engine import fixed_point
from pyg_rbp.results import ResumableResults, environment
from pyg_rbp.runtime import set_threads

STUDIES = ("forward", "adjoint", "adjoint_reference", "training")
"""The per-map studies; each ``(study, map)`` is one resumable unit."""


class SolversResults(ResumableResults):
    """:class:`~pyg_rbp.results.ResumableResults` in the layout of a ``bench solvers`` file:
    ``{"config": ..., "forward": {map: ...}, "adjoint": {map: ...}, ...}``. The settings are the
    whole :class:`SolversConfig` (a setting a file predates counts at its default); every unit is
    ``{"study", "map", "value"}`` in memory and ``result[study][map] = value`` on disk."""

    def __init__(self, path: str | os.PathLike | None, cfg: SolversConfig, *, fresh: bool = False):
        super().__init__(path, asdict(cfg), key=lambda u: (u["study"], u["map"]), fresh=fresh,
                         defaults=asdict(SolversConfig()), settings_field="config")
        for study in STUDIES:  # the file's layout -> units
            for name, value in (self.extra.pop(study, None) or {}).items():
                self.units.append({"study": study, "map": name, "value": value})

    def value(self, study: str, name: str) -> Any:
        """The finished ``study`` of the map ``name``, or ``None``."""
        unit = self.get((study, name))
        return None if unit is None else unit["value"]

    def put(self, study: str, name: str, value: Any) -> None:
        """Record the finished ``study`` of ``name`` and write the file."""
        self.add({"study": study, "map": name, "value": value})

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {self.settings_field: self.settings, "env": self.extra.get("env")}
        for study in STUDIES:
            doc[study] = {u["map"]: u["value"] for u in self.units if u["study"] == study}
        doc.update({k: v for k, v in self.extra.items() if k != "env"})
        return doc


def run_solvers_bench(cfg: SolversConfig, json_path: str | Path, *, progress: bool = True,
                      fresh: bool = False) -> dict[str, Any]:
    """Run (or resume) the benchmark; returns the result document, also written to ``json_path``.

    A ``json_path`` written with other settings raises
    :class:`~pyg_rbp.results.ResultsFileConflict` unless ``fresh``."""
    cfg.validate()
    set_threads(cfg.threads)
    store = SolversResults(json_path, cfg, fresh=fresh)
    store.extra["env"] = environment("cpu")
    store.extra.setdefault("contractivity", [])
    graph = load_bench_graph(cfg.dataset, root=cfg.root, hidden=cfg.hidden, seed=cfg.seed,
                             num_nodes=cfg.nodes, num_edges=cfg.edges)
    store.extra["graph"] = graph.describe()
    names = list(dict.fromkeys([*cfg.maps, *cfg.train_maps]))
    bar = tqdm(names, desc="bench solvers", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        # forward solves and training steps in float32 (what training uses), the gradient-error
        # study in float64 (errors down to 1e-6); the same weights in both
        bm32 = build_map(name, graph.x, graph.edge_index, cfg.hidden, cfg.max_iter, cfg.seed,
                         dtype=torch.float32)
        bm = build_map(name, graph.x, graph.edge_index, cfg.hidden, cfg.max_iter, cfg.seed)
        store.extra.setdefault("maps", {})[name] = {**bm.info, "cap": bm.cap}
        if name in cfg.maps and not store.done(("forward", name)):
            store.put("forward", name, forward_study(bm32, cfg.repeats, cfg.solvers))
        wants_training = name in cfg.train_maps and not store.done(("training", name))
        # a map whose forward reached no fixed point is finished too: its reference says so
        no_fixed_point = "skipped" in (store.value("adjoint_reference", name) or {})
        if (store.done(("adjoint", name)) or no_fixed_point) and not wants_training:
            continue
        with torch.no_grad():
            h_star, st = fixed_point(bm.step, bm.h0, solver="anderson", max_iter=cfg.max_iter,
                                     tol=1e-12, return_stats=True, solver_options={"m": 10})
        if not (st.residual is not None and st.residual < 1e-8):
            store.put("adjoint_reference", name,
                      {"forward_residual": st.residual, "skipped": "no fixed point reached"})
            continue
        adj = _Adjoint(bm, h_star, cfg.reference_iters)
        store.units = [u for u in store.units if store.key(u) != ("adjoint_reference", name)]
        store.units.append({"study": "adjoint_reference", "map": name,
                            "value": {"forward_residual": st.residual,
                                      "adjoint_residual": adj.ref_residual,
                                      "iters": cfg.reference_iters}})
        if not store.value("adjoint", name):
            store.put("adjoint", name, adjoint_study(adj, cfg.repeats, cfg.modes))
        if wants_training:
            store.put("training", name, training_study(bm32, adj, store.value("adjoint", name),
                                                       cfg.train_tol, cfg.repeats))
    if not store.extra.get("contractivity") and cfg.dataset in ("cora", "random"):
        store.extra["contractivity"] = contractivity_study(graph.x, graph.edge_index, cfg.hidden,
                                                           cfg.seed)
    store.write(verdicts=verdicts(store.document()))
    return store.document()

"""The ``bench solvers`` driver: resume a saved result with the same settings (refuse one with
other settings), then for every map the studies it still lacks, writing the JSON atomically
after each, and the verdicts.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

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


def run_solvers_bench(cfg: SolversConfig, json_path: str | Path, *, progress: bool = True,
                      fresh: bool = False) -> dict[str, Any]:
    """Run (or resume) the benchmark; returns the result document, also written to ``json_path``."""
    from tqdm.auto import tqdm

    from pyg_rbp.bench.graphs import load_bench_graph
    from pyg_rbp.results import atomic_write_json, environment, read_json

    cfg.validate()
    json_path = Path(json_path)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    config = asdict(cfg)
    result: dict[str, Any] = {"config": config, "env": environment("cpu"), "forward": {},
                              "adjoint": {}, "adjoint_reference": {}, "training": {},
                              "contractivity": []}
    if json_path.exists() and not fresh:
        old = read_json(json_path)
        defaults = asdict(SolversConfig())
        old_cfg = {k: (old.get("config") or {}).get(k, defaults.get(k)) for k in config}
        if old_cfg == config:
            result.update({k: old.get(k, {}) for k in ("forward", "adjoint", "adjoint_reference",
                                                       "training")})
            result["contractivity"] = old.get("contractivity") or []
        else:
            raise ValueError(f"{json_path} holds a run with other settings; pass --fresh or "
                             "another --json")
    graph = load_bench_graph(cfg.dataset, root=cfg.root, hidden=cfg.hidden, seed=cfg.seed,
                             num_nodes=cfg.nodes, num_edges=cfg.edges)
    result["graph"] = graph.describe()
    names = list(dict.fromkeys([*cfg.maps, *cfg.train_maps]))
    bar = tqdm(names, desc="bench solvers", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        # forward solves and training steps in float32 (what training uses), the gradient-error
        # study in float64 (errors down to 1e-6); the same weights in both
        bm32 = build_map(name, graph.x, graph.edge_index, cfg.hidden, cfg.max_iter, cfg.seed,
                         dtype=torch.float32)
        bm = build_map(name, graph.x, graph.edge_index, cfg.hidden, cfg.max_iter, cfg.seed)
        result.setdefault("maps", {})[name] = {**bm.info, "cap": bm.cap}
        if name in cfg.maps and name not in result["forward"]:
            result["forward"][name] = forward_study(bm32, cfg.repeats, cfg.solvers)
            atomic_write_json(json_path, result)
        need_adjoint = name not in result["adjoint"] or (
            name in cfg.train_maps and name not in result["training"])
        if not need_adjoint:
            continue
        from pyg_rbp.engine import fixed_point

        with torch.no_grad():
            h_star, st = fixed_point(bm.step, bm.h0, solver="anderson", max_iter=cfg.max_iter,
                                     tol=1e-12, return_stats=True, solver_options={"m": 10})
        if not (st.residual is not None and st.residual < 1e-8):
            result["adjoint_reference"][name] = {"forward_residual": st.residual,
                                                 "skipped": "no fixed point reached"}
            result["adjoint"][name] = []
            atomic_write_json(json_path, result)
            continue
        adj = _Adjoint(bm, h_star, cfg.reference_iters)
        result["adjoint_reference"][name] = {"forward_residual": st.residual,
                                             "adjoint_residual": adj.ref_residual,
                                             "iters": cfg.reference_iters}
        if name not in result["adjoint"] or not result["adjoint"][name]:
            result["adjoint"][name] = adjoint_study(adj, cfg.repeats, cfg.modes)
            atomic_write_json(json_path, result)
        if name in cfg.train_maps and name not in result["training"]:
            result["training"][name] = training_study(bm32, adj, result["adjoint"][name],
                                                      cfg.train_tol, cfg.repeats)
            atomic_write_json(json_path, result)
    if not result.get("contractivity") and cfg.dataset in ("cora", "random"):
        result["contractivity"] = contractivity_study(graph.x, graph.edge_index, cfg.hidden, cfg.seed)
    result["adjoint"] = {k: v for k, v in result["adjoint"].items() if v}
    result["verdicts"] = verdicts(result)
    atomic_write_json(json_path, result)
    return result

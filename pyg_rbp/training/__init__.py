"""Training harness shared by ``pyg-rbp train``, ``pyg-rbp demo`` and ``pyg-rbp leaderboard``.

One place trains every model the project compares (fixed-point models in any gradient mode and
the baselines: linear-PCA, GCN, GIN) under the same protocol, budget, early stopping and
measurements, so that rows of the leaderboard are comparable:

- :mod:`~pyg_rbp.training.config`: :class:`TrainConfig`, per-dataset defaults, the reproducing command;
- :mod:`~pyg_rbp.training.models`: the model registry (``MODELS``) and building the model a config names;
- :mod:`~pyg_rbp.training.objective`: loss per metric, "is this score better", divergence checks;
- :mod:`~pyg_rbp.training.fit`: the one training loop (``fit.fit``) and the optimiser table;
- :mod:`~pyg_rbp.training.node` / :mod:`~pyg_rbp.training.graph`: one seed of training (adapters
  of :func:`~pyg_rbp.training.fit.fit`); :mod:`~pyg_rbp.training.loaders` the mini-batch
  iterators, :mod:`~pyg_rbp.training.distributed` the process group;
- :mod:`~pyg_rbp.training.runner`: seeds and modes, resumable JSON;
- :mod:`~pyg_rbp.training.leaderboard`: the resumable matrix and its board.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that `pyg-rbp --help` does not pay for torch_geometric.
# (``fit`` is not lazily exported: it is also the submodule's name; use ``training.fit.fit``.)
_LAZY = {
    "TrainConfig": "config", "build_config": "config", "dataset_task": "config", "defaults_for": "config",
    "train_graph": "graph", "train_node": "node", "run_one": "runner", "run_seeds": "runner",
    "summarize": "runner", "ResultsFileConflict": "runner",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"pyg_rbp.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'pyg_rbp.training' has no attribute {name!r}")

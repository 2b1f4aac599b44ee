"""Associative memory with a continuous Hopfield network solved as a graph fixed point.

The paper's Hopfield experiment (Liao et al. 2018, section 4.1) as a task package, one module
per job:

* :mod:`~pyg_rbp.tasks.hopfield.data`: the stored patterns (MNIST or scikit-learn's 8x8
  digits) and their corruptions (pixels switched off, bits flipped);
* :mod:`~pyg_rbp.tasks.hopfield.graphs`: the synapse topologies (complete, knn, random, local);
* :mod:`~pyg_rbp.tasks.hopfield.memory`: the model, its training loop, the retrieval metrics
  and the diagnostics that explain a failure;
* :mod:`~pyg_rbp.tasks.hopfield.config`: what defines a run, the per-source defaults and the
  paper's setting;
* :mod:`~pyg_rbp.tasks.hopfield.experiment`: the resumable all-modes benchmark behind
  ``pyg-rbp hopfield``; :mod:`~pyg_rbp.tasks.hopfield.report`: its markdown and PNG;
* :mod:`~pyg_rbp.tasks.hopfield.sparse`: retrieval against the number of synapses on sparse
  topologies, and their speed against the complete graph.

Example::

    from pyg_rbp.tasks.hopfield import HopfieldConfig, run_experiment

    doc = run_experiment(HopfieldConfig(images="digits"), ["neumann"], json_path="out.json")
"""

from __future__ import annotations

import warnings
from typing import Any

from pyg_rbp.tasks.hopfield.config import (
    PAPER_SETTING,
    RENAMED,
    SOURCE_DEFAULTS,
    HopfieldConfig,
    paper_deviations,
    upgrade_config,
)
from pyg_rbp.tasks.hopfield.data import (
    DIGITS_THRESHOLD,
    PATTERN_SOURCES,
    Patterns,
    flip_bits,
    load_patterns,
    pixel_errors,
    switch_off,
)
from pyg_rbp.tasks.hopfield.experiment import (
    WEIGHT_BUILDERS,
    measure_saved_bytes,
    run_experiment,
    run_mode,
    weight_tensors,
)
from pyg_rbp.tasks.hopfield.graphs import (
    TOPOLOGIES,
    build_topology,
    complete_graph,
    count_synapses,
    knn_graph,
    local_graph,
    neuron_positions,
    random_graph,
)
from pyg_rbp.tasks.hopfield.memory import (
    LR_SCHEDULES,
    OPTIMIZERS,
    TRAIN_INPUTS,
    HopfieldMemory,
    TrainResult,
    allowed_wrong_pixels,
    evaluate_retrieval,
    fixed_point_diagnostics,
    gradient_agreement,
    recall_loss,
    train_memory,
)
from pyg_rbp.tasks.hopfield.report import plot_grid, results_table
from pyg_rbp.tasks.hopfield.sparse import DEFAULT_POINTS, SPARSE_TRAINING, run_sparse_study

__all__ = [
    "DEFAULT_POINTS",
    "DIGITS_THRESHOLD",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "PAPER_SETTING",
    "PATTERN_SOURCES",
    "RENAMED",
    "SOURCE_DEFAULTS",
    "SPARSE_TRAINING",
    "TOPOLOGIES",
    "TRAIN_INPUTS",
    "WEIGHT_BUILDERS",
    "HopfieldConfig",
    "HopfieldMemory",
    "Patterns",
    "TrainResult",
    "allowed_wrong_pixels",
    "build_topology",
    "complete_graph",
    "count_synapses",
    "evaluate_retrieval",
    "fixed_point_diagnostics",
    "flip_bits",
    "gradient_agreement",
    "knn_graph",
    "load_patterns",
    "local_graph",
    "measure_saved_bytes",
    "neuron_positions",
    "paper_deviations",
    "pixel_errors",
    "plot_grid",
    "random_graph",
    "recall_loss",
    "results_table",
    "run_experiment",
    "run_mode",
    "run_sparse_study",
    "switch_off",
    "train_memory",
    "upgrade_config",
    "weight_tensors",
]

_DEPRECATED = {"evaluate": "evaluate_retrieval"}
"""Old names kept for one release: ``pyg_rbp.tasks.hopfield.evaluate`` was the module-level
``evaluate`` of the former ``tasks/hopfield.py``."""


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        new = _DEPRECATED[name]
        warnings.warn(f"pyg_rbp.tasks.hopfield.{name} is deprecated; use {new}", DeprecationWarning,
                      stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

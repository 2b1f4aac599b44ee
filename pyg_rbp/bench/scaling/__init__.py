r"""Memory and time of one training step for every gradient mode, as ``T`` and ``K`` grow.

This is the measurement behind ``pyg-rbp bench scaling``. For each forward step count ``T`` and
truncation ``K`` it trains the gated node classifier for a few steps in every gradient mode and
records

* the activation memory: bytes of the tensors autograd saves during forward + loss
  (:class:`~pyg_rbp.profiling.SavedTensorBytes`), and on CUDA the peak allocated memory of
  one training step;
* the time of one training step (forward + backward + SGD update), median over ``repeats``
  runs after ``warmup`` runs.

Beside our modes, in the same run and on the same graph and cell size: PyG's
``GatedGraphConv`` unrolled ``T`` times (BPTT) and ``torchdeq`` wrapping our cell
(:mod:`pyg_rbp.bench.peers`). A second, interleaved pass measures the target ratios at one
``(T, K)`` with all contenders timed round-robin, so machine load hits them alike, and prints
Neumann-RBP beside its floor (:mod:`pyg_rbp.bench.floor`). A float64 study measures gradient
accuracy (cosine and relative error against a long CG-RBP solve) for our modes and torchdeq,
and what a forward tolerance buys.

Results are written after every measured cell (atomically), so an interrupted run resumes
where it stopped when started again with the same settings; a file of other settings is
refused unless started afresh.

The package, one job a module: :mod:`~.config` (settings, the grid, the rows' keys, reading older files),
:mod:`~.measure` (one contender: model, training step, memory, time, gradient, floor),
:mod:`~.run` (resume and the loop over the grid), :mod:`~.targets` (the targets as a table,
the interleaved pass and the verdicts), :mod:`~.accuracy` (the float64 gradient study) and
:mod:`~.report` (markdown and PNG).
"""

from pyg_rbp.bench.scaling.accuracy import accuracy_jobs, accuracy_study, torchdeq_comparison
from pyg_rbp.bench.scaling.config import (
    K_INDEPENDENT,
    PART_SETTINGS,
    REDO_PARTS,
    RENAMED,
    SCHEMA,
    ScalingConfig,
    cell_key,
    grid_cells,
    upgrade,
)
from pyg_rbp.bench.scaling.measure import (
    NOTES,
    build_model,
    cell_gradients,
    make_train_step,
    measure_cell,
    measure_floor,
    measure_model,
)
from pyg_rbp.bench.scaling.report import markdown_report, plot, write_reports
from pyg_rbp.bench.scaling.run import ScalingRun
from pyg_rbp.bench.scaling.targets import TARGETS, Target, judge, target_pass, verdicts

__all__ = [
    "K_INDEPENDENT", "NOTES", "PART_SETTINGS", "REDO_PARTS", "RENAMED", "SCHEMA", "TARGETS",
    "ScalingConfig",
    "ScalingRun", "Target", "accuracy_jobs", "accuracy_study", "build_model", "cell_gradients",
    "cell_key", "grid_cells", "judge", "make_train_step", "markdown_report", "measure_cell",
    "measure_floor", "measure_model", "plot", "target_pass", "torchdeq_comparison", "upgrade",
    "verdicts", "write_reports",
]

"""The dataset leaderboard: a resumable matrix of models x gradient modes x seeds, and its board.

:func:`plan` lists the rows to run for each dataset under a budget profile; :func:`run` trains
every (row, seed) cell that is not finished yet and writes each one atomically under
``results/cells/``, so an interrupted run loses nothing and a rerun repeats nothing (``jobs``
trains several cells at once); :func:`render` aggregates the cells into
``results/leaderboard.json`` (machine-readable rows, each with the ``pyg-rbp train`` command that
reproduces it), ``LEADERBOARD.md`` and a PNG, with verdicts on the targets of :data:`TARGETS`.
Nothing on the board is typed in: every number is read back from the cells, and a row that could
not run says why.

One job a module; each imports only the ones listed before it:

- :mod:`~.cells`: a row to run (:class:`Entry`), the cell files and their resume policy
  (:class:`CellStore`);
- :mod:`~.scores`: how a row is labelled, formatted and compared;
- :mod:`~.tu`: what is particular to the TU sets (10-fold cross-validation);
- :mod:`~.planning`: the rows of each dataset and the budget profiles;
- :mod:`~.targets`: the targets as a table and the one function that judges them;
- :mod:`~.aggregate`: board rows from the finished cells;
- :mod:`~.running`: training the cells, serially or in worker processes;
- :mod:`~.rendering`: the JSON rows, the markdown board and its PNGs.
"""

from pyg_rbp.training.leaderboard.aggregate import rows
from pyg_rbp.training.leaderboard.cells import CellStore, Entry, cell_label
from pyg_rbp.training.leaderboard.planning import (
    CPU_GRAPH_EPOCHS,
    CPU_GRAPH_SEEDS,
    CPU_PER_CLASS_SEEDS,
    CPU_SECONDARY_SEEDS,
    DEFAULT_DATASETS,
    FULL_GRAPH,
    PROFILES,
    plan,
)
from pyg_rbp.training.leaderboard.rendering import (
    DIVERGED_MARK,
    render,
    render_curves_png,
    render_markdown,
    render_png,
)
from pyg_rbp.training.leaderboard.running import CellFailed, Terminated, run, usable_cpus
from pyg_rbp.training.leaderboard.scores import UNAVAILABLE, fmt_score, meets, row_label
from pyg_rbp.training.leaderboard.targets import COMPARISONS, TARGETS, Target, Verdict, judge, target_checks
from pyg_rbp.training.leaderboard.tu import PUBLISHED, TU_DATASETS, fold_table, gin_selection

__all__ = [
    "COMPARISONS", "CPU_GRAPH_EPOCHS", "CPU_GRAPH_SEEDS", "CPU_PER_CLASS_SEEDS", "CPU_SECONDARY_SEEDS",
    "DEFAULT_DATASETS", "DIVERGED_MARK", "FULL_GRAPH", "PROFILES", "PUBLISHED", "TARGETS", "TU_DATASETS",
    "UNAVAILABLE", "CellFailed", "CellStore", "Entry", "Target", "Terminated", "Verdict", "cell_label",
    "fmt_score", "fold_table", "gin_selection", "judge", "meets", "plan", "render", "render_curves_png",
    "render_markdown", "render_png", "row_label", "rows", "run", "target_checks", "usable_cpus",
]

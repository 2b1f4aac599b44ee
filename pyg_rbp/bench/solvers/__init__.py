r"""`pyg-rbp bench solvers`: forward solvers and adjoint modes, ours against torchdeq's.

Neumann-RBP runs at its floor (T plain steps plus K VJPs); going faster means fewer operator
applications. This benchmark measures how many, and how long, on the maps the project trains:

* **Forward**: for every map, the steps and time each solver needs to reach a relative residual
  :math:`\|f(h) - h\| / \|h\|` of ``1e-4`` and ``1e-6``: our ``iteration``, ``anderson`` and
  ``broyden`` against torchdeq's ``fixed_point_iter``, ``anderson`` and ``broyden``, all on the
  same step function. Every evaluation of the step is timed and its residual computed by the
  same wrapper, so "time to residual r" means the same for every solver.
* **Adjoint**: at the fixed point, relative error of the parameter-and-input gradient
  :math:`(\partial f / \partial \theta)^\top z` against a high-budget GMRES reference, for
  ``K`` Jacobian products, per mode (Neumann, RBP, CG, GMRES, phantom; torchdeq's IFT backward
  with its fixed-point and Anderson solvers on the same VJP); VJPs and time to ``1e-3``,
  ``1e-4`` and ``1e-6``.
* **Training step** at equal gradient accuracy (``1e-4``): the cell's input preparation, the
  forward solve to residual ``1e-6`` and the backward to the parameters and inputs, our
  solver/mode pairs against torchdeq's ``get_deq`` pairs.

Forward solves and training steps run in float32 (as training does), the gradient-error study
in float64 (errors down to ``1e-6``), with the same weights; one thread, speeds as ratios
measured in the same run with repeats interleaved. Results are written atomically after every map, so an
interrupted run resumes.

The package, one job a module: :mod:`~.config` (settings and the study's grids), :mod:`~.maps`
(the step functions), :mod:`~.measure` (the studies), :mod:`~.run` (resume and the loop over
maps), :mod:`~.targets` (the targets as a table and the verdicts) and :mod:`~.report`
(markdown and PNG).
"""

from pyg_rbp.bench.solvers.config import (
    DEQ_MODES,
    DEQ_OPTIONS,
    DEQ_SOLVERS,
    FORWARD_TOLS,
    GRAD_TOLS,
    K_GRID,
    MAP_NAMES,
    PHANTOM_MAX_K,
    SolversConfig,
)
from pyg_rbp.bench.solvers.maps import BenchMap, build_map
from pyg_rbp.bench.solvers.measure import (
    adjoint_study,
    contractivity_study,
    forward_study,
    training_study,
)
from pyg_rbp.bench.solvers.report import markdown_report, plot, write_reports
from pyg_rbp.bench.solvers.run import run_solvers_bench
from pyg_rbp.bench.solvers.targets import TARGETS, Target, verdicts

__all__ = [
    "DEQ_MODES", "DEQ_OPTIONS", "DEQ_SOLVERS", "FORWARD_TOLS", "GRAD_TOLS", "K_GRID",
    "MAP_NAMES", "PHANTOM_MAX_K", "TARGETS", "BenchMap", "SolversConfig", "Target",
    "adjoint_study", "build_map", "contractivity_study", "forward_study", "markdown_report",
    "plot", "run_solvers_bench", "training_study", "verdicts", "write_reports",
]

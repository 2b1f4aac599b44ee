"""The graph-agnostic engine: fixed-point solves made differentiable.

Nothing in this package knows about graphs; :mod:`pyg_rbp.nn` builds message-passing layers on
top of it and the tasks (Hopfield memories, hyperparameter optimisation) use it directly.
Forward solvers (:mod:`~pyg_rbp.engine.forward`) and gradient modes
(:mod:`~pyg_rbp.engine.modes`) are registries: :func:`register_solver`,
:func:`register_grad_mode`.

Modules: ``solver`` (:func:`fixed_point`: the solve and its autograd function), ``forward``
(forward solvers), ``modes`` (gradient modes), ``adjoint`` (the adjoint linear solvers and the
step's VJP), ``convergence`` (residuals, divergence and convergence warnings, spectral radius),
``arguments`` (argument checks), ``stats`` (per-call diagnostics), ``regularize`` (Jacobian
penalty).
"""

from pyg_rbp.engine.adjoint import (
    StepLinearization,
    cg_solve,
    gmres_solve,
    neumann_solve,
    rbp_solve,
)
from pyg_rbp.engine.convergence import (
    ConvergenceError,
    ConvergenceWarning,
    DivergenceError,
    reset_warnings,
    spectral_radius,
)
from pyg_rbp.engine.forward import (
    SolveResult,
    get_solver,
    normalize_solver,
    register_solver,
    solver_names,
    unregister_solver,
)
from pyg_rbp.engine.modes import (
    GRAD_MODES,
    IMPLICIT_MODES,
    GradMode,
    get_grad_mode,
    grad_mode_names,
    normalize_grad_mode,
    parse_grad_modes,
    register_grad_mode,
    unregister_grad_mode,
)
from pyg_rbp.engine.regularize import jacobian_penalty
from pyg_rbp.engine.solver import fixed_point
from pyg_rbp.engine.stats import FixedPointStats

__all__ = [
    "GRAD_MODES",
    "IMPLICIT_MODES",
    "ConvergenceError",
    "ConvergenceWarning",
    "DivergenceError",
    "FixedPointStats",
    "GradMode",
    "SolveResult",
    "StepLinearization",
    "cg_solve",
    "fixed_point",
    "get_grad_mode",
    "get_solver",
    "gmres_solve",
    "grad_mode_names",
    "jacobian_penalty",
    "neumann_solve",
    "normalize_grad_mode",
    "normalize_solver",
    "parse_grad_modes",
    "rbp_solve",
    "register_grad_mode",
    "register_solver",
    "reset_warnings",
    "solver_names",
    "spectral_radius",
    "unregister_grad_mode",
    "unregister_solver",
]

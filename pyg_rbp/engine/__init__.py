"""The graph-agnostic engine: fixed-point solves differentiable in five gradient modes.

Nothing in this package knows about graphs; :mod:`pyg_rbp.nn` builds message-passing layers on
top of it and the tasks (Hopfield memories, hyperparameter optimisation) use it directly.
"""

from pyg_rbp.engine.adjoint import StepLinearization, cg_solve, neumann_solve, rbp_solve
from pyg_rbp.engine.modes import GRAD_MODES, IMPLICIT_MODES, normalize_grad_mode, parse_grad_modes
from pyg_rbp.engine.solver import (
    ConvergenceWarning,
    DivergenceError,
    fixed_point,
    reset_warnings,
    spectral_radius,
)
from pyg_rbp.engine.stats import FixedPointStats

__all__ = [
    "GRAD_MODES",
    "IMPLICIT_MODES",
    "ConvergenceWarning",
    "DivergenceError",
    "FixedPointStats",
    "StepLinearization",
    "cg_solve",
    "fixed_point",
    "neumann_solve",
    "normalize_grad_mode",
    "parse_grad_modes",
    "rbp_solve",
    "reset_warnings",
    "spectral_radius",
]

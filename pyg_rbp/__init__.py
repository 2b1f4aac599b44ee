"""pyg_rbp: recurrent fixed-point graph networks trained with recurrent back-propagation.

An implementation of Liao et al., "Reviving and Improving Recurrent Back-Propagation"
(ICML 2018) for PyTorch Geometric: a graph-agnostic fixed-point engine with five gradient
modes (:func:`fixed_point`), message-passing layers on top of it (:mod:`pyg_rbp.nn`), data
loading (:mod:`pyg_rbp.data`), the paper's tasks and a command-line interface.
"""

from pyg_rbp.engine import (
    GRAD_MODES,
    ConvergenceWarning,
    DivergenceError,
    FixedPointStats,
    fixed_point,
    get_grad_mode,
    get_solver,
    jacobian_penalty,
    register_grad_mode,
    register_solver,
    spectral_radius,
)

__version__ = "0.1.0"

__all__ = [
    "GRAD_MODES",
    "ConvergenceWarning",
    "DivergenceError",
    "FixedPointStats",
    "__version__",
    "fixed_point",
    "get_grad_mode",
    "get_solver",
    "jacobian_penalty",
    "register_grad_mode",
    "register_solver",
    "spectral_radius",
]

"""The settings of one ``bench solvers`` run and the study's fixed grids: the tolerances, the
torchdeq solvers and modes compared, the backward budgets ``K`` and the maps by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyg_rbp.engine import get_grad_mode, grad_mode_names, normalize_solver, solver_names

FORWARD_TOLS = (1e-4, 1e-6)
GRAD_TOLS = (1e-3, 1e-4, 1e-6)
DEQ_SOLVERS = ("fixed_point_iter", "anderson", "broyden")
DEQ_OPTIONS = {"broyden": {"LBFGS_thres": 20}}
"""torchdeq's Broyden keeps ``max_iter`` rank-one updates by default (a 2000 x state buffer that
every product reads: 480 ms per step on Cora, 5 GB); it gets the memory of ours (20)."""
DEQ_MODES = ("fixed_point_iter", "anderson")
K_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
PHANTOM_MAX_K = 64  # its memory grows with K (autograd through K steps)

MAP_NAMES = ("gated_mean", "gated_add", "implicit_k0.95", "implicit_k0.99", "ppr_a0.1",
             "ppr_a0.02", "long_paths")
"""The benchmark's maps. ``gated_*``: the paper's GatedCell (no input injection) with mean or
sum aggregation; ``implicit_k*``: ImplicitCell with its contraction bound active (non-negative
weights scaled up, so that every row is rescaled to l1-norm kappa and the contraction factor is
kappa); ``ppr_a*``: PPRCell with teleport alpha; ``long_paths``: ImplicitCell (kappa 0.99) on
disjoint paths of 400 nodes, where information travels one hop per step."""


def _registered_solvers() -> list[str]:
    return list(solver_names())


def _registered_adjoint_modes() -> list[str]:
    """Every registered mode that differentiates the solution (not the forward's steps)."""
    return [m for m in grad_mode_names() if get_grad_mode(m).records in ("one", "from_solution")]


@dataclass
class SolversConfig:
    """Settings of one run. ``solvers`` and ``modes`` default to every registered forward solver
    and every registered mode that differentiates the solution, so a user's own appear too."""

    dataset: str = "cora"
    root: str | None = None
    hidden: int = 64
    nodes: int = 2708
    edges: int = 10556
    maps: list[str] = field(default_factory=lambda: list(MAP_NAMES))
    solvers: list[str] = field(default_factory=_registered_solvers)
    modes: list[str] = field(default_factory=_registered_adjoint_modes)
    max_iter: int = 2000
    repeats: int = 3
    train_maps: list[str] = field(default_factory=lambda: ["gated_mean", "implicit_k0.99"])
    train_tol: float = 1e-4
    reference_iters: int = 600
    seed: int = 0
    threads: int | None = 1

    def validate(self) -> None:
        bad = [m for m in [*self.maps, *self.train_maps] if m not in MAP_NAMES]
        if bad:
            raise ValueError(f"unknown map(s) {bad}; choose from {', '.join(MAP_NAMES)}")
        self.solvers = [normalize_solver(s) for s in self.solvers]
        self.modes = [get_grad_mode(m).name for m in self.modes]
        wrong = [m for m in self.modes if get_grad_mode(m).records not in ("one", "from_solution")]
        if wrong:
            raise ValueError(f"modes {wrong} differentiate the forward's steps, not the solution")
        for name in ("hidden", "max_iter", "repeats", "reference_iters", "nodes", "edges"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.train_tol < 1:
            raise ValueError(f"train_tol must be in (0, 1), got {self.train_tol!r}")

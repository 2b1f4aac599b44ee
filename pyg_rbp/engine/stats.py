"""What a fixed-point solve reports about itself.

The forward residual tells whether the state really settled (the implicit gradient is only
exact at a fixed point); the backward residual tells how well the adjoint system was solved.
Values are kept as tensors and turned into Python numbers only when read, so collecting them
never forces a host-device synchronisation inside a training step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _to_float(value: torch.Tensor | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu())
    return float(value)


@dataclass
class FixedPointStats:
    """Diagnostics of one call of :func:`pyg_rbp.fixed_point`.

    Attributes:
        grad: canonical gradient mode of the solve.
        forward_iters: number of applications of ``f`` in the forward pass.
        max_iter: the iteration budget that was given.
        tol: the forward tolerance that was given (``0`` means a fixed number of steps).
        backward_iters: iterations of the backward solve (``None`` before backward or for
            the unrolled modes, whose backward is plain autograd).
        solver: the forward solver's name.
        backward_vjps: Jacobian products (VJPs, and JVPs for CG) the adjoint solve spent,
            without the one ``track`` adds for :attr:`backward_residual`.
        spectral_radius: power-iteration estimate of the spectral radius of :math:`J` at the
            solution (only with ``spectral_radius_iters > 0``).
    """

    grad: str
    max_iter: int
    tol: float
    forward_iters: int = 0
    backward_iters: int | None = None
    solver: str = "iteration"
    backward_vjps: int | None = None
    spectral_radius: float | None = None
    _residual: torch.Tensor | float | None = field(default=None, repr=False)
    _trace: list[torch.Tensor] | None = field(default=None, repr=False)
    _backward_residual: torch.Tensor | float | None = field(default=None, repr=False)

    @property
    def residual(self) -> float | None:
        """Final relative forward residual ``||f(h) - h|| / ||h||``."""
        return _to_float(self._residual)

    @property
    def residual_trace(self) -> list[float]:
        """Relative residual after every forward step (empty unless tracing was requested)."""
        if not self._trace:
            return []
        return torch.stack([t.detach() for t in self._trace]).cpu().tolist()

    @property
    def converged(self) -> bool | None:
        """``residual <= tol`` when a tolerance was given, else ``None``."""
        if self.tol <= 0 or self.residual is None:
            return None
        return self.residual <= self.tol

    @property
    def backward_residual(self) -> float | None:
        """``||z - J^T z - g|| / ||g||`` of the adjoint solve (set by backward when tracked)."""
        return _to_float(self._backward_residual)

    def as_dict(self) -> dict:
        """Plain-Python summary, suitable for JSON."""
        return {
            "grad": self.grad,
            "solver": self.solver,
            "forward_iters": self.forward_iters,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "residual": self.residual,
            "converged": self.converged,
            "backward_iters": self.backward_iters,
            "backward_residual": self.backward_residual,
            "backward_vjps": self.backward_vjps,
            "spectral_radius": self.spectral_radius,
        }

    def __repr__(self) -> str:
        res = self.residual
        bres = self.backward_residual
        return (
            f"FixedPointStats(grad={self.grad!r}, solver={self.solver!r}, "
            f"forward_iters={self.forward_iters}, "
            f"residual={res if res is None else f'{res:.3e}'}, "
            f"backward_iters={self.backward_iters}, "
            f"backward_residual={bres if bres is None else f'{bres:.3e}'})"
        )

"""Is the solve converged, and is it sound? Residuals, divergence, and the warnings that say so.

The forward solve stops on a relative residual (per segment with ``segments``); after it, one
synchronisation checks the state: NaN/inf raises :class:`DivergenceError` naming the step where
it broke, a missed tolerance, a growing state or one that did not settle warns once per layer
(:class:`ConvergenceWarning`; :class:`ConvergenceError` with ``strict=True``).
:func:`spectral_radius` estimates whether a map is contractive where the implicit modes need it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor

from pyg_rbp.engine.adjoint import State, StepLinearization, norm
from pyg_rbp.engine.arguments import StateLike, as_state
from pyg_rbp.engine.stats import FixedPointStats


class DivergenceError(FloatingPointError):
    """A forward or backward solve produced NaN or inf."""


class ConvergenceWarning(UserWarning):
    """A forward solve missed its tolerance or did not settle."""


class ConvergenceError(RuntimeError):
    """With ``strict=True``: a forward solve missed its tolerance or did not settle."""


_WARNED: set[tuple[Any, str]] = set()

_GROWTH_LIMIT = 1e4  # ||h_T|| / max(||h_0||, 1) beyond which a tol=0 solve is called divergent
_SETTLE_LIMIT = 1e-1  # relative residual beyond which a tol=0 solve is called unsettled
# A large state that has stopped moving is a fixed point, not a divergence: growth beyond
# _GROWTH_LIMIT is reported only while the relative residual is still above this.
_GROWTH_RESIDUAL = 1e-4


def warn_once(key: tuple[Any, str], message: str, strict: bool = False) -> None:
    """Warn once per ``(warn_key, kind of problem)`` (a layer, or a call site), so a training
    loop is not flooded but every layer reports its own problem; raise with ``strict``."""
    if strict:
        raise ConvergenceError(message + " (strict=True)")
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, ConvergenceWarning, stacklevel=5)


def reset_warnings() -> None:
    """Forget which convergence warnings were already shown (for tests and notebooks)."""
    _WARNED.clear()


def _ratio(diff: Tensor, base: Tensor) -> Tensor:
    # a norm that overflowed (a state beyond ~1e154 in float64) is not a zero residual
    return torch.where(torch.isfinite(base), diff / base.clamp_min(1e-30),
                       torch.full_like(diff, math.inf))


def relative_change(new: State, old: State) -> Tensor:
    with torch.no_grad():
        diff = norm(tuple(a.detach() - b.detach() for a, b in zip(new, old)))
        return _ratio(diff, norm(tuple(b.detach() for b in old)))


def segment_residual(segments: Tensor | None, num_segments: int) -> Callable[[State, State], Tensor]:
    r"""The stopping residual: :math:`\|new - old\| / \|old\|`, or with ``segments`` (a segment
    id per row of the state's first dimension) the worst such ratio over the segments."""
    if segments is None:
        return relative_change

    def residual(new: State, old: State) -> Tensor:
        with torch.no_grad():
            diff = old[0].new_zeros(num_segments)
            base = old[0].new_zeros(num_segments)
            for a, b in zip(new, old):
                a, b = a.detach(), b.detach()
                diff.index_add_(0, segments, (a - b).reshape(a.shape[0], -1).pow(2).sum(1))
                base.index_add_(0, segments, b.reshape(b.shape[0], -1).pow(2).sum(1))
            return _ratio(diff.sqrt(), base.sqrt()).max()

    return residual


def check_forward(f: Callable, h0: StateLike, h: State, stats: FixedPointStats,
                   step: Callable[[State], State], is_tuple: bool, *, strict: bool = False,
                   warn_key: Hashable = None) -> None:
    """One synchronisation after the loop: NaN/inf is an error, a missed tolerance a warning."""
    finite = all(bool(torch.isfinite(t.detach()).all()) for t in h)
    if not finite:
        # Error path only: replay without a graph to say at which step it broke.
        state, _ = as_state(h0, "h0")
        first_bad = None
        with torch.no_grad():
            for t in range(1, stats.forward_iters + 1):
                state = step(state)
                if not all(bool(torch.isfinite(s).all()) for s in state):
                    first_bad = t
                    break
        where = f"at iteration {first_bad}" if first_bad else f"within {stats.forward_iters} iterations"
        raise DivergenceError(
            f"fixed_point forward: the state became NaN/inf {where} of max_iter="
            f"{stats.max_iter}. The map is not a contraction here (spectral radius of "
            "df/dh >= 1 or an exploding input); use damping < 1, a contractive cell, or "
            "smaller weights"
        )
    residual = stats.residual
    if stats.tol > 0:
        if residual is not None and residual > stats.tol:
            warn_once(
                (warn_key, f"tol-{stats.grad}"),
                f"fixed_point: forward missed tol={stats.tol:g} after {stats.forward_iters} "
                f"iterations (relative residual {residual:.3e}); implicit gradients are "
                "approximate away from a fixed point",
                strict,
            )
        return
    h0_state, _ = as_state(h0, "h0")
    start_norm = max(float(norm(tuple(t.detach() for t in h0_state))), 1.0)
    growth = float(norm(tuple(t.detach() for t in h))) / start_norm
    if growth > _GROWTH_LIMIT and (residual is None or residual > _GROWTH_RESIDUAL):
        warn_once(
            (warn_key, "growth"),
            f"fixed_point: the state norm grew {growth:.2e}x over {stats.forward_iters} "
            f"iterations (relative residual {residual:.3e}); the map looks divergent "
            "(spectral radius of df/dh > 1)",
            strict,
        )
    elif residual is not None and residual > _SETTLE_LIMIT:
        warn_once(
            (warn_key, "settle"),
            f"fixed_point: the state did not settle in {stats.forward_iters} iterations "
            f"(relative residual {residual:.3e}); implicit gradients assume a fixed point",
            strict,
        )


def spectral_radius(f: Callable[[Any], Any], h: StateLike, iters: int = 50,
                    generator: torch.Generator | None = None) -> float:
    r"""Estimate the spectral radius of :math:`J = \partial f / \partial h` at ``h``.

    Power iteration on :math:`J^\top` with VJPs; the estimate is the geometric mean of the norm
    growth over the second half of the iterations, which also handles complex eigenpairs.
    Below one, Neumann-RBP and RBP converge; at or above one they diverge.
    """
    state, is_tuple = as_state(h, "h")
    h_in = tuple(t.detach().requires_grad_(True) for t in state)
    with torch.enable_grad():
        out, _ = as_state(f(h_in if is_tuple else h_in[0]), "the output of f")
    lin = StepLinearization(out, h_in)
    v = tuple(torch.randn(o.shape, dtype=o.dtype, device=o.device, generator=generator) for o in out)
    v = tuple(t / norm(v) for t in v)
    logs = []
    for _ in range(iters):
        v = lin.vjp(v)
        r = norm(v)
        if not bool(r > 0):
            return 0.0
        logs.append(torch.log(r))
        v = tuple(t / r for t in v)
    tail = logs[len(logs) // 2:]
    return float(torch.exp(torch.stack(tail).mean()))

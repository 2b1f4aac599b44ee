r"""Forward solvers of :math:`h = f(h)`, registered by name: iteration, Anderson, Broyden.

:func:`pyg_rbp.fixed_point` looks its ``solver`` up here (torchdeq's ``solver/__init__.py``
table is the model), so a solver registered with :func:`register_solver` works in the engine,
the layers, ``pyg-rbp train --solver`` and the benchmarks without other edits.

A solver is a callable

.. code-block:: python

    solver(step, h0, *, max_iter, tol, residual, trace, **options) -> SolveResult

``step`` maps a state (a tuple of tensors) to the next one, ``residual(new, old)`` is the
engine's relative residual (a 0-d tensor: :math:`\|new - old\| / \|old\|`, or its worst value
over the segments of a batch), ``trace`` a list to append every iterate's residual to (or
``None``). It runs under ``torch.no_grad``, applies ``step`` at most ``max_iter`` times, stops
once the residual is ``<= tol`` when ``tol > 0`` (the only host synchronisation it may make)
and returns a :class:`SolveResult`. Its history is kept as tensors of the state's shapes, and
all its arithmetic (inner products, the small least-squares solves) stays on the state's
device. A solver whose iterates are plain steps of ``f`` sets ``solver.plain_steps = True``;
BPTT can only differentiate those.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

State = tuple[Tensor, ...]
Residual = Callable[[State, State], Tensor]


class SolveResult(NamedTuple):
    """What a forward solver returns.

    Attributes:
        state: the solution estimate, :math:`f(x)` at the solver's best iterate :math:`x`.
        previous: :math:`x` itself, so that ``state = step(previous)`` (the implicit modes
            record that step with a graph).
        evals: applications of ``step``.
        residual: ``residual(state, previous)``, a 0-d tensor.
    """

    state: State
    previous: State
    evals: int
    residual: Tensor


_SOLVERS: dict[str, Callable[..., SolveResult]] = {}


def register_solver(name: str, solver: Callable[..., SolveResult], *, replace: bool = False) -> None:
    """Register a forward solver under ``name`` (see the module for the calling convention).

    Registering a taken name is an error unless ``replace``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a solver needs a non-empty name, got {name!r}")
    if not callable(solver):
        raise ValueError(f"register_solver: solver must be callable, got {type(solver).__name__}")
    key = name.strip().lower()
    if key in _SOLVERS and not replace:
        raise ValueError(f"solver {key!r} already registered; pass replace=True to override")
    _SOLVERS[key] = solver


def unregister_solver(name: str) -> None:
    """Remove a registered solver; the built-in ones cannot be removed."""
    key = normalize_solver(name)
    if key in ("iteration", "anderson", "broyden"):
        raise ValueError(f"solver {key!r} is built in and cannot be removed")
    del _SOLVERS[key]


def solver_names() -> tuple[str, ...]:
    """The registered solvers' names, built-in ones first."""
    return tuple(_SOLVERS)


def normalize_solver(name: str) -> str:
    """Canonical (lower-case) name of a registered solver; ValueError listing them otherwise."""
    if not isinstance(name, str) or name.strip().lower() not in _SOLVERS:
        raise ValueError(f"unknown solver {name!r}; valid solvers are {', '.join(_SOLVERS)}")
    return name.strip().lower()


def get_solver(name: str) -> Callable[..., SolveResult]:
    """The registered solver called ``name``."""
    return _SOLVERS[normalize_solver(name)]


# --- helpers over states (tuples of tensors) -------------------------------------------------

def _where(cond: Tensor, a: State, b: State) -> State:
    return tuple(torch.where(cond, x, y) for x, y in zip(a, b))


def _sub(a: State, b: State) -> State:
    return tuple(x - y for x, y in zip(a, b))


def _stop(r: Tensor, tol: float) -> bool:
    return tol > 0 and bool(r <= tol)


def _finite(r: Tensor) -> Tensor:
    return torch.isfinite(r)


def _mv(hist: list[Tensor], v: State, count: int) -> Tensor:
    """``[<H_i, v>]_{i < count}`` for histories stored as ``[m, *shape]`` tensors."""
    return sum(torch.mv(h[:count].reshape(count, -1), vi.reshape(-1)) for h, vi in zip(hist, v))  # type: ignore[return-value]


def _combine(hist: list[Tensor], coef: Tensor, count: int) -> State:
    """``sum_i coef_i H_i`` over the first ``count`` history entries."""
    return tuple((coef.to(h.dtype) @ h[:count].reshape(count, -1)).view(h.shape[1:]) for h in hist)


def _history(state: State, m: int) -> list[Tensor]:
    return [torch.zeros((m, *t.shape), dtype=t.dtype, device=t.device) for t in state]


def _solve_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _first_step(step: Callable[[State], State], h0: State, residual: Residual,
                trace: list[Tensor] | None) -> tuple[State, State, Tensor]:
    """``(h0, f(h0), residual)``: the plain first step every accelerated solver starts from."""
    fx = step(h0)
    r = residual(fx, h0)
    if trace is not None:
        trace.append(r)
    return h0, fx, r


# --- the solvers -----------------------------------------------------------------------------

def iteration(step: Callable[[State], State], h0: State, *, max_iter: int, tol: float,
              residual: Residual, trace: list[Tensor] | None) -> SolveResult:
    r"""Plain (damped) fixed-point iteration :math:`h_{t+1} = f(h_t)`, the paper's solver."""
    h = h0
    prev = h0
    r = torch.zeros(())
    n = 0
    while n < max_iter:
        prev, h = h, step(h)
        n += 1
        r = residual(h, prev)
        if trace is not None:
            trace.append(r)
        if _stop(r, tol):
            break
    return SolveResult(h, prev, n, r)


iteration.plain_steps = True  # type: ignore[attr-defined]


def anderson(step: Callable[[State], State], h0: State, *, max_iter: int, tol: float,
             residual: Residual, trace: list[Tensor] | None, m: int = 5, beta: float = 1.0,
             lam: float = 1e-8, safeguard: float = 1e3) -> SolveResult:
    r"""Anderson acceleration (type II, Walker and Ni 2011) with window ``m``.

    With :math:`g_i = f(x_i) - x_i` over the last ``m`` iterates, the mixing weights solve the
    regularised least-squares problem :math:`\min_\alpha \|\sum_i \alpha_i g_i\|^2 +
    \lambda \|\alpha\|^2` subject to :math:`\sum_i \alpha_i = 1` (``lam`` is relative to the mean
    of :math:`\|g_i\|^2`), and :math:`x_{k+1} = \sum_i \alpha_i (x_i + \beta g_i)` (``beta``:
    mixing). The history keeps :math:`g_i` and :math:`x_i + \beta g_i` as ``[m, *shape]``
    tensors; per iteration the Gram matrix gains one row (one matrix-vector product over the
    stacked history) and the new iterate is one vector-matrix product, so the overhead is about
    ``2 m + 2`` passes over the state. The ``m x m`` solve runs on the device.

    Safeguard: when the weights are not finite, or the iterate's residual exceeds ``safeguard``
    times the best one so far, the next iterate is the plain step :math:`x + \beta g` instead.
    With ``tol > 0`` (one host sync per iteration for the stopping test anyway) the safeguard
    and the best-iterate bookkeeping are Python branches; with ``tol = 0`` they are
    ``torch.where`` selections and the loop never synchronises. The best iterate (lowest
    residual) is returned.
    """
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"anderson: m must be an integer >= 1, got {m!r}")
    if not 0 < beta <= 1:
        raise ValueError(f"anderson: beta must be in (0, 1], got {beta!r}")
    x, fx, r = _first_step(step, h0, residual, trace)
    n = 1
    best_x, best_f, best_r = x, fx, r
    if _stop(r, tol) or max_iter <= 1:
        return SolveResult(fx, x, n, r)
    sync = tol > 0
    device = h0[0].device
    sdt = _solve_dtype(device)
    hy = _history(x, m)  # x_i + beta g_i
    hg = _history(x, m)  # g_i
    gram = torch.zeros((m, m), dtype=sdt, device=device)
    eye = torch.eye(m, dtype=sdt, device=device)
    ones = torch.ones(m, 1, dtype=sdt, device=device)
    tiny = torch.finfo(sdt).tiny ** 0.5
    for k in range(max_iter - 1):
        j = k % m
        count = min(k + 1, m)
        for hyi, hgi, xi, fi in zip(hy, hg, x, fx):
            torch.sub(fi, xi, out=hgi[j])
            torch.add(xi, hgi[j], alpha=beta, out=hyi[j])
        g = tuple(hgi[j] for hgi in hg)
        row = _mv(hg, g, count).to(sdt)
        gram[j, :count] = row
        gram[:count, j] = row
        a = gram[:count, :count]
        reg = lam * torch.diagonal(a).mean() + tiny
        w, _info = torch.linalg.solve_ex(a + reg * eye[:count, :count], ones[:count])
        alpha = (w / w.sum()).squeeze(1)
        x_acc = _combine(hy, alpha, count)
        if sync:
            bad = not (bool(torch.isfinite(alpha).all()) and bool(r <= safeguard * best_r))
            x = tuple(t.clone() for t in (hyi[j] for hyi in hy)) if bad else x_acc
        else:
            bad_t = ~(torch.isfinite(alpha).all() & torch.isfinite(r)) | (r > safeguard * best_r)
            x = _where(bad_t, tuple(hyi[j] for hyi in hy), x_acc)
        fx = step(x)
        n += 1
        r = residual(fx, x)
        if trace is not None:
            trace.append(r)
        if sync:
            if bool(r < best_r):
                best_x, best_f, best_r = x, fx, r
            if bool(r <= tol):
                break
        else:
            better = r < best_r
            best_x, best_f = _where(better, x, best_x), _where(better, fx, best_f)
            best_r = torch.where(better, r, best_r)
    return SolveResult(best_f, best_x, n, best_r)


def broyden(step: Callable[[State], State], h0: State, *, max_iter: int, tol: float,
            residual: Residual, trace: list[Tensor] | None, m: int = 20,
            safeguard: float = 1e3) -> SolveResult:
    r"""Limited-memory ("good") Broyden's method on :math:`g(x) = f(x) - x = 0`.

    The inverse Jacobian of :math:`g` is approximated as :math:`B^{-1} = -I + \sum_i u_i v_i^\top`
    with the last ``m`` rank-one updates (older ones are overwritten cyclically), and
    :math:`x_{k+1} = x_k - B^{-1} g(x_k)` (a full step, as torchdeq's and the DEQ code's Broyden
    take without line search). Updates with a vanishing denominator are dropped; an iterate
    whose residual exceeds ``safeguard`` times the best one falls back to a plain step from the
    best iterate. No host sync except for ``tol``; the best iterate is returned.
    """
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"broyden: m must be an integer >= 1, got {m!r}")
    x, fx, r = _first_step(step, h0, residual, trace)
    n = 1
    best_x, best_f, best_r = x, fx, r
    if _stop(r, tol) or max_iter <= 1:
        return SolveResult(fx, x, n, r)
    us = _history(x, m)
    vs = _history(x, m)
    count = 0
    g = _sub(fx, x)

    def matvec(v: State) -> State:  # B^{-1} v = -v + U (V^T v)
        if count == 0:
            return tuple(-vi for vi in v)
        c = _mv(vs, v, count)
        return tuple(-vi + ui for vi, ui in zip(v, _combine(us, c, count)))

    def rmatvec(v: State) -> State:  # v^T B^{-1} = -v + V (U^T v)
        if count == 0:
            return tuple(-vi for vi in v)
        c = _mv(us, v, count)
        return tuple(-vi + ui for vi, ui in zip(v, _combine(vs, c, count)))

    update = tuple(-t for t in matvec(g))
    for _ in range(max_iter - 1):
        plain = tuple(bx + (bf - bx) for bx, bf in zip(best_x, best_f))
        x_new = tuple(xi + ui for xi, ui in zip(x, update))
        bad = ~_finite(r) | (r > safeguard * best_r)
        bad = bad | ~torch.stack([torch.isfinite(t).all() for t in x_new]).all()
        x_new = _where(bad, plain, x_new)
        fx = step(x_new)
        n += 1
        r = residual(fx, x_new)
        if trace is not None:
            trace.append(r)
        better = r < best_r
        best_x, best_f = _where(better, x_new, best_x), _where(better, fx, best_f)
        best_r = torch.where(better, r, best_r)
        if _stop(r, tol):
            break
        g_new = _sub(fx, x_new)
        dx = _sub(x_new, x)
        dg = _sub(g_new, g)
        v = rmatvec(dx)
        denom = sum((vi * di).sum() for vi, di in zip(v, dg))
        ok = torch.isfinite(denom) & (denom.abs() > 1e-30)
        inv = torch.where(ok, 1.0 / torch.where(ok, denom, torch.ones_like(denom)),
                          torch.zeros_like(denom))
        u = tuple((a - b) * inv for a, b in zip(dx, matvec(dg)))
        if count == m:  # memory full: restart from B^{-1} = -I (better than overwriting)
            count = 0
        for ui, vi, hu, hv in zip(u, v, us, vs):
            hu[count] = ui
            hv[count] = vi * ok
        count += 1
        x, g = x_new, g_new
        update = tuple(-t for t in matvec(g))
    return SolveResult(best_f, best_x, n, best_r)


register_solver("iteration", iteration)
register_solver("anderson", anderson)
register_solver("broyden", broyden)


def solver_options_for(solver: Callable[..., Any], options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` checked against the solver's keyword arguments (a clear error for a typo)."""
    options = dict(options or {})
    try:
        params = inspect.signature(solver).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    fixed = {"max_iter", "tol", "residual", "trace"}
    allowed = {k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} - fixed
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"solver_options {unknown} not understood by this solver "
                         f"(its options: {', '.join(sorted(allowed)) or 'none'})")
    return options

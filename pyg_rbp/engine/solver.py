r"""The fixed-point solver with five gradient modes: :func:`fixed_point`.

Runs :math:`h_{t+1} = f(h_t)` and makes the result differentiable in one of five ways (BPTT,
truncated BPTT, RBP, CG-RBP, Neumann-RBP). The implicit modes run the solve without recording a
graph and record one step only, so their memory does not depend on the number of forward steps.
All modes produce the same forward sequence :math:`h_1, h_2, \dots`: they differ only in what
is recorded and how the backward pass obtains the adjoint.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
from torch import Tensor

from pyg_rbp.engine.adjoint import ADJOINT_SOLVERS, State, StepLinearization, norm
from pyg_rbp.engine.modes import IMPLICIT_MODES, normalize_grad_mode
from pyg_rbp.engine.stats import FixedPointStats

StateLike = Union[Tensor, Sequence[Tensor]]


class DivergenceError(FloatingPointError):
    """A forward or backward solve produced NaN or inf."""


class ConvergenceWarning(UserWarning):
    """A forward solve missed its tolerance or did not settle."""


_WARNED: set[str] = set()

_GROWTH_LIMIT = 1e4  # ||h_T|| / max(||h_0||, 1) beyond which a tol=0 solve is called divergent
_SETTLE_LIMIT = 1e-1  # relative residual beyond which a tol=0 solve is called unsettled
# A large state that has stopped moving is a fixed point, not a divergence: growth beyond
# _GROWTH_LIMIT is reported only while the relative residual is still above this.
_GROWTH_RESIDUAL = 1e-4


def _warn_once(key: str, message: str) -> None:
    """Warn once per process and kind of problem, so a training loop is not flooded."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, ConvergenceWarning, stacklevel=4)


def autocast_enabled(device_type: str) -> bool:
    """Whether :class:`torch.autocast` is on for ``device_type`` (any torch >= 2.1: the
    ``device_type`` argument of :func:`torch.is_autocast_enabled` exists from 2.4 on)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one query per device kind
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return device_type == "cuda" and torch.is_autocast_enabled()


def reset_warnings() -> None:
    """Forget which convergence warnings were already shown (for tests and notebooks)."""
    _WARNED.clear()


class _ImplicitGrad(torch.autograd.Function):
    """Identity on the recorded step whose backward replaces ``g`` by the adjoint ``z``.

    The outputs are copies, not views, so callers may modify them in place (``relu_``, ``+=``):
    the recorded step keeps its own tensors for the adjoint's VJPs.
    """

    @staticmethod
    def forward(ctx: Any, backward: _AdjointBackward, *outputs: Tensor) -> tuple[Tensor, ...]:
        ctx.adjoint = backward
        return tuple(o.clone() for o in outputs)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Any, ...]:
        if torch.is_grad_enabled():
            # backward(create_graph=True): the adjoint solve is not itself differentiable, and
            # dropping its dependence on the inputs would give wrong second derivatives.
            raise RuntimeError(
                f"fixed_point: grad={ctx.adjoint.mode!r} gives first-order gradients only; "
                "higher-order gradients (create_graph=True, double backward) need "
                "grad='bptt' or grad='tbptt'"
            )
        return (None, *ctx.adjoint(grads))


class _AdjointBackward:
    """Solves the adjoint system for the gradients arriving at the fixed point."""

    def __init__(self, lin: StepLinearization, mode: str, iters: int, tol: float,
                 stats: FixedPointStats, track: bool) -> None:
        self.lin = lin
        self.mode = mode
        self.iters = iters
        self.tol = tol
        self.stats = stats
        self.track = track

    def __call__(self, grads: Sequence[Tensor]) -> State:
        g = tuple(grads)
        with torch.enable_grad():
            z, spent = ADJOINT_SOLVERS[self.mode](self.lin, g, self.iters, self.tol)
            if self.track:
                self.stats._backward_residual = self.lin.adjoint_residual(z, g).detach()
        self.stats.backward_iters = spent
        if not all(bool(torch.isfinite(zi).all()) for zi in z):
            g_ok = all(bool(torch.isfinite(gi).all()) for gi in g)
            if not g_ok:
                raise DivergenceError(
                    "fixed_point backward: the gradient arriving at the fixed point already "
                    "contains NaN/inf (check the loss and the layers after the solve)"
                )
            raise DivergenceError(
                f"fixed_point backward ({self.mode}): the adjoint became NaN/inf within "
                f"{spent} iterations. The Neumann/RBP iteration diverges when the spectral "
                "radius of J = df/dh is >= 1 (forward relative residual "
                f"{self.stats.residual:.3e}); use grad='cg', damping < 1, fewer "
                "backward_iter, or a contractive cell"
            )
        return z


def _as_state(h: StateLike, what: str) -> tuple[State, bool]:
    if isinstance(h, Tensor):
        return (h,), False
    if isinstance(h, (tuple, list)) and h and all(isinstance(t, Tensor) for t in h):
        return tuple(h), True
    raise TypeError(f"{what} must be a tensor or a non-empty tuple of tensors, got {type(h).__name__}")


def _check_int(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _relative_change(new: State, old: State) -> Tensor:
    with torch.no_grad():
        diff = norm(tuple(a.detach() - b.detach() for a, b in zip(new, old)))
        return diff / norm(tuple(b.detach() for b in old)).clamp_min(1e-30)


def fixed_point(
    f: Callable[[Any], Any],
    h0: StateLike,
    *,
    grad: str = "neumann",
    max_iter: int = 100,
    tol: float = 0.0,
    backward_iter: int = 20,
    return_stats: bool = False,
    damping: float = 1.0,
    backward_tol: float = 0.0,
    track: bool | None = None,
) -> Any:
    r"""Iterate ``h <- f(h)`` from ``h0`` and make the result differentiable.

    Gradients reach every tensor that ``f`` uses and that requires grad (module parameters and
    inputs captured by the closure: features, edge weights, ...). No parameter list is needed.

    Gradient modes (``grad``; case-insensitive, ``"cg_rbp"`` and ``"neumann_rbp"`` accepted):

    * ``"bptt"``: back-propagation through all forward steps. Memory grows with ``max_iter``.
    * ``"tbptt"``: back-propagation through the last ``backward_iter`` steps only.
    * ``"rbp"``: Almeida-Pineda iteration :math:`z \leftarrow J^\top z + g` on the adjoint,
      ``backward_iter`` iterations from :math:`z_0 = 0` (so :math:`z_1 = g`).
    * ``"cg"``: conjugate gradient on :math:`(I-J)(I-J^\top) z = (I-J) g`, ``backward_iter``
      iterations from :math:`z_0 = 0`; Jacobian-vector products by the double-VJP trick.
    * ``"neumann"``: :math:`z = \sum_{k=0}^{K} (J^\top)^k g` with ``K = backward_iter`` VJPs.

    The implicit modes (``rbp``, ``cg``, ``neumann``) run the solve under ``torch.no_grad`` and
    record only the final step, so their memory is independent of ``max_iter``. In exact
    arithmetic, ``neumann`` with ``K`` VJPs equals ``tbptt`` with ``K + 1`` steps when the last
    ``K + 1`` states sit at the fixed point, and ``rbp`` with ``K`` iterations equals
    ``neumann`` with ``K - 1``.

    Args:
        f: one step of the dynamics; maps a state to the next state of the same structure and
            shapes (a tensor, or a tuple of tensors when ``h0`` is a tuple).
        h0: initial state.
        grad: gradient mode, one of :data:`pyg_rbp.GRAD_MODES`.
        max_iter: maximum number of forward steps (exactly this many when ``tol == 0``).
        tol: stop early once :math:`\|f(h) - h\| / \|h\| \le` ``tol``. Checking it synchronises
            with the device once per step; ``tol = 0`` never does inside the loop.
        backward_iter: truncation ``K`` of ``tbptt`` / iterations of the adjoint solvers
            (at least 1; ``neumann`` also takes 0, which keeps only :math:`z = g`).
        return_stats: also return a :class:`FixedPointStats`.
        damping: :math:`\beta` in :math:`h \leftarrow (1-\beta) h + \beta f(h)`; 1 means none.
        backward_tol: stop the adjoint solver early at this relative accuracy (0: never).
        track: record the per-step residual trace and the backward residual (one extra VJP).
            Defaults to ``return_stats``.

    Returns:
        The final state, or ``(state, stats)`` when ``return_stats`` is set. ``stats`` gains
        ``backward_iters`` and ``backward_residual`` once backward has run.

    Raises:
        ValueError: unknown mode, bad budgets, NaN/inf in ``h0``.
        DivergenceError: the state (forward) or the adjoint (backward) became NaN/inf.
    """
    mode = normalize_grad_mode(grad)
    _check_int("max_iter", max_iter, 1)
    # Neumann with K = 0 keeps only the first term (z = g); RBP and CG need one iteration.
    _check_int("backward_iter", backward_iter, 0 if mode in ("bptt", "neumann") else 1)
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if not (0 < damping <= 1):
        raise ValueError(f"damping must be in (0, 1], got {damping!r}")
    track = return_stats if track is None else track

    h, is_tuple = _as_state(h0, "h0")
    for i, t in enumerate(h):
        if not bool(torch.isfinite(t.detach()).all()):
            where = f"h0[{i}]" if is_tuple else "h0"
            raise ValueError(f"fixed_point: {where} contains NaN or inf")
    shapes = [(t.shape, t.dtype) for t in h]
    checked = False

    def step(state: State) -> State:
        nonlocal checked
        out = f(state if is_tuple else state[0])
        out_state, out_tuple = _as_state(out, "the output of f")
        if not checked:
            got = [(t.shape, t.dtype) for t in out_state]
            if out_tuple != is_tuple or got != shapes:
                hint = ""
                if any(autocast_enabled(t.device.type) for t in out_state):
                    hint = ("; torch.autocast is on: run f with autocast disabled (as "
                            "FixedPointConv does) or give h0 the dtype f returns")
                raise ValueError(
                    "fixed_point: f must return a state of the same structure, shapes and "
                    f"dtypes as h0; h0 is {[(tuple(s), d) for s, d in shapes]}, f returned "
                    f"{[(tuple(s), d) for s, d in got]}{hint}"
                )
            checked = True
        if damping != 1.0:
            out_state = tuple((1 - damping) * a + damping * b for a, b in zip(state, out_state))
        return out_state

    stats = FixedPointStats(grad=mode, max_iter=max_iter, tol=float(tol))
    trace: list[Tensor] | None = [] if (track or tol > 0) else None
    record_graph = torch.is_grad_enabled()

    if not record_graph:
        recorded = 0
    elif mode == "bptt":
        recorded = max_iter
    elif mode == "tbptt":
        recorded = min(backward_iter, max_iter)
    else:
        recorded = 1
    # With a tolerance, the truncated and implicit modes cannot know in advance which steps are
    # the last ones: they run free until convergence, keeping the last `recorded` states in a
    # ring buffer, then replay exactly those final steps with a graph.
    replaying = record_graph and tol > 0 and mode != "bptt"
    free_budget = max_iter if replaying else max_iter - recorded
    history: deque[State] = deque(maxlen=max(recorded, 1))
    prev = h
    n = 0
    with torch.no_grad():
        while n < free_budget:
            if replaying:
                history.append(h)
            prev, h = h, step(h)
            n += 1
            if trace is not None:
                trace.append(_relative_change(h, prev))
                if tol > 0 and bool(trace[-1] <= tol):
                    break
    if replaying:
        recorded = min(recorded, n)
        h = history[-recorded]
        n -= recorded
        del trace[len(trace) - recorded:]  # type: ignore[index,arg-type]

    if mode in IMPLICIT_MODES and record_graph:
        h_in = tuple(t.detach().requires_grad_(True) for t in h)
        with torch.enable_grad():
            out = step(h_in)
        n += 1
        if trace is not None:
            trace.append(_relative_change(out, h_in))
        prev, h = h_in, out
        if _reaches_other_leaves(out, h_in):
            lin = StepLinearization(out, h_in)
            adjoint = _AdjointBackward(lin, mode, backward_iter, backward_tol, stats, track)
            h = _ImplicitGrad.apply(adjoint, *out)
        else:  # nothing but the state requires grad (a frozen layer): nothing to differentiate
            h = tuple(o.detach() for o in out)
    else:
        with torch.enable_grad():
            for _ in range(recorded):
                prev, h = h, step(h)
                n += 1
                if trace is not None:
                    trace.append(_relative_change(h, prev))
                    if tol > 0 and bool(trace[-1] <= tol):
                        break

    stats.forward_iters = n
    stats._trace = trace
    stats._residual = trace[-1] if trace else _relative_change(h, prev)
    _check_forward(f, h0, h, stats, step, is_tuple)

    result: Any = tuple(h) if is_tuple else h[0]
    return (result, stats) if return_stats else result


def _reaches_other_leaves(out: State, h_in: State) -> bool:
    """Whether the recorded step depends on a tensor requiring grad other than its input state.

    Walks the autograd graph of ``out`` back to its leaves and stops at the first leaf that is
    not one of ``h_in`` (a parameter, the features, an upstream model's weights, ...).
    """
    own = {id(t) for t in h_in}
    stack = [o.grad_fn for o in out if o.grad_fn is not None]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf requiring grad
        if variable is not None:
            if id(variable) not in own:
                return True
            continue
        stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
    return False


def _check_forward(f: Callable, h0: StateLike, h: State, stats: FixedPointStats,
                   step: Callable[[State], State], is_tuple: bool) -> None:
    """One synchronisation after the loop: NaN/inf is an error, a missed tolerance a warning."""
    finite = all(bool(torch.isfinite(t.detach()).all()) for t in h)
    if not finite:
        # Error path only: replay without a graph to say at which step it broke.
        state, _ = _as_state(h0, "h0")
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
            _warn_once(
                f"tol-{stats.grad}",
                f"fixed_point: forward missed tol={stats.tol:g} after {stats.forward_iters} "
                f"iterations (relative residual {residual:.3e}); implicit gradients are "
                "approximate away from a fixed point",
            )
        return
    h0_state, _ = _as_state(h0, "h0")
    start_norm = max(float(norm(tuple(t.detach() for t in h0_state))), 1.0)
    growth = float(norm(tuple(t.detach() for t in h))) / start_norm
    if growth > _GROWTH_LIMIT and (residual is None or residual > _GROWTH_RESIDUAL):
        _warn_once(
            "growth",
            f"fixed_point: the state norm grew {growth:.2e}x over {stats.forward_iters} "
            f"iterations (relative residual {residual:.3e}); the map looks divergent "
            "(spectral radius of df/dh > 1)",
        )
    elif residual is not None and residual > _SETTLE_LIMIT:
        _warn_once(
            "settle",
            f"fixed_point: the state did not settle in {stats.forward_iters} iterations "
            f"(relative residual {residual:.3e}); implicit gradients assume a fixed point",
        )


def spectral_radius(f: Callable[[Any], Any], h: StateLike, iters: int = 50,
                    generator: torch.Generator | None = None) -> float:
    r"""Estimate the spectral radius of :math:`J = \partial f / \partial h` at ``h``.

    Power iteration on :math:`J^\top` with VJPs; the estimate is the geometric mean of the norm
    growth over the second half of the iterations, which also handles complex eigenpairs.
    Below one, Neumann-RBP and RBP converge; at or above one they diverge.
    """
    state, is_tuple = _as_state(h, "h")
    h_in = tuple(t.detach().requires_grad_(True) for t in state)
    with torch.enable_grad():
        out, _ = _as_state(f(h_in if is_tuple else h_in[0]), "the output of f")
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

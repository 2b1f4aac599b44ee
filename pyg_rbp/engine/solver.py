r"""The fixed-point solve made differentiable: :func:`fixed_point`.

Solves :math:`h = f(h)` with a registered forward solver (plain iteration by default, Anderson,
Broyden: :mod:`pyg_rbp.engine.forward`) and makes the result differentiable with a registered
gradient mode (the paper's BPTT, truncated BPTT, RBP, CG-RBP, Neumann-RBP, and GMRES and
phantom gradients: :mod:`pyg_rbp.engine.modes`). The implicit modes run the solve without
recording a graph and record one step only, so their memory does not depend on the number of
forward steps. With plain iteration all modes produce the same forward sequence
:math:`h_1, h_2, \dots`: they differ only in what is recorded and how the backward pass obtains
the adjoint.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

from pyg_rbp.engine.adjoint import State, StepLinearization
from pyg_rbp.engine.arguments import StateLike, as_state, check_int, check_number, check_segments
from pyg_rbp.engine.convergence import (
    ConvergenceError,
    ConvergenceWarning,
    DivergenceError,
    check_forward,
    reset_warnings,
    segment_residual,
    spectral_radius,
)
from pyg_rbp.engine.forward import get_solver, normalize_solver, solver_options_for
from pyg_rbp.engine.modes import GradMode, get_grad_mode
from pyg_rbp.engine.stats import FixedPointStats

__all__ = ["ConvergenceError", "ConvergenceWarning", "DivergenceError", "autocast_enabled",
           "fixed_point", "reset_warnings", "spectral_radius"]



def autocast_enabled(device_type: str) -> bool:
    """Whether :class:`torch.autocast` is on for ``device_type`` (any torch >= 2.1: the
    ``device_type`` argument of :func:`torch.is_autocast_enabled` exists from 2.4 on)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one query per device kind
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return device_type == "cuda" and torch.is_autocast_enabled()


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

    def __init__(self, lin: StepLinearization, mode: GradMode, iters: int, tol: float,
                 stats: FixedPointStats, track: bool, options: dict[str, Any]) -> None:
        self.lin = lin
        self.mode = mode.name
        self.solve = mode.adjoint
        self.iters = iters
        self.tol = tol
        self.stats = stats
        self.track = track
        self.options = options

    def __call__(self, grads: Sequence[Tensor]) -> State:
        g = tuple(grads)
        with torch.enable_grad():
            vjps, jvps = self.lin.num_vjp, self.lin.num_jvp
            z, spent = self.solve(self.lin, g, self.iters, self.tol, **self.options)
            self.stats.backward_vjps = (self.lin.num_vjp - vjps) + (self.lin.num_jvp - jvps)
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
                f"{self.stats.residual:.3e}); use grad='gmres' or 'cg', damping < 1, fewer "
                "backward_iter, or a contractive cell"
            )
        return z


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
    solver: str = "iteration",
    solver_options: dict[str, Any] | None = None,
    grad_options: dict[str, Any] | None = None,
    segments: Tensor | None = None,
    strict: bool = False,
    spectral_radius_iters: int = 0,
    warn_key: Hashable | None = None,
) -> Any:
    r"""Solve ``h = f(h)`` from ``h0`` and make the result differentiable.

    Gradients reach every tensor that ``f`` uses and that requires grad (module parameters and
    inputs captured by the closure: features, edge weights, ...). No parameter list is needed.

    Gradient modes (``grad``, any registered :class:`~pyg_rbp.engine.GradMode`; case-insensitive,
    ``"cg_rbp"`` and ``"neumann_rbp"`` accepted):

    * ``"bptt"``: back-propagation through all forward steps. Memory grows with ``max_iter``.
    * ``"tbptt"``: back-propagation through the last ``backward_iter`` steps only.
    * ``"rbp"``: Almeida-Pineda iteration :math:`z \leftarrow J^\top z + g` on the adjoint,
      ``backward_iter`` iterations from :math:`z_0 = 0` (so :math:`z_1 = g`).
    * ``"cg"``: conjugate gradient on :math:`(I-J)(I-J^\top) z = (I-J) g`, ``backward_iter``
      iterations from :math:`z_0 = 0`; Jacobian-vector products by the double-VJP trick.
    * ``"neumann"``: :math:`z = \sum_{k=0}^{K} (J^\top)^k g` with ``K = backward_iter`` VJPs.
    * ``"gmres"``: restarted GMRES on :math:`(I - J^\top) z = g`, ``backward_iter`` VJPs
      (``grad_options={"restart": 30}``); converges wherever :math:`I - J^\top` is nonsingular.
    * ``"phantom"``: ``backward_iter`` damped steps :math:`h \leftarrow (1-\lambda) h + \lambda
      f(h)` from the detached solution, differentiated by autograd (``grad_options={"damping":
      0.5}`` is :math:`\lambda`). Memory grows with ``backward_iter``, not ``max_iter``.

    The implicit modes (``rbp``, ``cg``, ``neumann``, ``gmres``) run the solve under
    ``torch.no_grad`` and record only the final step, so their memory is independent of
    ``max_iter``. In exact arithmetic, ``neumann`` with ``K`` VJPs equals ``tbptt`` with
    ``K + 1`` steps when the last ``K + 1`` states sit at the fixed point, and ``rbp`` with
    ``K`` iterations equals ``neumann`` with ``K - 1``.

    Forward solvers (``solver``, any registered one, see :mod:`pyg_rbp.engine.forward`):
    ``"iteration"`` (plain iteration, the paper's), ``"anderson"`` (``solver_options``: window
    ``m``, mixing ``beta``, regularisation ``lam``), ``"broyden"`` (memory ``m``). All stop on
    the same residual. With an accelerated solver the forward has no plain steps to unroll:
    ``bptt`` refuses it, and ``tbptt`` differentiates ``backward_iter`` plain steps taken from
    the solution (the phantom gradient with :math:`\lambda = 1`).

    Args:
        f: one step of the dynamics; maps a state to the next state of the same structure and
            shapes (a tensor, or a tuple of tensors when ``h0`` is a tuple).
        h0: initial state.
        grad: gradient mode, one of :func:`~pyg_rbp.engine.grad_mode_names`.
        max_iter: maximum number of applications of ``f`` by the solver (exactly this many by
            ``"iteration"`` when ``tol == 0``).
        tol: stop early once :math:`\|f(h) - h\| / \|h\| \le` ``tol``. Checking it synchronises
            with the device once per step; ``tol = 0`` never does inside the loop.
        backward_iter: truncation ``K`` of ``tbptt``/``phantom``, iterations of the adjoint
            solvers (at least 1; ``neumann`` also takes 0, which keeps only :math:`z = g`).
        return_stats: also return a :class:`FixedPointStats`.
        damping: :math:`\beta` in :math:`h \leftarrow (1-\beta) h + \beta f(h)`; 1 means none.
        backward_tol: stop the adjoint solver early at this relative accuracy (0: never).
        track: record the per-step residual trace and the backward residual (one extra VJP).
            Defaults to ``return_stats``.
        solver: forward solver name. solver_options: its keyword options.
        grad_options: the gradient mode's own options (``restart`` of gmres, ``damping`` of
            phantom).
        segments: a segment id per row of the state's first dimension (PyG's ``batch`` vector
            for a batch of graphs): the stopping residual is then the worst per-segment
            residual, so with ``tol > 0`` every segment is solved to ``tol`` whatever else shares
            the batch.
        strict: raise :class:`ConvergenceError` where a :class:`ConvergenceWarning` would be shown
            (missed tolerance, unsettled or growing state).
        spectral_radius_iters: estimate the spectral radius of :math:`J` at the solution with this
            many power iterations (VJPs) into ``stats.spectral_radius`` (0: don't).
        warn_key: convergence warnings are shown once per ``warn_key`` and kind of problem
            (layers pass themselves); default: once per call site of ``f``.

    Returns:
        The final state, or ``(state, stats)`` when ``return_stats`` is set. ``stats`` gains
        ``backward_iters``, ``backward_vjps`` and ``backward_residual`` once backward has run.

    Raises:
        ValueError: unknown mode or solver, bad budgets, NaN/inf in ``h0``, ``bptt`` with an
            accelerated solver.
        DivergenceError: the state (forward) or the adjoint (backward) became NaN/inf.
        ConvergenceError: with ``strict=True``, where a warning would be shown.
    """
    mode_obj = get_grad_mode(grad)
    mode = mode_obj.name
    solver_name = normalize_solver(solver)
    solve = get_solver(solver_name)
    plain_steps = bool(getattr(solve, "plain_steps", False))
    options = solver_options_for(solve, solver_options)
    mode_options = mode_obj.resolve_options(grad_options)
    check_int("max_iter", max_iter, 1)
    # Neumann with K = 0 keeps only the first term (z = g); RBP and CG need one iteration.
    check_int("backward_iter", backward_iter, mode_obj.min_backward_iter)
    check_int("spectral_radius_iters", spectral_radius_iters, 0)
    tol = check_number("tol", tol, low=0.0)
    backward_tol = check_number("backward_tol", backward_tol, low=0.0)
    damping = check_number("damping", damping, low=0.0, high=1.0, low_open=True, high_open=False)
    if mode_obj.records == "from_solution":
        check_number(f"grad_options['damping'] of {mode}", mode_options.get("damping", 1.0),
                      low=0.0, high=1.0, low_open=True, high_open=False)
    if mode_obj.records == "all" and not plain_steps:
        raise ValueError(
            f"fixed_point: grad='bptt' differentiates the forward steps, and solver="
            f"{solver_name!r} takes no plain steps of f; use solver='iteration', or grad='tbptt'/"
            "'phantom' (steps from the solution) or an implicit mode")
    track = return_stats if track is None else track
    if warn_key is None:
        warn_key = getattr(f, "__code__", type(f))

    h, is_tuple = as_state(h0, "h0")
    for i, t in enumerate(h):
        if not bool(torch.isfinite(t.detach()).all()):
            where = f"h0[{i}]" if is_tuple else "h0"
            raise ValueError(f"fixed_point: {where} contains NaN or inf")
    segs, num_segments = check_segments(segments, h)
    residual_fn = segment_residual(segs, num_segments)
    shapes = [(t.shape, t.dtype) for t in h]
    checked = False

    def step(state: State) -> State:
        nonlocal checked
        out = f(state if is_tuple else state[0])
        out_state, out_tuple = as_state(out, "the output of f")
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

    stats = FixedPointStats(grad=mode, max_iter=max_iter, tol=float(tol), solver=solver_name)
    trace: list[Tensor] | None = [] if (track or tol > 0) else None
    record_graph = torch.is_grad_enabled()

    if plain_steps and mode_obj.records in ("all", "last", "one"):
        h, prev, n = _iterate_and_record(step, h, mode_obj, max_iter, tol, backward_iter,
                                         record_graph, trace, residual_fn)
        if mode_obj.implicit and record_graph:
            prev = h
            h = _record_implicit(step, h, mode_obj, backward_iter, backward_tol, stats, track,
                                 mode_options)
            n += 1
            if trace is not None:
                trace.append(residual_fn(h, prev))
        stats._residual = trace[-1] if trace else residual_fn(h, prev)
    else:
        with torch.no_grad():
            result = solve(step, h, max_iter=max_iter, tol=tol, residual=residual_fn,
                           trace=trace, **options)
        n = result.evals
        stats._residual = result.residual
        h = result.state
        if record_graph and mode_obj.implicit:
            # the recorded step recomputes the solver's last application of f, with a graph
            h = _record_implicit(step, result.previous, mode_obj, backward_iter, backward_tol,
                                 stats, track, mode_options)
        elif record_graph and mode_obj.records in ("last", "from_solution"):
            lam = mode_options.get("damping", 1.0) if mode_obj.records == "from_solution" else 1.0
            h = tuple(t.detach() for t in h)
            with torch.enable_grad():
                for _ in range(backward_iter):
                    out = step(h)
                    h = out if lam == 1.0 else tuple((1 - lam) * a + lam * b for a, b in zip(h, out))
            n += backward_iter

    stats.forward_iters = n
    stats._trace = trace
    check_forward(f, h0, h, stats, step, is_tuple, strict=strict, warn_key=warn_key)
    if spectral_radius_iters > 0:
        stats.spectral_radius = spectral_radius(step, h, iters=spectral_radius_iters)

    result_state: Any = tuple(h) if is_tuple else h[0]
    return (result_state, stats) if return_stats else result_state


def _iterate_and_record(step: Callable[[State], State], h: State, mode_obj: GradMode,
                        max_iter: int, tol: float, backward_iter: int, record_graph: bool,
                        trace: list[Tensor] | None,
                        residual_fn: Callable[[State, State], Tensor]) -> tuple[State, State, int]:
    """Plain iteration for the modes that record forward steps (bptt, tbptt) or the last one
    (implicit modes: the returned state is then the input of that step, recorded by the caller).

    All modes produce the same forward sequence; they differ only in which steps carry a graph.
    Returns the state, the state before it and the number of steps taken.
    """
    if not record_graph:
        recorded = 0
    elif mode_obj.records == "all":
        recorded = max_iter
    elif mode_obj.records == "last":
        recorded = min(backward_iter, max_iter)
    else:
        recorded = 1
    # With a tolerance, the truncated and implicit modes cannot know in advance which steps are
    # the last ones: they run free until convergence, keeping the last `recorded` states in a
    # ring buffer, then replay exactly those final steps with a graph.
    replaying = record_graph and tol > 0 and mode_obj.records != "all"
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
                trace.append(residual_fn(h, prev))
                if tol > 0 and bool(trace[-1] <= tol):
                    break
    if replaying:
        recorded = min(recorded, n)
        h = history[-recorded]
        n -= recorded
        del trace[len(trace) - recorded:]  # type: ignore[index,arg-type]
    if mode_obj.implicit and record_graph:
        return h, prev, n  # the caller records the last step
    with torch.enable_grad():
        for _ in range(recorded):
            prev, h = h, step(h)
            n += 1
            if trace is not None:
                trace.append(residual_fn(h, prev))
                if tol > 0 and bool(trace[-1] <= tol):
                    break
    return h, prev, n


def _record_implicit(step: Callable[[State], State], h: State, mode_obj: GradMode,
                     backward_iter: int, backward_tol: float, stats: FixedPointStats,
                     track: bool, mode_options: dict[str, Any]) -> State:
    """Record one step from ``h`` with a graph and attach the adjoint backward to its output."""
    h_in = tuple(t.detach().requires_grad_(True) for t in h)
    with torch.enable_grad():
        out = step(h_in)
    if _reaches_other_leaves(out, h_in):
        lin = StepLinearization(out, h_in)
        adjoint = _AdjointBackward(lin, mode_obj, backward_iter, backward_tol, stats, track,
                                   mode_options)
        return _ImplicitGrad.apply(adjoint, *out)
    # nothing but the state requires grad (a frozen layer): nothing to differentiate
    return tuple(o.detach() for o in out)


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



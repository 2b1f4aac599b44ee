r"""A message-passing cell solved to its fixed point, as one PyG layer: :class:`FixedPointConv`.

This is where the graph layers meet the graph-agnostic engine (:func:`pyg_rbp.fixed_point`):
the layer prepares the graph once (validation, normalisation, CSR layout, input injection),
hands the engine a closure over one cell step, and keeps the solver's diagnostics. The
gradient mode and budgets are plain attributes so one model can be swept over them.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import torch
from torch import Tensor

from pyg_rbp.engine import (
    FixedPointStats,
    fixed_point,
    jacobian_penalty,
    normalize_grad_mode,
    normalize_solver,
)
from pyg_rbp.engine.solver import autocast_enabled
from pyg_rbp.nn.cell import FixedPointCell

_LAYER_IDS = itertools.count()

# A solve whose cell does not read x and that settled this close is independent of x.
_INPUT_INDEPENDENT_RESIDUAL = 1e-3


class FixedPointConv(torch.nn.Module):
    r"""Solve :math:`\mathbf{H}^* = F(\mathbf{H}^*, \mathbf{X})` for a one-step cell ``F``
    and make :math:`\mathbf{H}^*` differentiable with a recurrent back-propagation mode.

    .. math::
        \mathbf{H}^{(t+1)} = F\left(\mathbf{H}^{(t)}, \mathbf{X}; \mathcal{G}\right),
        \quad t = 0, \dots, T-1, \qquad \mathbf{H}^{(0)} = \texttt{h0}
        \text{ or the cell's default}

    The forward runs ``max_iter`` steps (fewer with ``tol > 0``) of the forward ``solver``
    (plain ``"iteration"``, ``"anderson"``, ``"broyden"`` or any registered one). The gradient
    follows ``grad``: ``"bptt"``, ``"tbptt"`` (last ``backward_iter`` steps), ``"phantom"``
    (``backward_iter`` damped steps from the solution), or the implicit modes ``"rbp"``,
    ``"cg"``, ``"neumann"``, ``"gmres"``, which record a single step and solve the adjoint
    system :math:`(I - J^\top) z = g` with ``backward_iter`` iterations; their memory does not
    depend on ``max_iter``. Gradients reach the cell's parameters, ``x`` and ``edge_weight`` wherever
    the cell uses them. See :func:`pyg_rbp.fixed_point` for the exact semantics.

    The graph is validated and laid out (CSR) once per call and reused by every forward step
    and every backward VJP. The diagnostics of the last call are in :attr:`stats`; a solve
    that missed its tolerance or did not settle warns once per layer (``strict=True`` raises
    :class:`~pyg_rbp.engine.ConvergenceError` instead). A layer whose cell does not read ``x``
    (``GatedCell(..., inject_input=False)``) and whose state settled warns once that its output
    cannot depend on ``x`` (``x`` only sets the starting point).

    With ``batch`` (PyG's graph-assignment vector of a mini-batch) the tolerance is applied to
    every graph's own residual, so with ``tol > 0`` a graph's output does not depend on which
    graphs share its batch.

    Under :class:`torch.autocast` the solve runs with autocast disabled, in the precision of the
    cell's parameters (``float16``/``bfloat16`` ``x``, ``edge_weight`` and ``h0`` are cast up): a
    fixed-point iteration's state must keep one dtype, and its residual is meaningless in
    ``float16``. The layers before and after it still run in mixed precision.

    Default initial states (the cell's ``initial_state``): :class:`GatedCell` ``x``,
    :class:`ImplicitCell` zeros, :class:`PPRCell` ``x``.

    Args:
        cell (FixedPointCell): one step of the dynamics, e.g. :class:`~pyg_rbp.nn.GatedCell`;
            it is prepared once per call (graph validation, CSR layout, input injection) and
            its ``step`` runs every iteration.
        grad (str, optional): gradient mode. (default: ``"neumann"``)
        max_iter (int, optional): forward steps :math:`T`. (default: ``100``)
        tol (float, optional): stop early at this relative residual (0: run all steps).
            (default: ``0.0``)
        backward_iter (int, optional): TBPTT truncation / adjoint iterations :math:`K`.
            (default: ``20``)
        damping (float, optional): :math:`\beta` of :math:`h \leftarrow (1-\beta) h + \beta
            F(h)`. (default: ``1.0``)
        backward_tol (float, optional): early stop of the adjoint solver. (default: ``0.0``)
        track (bool, optional): record per-step residuals and the backward residual in
            :attr:`stats` (one extra VJP; a reduction per step). (default: ``False``)
        solver (str, optional): forward solver. (default: ``"iteration"``)
        solver_options (dict, optional): its options, e.g. ``{"m": 5}`` for Anderson.
        grad_options (dict, optional): the gradient mode's options (``restart`` of gmres,
            ``damping`` of phantom).
        strict (bool, optional): raise instead of warning when the forward did not converge.
            (default: ``False``)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`, edge indices
          :math:`(2, |\mathcal{E}|)` or a sparse adjacency, edge weights
          :math:`(|\mathcal{E}|)` *(optional)*, initial state :math:`(|\mathcal{V}|, C)`
          *(optional)*
        - **output:** fixed-point state :math:`(|\mathcal{V}|, C)`

    Example:
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> x = torch.randn(3, 16)
        >>> conv = FixedPointConv(GatedCell(16, aggr="mean"), grad="gmres", solver="anderson",
        ...                       max_iter=100, tol=1e-6)
        >>> conv(x, edge_index).shape
        torch.Size([3, 16])
        >>> conv.stats.forward_iters <= 100  # the solve's diagnostics (residual, iterations, ...)
        True
    """

    def __init__(self, cell: FixedPointCell, grad: str = "neumann", max_iter: int = 100,
                 tol: float = 0.0, backward_iter: int = 20, damping: float = 1.0,
                 backward_tol: float = 0.0, track: bool = False, solver: str = "iteration",
                 solver_options: dict[str, Any] | None = None,
                 grad_options: dict[str, Any] | None = None, strict: bool = False) -> None:
        super().__init__()
        if not isinstance(cell, FixedPointCell):
            raise TypeError(
                f"cell must be a pyg_rbp.nn.FixedPointCell, got {type(cell).__name__}; a cell of "
                "your own subclasses FixedPointCell (implement step(h, inputs) and, for tensors "
                "computed once per solve, _prepare_extra(inputs))"
            )
        normalize_grad_mode(grad)  # fail early on a typo
        normalize_solver(solver)
        self.cell = cell
        self.grad = grad
        self.max_iter = max_iter
        self.tol = tol
        self.backward_iter = backward_iter
        self.damping = damping
        self.backward_tol = backward_tol
        self.track = track
        self.solver = solver
        self.solver_options = solver_options
        self.grad_options = grad_options
        self.strict = strict
        self.stats: FixedPointStats | None = None
        self._warn_key = ("FixedPointConv", next(_LAYER_IDS))
        self._input_checked = False

    def reset_parameters(self) -> None:
        self.cell.reset_parameters()

    def forward(self, x: Tensor, edge_index: Any, edge_weight: Tensor | None = None,
                h0: Tensor | None = None, batch: Tensor | None = None) -> Tensor:
        """Return the fixed-point state for node features ``x`` on the given graph.

        ``batch`` (optional, ``[N]``): the graph of each node in a mini-batch of graphs; the
        tolerance then stops on the worst graph's residual.
        """
        device_type = x.device.type if isinstance(x, Tensor) else "cpu"
        if autocast_enabled(device_type):
            dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)

            def cast(t: Any) -> Any:  # only what autocast itself produces: half and bfloat16
                reduced = isinstance(t, Tensor) and t.dtype in (torch.float16, torch.bfloat16)
                return t.to(dtype) if reduced else t

            with torch.autocast(device_type, enabled=False):
                return self.forward(cast(x), edge_index, cast(edge_weight), cast(h0), batch)
        cell = self.cell
        default_h0 = h0 is None
        inputs = cell.prepare(x, edge_index, edge_weight)
        if h0 is None:
            h0 = cell.initial_state(inputs)
        cell.check_state(h0, inputs, name="h0")

        def step(h: Tensor) -> Tensor:
            return cell.step(h, inputs)

        out, self.stats = fixed_point(
            step, h0, grad=self.grad, max_iter=self.max_iter, tol=self.tol,
            backward_iter=self.backward_iter, damping=self.damping,
            backward_tol=self.backward_tol, return_stats=True, track=self.track,
            solver=self.solver, solver_options=self.solver_options,
            grad_options=self.grad_options, segments=batch, strict=self.strict,
            warn_key=self._warn_key,
        )
        if not self._input_checked:
            self._input_checked = True
            self._check_input_dependence(default_h0)
        return out

    def _check_input_dependence(self, default_h0: bool) -> None:
        """Warn (once per layer) when the output cannot depend on ``x``: the cell does not read
        it, and the state settled, so ``x`` (the default initial state) is forgotten."""
        reads = getattr(self.cell, "reads_input", True)
        if reads or not default_h0 or self.stats is None:
            return
        residual = self.stats.residual
        if residual is not None and residual <= _INPUT_INDEPENDENT_RESIDUAL:
            warnings.warn(
                f"FixedPointConv: the output cannot depend on x: {self.cell} does not read x "
                f"(inject_input=False) and the state settled (relative residual {residual:.1e}), "
                "so x only set the starting point that the iteration forgets; use "
                "inject_input=True", UserWarning, stacklevel=3)

    def jacobian_penalty(self, h: Tensor, x: Tensor, edge_index: Any,
                         edge_weight: Tensor | None = None, num_samples: int = 1,
                         generator: torch.Generator | None = None) -> Tensor:
        r"""Hutchinson estimate of :math:`\|J\|_F^2` per state entry of this layer's step at
        ``h`` (usually the output of the forward call on the same ``x`` and graph), with
        gradients to the cell's parameters: add ``weight * conv.jacobian_penalty(h, x,
        edge_index)`` to the loss to keep the map contractive (:func:`pyg_rbp.jacobian_penalty`).
        One extra step and ``num_samples`` VJPs; nothing is kept between calls."""
        cell = self.cell
        inputs = cell.prepare(x, edge_index, edge_weight)

        def step(state: Tensor) -> Tensor:
            return cell.step(state, inputs)
        if self.damping != 1.0:
            plain = step

            def step(state: Tensor) -> Tensor:  # type: ignore[no-redef]
                return (1 - self.damping) * state + self.damping * plain(state)
        return jacobian_penalty(step, h, num_samples=num_samples, generator=generator)

    def __repr__(self) -> str:
        extra = "" if self.solver == "iteration" else f", solver={self.solver!r}"
        return (f"{self.__class__.__name__}({self.cell}, grad={self.grad!r}, "
                f"max_iter={self.max_iter}, backward_iter={self.backward_iter}, tol={self.tol}"
                f"{extra})")

r"""The inner training run as a dynamical system whose map depends on the hyperparameters.

Hyperparameter optimisation by recurrent back-propagation (Liao et al. 2018, section 4.3) treats
a training run as the recurrence that :func:`pyg_rbp.fixed_point` differentiates. The state is
``s = (w, v, t)``: every weight tensor, its momentum buffer and a step counter. One step is SGD
with momentum in the paper's form, with a learning rate :math:`\alpha = e^\theta`, a momentum
:math:`\beta = \sigma(\phi)` and (optionally) a weight decay :math:`\lambda = e^\psi` per
hyperparameter group:

.. math::

    v_{t+1} = \beta v_t - (1 - \beta)\,(\nabla_w \ell_t(w_t) + \lambda w_t), \qquad
    w_{t+1} = w_t + \alpha v_{t+1}, \qquad t \leftarrow t + 1

Why the counter is part of the state: mini-batches make the map time-dependent, while the
engine's ``f`` sees only the state. Carrying ``t`` in the state makes the map autonomous, so the
engine's no-graph loop, its single recorded step and its replays all pick the right batch without
any hidden side effect (a closure counter would break on replays). The counter is a float tensor
of the weights' dtype; its Jacobian block is :math:`\partial t' / \partial t = 1`, it is
decoupled from the weights (:math:`\partial w' / \partial t = 0`: batch lookup is piecewise
constant) and the meta objective never depends on it, so its cotangent is zero throughout every
adjoint solve.

The last step of a run may use the whole training set instead of a mini-batch
(:attr:`Episode.full_batch_from`), as the reference implementation did for its RBP variants; we
do it for every gradient mode, so that all modes differentiate the same forward run. It is the
step whose Jacobians the implicit modes use: with a mini-batch, the last update (and with it
:math:`\partial s_T / \partial \lambda`) is dominated by that one batch's noise. Mini-batches
are looked up with ``index_select`` on the counter, on the device; telling the full-batch step
apart reads the counter on the host once per step (a synchronisation on CUDA, negligible next to
a training step).

Inner gradients: a recorded step (BPTT, TBPTT, the one step the implicit modes record) computes
:math:`\nabla_w \ell_t` with ``create_graph=True`` so that back-propagation through the step
produces Hessian-vector products. An unrecorded step (the engine's ``torch.no_grad`` loop)
computes it with a throw-away graph inside ``torch.enable_grad``; that graph is freed before the
next step and is shielded from :class:`pyg_rbp.profiling.SavedTensorBytes` (a pass-through
``saved_tensors_hooks`` pair), because it is per-step workspace, not memory the meta backward
keeps alive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

State = tuple[Tensor, ...]


@dataclass(frozen=True)
class ParamSpec:
    """One weight tensor of the inner model: its name, shape, hyperparameter group, decay flag."""

    name: str
    shape: tuple[int, ...]
    group: int
    decay: bool = True


@dataclass
class Episode:
    """What one inner run sees: the initial weights and the pre-drawn mini-batch schedule.

    ``batches`` is a ``[T, B]`` long tensor of training-example indices (row ``t`` is the batch of
    step ``t``) or ``None`` for full-batch problems. Steps ``t >= full_batch_from`` use the whole
    training set (``None``: none do). Every gradient mode given the same episode sees exactly the
    same data in the same order.
    """

    weights: tuple[Tensor, ...]
    batches: Tensor | None
    seed: int
    full_batch_from: int | None = None


class Hyperparameters:
    r"""The tuned quantities: unconstrained tensors, one entry per group.

    ``theta`` (log learning rate), ``phi`` (logit momentum) and optionally ``psi`` (log weight
    decay; ``None`` means no weight decay, the paper's MLP setting). They are leaf tensors that
    require grad, so an optimiser can update them directly.
    """

    def __init__(self, group_names: Sequence[str], *, theta0: float = -1.0, phi0: float = 0.0,
                 psi0: float | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        if not group_names:
            raise ValueError("Hyperparameters need at least one group")
        for name, value in (("theta0", theta0), ("phi0", phi0), ("psi0", psi0)):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        self.group_names = list(group_names)
        n = len(self.group_names)

        def leaf(value: float) -> Tensor:
            return torch.full((n,), float(value), dtype=dtype, device=device, requires_grad=True)

        self.theta = leaf(theta0)
        self.phi = leaf(phi0)
        self.psi = None if psi0 is None else leaf(psi0)

    def tensors(self) -> list[Tensor]:
        """The leaf tensors an optimiser updates, in a fixed order (theta, phi[, psi])."""
        return [self.theta, self.phi] + ([] if self.psi is None else [self.psi])

    def names(self) -> list[str]:
        """One readable name per entry of :meth:`flat`, e.g. ``'log_lr[W1]'``."""
        kinds = ["log_lr", "logit_momentum"] + ([] if self.psi is None else ["log_weight_decay"])
        return [f"{k}[{g}]" for k in kinds for g in self.group_names]

    def flat(self) -> Tensor:
        """All hyperparameters as one detached vector (the order of :meth:`names`)."""
        return torch.cat([t.detach().reshape(-1) for t in self.tensors()])

    def load_flat(self, values: Tensor | Sequence[float]) -> None:
        """Set every entry from a vector in the order of :meth:`flat` (for resuming, tests)."""
        values = torch.as_tensor(values, dtype=self.theta.dtype, device=self.theta.device)
        tensors = self.tensors()
        if values.numel() != sum(t.numel() for t in tensors):
            raise ValueError(f"expected {sum(t.numel() for t in tensors)} values, got {values.numel()}")
        with torch.no_grad():
            offset = 0
            for t in tensors:
                t.copy_(values[offset:offset + t.numel()].view_as(t))
                offset += t.numel()

    def readable(self) -> dict[str, dict[str, float]]:
        """Learning rate, momentum (and weight decay) per group, as plain numbers."""
        with torch.no_grad():
            out = {
                "learning_rate": dict(zip(self.group_names, self.theta.exp().tolist())),
                "momentum": dict(zip(self.group_names, torch.sigmoid(self.phi).tolist())),
            }
            if self.psi is not None:
                out["weight_decay"] = dict(zip(self.group_names, self.psi.exp().tolist()))
        return out


def _passthrough(t: Tensor) -> Tensor:
    return t


class InnerTraining:
    """One inner run of momentum SGD: the map ``step`` that :func:`pyg_rbp.fixed_point` iterates.

    Args:
        problem: an :class:`~pyg_rbp.tasks.hyperopt.problems.InnerProblem` (weight specs, the
            inner loss of step ``t``).
        hyper: the hyperparameters; the map captures them by closure, so gradients reach them.
        episode: initial weights and mini-batch schedule of this run.
    """

    def __init__(self, problem, hyper: Hyperparameters, episode: Episode) -> None:
        self.problem = problem
        self.hyper = hyper
        self.episode = episode
        self.specs: list[ParamSpec] = list(problem.specs)
        self.num_weights = len(self.specs)
        self._groups = torch.tensor([s.group for s in self.specs], device=hyper.theta.device)
        self._decay = [s.decay for s in self.specs]

    def initial_state(self) -> State:
        """``(w_0..., v_0 = 0..., t = 0)``: momenta start at zero."""
        w0 = tuple(w.detach().clone() for w in self.episode.weights)
        v0 = tuple(torch.zeros_like(w) for w in w0)
        counter = torch.zeros((), dtype=w0[0].dtype, device=w0[0].device)
        return (*w0, *v0, counter)

    def weights(self, state: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """The weight tensors of a state."""
        return tuple(state[: self.num_weights])

    def _inner_gradient(self, weights: tuple[Tensor, ...], counter: Tensor) -> tuple[Tensor, ...]:
        if torch.is_grad_enabled():
            w_in = tuple(w if w.requires_grad else w.detach().requires_grad_(True) for w in weights)
            loss = self.problem.inner_loss(w_in, counter, self.episode)
            return torch.autograd.grad(loss, w_in, create_graph=True)
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_passthrough, _passthrough):
            w_in = tuple(w.detach().requires_grad_(True) for w in weights)
            loss = self.problem.inner_loss(w_in, counter.detach(), self.episode)
            grads = torch.autograd.grad(loss, w_in)
        return grads

    def step(self, state: Sequence[Tensor]) -> State:
        """One step of momentum SGD (see the module docstring): ``s_{t+1} = Phi(s_t; lambda)``."""
        p = self.num_weights
        weights, momenta, counter = tuple(state[:p]), tuple(state[p:2 * p]), state[2 * p]
        grads = self._inner_gradient(weights, counter)
        hyper = self.hyper
        lr = hyper.theta.exp().index_select(0, self._groups)
        momentum = torch.sigmoid(hyper.phi).index_select(0, self._groups)
        decay = None if hyper.psi is None else hyper.psi.exp().index_select(0, self._groups)
        new_w, new_v = [], []
        for i, (w, v, g) in enumerate(zip(weights, momenta, grads)):
            if decay is not None and self._decay[i]:
                g = g + decay[i] * w
            v_next = momentum[i] * v - (1 - momentum[i]) * g
            new_v.append(v_next)
            new_w.append(w + lr[i] * v_next)
        return (*new_w, *new_v, counter + 1)

    def run(self, steps: int) -> State:
        """Plain forward run of ``steps`` steps without any graph (evaluation, baselines)."""
        state = self.initial_state()
        with torch.no_grad():
            for _ in range(steps):
                state = self.step(state)
        return state

r"""Hypergradients through the inner training run, and the meta-training loop built on them.

The inner run :math:`s_{t+1} = \Phi_t(s_t; \lambda)`, :math:`t = 0..T-1`, ends in :math:`s_T`;
the meta objective is :math:`L(w_T)`. With :math:`g = \partial L / \partial s_T`,
:math:`J_t = \partial \Phi_t / \partial s_t` and :math:`B_t = \partial \Phi_t / \partial \lambda`,
the exact hypergradient is :math:`\sum_t B_t^\top z_{t+1}` with :math:`z_T = g`,
:math:`z_t = J_t^\top z_{t+1}`. What each gradient mode of :func:`pyg_rbp.fixed_point` computes
(``K`` = ``backward_iter``):

* ``bptt``: that exact sum, by back-propagation through all ``T`` recorded steps.
* ``tbptt``: the sum over the last ``K`` steps only, :math:`t = T-K..T-1`.
* ``neumann``: every step replaced by the last one, as if :math:`s_{T-1}` were a fixed point:
  :math:`B_{T-1}^\top \sum_{k=0}^{K} (J_{T-1}^\top)^k g` (``K`` VJPs through the last step,
  with that step's own data: the whole training split for the MLP tasks by default, else the
  last mini-batch). Exactly TBPTT(K+1) when the last ``K+1`` steps share the last one's
  Jacobians :math:`J` and :math:`B`.
* ``rbp``: :math:`B_{T-1}^\top z` with ``K`` Almeida-Pineda iterations
  :math:`z \leftarrow J_{T-1}^\top z + g` from :math:`z = 0` (= Neumann with ``K-1`` terms).
* ``cg``: :math:`B_{T-1}^\top z` with ``K`` conjugate-gradient iterations on
  :math:`(I - J_{T-1})(I - J_{T-1}^\top) z = (I - J_{T-1}) g`. It needs products with
  :math:`J_{T-1}`, which the engine forms by the double-VJP trick; since the step already
  contains an inner gradient, that is a third-order derivative of the inner loss. PyTorch
  supports it for every op used here (tanh, relu, cross-entropy, CSR matmuls), and it costs
  about 1.7x a Neumann hypergradient of the same ``K``. It aims at the exact implicit adjoint
  :math:`(I - J^\top)^{-1} g`, which is only meaningful at a fixed point: after a 100-step run
  :math:`J_{T-1}` has eigenvalues at or slightly above 1 (flat and slightly negative-curvature
  directions of the inner loss), where :math:`I - J` is nearly singular and that solution is
  dominated by directions the truncated series weighs only ``K + 1`` times. Its hypergradients
  are therefore further from BPTT's than Neumann's (see the README's numbers); with the extra
  cost, that is why it is not among the default modes of ``pyg-rbp hyperopt`` (the paper's
  comparison is BPTT, TBPTT, RBP, Neumann-RBP). ``--grad cg`` or ``--grad all`` runs it.

Every mode sees the same :class:`~pyg_rbp.tasks.hyperopt.dynamics.Episode` (initial weights and
mini-batch sequence, seeded) at the same meta step, so their hypergradients at the first meta
step are comparable: that is the cosine-vs-BPTT measurement. :func:`last_step_spectral_radius`
tells whether the premise of the implicit modes (a contractive last step) holds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pyg_rbp.engine import DivergenceError, fixed_point, normalize_grad_mode, spectral_radius
from pyg_rbp.profiling import CudaPeakMemory, SavedTensorBytes, synchronize
from pyg_rbp.tasks.hyperopt.dynamics import Hyperparameters, InnerTraining
from pyg_rbp.tasks.hyperopt.problems import InnerProblem


@dataclass
class Hypergradient:
    """One hypergradient evaluation: the meta objective, the gradient and what it cost."""

    meta_objective: float
    grads: list[Tensor]
    saved_bytes: int | None = None

    def flat(self) -> Tensor:
        return torch.cat([g.reshape(-1) for g in self.grads])


def _check_budget(max_iter: int, backward_iter: int) -> None:
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not isinstance(backward_iter, int) or isinstance(backward_iter, bool) or backward_iter < 1:
        raise ValueError(f"backward_iter must be an integer >= 1, got {backward_iter!r}")


def hypergradient(problem: InnerProblem, hyper: Hyperparameters, *, grad: str, max_iter: int,
                  backward_iter: int, seed: int, measure_memory: bool = False) -> Hypergradient:
    """Run the inner training of episode ``seed`` through :func:`pyg_rbp.fixed_point` and
    differentiate the meta objective with respect to ``hyper`` in gradient mode ``grad``.

    With ``measure_memory`` the bytes autograd saves during the forward (inner run plus meta
    objective) are counted with :class:`~pyg_rbp.profiling.SavedTensorBytes`.
    """
    mode = normalize_grad_mode(grad)
    _check_budget(max_iter, backward_iter)
    episode = problem.episode(seed, max_iter)
    training = InnerTraining(problem, hyper, episode)

    def forward() -> Tensor:
        state = fixed_point(training.step, training.initial_state(), grad=mode, max_iter=max_iter,
                            backward_iter=backward_iter)
        return problem.meta_loss(training.weights(state))

    saved = None
    if measure_memory:
        with SavedTensorBytes() as mem:
            loss = forward()
        saved = mem.bytes
    else:
        loss = forward()
    grads = torch.autograd.grad(loss, hyper.tensors(), allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, hyper.tensors())]
    return Hypergradient(float(loss.detach()), grads, saved)


def evaluate_hyperparameters(problem: InnerProblem, hyper: Hyperparameters, *, max_iter: int,
             seeds: Sequence[int]) -> dict[str, float]:
    """Train with ``hyper`` (no graph) once per seed; mean meta objective and accuracies."""
    if not seeds:
        raise ValueError("evaluate_hyperparameters needs at least one seed")
    rows = []
    for seed in seeds:
        training = InnerTraining(problem, hyper, problem.episode(seed, max_iter))
        weights = training.weights(training.run(max_iter))
        with torch.no_grad():
            row = {"meta_objective": float(problem.meta_loss(weights))}
        row.update({f"{k}_acc": v for k, v in problem.accuracies(weights).items()})
        rows.append(row)
    return {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}


@dataclass
class MetaRun:
    """The record of one meta-training run with one gradient mode."""

    grad: str
    curve: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    first_hypergradient: list[float] | None = None
    saved_bytes: int | None = None
    cuda_peak_bytes: int | None = None
    final_hyper: list[float] | None = None
    status: str = "ok"

    @property
    def meta_step_time_s(self) -> float | None:
        """Median meta-step wall time, the first (warm-up, memory-counting) step excluded."""
        times = self.step_times[1:] or self.step_times
        return statistics.median(times) if times else None


def meta_train(problem: InnerProblem, *, grad: str, meta_steps: int, max_iter: int,
               backward_iter: int, meta_lr: float = 0.05, lr_decay_at: int | None = None,
               seed: int = 0, resample: bool = False, hyper_options: dict | None = None,
               progress: Callable[[int, float], None] | None = None) -> tuple[MetaRun, Hyperparameters]:
    """Tune the hyperparameters by Adam on hypergradients of mode ``grad`` (the paper's loop).

    Every meta step runs the inner training of episode ``seed`` (the reference implementation's
    choice: the same initial weights and mini-batch order each time, so the meta objective is a
    deterministic function of the hyperparameters); with ``resample`` meta step ``k`` uses
    episode ``seed + k`` instead. Either way every mode sees the same episodes. The learning rate
    of Adam drops x0.1 at meta step ``lr_decay_at`` (default: half of ``meta_steps``). The first
    meta step also counts the saved bytes (and the CUDA peak) and keeps the hypergradient: its
    starting point is the same for every mode. A NaN/inf meta objective or hypergradient, or a
    diverging adjoint solve, stops the run with ``status`` saying so.
    """
    mode = normalize_grad_mode(grad)
    if not isinstance(meta_steps, int) or meta_steps < 1:
        raise ValueError(f"meta_steps must be an integer >= 1, got {meta_steps!r}")
    if not meta_lr > 0:
        raise ValueError(f"meta_lr must be > 0, got {meta_lr!r}")
    _check_budget(max_iter, backward_iter)
    hyper = problem.hyperparameters(**(hyper_options or {}))
    opt = torch.optim.Adam(hyper.tensors(), lr=meta_lr)
    decay_at = meta_steps // 2 if lr_decay_at is None else lr_decay_at
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[decay_at], gamma=0.1)
    run = MetaRun(grad=mode)
    device = hyper.theta.device

    for k in range(meta_steps):
        synchronize(device)
        t0 = time.perf_counter()
        try:
            with CudaPeakMemory(device) as peak:
                hg = hypergradient(problem, hyper, grad=mode, max_iter=max_iter,
                                   backward_iter=backward_iter, seed=seed + k if resample else seed,
                                   measure_memory=(k == 0))
        except DivergenceError as exc:
            run.status = f"diverged at meta step {k}: {str(exc).splitlines()[0]}"
            break
        flat = hg.flat()
        if not (torch.isfinite(flat).all() and torch.isfinite(torch.tensor(hg.meta_objective))):
            run.status = f"non-finite hypergradient or meta objective at meta step {k}"
            break
        for t, g in zip(hyper.tensors(), hg.grads):
            t.grad = g.detach()
        opt.step()
        sched.step()
        synchronize(device)
        run.step_times.append(time.perf_counter() - t0)
        run.curve.append(hg.meta_objective)
        if k == 0:
            run.first_hypergradient = flat.detach().cpu().tolist()
            run.saved_bytes = hg.saved_bytes
            run.cuda_peak_bytes = peak.peak_bytes
        if progress is not None:
            progress(k, hg.meta_objective)
    run.final_hyper = hyper.flat().cpu().tolist()
    return run, hyper


def cosine(a: Sequence[float] | Tensor, b: Sequence[float] | Tensor) -> float:
    """Cosine similarity of two hypergradients (float64)."""
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"hypergradients differ in size: {a.numel()} vs {b.numel()}")
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def memory_scaling(problem: InnerProblem, *, grads: Sequence[str], max_iter: Sequence[int],
                   backward_iter: int, seed: int = 0) -> list[dict]:
    """Saved bytes of one hypergradient per mode and number of inner steps."""
    rows = []
    for mode in grads:
        for steps in max_iter:
            hyper = problem.hyperparameters()
            hg = hypergradient(problem, hyper, grad=mode, max_iter=steps,
                               backward_iter=min(backward_iter, steps), seed=seed, measure_memory=True)
            rows.append({"grad": normalize_grad_mode(mode), "max_iter": steps,
                         "saved_bytes": hg.saved_bytes})
    return rows


def last_step_spectral_radius(problem: InnerProblem, hyper: Hyperparameters, *, max_iter: int,
                              seed: int, iters: int = 100) -> float:
    """Spectral radius of the Jacobian of the last inner step (the one the implicit modes use).

    Below 1, the Neumann series converges as ``K`` grows; above 1 it is dominated by the
    expanding direction and Neumann/RBP hypergradients with a large ``K`` lose their direction.
    """
    _check_budget(max_iter, 1)
    training = InnerTraining(problem, hyper, problem.episode(seed, max_iter))
    state = training.run(max_iter - 1)
    return spectral_radius(training.step, state, iters=iters,
                           generator=torch.Generator(device=hyper.theta.device).manual_seed(int(seed)))

"""The one training loop every harness run goes through: :func:`fit`.

Node classification on the whole graph, node classification in mini-batches and graph-level
training differ only in what a batch is, how its loss is taken and how validation is scored;
the loop around them is the same and lives here: the optimiser steps (after every round of
batches, or once per epoch), the NaN/inf checks before any weight changes, validation every
``eval_every`` epochs with early stopping (:class:`~pyg_rbp.training.objective.ModelSelection`),
the divergence guard (:class:`~pyg_rbp.training.objective.DivergenceGuard`), the timing of the
training steps, the activation memory of a training forward, the progress bar and the fields of
the result. The adapters (:func:`pyg_rbp.training.node.train_node`,
:func:`~pyg_rbp.training.node.train_node_batched`, :func:`pyg_rbp.training.graph.train_graph`)
build the model and the data and hand :func:`fit` three things:

* a :class:`Rounds`: the epoch's rounds of batches (a full-graph step is one round of one
  batch; graph-level training one round per :class:`~torch_geometric.loader.DataLoader` batch;
  the mini-batch loaders of :mod:`pyg_rbp.training.loaders` their rounds of this process's share),
  told when a round and an epoch end (the history loader publishes its solved rows there);
* ``loss(net, batch, epoch)``: the batch's training loss, the weight its gradient enters the
  optimiser step with and the weight of its value in the epoch's mean loss;
* ``evaluate(epoch)``: an :class:`Evaluation` (validation score and loss, test score).

Several processes are a :class:`~pyg_rbp.training.distributed.ProcessGroup` passed in as
``group``: it wraps the model for the forward passes (DDP), and only its rank 0 shows progress.

This module also holds the optimiser table every run shares (:func:`make_optimizer`); seeding
and threads are :mod:`pyg_rbp.runtime`'s.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyg_rbp.engine import DivergenceError
from pyg_rbp.profiling import CudaPeakMemory, SavedTensorBytes, synchronize
from pyg_rbp.training.distributed import LOCAL, ProcessGroup
from pyg_rbp.training.models import count_parameters, fixed_point_stats
from pyg_rbp.training.objective import DivergenceGuard, ModelSelection, check_gradients, check_loss

__all__ = ["Evaluation", "Rounds", "fit", "make_optimizer"]

STEP_EVERY: tuple[str, ...] = ("batch", "epoch")
MEMORY: tuple[str, ...] = ("first", "first-epoch")


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                               weight_decay=cfg.weight_decay),
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
}
"""``cfg.optimizer`` -> its constructor: SGD with momentum (paper protocol) or Adam, with L2
weight decay."""


def make_optimizer(cfg: Any, params: Iterable[Tensor]) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` names, with ``cfg.lr``, ``cfg.momentum`` (SGD) and
    ``cfg.weight_decay``."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    return OPTIMIZERS[cfg.optimizer](params, cfg)


class Rounds:
    """What :func:`fit` iterates: rounds of batches, one optimiser step per round (or per epoch).

    The base class repeats fixed ``rounds`` every epoch (the default ``[[None]]``: one
    full-graph step); subclasses draw them per epoch and act at the end of a round or epoch.
    """

    def __init__(self, rounds: Sequence[Sequence[Any]] = ((None,),)) -> None:
        self._rounds = rounds

    def rounds(self, epoch: int) -> Iterable[Sequence[Any]]:
        """Epoch ``epoch``'s rounds, each a sequence of this process's batches. Drawn before
        the epoch's timer starts; a lazy iterable is iterated inside it."""
        return self._rounds

    def end_round(self) -> None:
        """Called after a round's backward passes, before its optimiser step."""

    def end_epoch(self) -> None:
        """Called after the epoch's last optimiser step, once its timer has stopped."""


@dataclass
class Evaluation:
    """One validation: the score and loss model selection reads, and the test score.

    ``test()`` is called only when the validation improved, unless ``record_test`` (the test
    score is then also kept in the history entry, for selecting an epoch over folds afterwards).
    ``val=None``: there is no validation part; the last evaluation is the reported one.
    """

    val: float | None
    val_loss: float | None
    test: Callable[[], float]
    record_test: bool = False


LossFn = Callable[[nn.Module, Any, int], tuple[Tensor, float, float]]
"""``loss(net, batch, epoch)`` -> (loss, weight of its gradient, weight of its value in the
epoch's mean training loss)."""


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Rounds, loss: LossFn,
        evaluate: Callable[[int], Evaluation], *, metric: str, epochs: int, eval_every: int = 1,
        patience: int = 0, step_every: str = "batch", label: str = "train",
        device: str | torch.device = "cpu", progress: bool = True, round_progress: bool = False,
        group: ProcessGroup = LOCAL, memory: str = "first", where: str = "at epoch {}"
        ) -> dict[str, Any]:
    """Train ``model`` for up to ``epochs`` epochs with early stopping on validation.

    Per epoch: ``batches.rounds(epoch)``; per round: zero the gradients, per batch
    ``loss(net, batch, epoch)`` (``net``: ``model`` wrapped by ``group``), refuse a NaN/inf loss,
    back-propagate it times its weight; ``batches.end_round()``, refuse a NaN/inf gradient, step.
    With ``step_every="epoch"`` the gradients of all rounds are summed into one step per epoch.
    Every ``eval_every`` epochs (and after the last) ``evaluate(epoch)`` is scored and training
    stops once validation has not improved for ``patience`` epochs (0: never). A NaN/inf loss,
    gradient, state or output stops the run (the scores are then those of the best validated
    model before it, or of the initial weights if no validation happened yet).

    ``memory``: the activation memory reported as ``saved_bytes`` is that of the first batch's
    forward (``"first"``, ``None`` if none ran) or the largest over the first epoch's batches
    (``"first-epoch"``). ``where`` formats the epoch into the error messages.

    Returns ``val``, ``test``, ``best_epoch``, ``epochs_run``, ``epoch_time_s`` (median seconds of
    one epoch's training steps), ``train_time_s``, ``saved_bytes``, ``cuda_peak_bytes``,
    ``num_params``, ``fixed_point``, ``history`` and ``diverged`` (``None`` or ``{"epoch",
    "error"}``).
    """
    if step_every not in STEP_EVERY:
        raise ValueError(f"step_every must be one of {', '.join(STEP_EVERY)}, got {step_every!r}")
    if memory not in MEMORY:
        raise ValueError(f"memory must be one of {', '.join(MEMORY)}, got {memory!r}")
    device = torch.device(device)
    net = group.wrap(model)
    selection = ModelSelection(metric, patience)
    guard = DivergenceGuard(model, label)
    per_epoch = step_every == "epoch"
    epoch_times: list[float] = []
    saved: int | None = None if memory == "first" else 0

    def validate(epoch: int, train_loss: float | None) -> bool:
        model.eval()
        ev = evaluate(epoch)
        if ev.val is None:
            selection.record_last(epoch, ev.test(), train_loss)
            return False
        stop = selection.update(epoch, ev.val, ev.val_loss, ev.test, eval_every, train_loss=train_loss)
        if ev.record_test:
            selection.history[-1]["test"] = ev.test()
        return stop

    t_start = time.perf_counter()
    show = progress and group.is_main
    bar = tqdm(range(1, epochs + 1), desc=label, disable=not show, leave=False, dynamic_ncols=True)
    epoch = done = 0  # done: epochs whose training steps all ran
    train_loss = float("nan")
    with CudaPeakMemory(device) as peak:
        for epoch in bar:
            try:
                model.train()
                rounds = batches.rounds(epoch)
                if round_progress:
                    rounds = tqdm(rounds, desc=f"epoch {epoch}", disable=not show, leave=False)
                synchronize(device)
                t0 = time.perf_counter()
                values: list[float] = []
                counts: list[float] = []
                at = where.format(epoch)
                if per_epoch:
                    optimizer.zero_grad(set_to_none=True)
                for mine in rounds:
                    if not per_epoch:
                        optimizer.zero_grad(set_to_none=True)
                    for batch in mine:
                        measure = saved is None if memory == "first" else epoch == 1
                        # a NaN on one process stops every process here, in the same batch,
                        # before the backward whose gradient all-reduce they all join
                        with group.agree_on_divergence():
                            with SavedTensorBytes() if measure else contextlib.nullcontext() as mem:
                                value, weight, count = loss(net, batch, epoch)
                            if mem is not None:
                                saved = mem.bytes if saved is None else max(saved, mem.bytes)
                            check_loss(value, at)
                        (value if weight == 1.0 else value * weight).backward()
                        values.append(float(value.detach()))
                        counts.append(count)
                    batches.end_round()
                    if not per_epoch:
                        check_gradients(model, at)
                        optimizer.step()
                if per_epoch:
                    check_gradients(model, at)
                    optimizer.step()
                if round_progress:
                    rounds.close()
                synchronize(device)
                epoch_times.append(time.perf_counter() - t0)
                batches.end_epoch()
                done = epoch
                train_loss = _mean(values, counts)
                if epoch % eval_every and epoch != epochs:
                    continue
                stop = validate(epoch, train_loss)
            except (DivergenceError, ValueError) as err:
                guard.record(epoch, err)  # re-raises what is not a divergence
                break
            bar.set_postfix(loss=f"{train_loss:.3f}",
                            val="-" if selection.val is None else f"{selection.val:.4f}",
                            test=f"{selection.test:.4f}")
            if stop:
                break
        if guard.info is not None and selection.best is None:
            guard.validate_initial(model, lambda: validate(0, None))
    bar.close()
    return {
        "val": selection.val,
        "test": selection.test,
        "best_epoch": selection.epoch,
        "epochs_run": done,
        "epoch_time_s": statistics.median(epoch_times) if epoch_times else None,
        "train_time_s": time.perf_counter() - t_start,
        "saved_bytes": saved,
        "cuda_peak_bytes": peak.peak_bytes,
        "num_params": count_parameters(model),
        "fixed_point": fixed_point_stats(model),
        "history": selection.history,
        "diverged": guard.info,
    }


def _mean(values: Sequence[float], counts: Sequence[float]) -> float:
    """The epoch's training loss: the mean of the batch losses weighted by ``counts``."""
    total = math.fsum(counts)
    if not total:
        return float("nan")
    return math.fsum(v * c for v, c in zip(values, counts)) / total

"""The training loss that matches each dataset's metric, and "is this score better".

Accuracy datasets are single-label classification (cross-entropy on class ids); ROC-AUC and AP
datasets are multi-label/binary (binary cross-entropy on logits); RMSE datasets are regression
(mean squared error). OGB marks missing labels with NaN: they are left out of the loss, just as
OGB's evaluators leave them out of the score.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyg_rbp.data.metrics import higher_is_better
from pyg_rbp.engine import DivergenceError


def loss_fn(metric: str, out: Tensor, y: Tensor) -> Tensor:
    """Loss of predictions ``out`` against targets ``y`` for a dataset scored by ``metric``."""
    if metric == "acc":
        y = y.view(-1).long()
        return F.cross_entropy(out, y)
    n = out.size(0)
    y = y.reshape(n, -1).to(out.dtype)
    out = out.reshape(n, -1)
    labelled = ~torch.isnan(y)
    if not bool(labelled.any()):
        return out.sum() * 0.0
    if metric in ("rocauc", "ap"):
        return F.binary_cross_entropy_with_logits(out[labelled], y[labelled])
    if metric == "rmse":
        return F.mse_loss(out[labelled], y[labelled])
    raise ValueError(f"no loss for metric {metric!r}")


def check_loss(loss: Tensor, where: str) -> None:
    """Raise :class:`~pyg_rbp.DivergenceError` if the training loss is NaN/inf."""
    if not bool(torch.isfinite(loss)):
        raise DivergenceError(f"the training loss became {float(loss)} {where}")


def check_gradients(model: nn.Module, where: str) -> None:
    """Raise :class:`~pyg_rbp.DivergenceError` if a parameter's gradient holds NaN/inf (checked
    after ``backward`` and before the optimiser step, so the weights are still the last finite ones).

    One fused norm kernel (as ``clip_grad_norm_`` uses) and one device synchronisation for all
    parameters; the names of the offending parameters are looked up only on failure.
    """
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if not named:
        return
    grads = [g for _, g in named]
    norms = torch._foreach_norm(grads)  # in every torch this package supports (>= 2.1)
    if bool(torch.isfinite(torch.stack([n.to(grads[0].device) for n in norms])).all()):
        return
    bad = [n for n, g in named if not bool(torch.isfinite(g).all())] or [n for n, _ in named]
    raise DivergenceError(f"the gradient of {', '.join(bad)} became NaN/inf {where}")


_NONFINITE_INPUT = re.compile(r"^fixed_point: h0(\[\d+\])? contains NaN or inf$")


def divergence_of(err: BaseException) -> DivergenceError | None:
    """The divergence ``err`` stands for, else None (a real error, to re-raise).

    Besides :class:`~pyg_rbp.DivergenceError` itself this is the engine's refusal of a
    non-finite initial state (``ValueError: fixed_point: h0 contains NaN or inf``): a model
    computes its initial state from its weights (PPR's ``h0 = MLP(x)``), so after a step that blew
    the weights up the next forward fails there, before any solve can diverge.
    """
    if isinstance(err, DivergenceError):
        return err
    if isinstance(err, ValueError) and _NONFINITE_INPUT.match(str(err)):
        diverged = DivergenceError(f"the initial state of a fixed-point solve became NaN/inf ({err})")
        diverged.__cause__ = err
        return diverged
    return None


def check_output(out: Tensor, where: str) -> None:
    """Raise :class:`~pyg_rbp.DivergenceError` if model outputs (validation/test) hold NaN/inf,
    so that model selection never scores them."""
    if not bool(torch.isfinite(out).all()):
        raise DivergenceError(f"the model's outputs became NaN/inf {where}")


def checked_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: Tensor, where: str) -> None:
    """``loss.backward()`` and ``optimizer.step()``, refusing (with a
    :class:`~pyg_rbp.DivergenceError`) a NaN/inf loss or gradient before the weights change."""
    check_loss(loss, where)
    loss.backward()
    check_gradients(model, where)
    optimizer.step()


class DivergenceGuard:
    """What a training loop does when its run diverges (an exploding gradient, a forward solve that
    blows up): stop, warn, and report the best validated model before it.

    A diverged run is an outcome of the protocol, not a crash: the reference implementation keeps
    training on NaN weights and its model selection (validation, first checked before step 1)
    never picks them. Here the loop stops at the first non-finite loss, gradient or state and
    the selection keeps what it had; if no validation happened yet, the initial weights (kept by
    this guard, on the CPU so that a GPU run's peak memory is unchanged) are validated as step
    (node tasks) or epoch (graph tasks) 0, as the reference's first check would.
    """

    def __init__(self, model: nn.Module, label: str) -> None:
        self.label = label
        self.initial = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.info: dict[str, Any] | None = None

    def record(self, epoch: int, err: BaseException) -> None:
        """Note that the run diverged at ``epoch`` (the step or epoch that failed) and warn;
        ``err`` is re-raised if it is not a divergence in any of its forms (:func:`divergence_of`)."""
        diverged = divergence_of(err)
        if diverged is None:
            raise err
        err = diverged
        self.info = {"epoch": epoch, "error": str(err)}
        warnings.warn(f"{self.label}: training diverged at step/epoch {epoch} ({err}); the result is "
                      "the best validated model before it", RuntimeWarning, stacklevel=2)

    def validate_initial(self, model: nn.Module, validate: Callable[[], Any]) -> None:
        """Load the weights the run started from and ``validate()`` them (for a run that diverged
        before its first validation). If even they diverge, the run keeps no score."""
        model.load_state_dict(self.initial)
        try:
            validate()
        except (DivergenceError, ValueError) as err:
            diverged = divergence_of(err)
            if diverged is None:
                raise
            assert self.info is not None
            self.info["error"] += f"; validating the initial weights failed too: {diverged}"


def is_better(metric: str, score: float, loss: float, best: tuple[float, float] | None) -> bool:
    """Whether (``score``, ``loss``) beats ``best``: score first, lower loss breaks ties."""
    if best is None:
        return True
    best_score, best_loss = best
    if score != best_score:
        return score > best_score if higher_is_better(metric) else score < best_score
    return loss < best_loss


class ModelSelection:
    """Early stopping on validation: keeps the best (score, loss), the test score at that
    evaluation and the epoch, and says when ``patience`` epochs passed without improvement."""

    def __init__(self, metric: str, patience: int = 0) -> None:
        self.metric = metric
        self.patience = patience
        self.best: tuple[float, float] | None = None
        self.test = float("nan")
        self.epoch = 0
        self.since_best = 0
        self.history: list[dict[str, float]] = []

    def update(self, epoch: int, score: float, loss: float, test_score: Callable[[], float],
               epochs_since_last: int, train_loss: float | None = None) -> bool:
        """Record one validation; ``test_score()`` is called only on improvement. Returns
        whether training should stop. Every call is kept in :attr:`history` (epoch, validation
        score and loss, last training loss): the training curve."""
        better = is_better(self.metric, score, loss, self.best)
        # scored first: if scoring raises (a diverging test forward), the selection is unchanged
        test = test_score() if better else None
        self.history.append({"epoch": epoch, "val": score, "val_loss": loss, "train_loss": train_loss})
        if better:
            self.best = (score, loss)
            self.test = test
            self.epoch = epoch
            self.since_best = 0
        else:
            self.since_best += epochs_since_last
        return bool(self.patience) and self.since_best >= self.patience

    def record_last(self, epoch: int, test: float, train_loss: float | None = None) -> None:
        """Record an evaluation without a validation part: the last one is the reported one
        (its test score and epoch), kept in :attr:`history` with ``val=None``."""
        self.history.append({"epoch": epoch, "val": None, "train_loss": train_loss, "test": test})
        self.test, self.epoch = test, epoch

    @property
    def val(self) -> float | None:
        return self.best[0] if self.best else None

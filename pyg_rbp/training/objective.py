"""The training loss that matches each dataset's metric, and "is this score better".

Accuracy datasets are single-label classification (cross-entropy on class ids); ROC-AUC and AP
datasets are multi-label/binary (binary cross-entropy on logits); RMSE datasets are regression
(mean squared error). OGB marks missing labels with NaN: they are left out of the loss, just as
OGB's evaluators leave them out of the score.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_rbp.data.metrics import higher_is_better


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
        self.history.append({"epoch": epoch, "val": score, "val_loss": loss, "train_loss": train_loss})
        if is_better(self.metric, score, loss, self.best):
            self.best = (score, loss)
            self.test = test_score()
            self.epoch = epoch
            self.since_best = 0
        else:
            self.since_best += epochs_since_last
        return bool(self.patience) and self.since_best >= self.patience

    @property
    def val(self) -> float | None:
        return self.best[0] if self.best else None

"""Scoring predictions with each dataset's own metric, and which direction is better.

Accuracy is a fraction in [0, 1]; ROC-AUC, average precision and RMSE go through OGB's
``Evaluator`` so that they are computed exactly as OGB defines them (per-task, ignoring NaN
labels, averaged over tasks). Only RMSE is lower-is-better.
"""

from __future__ import annotations

import torch

from pyg_rbp.data.loaded import LoadedDataset

_HIGHER_IS_BETTER = {"acc": True, "rocauc": True, "ap": True, "rmse": False}


def higher_is_better(metric: str) -> bool:
    """True for acc/rocauc/ap, False for rmse; a ValueError for an unknown metric."""
    if metric not in _HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(sorted(_HIGHER_IS_BETTER))}")
    return _HIGHER_IS_BETTER[metric]


def _class_predictions(y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Integer class ids from logits/probabilities [N, C] or from ids [N] / [N, 1]."""
    if y_pred.dim() == 2 and y_pred.size(1) == num_classes and num_classes > 1:
        return y_pred.argmax(dim=1)
    if y_pred.dim() == 2 and y_pred.size(1) == 1:
        y_pred = y_pred.view(-1)
    if y_pred.dim() != 1:
        raise ValueError(
            f"accuracy needs logits of shape [N, {num_classes}] or class ids [N]; got {tuple(y_pred.shape)}"
        )
    if y_pred.is_floating_point():
        if not torch.equal(y_pred, y_pred.round()):
            raise ValueError("accuracy got 1-D floating predictions that are not class ids")
        y_pred = y_pred.long()
    return y_pred


def evaluate(loaded: LoadedDataset, y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
    """Score ``y_pred`` (logits, probabilities or class ids) against ``y_true`` with the
    dataset's metric.

    Accuracy takes logits ``[N, C]`` (arg-maxed) or class ids ``[N]``; ROC-AUC/AP take scores
    ``[N, tasks]`` (logits are fine, the metric is rank-based); RMSE takes predictions
    ``[N, tasks]`` or ``[N]``.
    """
    y_true = torch.as_tensor(y_true).detach().cpu()
    y_pred = torch.as_tensor(y_pred).detach().cpu()
    if y_true.size(0) != y_pred.size(0):
        raise ValueError(f"y_true has {y_true.size(0)} rows but y_pred has {y_pred.size(0)}")
    if y_true.size(0) == 0:
        raise ValueError("cannot evaluate on zero examples")
    metric = loaded.metric
    higher_is_better(metric)
    if metric == "acc":
        pred = _class_predictions(y_pred, loaded.num_classes)
        true = y_true.view(-1) if y_true.dim() == 2 and y_true.size(1) == 1 else y_true
        if true.dim() != 1:
            raise ValueError(f"accuracy needs single-label y_true [N]; got {tuple(y_true.shape)}")
        if loaded.evaluator is not None:
            out = loaded.evaluator.eval({"y_true": true.view(-1, 1), "y_pred": pred.view(-1, 1)})
            return float(out["acc"])
        return float((pred == true.long()).float().mean())
    if loaded.evaluator is None:
        raise ValueError(f"dataset {loaded.name!r} has metric {metric!r} but no OGB evaluator")
    n = y_true.size(0)
    y_true2 = y_true.reshape(n, -1)
    y_pred2 = y_pred.reshape(n, -1).to(torch.float32)
    if y_true2.shape != y_pred2.shape:
        raise ValueError(
            f"{metric} needs y_pred of shape {tuple(y_true2.shape)} like y_true; got {tuple(y_pred.shape)}"
        )
    return float(loaded.evaluator.eval({"y_true": y_true2, "y_pred": y_pred2})[metric])

"""Mini-batch training of a graph-level model with early stopping on validation: :func:`train_graph`.

Used for OGB's graph property datasets (``ogbg-mol*``) with their official scaffold split and
Evaluator, and for the TU sets under the ``10-fold`` protocol, where the ``seed`` of a run is its
fold (:func:`pyg_rbp.data.protocols.kfold_split`: train on the other nine folds, report the test
fold). Under ``10-fold`` the test fold is scored at every evaluation and kept in the history, so
that GIN's epoch selection (the epoch with the best mean test accuracy over the folds) can be
computed over the folds afterwards, beside the validation-selected score of each fold.

A thin adapter around the one training loop, :func:`pyg_rbp.training.fit.fit`. It reports the
same fields as :func:`pyg_rbp.training.node.train_node`, with one epoch being one pass over the
training graphs and the activation memory measured on the first training mini-batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch_geometric.loader import DataLoader

from pyg_rbp.data import evaluate
from pyg_rbp.data.loaded import LoadedDataset
from pyg_rbp.data.protocols import KFOLD, kfold_split
from pyg_rbp.runtime import set_seed
from pyg_rbp.training.config import TrainConfig
from pyg_rbp.training.fit import Evaluation, Rounds, fit, make_optimizer
from pyg_rbp.training.models import build_graph_model
from pyg_rbp.training.objective import check_output, loss_fn


def _forward(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x = batch.x if batch.x is not None else torch.ones(batch.num_nodes, 1, device=batch.edge_index.device)
    return model(x, batch.edge_index, batch.batch)


def fold_split(loaded: LoadedDataset, fold: int, val_fraction: float) -> dict[str, torch.Tensor]:
    """The ``10-fold`` split of a graph dataset for fold ``fold`` (its labels read from the
    dataset's collated ``y``)."""
    y = loaded.dataset._data.y if hasattr(loaded.dataset, "_data") else torch.cat(
        [d.y for d in loaded.dataset])
    return kfold_split(y.view(-1), fold, val_fraction=val_fraction)


@torch.no_grad()
def _predict(model: torch.nn.Module, loader: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    ys, outs = [], []
    for batch in loader:
        batch = batch.to(device)
        out = _forward(model, batch)
        check_output(out, "at validation")
        outs.append(out.cpu())
        ys.append(batch.y.cpu())
    return torch.cat(ys), torch.cat(outs)


class _GraphBatches(Rounds):
    """A :class:`~torch_geometric.loader.DataLoader` as :func:`~pyg_rbp.training.fit.fit`'s batch
    iterator: one round (one optimiser step) per batch of graphs, collated inside the epoch's timer."""

    def __init__(self, loader: DataLoader) -> None:
        super().__init__()
        self.loader = loader

    def rounds(self, epoch: int) -> Iterator[list[Any]]:
        return ([batch] for batch in self.loader)


def train_graph(cfg: TrainConfig, loaded: LoadedDataset, seed: int, *,
                device: str | torch.device = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on a graph-level dataset's official split; one result dict per seed.

    Validation is scored every ``cfg.eval_every`` epochs; training stops after ``cfg.patience``
    epochs without improvement (0: never). Fields as in :func:`~pyg_rbp.training.node.train_node`
    (the loop is :func:`~pyg_rbp.training.fit.fit`); under ``10-fold`` also ``fold`` and
    ``split_sizes``.
    """
    if loaded.dataset is None or (loaded.split_idx is None and cfg.protocol != KFOLD):
        raise ValueError(f"{loaded.name} is not a graph-level dataset with a split")
    device = torch.device(device)
    set_seed(seed)
    ds = loaded.dataset
    kfold = cfg.protocol == KFOLD
    split = fold_split(loaded, seed, cfg.val_fraction) if kfold else loaded.split_idx
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(ds[split["train"]], batch_size=cfg.batch_size, shuffle=True, generator=gen)
    has_val = split["valid"].numel() > 0
    val_loader = DataLoader(ds[split["valid"]], batch_size=256) if has_val else None
    test_loader = DataLoader(ds[split["test"]], batch_size=256)
    model = build_graph_model(cfg, loaded.num_features, loaded.num_classes).to(device)
    opt = make_optimizer(cfg, model.parameters())
    metric = loaded.metric

    def loss(net: torch.nn.Module, batch: Any, epoch: int) -> tuple[Tensor, float, float]:
        batch = batch.to(device)
        return loss_fn(metric, _forward(net, batch), batch.y), 1.0, float(batch.num_graphs)

    def validate(epoch: int) -> Evaluation:
        if kfold:  # every fold's test score at every evaluation: GIN's selection over folds
            test_now = evaluate(loaded, *_predict(model, test_loader, device))
            if not has_val:  # GIN's own setting: no validation part, the last epoch is reported
                return Evaluation(None, None, lambda: test_now)
            y_val, out_val = _predict(model, val_loader, device)
            return Evaluation(evaluate(loaded, y_val, out_val), float(loss_fn(metric, out_val, y_val)),
                              lambda: test_now, record_test=True)
        y_val, out_val = _predict(model, val_loader, device)
        return Evaluation(evaluate(loaded, y_val, out_val), float(loss_fn(metric, out_val, y_val)),
                          lambda: evaluate(loaded, *_predict(model, test_loader, device)))

    label = f"{cfg.dataset}/{cfg.model}/{cfg.grad or '-'}/s{seed}"
    result = fit(model, opt, _GraphBatches(train_loader), loss, validate, metric=metric,
                 epochs=cfg.epochs, eval_every=cfg.eval_every, patience=cfg.patience, label=label,
                 device=device, progress=progress, where="in epoch {}")
    fold_info = {"fold": seed, "split_sizes": {k: int(v.numel()) for k, v in split.items()}} if kfold else {}
    return {"seed": seed, **fold_info, **result}

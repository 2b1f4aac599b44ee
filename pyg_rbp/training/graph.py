"""Mini-batch training of a graph-level model with early stopping on validation: :func:`train_graph`.

Used for OGB's graph property datasets (``ogbg-mol*``) with their official scaffold split and
Evaluator, and for the TU sets under the ``10-fold`` protocol, where the ``seed`` of a run is its
fold (:func:`pyg_rbp.data.protocols.kfold_split`: train on the other nine folds, report the test
fold). Under ``10-fold`` the test fold is scored at every evaluation and kept in the history, so
that GIN's epoch selection (the epoch with the best mean test accuracy over the folds) can be
computed over the folds afterwards, beside the validation-selected score of each fold.

It reports the same fields as :func:`pyg_rbp.training.node.train_node`, with one epoch being
one pass over the training graphs and the activation memory measured on the first training
mini-batch.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import torch

from pyg_rbp.data import evaluate
from pyg_rbp.data.loaded import LoadedDataset
from pyg_rbp.data.protocols import KFOLD, kfold_split
from pyg_rbp.engine import DivergenceError
from pyg_rbp.profiling import CudaPeakMemory, SavedTensorBytes, synchronize
from pyg_rbp.training.config import TrainConfig
from pyg_rbp.training.models import build_graph_model, count_parameters, fixed_point_stats, set_seed
from pyg_rbp.training.node import make_optimizer
from pyg_rbp.training.objective import (
    DivergenceGuard,
    ModelSelection,
    check_output,
    checked_step,
    loss_fn,
)


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


def train_graph(cfg: TrainConfig, loaded: LoadedDataset, seed: int, *,
                device: str | torch.device = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on a graph-level dataset's official split; one result dict per seed.

    Validation is scored every ``cfg.eval_every`` epochs; training stops after ``cfg.patience``
    epochs without improvement (0: never). Fields as in :func:`~pyg_rbp.training.node.train_node`.
    """
    from torch_geometric.loader import DataLoader
    from tqdm.auto import tqdm

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

    selection = ModelSelection(metric, cfg.patience)
    label = f"{cfg.dataset}/{cfg.model}/{cfg.grad or '-'}/s{seed}"
    guard = DivergenceGuard(model, label)
    epoch_times: list[float] = []
    saved = None

    def validate(epoch: int, train_loss: float | None) -> bool:
        if kfold:  # every fold's test score at every evaluation: GIN's selection over folds
            test_now = evaluate(loaded, *_predict(model, test_loader, device))
            if not has_val:  # GIN's own setting: no validation part, the last epoch is reported
                selection.history.append({"epoch": epoch, "val": None, "train_loss": train_loss,
                                          "test": test_now})
                selection.test, selection.epoch = test_now, epoch
                return False
            stop = selection.update(epoch, *_val_score(), lambda: test_now, cfg.eval_every,
                                    train_loss=train_loss)
            selection.history[-1]["test"] = test_now
            return stop
        y_val, out_val = _predict(model, val_loader, device)
        val_loss = float(loss_fn(metric, out_val, y_val))
        return selection.update(epoch, evaluate(loaded, y_val, out_val), val_loss,
                                lambda: evaluate(loaded, *_predict(model, test_loader, device)),
                                cfg.eval_every, train_loss=train_loss)

    def _val_score() -> tuple[float, float]:
        y_val, out_val = _predict(model, val_loader, device)
        return evaluate(loaded, y_val, out_val), float(loss_fn(metric, out_val, y_val))

    t_start = time.perf_counter()
    bar = tqdm(range(1, cfg.epochs + 1), desc=label, disable=not progress, leave=False, dynamic_ncols=True)
    epoch = done = 0  # done: epochs whose training pass completed
    with CudaPeakMemory(device) as peak:
        for epoch in bar:
            try:
                model.train()
                synchronize(device)
                t0 = time.perf_counter()
                total, count = 0.0, 0
                for batch in train_loader:
                    batch = batch.to(device)
                    opt.zero_grad(set_to_none=True)
                    with SavedTensorBytes() if saved is None else contextlib.nullcontext() as mem:
                        out = _forward(model, batch)
                        loss = loss_fn(metric, out, batch.y)
                    if mem is not None:
                        saved = mem.bytes
                    checked_step(model, opt, loss, f"in epoch {epoch}")
                    loss = loss.detach()
                    total += float(loss) * batch.num_graphs
                    count += batch.num_graphs
                done = epoch
                synchronize(device)
                epoch_times.append(time.perf_counter() - t0)
                if epoch % cfg.eval_every and epoch != cfg.epochs:
                    continue
                stop = validate(epoch, total / max(count, 1))
            except (DivergenceError, ValueError) as err:
                guard.record(epoch, err)  # re-raises what is not a divergence
                break
            bar.set_postfix(loss=f"{total / max(count, 1):.3f}",
                            val="-" if selection.val is None else f"{selection.val:.4f}",
                            test=f"{selection.test:.4f}")
            if stop:
                break
        if guard.info is not None and selection.best is None:
            guard.validate_initial(model, lambda: validate(0, None))
    bar.close()
    fold_info = {"fold": seed, "split_sizes": {k: int(v.numel()) for k, v in split.items()}} if kfold else {}
    return {
        "seed": seed,
        **fold_info,
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

"""Full-graph training of a node classifier with early stopping on validation: :func:`train_node`.

One function serves every node-level dataset and model: the paper protocol (SGD, validation
checked every 20 steps), the public Planetoid split and OGB's official node splits. Per run it
reports the best validation score, the test score at that epoch, the median time of a training
step, the activation memory of one training forward (bytes saved for backward, counted the same
way on every device) and, on CUDA, the peak allocated memory.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import torch
from torch_geometric.data import Data

from pyg_rbp.data import evaluate
from pyg_rbp.data.loaded import LoadedDataset
from pyg_rbp.engine import DivergenceError
from pyg_rbp.profiling import CudaPeakMemory, SavedTensorBytes, synchronize
from pyg_rbp.training.config import TrainConfig
from pyg_rbp.training.models import build_node_model, count_parameters, fixed_point_stats, set_seed
from pyg_rbp.training.objective import (
    DivergenceGuard,
    ModelSelection,
    check_gradients,
    check_loss,
    check_output,
    checked_step,
    loss_fn,
)


def make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """SGD with momentum (paper protocol) or Adam, with L2 weight decay."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class SparseFeatureDropout:
    """Dropout of a mostly-zero feature matrix that draws random numbers for its non-zeros only.

    Equal in distribution to ``F.dropout(x, p)`` (zeros stay zero, survivors are scaled by
    ``1 / (1 - p)``) but about ``1 / density`` times cheaper: on Cora's bag-of-words features
    (1.3% non-zero) the dense version costs more than the whole rest of an APPNP step on CPU.
    """

    def __init__(self, x: torch.Tensor, p: float) -> None:
        self.x = x
        self.p = float(p)
        self.rows, self.cols = x.nonzero(as_tuple=True)
        self.values = x[self.rows, self.cols]

    @staticmethod
    def worthwhile(x: torch.Tensor) -> bool:
        return x.numel() > 0 and float((x != 0).float().mean()) < 0.25

    def __call__(self) -> torch.Tensor:
        keep = torch.rand(self.values.shape, device=self.values.device) >= self.p
        out = torch.zeros_like(self.x)
        out[self.rows[keep], self.cols[keep]] = self.values[keep] / (1.0 - self.p)
        return out


def _masks(data: Data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    for name in ("train_mask", "val_mask", "test_mask"):
        if getattr(data, name, None) is None:
            raise ValueError(f"node training needs data.{name} (use pyg_rbp.data.apply_protocol)")
    return data.train_mask, data.val_mask, data.test_mask


def train_node(cfg: TrainConfig, loaded: LoadedDataset, data: Data, seed: int, *,
               device: str | torch.device = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on the node graph ``data`` (with split masks) and return the result.

    Validation is checked every ``cfg.eval_every`` steps; training stops once it has not
    improved for ``cfg.patience`` steps (0: never). The returned dict holds ``seed``, ``val``
    (best validation score), ``test`` (test score at that step; accuracy as a fraction),
    ``best_epoch``, ``epochs_run``, ``epoch_time_s`` (median seconds of one training step:
    forward, backward, optimiser), ``train_time_s``, ``saved_bytes``, ``cuda_peak_bytes``,
    ``num_params``, the fixed-point diagnostics of the last solve and ``history`` (one entry per
    validation: ``epoch``, ``val``, ``val_loss``, ``train_loss``) and ``diverged``: ``None``, or
    ``{"epoch", "error"}`` when a NaN/inf loss, gradient or state stopped the run (the scores are
    then those of the best validated model before it; see
    :class:`~pyg_rbp.training.objective.DivergenceGuard`).
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    set_seed(seed)
    train_mask, val_mask, test_mask = _masks(data)
    if int(train_mask.sum()) == 0 or int(val_mask.sum()) == 0 or int(test_mask.sum()) == 0:
        raise ValueError("the split has an empty train, validation or test set")
    if cfg.model == "linear-pca":
        return _linear_baseline(loaded, data, seed)
    if cfg.loader != "full":
        return train_node_batched(cfg, loaded, data, seed, device=device, progress=progress)
    from pyg_rbp.training.distributed import current_group

    if current_group()[1] > 1:
        raise ValueError("several processes share mini-batches: use --loader history, neighbor or "
                         "cluster with --world-size / torchrun")
    if data.x is None:
        raise ValueError(f"{loaded.name}: the graph has no node features (data.x is None)")
    data = data.to(device)
    x = data.x.float()
    y = data.y
    edge_weight = getattr(data, "edge_weight", None)
    model = build_node_model(cfg, x.size(1), loaded.num_classes).to(device)
    opt = make_optimizer(cfg, model.parameters())
    metric = loaded.metric
    # ppr and gcn drop out their input features first (attribute `dropout`), then hidden units:
    # for sparse features do the input dropout here, on the non-zeros, and switch theirs off.
    feature_dropout = None
    if cfg.model in ("ppr", "gcn", "appnp") and cfg.dropout > 0 and SparseFeatureDropout.worthwhile(x):
        feature_dropout = SparseFeatureDropout(x, cfg.dropout)
        model.dropout = 0.0
    y_cpu = y.detach().cpu()

    def score(out: torch.Tensor, mask: torch.Tensor) -> float:
        m = mask.detach().cpu()
        return evaluate(loaded, y_cpu[m], out.detach().cpu()[m])

    selection = ModelSelection(metric, cfg.patience)
    label = f"{cfg.dataset}/{cfg.model}/{cfg.grad or '-'}/s{seed}"
    guard = DivergenceGuard(model, label)
    step_times: list[float] = []
    saved = None

    def validate(epoch: int, train_loss: float | None) -> bool:
        model.eval()
        with torch.no_grad():
            out = model(x, data.edge_index, edge_weight)
            check_output(out, f"at the validation of step {epoch}")
            val_loss = float(loss_fn(metric, out[val_mask], y[val_mask]))
        return selection.update(epoch, score(out, val_mask), val_loss,
                                lambda: score(out, test_mask), cfg.eval_every, train_loss=train_loss)

    t_start = time.perf_counter()
    bar = tqdm(range(1, cfg.epochs + 1), desc=label, disable=not progress, leave=False, dynamic_ncols=True)
    epoch = done = 0  # done: steps whose optimiser update ran
    with CudaPeakMemory(device) as peak:
        for epoch in bar:
            try:
                model.train()
                synchronize(device)
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                x_in = feature_dropout() if feature_dropout is not None else x
                with SavedTensorBytes() if saved is None else contextlib.nullcontext() as mem:
                    out = model(x_in, data.edge_index, edge_weight)
                    loss = loss_fn(metric, out[train_mask], y[train_mask])
                if mem is not None:
                    saved = mem.bytes
                checked_step(model, opt, loss, f"at step {epoch}")
                done = epoch
                loss = loss.detach()
                synchronize(device)
                step_times.append(time.perf_counter() - t0)
                if epoch % cfg.eval_every and epoch != cfg.epochs:
                    continue
                stop = validate(epoch, float(loss))
            except (DivergenceError, ValueError) as err:
                guard.record(epoch, err)  # re-raises what is not a divergence
                break
            bar.set_postfix(loss=f"{float(loss):.3f}", val=f"{selection.val:.4f}",
                            test=f"{selection.test:.4f}")
            if stop:
                break
        if guard.info is not None and selection.best is None:
            guard.validate_initial(model, lambda: validate(0, None))
    bar.close()
    return {
        "seed": seed,
        "val": selection.val,
        "test": selection.test,
        "best_epoch": selection.epoch,
        "epochs_run": done,
        "epoch_time_s": statistics.median(step_times) if step_times else None,
        "train_time_s": time.perf_counter() - t_start,
        "saved_bytes": saved,
        "cuda_peak_bytes": peak.peak_bytes,
        "num_params": count_parameters(model),
        "fixed_point": fixed_point_stats(model),
        "history": selection.history,
        "diverged": guard.info,
        "loader": "full",
        "nodes_per_s": (int(data.num_nodes) / statistics.median(step_times)) if step_times else None,
    }


def _linear_baseline(loaded: LoadedDataset, data: Data, seed: int) -> dict[str, Any]:
    """The paper's linear-PCA baseline: logistic regression on the features, C picked on val."""
    from pyg_rbp.data import linear_pca_baseline

    if loaded.metric != "acc":
        raise ValueError(
            f"linear-pca is a single-label classifier; {loaded.name} is scored by {loaded.metric}")
    t0 = time.perf_counter()
    res = linear_pca_baseline(data)
    return {
        "seed": seed, "val": res["val_acc"], "test": res["test_acc"], "best_epoch": None,
        "epochs_run": 0, "epoch_time_s": None, "train_time_s": time.perf_counter() - t0,
        "saved_bytes": 0, "cuda_peak_bytes": None, "num_params": None, "fixed_point": None,
        "C": res["C"],
    }


def train_node_batched(cfg: TrainConfig, loaded: LoadedDataset, data: Data, seed: int, *,
                       device: str | torch.device = "cpu", progress: bool = True,
                       accumulate: int = 1, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """:func:`train_node` with mini-batches (``cfg.loader``: history, neighbor or cluster).

    Every epoch runs the loader's rounds (:mod:`pyg_rbp.training.loaders`): per round this
    process's share of batches, the loss on each batch's training nodes, gradients averaged over
    the round's batches (``accumulate`` of them here, times the processes of a
    :mod:`torch.distributed` group, which DDP averages), one optimiser step. Validation checks
    all nodes without gradient. The result adds ``loader``, ``batches`` (per epoch, all
    processes), ``nodes_per_s`` (target nodes trained per second of training steps, all
    processes), ``world_size``, and ``saved_bytes`` as the largest over the first epoch's batches.
    ``cfg.step_every="epoch"`` accumulates the whole epoch's gradients into one optimiser step
    (each batch weighted by its share of the training nodes), as a full-graph step would.
    ``model`` overrides the one built from ``cfg`` (the multi-process tests start all from one).
    """
    from tqdm.auto import tqdm

    from pyg_rbp.training.distributed import agree_on_divergence, current_group, wrap_ddp
    from pyg_rbp.training.loaders import make_loader

    rank, world = current_group()
    device = torch.device(device)
    set_seed(seed)
    train_mask, val_mask, test_mask = _masks(data)
    if data.x is None:
        raise ValueError(f"{loaded.name}: the graph has no node features (data.x is None)")
    if world > 1 and accumulate != 1:
        raise ValueError("accumulate > 1 is the single-process stand-in for several processes; "
                         "with torch.distributed use accumulate=1")
    data = data.to(device)
    built = model if model is not None else build_node_model(cfg, data.x.size(1), loaded.num_classes)
    built = built.to(device)
    dtype = next(p.dtype for p in built.parameters() if p.is_floating_point())
    x = data.x.to(dtype)
    y = data.y
    loader = make_loader(cfg, data, built, device, world_size=world, rank=rank, accumulate=accumulate,
                         seed=seed)
    net = wrap_ddp(built)
    opt = make_optimizer(cfg, built.parameters())
    metric = loaded.metric
    y_cpu = y.detach().cpu()
    train_cpu = train_mask.detach().cpu()

    def score(out: torch.Tensor, mask: torch.Tensor) -> float:
        m = mask.detach().cpu()
        return evaluate(loaded, y_cpu[m], out.detach().cpu()[m])

    selection = ModelSelection(metric, cfg.patience)
    label = f"{cfg.dataset}/{cfg.model}/{cfg.grad or '-'}/{cfg.loader}/s{seed}"
    per_epoch = cfg.step_every == "epoch"
    n_train = int(train_mask.sum())
    guard = DivergenceGuard(built, label)
    epoch_times: list[float] = []
    saved = 0
    nodes_per_epoch = 0
    batches_per_epoch = 0

    def validate(epoch: int, train_loss: float | None) -> bool:
        built.eval()
        out = loader.predict(built, x)
        check_output(out, f"at epoch {epoch}")
        val_loss = float(loss_fn(metric, out[val_mask], y[val_mask]))
        return selection.update(epoch, score(out, val_mask), val_loss,
                                lambda: score(out, test_mask), cfg.eval_every, train_loss=train_loss)

    t_start = time.perf_counter()
    show = progress and rank == 0
    bar = tqdm(range(1, cfg.epochs + 1), desc=label, disable=not show, leave=False, dynamic_ncols=True)
    epoch = done = 0
    loss_value = float("nan")
    with CudaPeakMemory(device) as peak:
        for epoch in bar:
            try:
                built.train()
                rounds = loader.rounds(epoch)
                inner = tqdm(rounds, desc=f"epoch {epoch}", disable=not show, leave=False)
                synchronize(device)
                t0 = time.perf_counter()
                losses = []
                nodes = 0
                if per_epoch:
                    opt.zero_grad(set_to_none=True)
                for mine in inner:
                    if not per_epoch:
                        opt.zero_grad(set_to_none=True)
                    writes: list[tuple[torch.Tensor, torch.Tensor]] = []
                    for batch in mine:
                        # a NaN on one rank stops every rank here, before the gradient all-reduce
                        with agree_on_divergence(), \
                                SavedTensorBytes() if epoch == 1 else contextlib.nullcontext() as mem:
                            out = loader.forward(net, x, batch, writes)
                            is_train = train_cpu[batch.targets.cpu()].to(out.device)
                            if bool(is_train.any()):
                                tgt = batch.targets[is_train.to(batch.targets.device)]
                                loss = loss_fn(metric, out[is_train], y[tgt])
                            else:  # no training node here: the solve still updates the buffer
                                loss = out.sum() * 0.0
                            # per epoch: this batch's share of the mean over all training nodes
                            # (DDP averages over the processes, hence the factor world)
                            share = int(is_train.sum()) * world / n_train
                            weight = share if per_epoch else 1.0 / accumulate
                            check_loss(loss, f"at epoch {epoch}")
                        if mem is not None:
                            saved = max(saved, mem.bytes)
                        nodes += batch.targets.numel()
                        (loss * weight).backward()
                        losses.append(float(loss.detach()))
                    loader.commit(writes)
                    if not per_epoch:
                        check_gradients(built, f"at epoch {epoch}")
                        opt.step()
                if per_epoch:
                    check_gradients(built, f"at epoch {epoch}")
                    opt.step()
                inner.close()
                synchronize(device)
                epoch_times.append(time.perf_counter() - t0)
                nodes_per_epoch = all_ranks_sum(nodes, world)
                batches_per_epoch = len(rounds) * loader.group
                done = epoch
                loss_value = statistics.fmean(losses) if losses else float("nan")
                if epoch % cfg.eval_every and epoch != cfg.epochs:
                    continue
                stop = validate(epoch, loss_value)
            except (DivergenceError, ValueError) as err:
                guard.record(epoch, err)  # re-raises what is not a divergence
                break
            bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{selection.val:.4f}",
                            test=f"{selection.test:.4f}")
            if stop:
                break
        if guard.info is not None and selection.best is None:
            guard.validate_initial(built, lambda: validate(0, None))
    bar.close()
    median = statistics.median(epoch_times) if epoch_times else None
    return {
        "seed": seed,
        "val": selection.val,
        "test": selection.test,
        "best_epoch": selection.epoch,
        "epochs_run": done,
        "epoch_time_s": median,
        "train_time_s": time.perf_counter() - t_start,
        "saved_bytes": saved,
        "cuda_peak_bytes": peak.peak_bytes,
        "num_params": count_parameters(built),
        "fixed_point": fixed_point_stats(built),
        "history": selection.history,
        "diverged": guard.info,
        "loader": cfg.loader,
        "batches": batches_per_epoch,
        "nodes_per_s": (nodes_per_epoch / median) if median else None,
        "world_size": world,
    }


def all_ranks_sum(value: int, world: int) -> int:
    """``value`` summed over the processes of the torch.distributed group (itself when alone)."""
    if world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.long)
    dist.all_reduce(t)
    return int(t)

"""Node classification, full-graph (:func:`train_node`) or in mini-batches (:func:`train_node_batched`).

Thin adapters around the one training loop, :func:`pyg_rbp.training.fit.fit`: they build the
model and the data, and say what a batch, its loss and a validation are. One function serves
every node-level dataset and model: the paper protocol (SGD, validation checked every 20
steps), the public Planetoid split and OGB's official node splits. Per run it reports the best
validation score, the test score at that epoch, the median time of a training step, the
activation memory of one training forward (bytes saved for backward, counted the same way on
every device) and, on CUDA, the peak allocated memory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from pyg_rbp.data import evaluate, linear_pca_baseline
from pyg_rbp.data.loaded import LoadedDataset
from pyg_rbp.runtime import set_seed
from pyg_rbp.training.config import TrainConfig
from pyg_rbp.training.distributed import ProcessGroup
from pyg_rbp.training.fit import Evaluation, Rounds, fit, make_optimizer
from pyg_rbp.training.loaders import Batch, NodeLoader, make_loader
from pyg_rbp.training.models import build_node_model
from pyg_rbp.training.objective import check_output, loss_fn

__all__ = ["SparseFeatureDropout", "make_optimizer", "set_seed", "train_node", "train_node_batched"]


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


def _scorer(loaded: LoadedDataset, y: Tensor):
    y_cpu = y.detach().cpu()

    def score(out: Tensor, mask: Tensor) -> float:
        m = mask.detach().cpu()
        return evaluate(loaded, y_cpu[m], out.detach().cpu()[m])

    return score


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
    :class:`~pyg_rbp.training.objective.DivergenceGuard`). The loop is
    :func:`~pyg_rbp.training.fit.fit`, one round of one full-graph batch per step.
    """
    device = torch.device(device)
    set_seed(seed)
    train_mask, val_mask, test_mask = _masks(data)
    if int(train_mask.sum()) == 0 or int(val_mask.sum()) == 0 or int(test_mask.sum()) == 0:
        raise ValueError("the split has an empty train, validation or test set")
    if cfg.spec.closed_form:  # linear-pca: a logistic regression, fitted by scikit-learn
        return _linear_baseline(loaded, data, seed)
    if cfg.loader != "full":
        return train_node_batched(cfg, loaded, data, seed, device=device, progress=progress)
    if ProcessGroup.current().world_size > 1:
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
    # ppr, gcn and appnp drop out their input features first (attribute `dropout`), then hidden
    # units: for sparse features do the input dropout here, on the non-zeros, and switch theirs off.
    feature_dropout = None
    if cfg.spec.input_dropout and cfg.dropout > 0 and SparseFeatureDropout.worthwhile(x):
        feature_dropout = SparseFeatureDropout(x, cfg.dropout)
        model.dropout = 0.0
    score = _scorer(loaded, y)

    def loss(net: torch.nn.Module, batch: None, epoch: int) -> tuple[Tensor, float, float]:
        x_in = feature_dropout() if feature_dropout is not None else x
        out = net(x_in, data.edge_index, edge_weight)
        return loss_fn(metric, out[train_mask], y[train_mask]), 1.0, 1.0

    def validate(epoch: int) -> Evaluation:
        with torch.no_grad():
            out = model(x, data.edge_index, edge_weight)
            check_output(out, f"at the validation of step {epoch}")
            val_loss = float(loss_fn(metric, out[val_mask], y[val_mask]))
        return Evaluation(score(out, val_mask), val_loss, lambda: score(out, test_mask))

    label = f"{cfg.dataset}/{cfg.model}/{cfg.grad or '-'}/s{seed}"
    result = fit(model, opt, Rounds(), loss, validate, metric=metric, epochs=cfg.epochs,
                 eval_every=cfg.eval_every, patience=cfg.patience, label=label, device=device,
                 progress=progress, where="at step {}")
    median = result["epoch_time_s"]
    return {"seed": seed, **result, "loader": "full",
            "nodes_per_s": (int(data.num_nodes) / median) if median else None}


def _linear_baseline(loaded: LoadedDataset, data: Data, seed: int) -> dict[str, Any]:
    """The paper's linear-PCA baseline: logistic regression on the features, C picked on val."""
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


class _LoaderRounds(Rounds):
    """A :class:`~pyg_rbp.training.loaders.NodeLoader` as :func:`~pyg_rbp.training.fit.fit`'s
    batch iterator: its rounds, the states each round solved (published at the round's end:
    the history buffer, all-gathered between processes), and the target nodes and batches per
    epoch summed over the processes."""

    def __init__(self, loader: NodeLoader, group: ProcessGroup) -> None:
        super().__init__()
        self.loader = loader
        self.group = group
        self.writes: list[tuple[Tensor, Tensor]] = []
        self.nodes = 0
        self.nodes_per_epoch = 0
        self.batches_per_epoch = 0
        self._count = 0

    def rounds(self, epoch: int) -> Sequence[Sequence[Batch]]:
        rounds = self.loader.rounds(epoch)
        self._count = len(rounds)
        self.nodes = 0
        self.writes = []
        return rounds

    def end_round(self) -> None:
        self.loader.commit(self.writes)
        self.writes = []

    def end_epoch(self) -> None:
        self.nodes_per_epoch = self.group.sum(self.nodes)
        self.batches_per_epoch = self._count * self.loader.group


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
    group = ProcessGroup.current()
    world = group.world_size
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
    loader = make_loader(cfg, data, built, device, world_size=world, rank=group.rank,
                         accumulate=accumulate, seed=seed)
    opt = make_optimizer(cfg, built.parameters())
    metric = loaded.metric
    train_cpu = train_mask.detach().cpu()
    score = _scorer(loaded, y)
    per_epoch = cfg.step_every == "epoch"
    n_train = int(train_mask.sum())
    batches = _LoaderRounds(loader, group)

    def loss(net: torch.nn.Module, batch: Batch, epoch: int) -> tuple[Tensor, float, float]:
        out = loader.forward(net, x, batch, batches.writes)
        is_train = train_cpu[batch.targets.cpu()].to(out.device)
        if bool(is_train.any()):
            tgt = batch.targets[is_train.to(batch.targets.device)]
            value = loss_fn(metric, out[is_train], y[tgt])
        else:  # no training node here: the solve still updates the buffer
            value = out.sum() * 0.0
        batches.nodes += batch.targets.numel()
        # per epoch: this batch's share of the mean over all training nodes
        # (DDP averages over the processes, hence the factor world)
        share = int(is_train.sum()) * world / n_train
        return value, (share if per_epoch else 1.0 / accumulate), 1.0

    def validate(epoch: int) -> Evaluation:
        out = loader.predict(built, x)
        check_output(out, f"at epoch {epoch}")
        val_loss = float(loss_fn(metric, out[val_mask], y[val_mask]))
        return Evaluation(score(out, val_mask), val_loss, lambda: score(out, test_mask))

    label = f"{cfg.dataset}/{cfg.model}/{cfg.grad or '-'}/{cfg.loader}/s{seed}"
    result = fit(built, opt, batches, loss, validate, metric=metric, epochs=cfg.epochs,
                 eval_every=cfg.eval_every, patience=cfg.patience, step_every=cfg.step_every,
                 label=label, device=device, progress=progress, round_progress=True, group=group,
                 memory="first-epoch")
    median = result["epoch_time_s"]
    return {"seed": seed, **result, "loader": cfg.loader, "batches": batches.batches_per_epoch,
            "nodes_per_s": (batches.nodes_per_epoch / median) if median else None,
            "world_size": world}


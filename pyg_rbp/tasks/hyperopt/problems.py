"""The inner problems whose training hyperparameters are tuned, and the named tasks built on them.

An inner problem is a model written as a function of an explicit tuple of weight tensors (so the
weights can be part of a dynamical-system state), its training loss on the mini-batch of step
``t``, the meta objective and accuracies. Two families:

* :class:`MLPProblem`: a tanh MLP on flattened images (the paper's 784-50-50-50-10 on MNIST, or
  64-50-50-50-10 on scikit-learn's bundled digits), mini-batch SGD whose last step is full-batch
  (as in the reference implementation), one learning rate and one momentum per weight and bias
  tensor, weights and biases initialised N(0, 1) * e^-3.
* :class:`GCNProblem`: the graph version, a two-layer GCN on a citation graph trained full-batch,
  with a learning rate, momentum and weight decay per layer; meta objective the validation loss.

:data:`TASKS` names the runs of ``pyg-rbp hyperopt`` with their defaults; :func:`load_task`
builds one. Only the MNIST *test* set is available offline, so ``mlp-mnist`` splits its 10,000
images (seeded) into 6,000 inner-training, 2,000 validation and 2,000 test images (the reference
used 10,000 training images of the MNIST training set). Images are scaled to [0, 1] and centred
by the training split's mean image, as in the reference implementation.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor

from pyg_rbp.data import load
from pyg_rbp.data.mnist import load_mnist
from pyg_rbp.nn.adjacency import CSRAdjacency, gcn_normalize
from pyg_rbp.tasks.hyperopt.dynamics import Episode, Hyperparameters, ParamSpec

META_SPLITS = ("train", "val")


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(-1) == labels).to(torch.float64).mean())


class InnerProblem(ABC):
    """A model and data whose training run is the dynamical system of :class:`InnerTraining`."""

    name: str
    specs: list[ParamSpec]
    group_names: list[str]
    meta_split: str

    @abstractmethod
    def episode(self, seed: int, steps: int) -> Episode:
        """Initial weights and mini-batch schedule of one inner run of ``steps`` steps."""

    @abstractmethod
    def inner_loss(self, weights: Sequence[Tensor], counter: Tensor, episode: Episode) -> Tensor:
        """Training loss of step ``counter`` (a float scalar tensor) at ``weights``."""

    @abstractmethod
    def split_loss(self, weights: Sequence[Tensor], split: str) -> Tensor:
        """Mean cross-entropy on a whole split (``train``, ``val`` or ``test``)."""

    @abstractmethod
    def accuracies(self, weights: Sequence[Tensor]) -> dict[str, float]:
        """Accuracy on the train, val and test splits."""

    def meta_loss(self, weights: Sequence[Tensor]) -> Tensor:
        """The meta objective: the loss on :attr:`meta_split` after the inner run."""
        return self.split_loss(weights, self.meta_split)

    def hyperparameters(self, **kwargs) -> Hyperparameters:
        """The starting hyperparameters of this problem (task defaults, overridable)."""
        options = dict(self.default_hyper)
        options.update(kwargs)
        ref = self.specs_reference()
        return Hyperparameters(self.group_names, dtype=ref.dtype, device=ref.device, **options)

    default_hyper: dict = {"theta0": -1.0, "phi0": 0.0, "psi0": None}

    @abstractmethod
    def specs_reference(self) -> Tensor:
        """Any tensor of the problem's dtype and device."""


def _check_split(split: str) -> None:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")


def _check_meta_split(meta_split: str) -> None:
    if meta_split not in META_SPLITS:
        raise ValueError(f"meta_split must be one of {META_SPLITS}, got {meta_split!r}")


class MLPProblem(InnerProblem):
    """A tanh MLP classifier trained by mini-batch momentum SGD (the paper's inner problem).

    Args:
        splits: ``{"train": (x, y), "val": (x, y), "test": (x, y)}`` with ``x`` of shape
            ``[N, D]`` (float) and ``y`` of shape ``[N]`` (long). The device and dtype of
            ``train``'s ``x`` are used throughout.
        hidden: hidden-layer widths.
        batch_size: mini-batch size of the inner SGD.
        init_scale: weights and biases are drawn N(0, 1) * ``init_scale`` (paper: e^-3).
        meta_split: split whose loss after the inner run is the meta objective (paper: train).
        final_full_batch: the last inner step uses the whole training split (the reference
            implementation's choice for its RBP variants; here for every mode).
    """

    def __init__(self, splits: dict[str, tuple[Tensor, Tensor]], *, hidden: Sequence[int] = (50, 50, 50),
                 batch_size: int = 200, init_scale: float = math.exp(-3), meta_split: str = "train",
                 final_full_batch: bool = True, name: str = "mlp") -> None:
        missing = {"train", "val", "test"} - set(splits)
        if missing:
            raise ValueError(f"splits lack {sorted(missing)}")
        _check_meta_split(meta_split)
        x_train, y_train = splits["train"]
        if x_train.dim() != 2 or not x_train.is_floating_point():
            raise ValueError(f"x must be a float [N, D] tensor, got {tuple(x_train.shape)} {x_train.dtype}")
        if not isinstance(batch_size, int) or not 1 <= batch_size <= x_train.shape[0]:
            raise ValueError(f"batch_size must be an integer in [1, {x_train.shape[0]}], got {batch_size!r}")
        if not all(isinstance(h, int) and h > 0 for h in hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {hidden!r}")
        self.name = name
        self.splits = {k: (x.to(x_train), y.to(x_train.device)) for k, (x, y) in splits.items()}
        self.num_classes = int(max(int(y.max()) for _, y in self.splits.values())) + 1
        self.batch_size = batch_size
        self.init_scale = float(init_scale)
        self.meta_split = meta_split
        self.final_full_batch = bool(final_full_batch)
        sizes = [x_train.shape[1], *hidden, self.num_classes]
        self.specs = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            self.specs.append(ParamSpec(f"W{i}", (a, b), group=len(self.specs), decay=True))
            self.specs.append(ParamSpec(f"b{i}", (b,), group=len(self.specs), decay=False))
        self.group_names = [s.name for s in self.specs]

    def specs_reference(self) -> Tensor:
        return self.splits["train"][0]

    @staticmethod
    def forward(weights: Sequence[Tensor], x: Tensor) -> Tensor:
        """Logits of the MLP with tanh hidden layers."""
        h = x
        layers = len(weights) // 2
        for i in range(layers):
            h = h @ weights[2 * i] + weights[2 * i + 1]
            if i < layers - 1:
                h = torch.tanh(h)
        return h

    def episode(self, seed: int, steps: int) -> Episode:
        """Weights N(0,1)*init_scale and ``steps`` batches drawn epoch by epoch (seeded, on CPU);
        with ``final_full_batch`` the last step uses the whole training split instead."""
        g = torch.Generator().manual_seed(int(seed))
        ref = self.specs_reference()
        weights = tuple(
            (torch.randn(s.shape, generator=g, dtype=torch.float64) * self.init_scale).to(ref)
            for s in self.specs
        )
        n = self.splits["train"][0].shape[0]
        need = steps * self.batch_size
        perms = [torch.randperm(n, generator=g) for _ in range(-(-need // n))]
        batches = torch.cat(perms)[:need].view(steps, self.batch_size).to(ref.device)
        full_from = steps - 1 if self.final_full_batch else None
        return Episode(weights=weights, batches=batches, seed=int(seed), full_batch_from=full_from)

    def inner_loss(self, weights: Sequence[Tensor], counter: Tensor, episode: Episode) -> Tensor:
        assert episode.batches is not None
        x, y = self.splits["train"]
        # Reading the counter on the host is needed only when some step is full-batch.
        if episode.full_batch_from is not None and int(counter) >= episode.full_batch_from:
            return F.cross_entropy(self.forward(weights, x), y)
        row = counter.detach().to(torch.long).view(1)
        idx = episode.batches.index_select(0, row).view(-1)
        return F.cross_entropy(self.forward(weights, x.index_select(0, idx)), y.index_select(0, idx))

    def split_loss(self, weights: Sequence[Tensor], split: str) -> Tensor:
        _check_split(split)
        x, y = self.splits[split]
        return F.cross_entropy(self.forward(weights, x), y)

    def accuracies(self, weights: Sequence[Tensor]) -> dict[str, float]:
        with torch.no_grad():
            return {k: _accuracy(self.forward(weights, x), y) for k, (x, y) in self.splits.items()}


class GCNProblem(InnerProblem):
    r"""A two-layer GCN, :math:`\hat A\,\mathrm{relu}(\hat A X W_1 + b_1) W_2 + b_2`, full-batch.

    :math:`\hat A = D^{-1/2}(A + I)D^{-1/2}`. Both :math:`\hat A` and the (very sparse) feature
    matrix :math:`X` are applied as CSR matmuls (:class:`pyg_rbp.nn.adjacency.CSRAdjacency`),
    whose backward is again a CSR matmul, so the second- and third-order products the
    hypergradients need stay sparse. One hyperparameter group per layer (learning rate,
    momentum, weight decay on the weight matrix; biases are not decayed). Weights are
    Glorot-initialised, biases zero. No dropout, so the inner run is deterministic given its
    initialisation.

    Args:
        x: node features ``[N, F]``.
        edge_index: ``[2, E]`` edges.
        y: labels ``[N]``; ``masks``: ``{"train", "val", "test"}`` boolean node masks.
        hidden: hidden channels.
        meta_split: split whose loss after the inner run is the meta objective (default val).
        normalize_features: L1-normalise the feature rows as the GCN paper does. Off by default:
            with plain SGD, normalised bag-of-words rows (~18 entries of ~0.06) make the first
            layer's gradients so small that 100 steps at the paper's starting learning rate
            e^-1 leave the model untrained (validation loss ~ln 7), whereas the raw binary
            features train to ~78% validation accuracy from that same start.
    """

    default_hyper = {"theta0": -1.0, "phi0": 0.0, "psi0": math.log(5e-4)}

    def __init__(self, x: Tensor, edge_index: Tensor, y: Tensor, masks: dict[str, Tensor], *,
                 hidden: int = 16, meta_split: str = "val", normalize_features: bool = False,
                 name: str = "gcn") -> None:
        missing = {"train", "val", "test"} - set(masks)
        if missing:
            raise ValueError(f"masks lack {sorted(missing)}")
        _check_meta_split(meta_split)
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        if x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"x must be a float [N, F] tensor, got {tuple(x.shape)} {x.dtype}")
        n = x.shape[0]
        self.name = name
        self.meta_split = meta_split
        if normalize_features:
            x = x / x.abs().sum(-1, keepdim=True).clamp_min(1e-12)
        ei, ew = gcn_normalize(edge_index, None, n, add_self_loops=True, dtype=x.dtype)
        self.adj = CSRAdjacency(ei, ew, n, dtype=x.dtype)
        nz = x.nonzero()  # entry (node i, feature j) is the "edge" j -> i of a [N, F] matrix
        self.features = CSRAdjacency(nz.flip(1).t(), x[nz[:, 0], nz[:, 1]], n, x.shape[1], dtype=x.dtype)
        self._ref = x.new_zeros(())
        self.y = y.to(x.device)
        self.index = {k: m.to(x.device).nonzero().view(-1) for k, m in masks.items()}
        self.num_classes = int(y.max()) + 1
        self.hidden = hidden
        self.specs = [
            ParamSpec("W1", (x.shape[1], hidden), group=0, decay=True),
            ParamSpec("b1", (hidden,), group=0, decay=False),
            ParamSpec("W2", (hidden, self.num_classes), group=1, decay=True),
            ParamSpec("b2", (self.num_classes,), group=1, decay=False),
        ]
        self.group_names = ["layer1", "layer2"]

    def specs_reference(self) -> Tensor:
        return self._ref

    def forward(self, weights: Sequence[Tensor]) -> Tensor:
        """Logits of every node."""
        w1, b1, w2, b2 = weights
        h = torch.relu(self.adj.matmul(self.features.matmul(w1)) + b1)
        return self.adj.matmul(h @ w2) + b2

    def episode(self, seed: int, steps: int) -> Episode:
        g = torch.Generator().manual_seed(int(seed))
        weights = []
        for s in self.specs:
            if len(s.shape) == 2:
                bound = math.sqrt(6.0 / (s.shape[0] + s.shape[1]))
                w = (torch.rand(s.shape, generator=g, dtype=torch.float64) * 2 - 1) * bound
            else:
                w = torch.zeros(s.shape, dtype=torch.float64)
            weights.append(w.to(self._ref))
        return Episode(weights=tuple(weights), batches=None, seed=int(seed))

    def _loss(self, logits: Tensor, split: str) -> Tensor:
        idx = self.index[split]
        return F.cross_entropy(logits.index_select(0, idx), self.y.index_select(0, idx))

    def inner_loss(self, weights: Sequence[Tensor], counter: Tensor, episode: Episode) -> Tensor:
        return self._loss(self.forward(weights), "train")

    def split_loss(self, weights: Sequence[Tensor], split: str) -> Tensor:
        _check_split(split)
        return self._loss(self.forward(weights), split)

    def accuracies(self, weights: Sequence[Tensor]) -> dict[str, float]:
        with torch.no_grad():
            logits = self.forward(weights)
            return {k: _accuracy(logits.index_select(0, i), self.y.index_select(0, i))
                    for k, i in self.index.items()}


@dataclass(frozen=True)
class TaskDefaults:
    """Defaults of a named task (all overridable on the command line)."""

    max_iter: int
    backward_iter: int
    batch_size: int | None
    meta_split: str
    description: str


TASKS: dict[str, TaskDefaults] = {
    "mlp-mnist": TaskDefaults(
        100, 50, 200, "train",
        "MLP 784-50-50-50-10 tanh on the MNIST test set split 6000/2000/2000 (train/val/test); "
        "meta objective: loss on the 6000 inner-training images (the paper's choice)"),
    "mlp-digits": TaskDefaults(
        100, 50, 200, "train",
        "MLP 64-50-50-50-10 tanh on scikit-learn's digits split 1000/400/397; "
        "meta objective: loss on the 1000 inner-training images"),
    "gcn-cora": TaskDefaults(
        100, 50, None, "val",
        "2-layer GCN (16 hidden) on Cora (raw binary features), public split 140/500/1000, "
        "full-batch; learning rate, momentum and weight decay per layer; meta objective: validation loss"),
}


def _split_tensor(x: Tensor, y: Tensor, sizes: Sequence[int], seed: int) -> dict[str, tuple[Tensor, Tensor]]:
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    out, start = {}, 0
    for name, size in zip(("train", "val", "test"), sizes):
        idx = perm[start:start + size]
        out[name] = (x[idx], y[idx])
        start += size
    return out


def _load_mnist_test(root: str | Path | None) -> tuple[Tensor, Tensor]:
    images, labels = load_mnist(root=root, split="test")
    return torch.as_tensor(images), torch.as_tensor(labels).long()


def load_task(task: str, *, root: str | Path | None = None, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32, batch_size: int | None = None,
              meta_split: str | None = None, final_full_batch: bool = True,
              split_seed: int = 0) -> InnerProblem:
    """Build the inner problem of a named task (see :data:`TASKS`).

    Args:
        task: ``mlp-mnist``, ``mlp-digits`` or ``gcn-cora``.
        root: data root for MNIST / Cora (``None``: the loaders' default).
        device, dtype: where and in which precision the inner runs happen.
        batch_size: inner mini-batch size (MLP tasks; default from :data:`TASKS`).
        meta_split: ``train`` or ``val`` (default from :data:`TASKS`).
        final_full_batch: MLP tasks: the last inner step uses the whole training split.
        split_seed: seed of the train/val/test split of MNIST and digits.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    defaults = TASKS[task]
    meta_split = meta_split or defaults.meta_split
    _check_meta_split(meta_split)
    if task == "gcn-cora":
        if batch_size is not None:
            raise ValueError("gcn-cora trains full-batch; batch_size does not apply")

        data = load("cora", root=root).data
        masks = {"train": data.train_mask, "val": data.val_mask, "test": data.test_mask}
        return GCNProblem(data.x.to(device=device, dtype=dtype), data.edge_index.to(device),
                          data.y.to(device), masks, meta_split=meta_split, name=task)
    batch_size = batch_size or defaults.batch_size
    if task == "mlp-mnist":
        images, labels = _load_mnist_test(root)
        x = images.reshape(images.shape[0], -1).to(torch.float64) / 255.0
        splits = _split_tensor(x, labels, (6000, 2000, 2000), split_seed)
    else:
        digits = load_digits()
        x = torch.as_tensor(digits.data, dtype=torch.float64) / 16.0
        splits = _split_tensor(x, torch.as_tensor(digits.target).long(), (1000, 400, 397), split_seed)
    # The reference implementation's preprocessing (Maclaurin et al. 2015): intensities in [0, 1]
    # minus the mean image of the training split. Without the centering the last inner step's
    # Jacobian is markedly more expanding (spectral radius ~1.1-1.3 instead of ~1.02-1.05 on
    # digits), which ruins the K=50 Neumann series.
    mean = splits["train"][0].mean(0)
    splits = {k: ((x - mean).to(device=device, dtype=dtype), y.to(device)) for k, (x, y) in splits.items()}
    return MLPProblem(splits, batch_size=batch_size, meta_split=meta_split,
                      final_full_batch=final_full_batch, name=task)

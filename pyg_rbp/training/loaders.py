"""How node training iterates a graph: full-graph steps or mini-batches (``--loader``).

* ``full``: one step on the whole graph per epoch (:func:`pyg_rbp.training.node.train_node`).
* ``history``: a partition of *all* nodes into batches of ``batch_size`` (``--partition``,
  reverse Cuthill-McKee chunks by default, :func:`pyg_rbp.nn.partition.partition_nodes`); each
  batch's fixed point is solved with its 1-hop halo read from a
  :class:`~pyg_rbp.nn.history.HistoryBuffer` and written back, the loss is taken on the batch's
  training nodes. An epoch is one block Gauss-Seidel sweep. Needs no
  ``pyg-lib`` / ``torch-sparse``.
* ``neighbor``: PyG's :class:`~torch_geometric.loader.NeighborLoader` seeded at the training
  nodes (``num_neighbors`` per hop); the fixed point is solved on the sampled subgraph.
* ``cluster``: Cluster-GCN batches, about ``batch_size`` nodes each, joined from ``num_parts``
  parts. With ``--partition metis``: PyG's :class:`~torch_geometric.loader.ClusterData` and
  :class:`~torch_geometric.loader.ClusterLoader`; otherwise our own partition, spectral by
  default (:class:`PartitionClusterLoader`, no METIS, no pyg-lib / torch-sparse needed).

``neighbor`` and ``cluster --partition metis`` need ``pyg-lib`` or ``torch-sparse`` (the
``sampling`` extra; METIS too); without them :func:`make_loader` raises
:class:`SamplingUnavailableError` saying what to install.

Batches are grouped in *rounds* of ``world_size * accumulate`` batches: with several processes
(:mod:`pyg_rbp.training.distributed`) rank ``r`` takes the ``r``-th share of every round, all
batches of a round are solved against the same buffer snapshot and the solved rows of every
rank are all-gathered into every rank's buffer before the next round (the buffer stays
identical on all ranks). A single process with ``accumulate = k`` runs exactly the same rounds
(``k`` batches, gradients averaged), which is what the multi-process test compares against.
Evaluation (:meth:`NodeLoader.predict`) runs without gradient: sweeps of the history batches
(on a separate buffer, since dropout is off), or one full-graph forward for the sampling loaders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_geometric.typing as tg
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import ClusterData, ClusterLoader, NeighborLoader

from pyg_rbp.nn.history import (
    HistoryBuffer,
    build_halo_batches,
    find_fixed_point_conv,
    history_forward,
)
from pyg_rbp.nn.partition import assign_parts, metis_available, partition_nodes
from pyg_rbp.training.config import TrainConfig, parse_num_neighbors
from pyg_rbp.training.distributed import agree_on_divergence, gather_rows


class SamplingUnavailableError(RuntimeError):
    """``--loader neighbor`` or ``--loader cluster --partition metis`` without ``pyg-lib`` or
    ``torch-sparse`` (and METIS) installed."""


def sampling_available() -> bool:
    """Whether PyG's NeighborLoader/ClusterData can run here (pyg-lib or torch-sparse present)."""
    return bool(tg.WITH_PYG_LIB or tg.WITH_TORCH_SPARSE)


SAMPLING_HINT = (
    "install the sampling extra: pip install --no-build-isolation 'pyg-rbp[sampling]' (compiles "
    "torch-sparse and torch-scatter, about 20 minutes; .ci/run caches the wheels in "
    "~/.cache/pyg_rbp/wheels), or on a "
    "machine with PyG's wheel index: pip install pyg-lib torch-sparse "
    "-f https://data.pyg.org/whl/torch-${TORCH}+${CUDA}.html")


@dataclass
class Batch:
    """One training batch: what goes into the model and which outputs the loss reads.

    Attributes:
        inputs: global ids of the nodes whose features enter the model (its rows, in order).
        targets: global ids of the nodes whose outputs are returned (loss and predictions).
        positions: where the targets sit among the model's output rows.
        payload: the loader's own object (a :class:`~pyg_rbp.nn.history.HaloBatch`, a PyG batch).
        edge_index: the batch's edges in local ids (rows of ``inputs``), what the model is called with.
        edge_weight: their weights, where the graph has them.
    """

    inputs: Tensor
    targets: Tensor
    positions: Tensor
    payload: Any = None
    edge_index: Tensor | None = None
    edge_weight: Tensor | None = None

    @property
    def num_nodes(self) -> int:
        return int(self.inputs.numel())


@dataclass
class NodeLoader:
    """Base class: rounds of batches for training, and full predictions for evaluation."""

    data: Data
    world_size: int = 1
    rank: int = 0
    accumulate: int = 1
    seed: int = 0
    name: str = "base"
    batches: list[Batch] = field(default_factory=list)

    @property
    def group(self) -> int:
        return self.world_size * self.accumulate

    def rounds(self, epoch: int) -> list[list[Batch]]:
        """This epoch's rounds (batches shuffled per epoch with ``seed``), each this rank's share
        of ``accumulate`` batches. A last round with fewer batches than ``world_size *
        accumulate`` is dropped (history partitions always fill their rounds)."""
        gen = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        order = torch.randperm(len(self.batches), generator=gen).tolist()
        return self._share([self.batches[i] for i in order])

    def _share(self, batches: list[Batch]) -> list[list[Batch]]:
        if len(batches) < self.group:
            raise ValueError(f"{len(batches)} batches cannot feed {self.world_size} process(es) x "
                             f"{self.accumulate}: use a smaller --batch-size")
        full = len(batches) - len(batches) % self.group
        lo, hi = self.rank * self.accumulate, (self.rank + 1) * self.accumulate
        return [batches[s:s + self.group][lo:hi] for s in range(0, full, self.group)]

    def forward(self, model: torch.nn.Module, x: Tensor, batch: Batch,
                writes: list[tuple[Tensor, Tensor]]) -> Tensor:
        """The model's outputs on ``batch.targets`` (differentiable)."""
        out = model(x.index_select(0, batch.inputs), batch.edge_index, batch.edge_weight)
        return out.index_select(0, batch.positions)

    def commit(self, writes: list[tuple[Tensor, Tensor]]) -> None:
        """Publish the states solved in this round (history buffer only)."""

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, x: Tensor) -> Tensor:
        """Outputs for every node without gradient (full-graph forward)."""
        return model(x, self.data.edge_index, getattr(self.data, "edge_weight", None))


@dataclass
class HistoryLoader(NodeLoader):
    """``--loader history``: halo batches over all nodes and historical fixed points."""

    name: str = "history"
    halo_batches: list[Any] = field(default_factory=list)
    buffer: Any = None
    eval_buffer: Any = None
    eval_sweeps: int = 1

    @classmethod
    def build(cls, cfg: TrainConfig, data: Data, model: torch.nn.Module, device: torch.device,
              world_size: int = 1, rank: int = 0, accumulate: int = 1, seed: int = 0) -> HistoryLoader:
        n = int(data.num_nodes)
        conv = find_fixed_point_conv(model)
        parts = partition_nodes(data.edge_index, n, cfg.batch_size, partition=cfg.node_partition,
                                multiple_of=world_size * accumulate)
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        halo = build_halo_batches(conv.cell, data.edge_index.to(device), n, parts,
                                  getattr(data, "edge_weight", None), dtype=dtype)
        batches = [Batch(inputs=h.nodes, targets=h.nodes, positions=torch.arange(h.num_nodes, device=device),
                         payload=h, edge_index=h.edge_index) for h in halo]
        return cls(data=data, world_size=world_size, rank=rank, accumulate=accumulate, seed=seed,
                   batches=batches, halo_batches=halo, buffer=HistoryBuffer(n), eval_buffer=HistoryBuffer(n))

    def forward(self, model: torch.nn.Module, x: Tensor, batch: Batch,
                writes: list[tuple[Tensor, Tensor]]) -> Tensor:
        return history_forward(model, x.index_select(0, batch.inputs), batch.payload, self.buffer, writes)

    def commit(self, writes: list[tuple[Tensor, Tensor]]) -> None:
        for nodes, states in gather_rows(writes, self.world_size):
            self.buffer.write(nodes, states)

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, x: Tensor) -> Tensor:
        """``eval_sweeps`` sweeps over the batches in a fixed order on the evaluation buffer
        (warm from the previous evaluation), shared between processes round by round."""
        out: Tensor | None = None
        for _ in range(self.eval_sweeps):
            for start in range(0, len(self.batches), self.group):
                group = self.batches[start:start + self.group]
                mine = group[self.rank * self.accumulate:(self.rank + 1) * self.accumulate]
                writes: list[tuple[Tensor, Tensor]] = []
                logits: list[tuple[Tensor, Tensor]] = []
                with agree_on_divergence():  # a solve that blows up on one rank stops all
                    for batch in mine:
                        y = history_forward(model, x.index_select(0, batch.inputs), batch.payload,
                                            self.eval_buffer, writes)
                        logits.append((batch.targets, y))
                for nodes, states in gather_rows(writes, self.world_size):
                    self.eval_buffer.write(nodes, states)
                for nodes, y in gather_rows(logits, self.world_size):
                    if out is None:
                        out = y.new_zeros((int(self.data.num_nodes), *y.shape[1:]))
                    out.index_copy_(0, nodes.to(out.device), y.to(out.device))
        assert out is not None
        return out


@dataclass
class SampledLoader(NodeLoader):
    """``--loader neighbor|cluster``: PyG's loaders; batches are drawn once per epoch."""

    name: str = "neighbor"
    pyg_loader: Any = None
    device: Any = None

    def rounds(self, epoch: int) -> list[list[Batch]]:
        # every process draws the same batches (same seed), then takes its share
        torch.manual_seed(self.seed * 100003 + epoch)
        self.batches = [self._to_batch(b) for b in self.pyg_loader]
        return self._share(self.batches)

    def _to_batch(self, b: Any) -> Batch:
        device = self.device
        if self.name == "neighbor":
            n_id = b.n_id.to(device)
            positions = torch.arange(int(b.batch_size), device=device)
        else:
            n_id = b.n_id.to(device)
            positions = b.train_mask.nonzero().view(-1).to(device)
        return Batch(inputs=n_id, targets=n_id.index_select(0, positions), positions=positions,
                     payload=None, edge_index=b.edge_index.to(device))


def missing_requirement(cfg: TrainConfig) -> str | None:
    """Why ``cfg``'s loader cannot run here, in one line (``None``: it can). ``neighbor`` and
    ``cluster --partition metis`` need PyG's samplers (pyg-lib or torch-sparse); a METIS
    partition (history or cluster) needs METIS. :func:`make_loader` raises it, and the CLI
    refuses the settings with it before starting any process."""
    partition = cfg.node_partition if cfg.loader in ("history", "cluster") else None
    spelled = f"--loader {cfg.loader}" + (" --partition metis" if partition == "metis" else "")
    if (cfg.loader == "neighbor" or (cfg.loader == "cluster" and partition == "metis")) \
            and not sampling_available():
        return f"{spelled} needs PyG's samplers (pyg-lib or torch-sparse); " + SAMPLING_HINT
    if partition == "metis" and not metis_available():
        return (f"{spelled} needs METIS, which neither pyg-lib nor torch-sparse offers here: "
                "install pyg-lib from PyG's wheel index, or build torch-sparse with WITH_METIS=1 "
                "against libmetis (apt install libmetis-dev); --partition spectral needs nothing")
    return None


def _parts_per_batch(batch_size: int, parts: int, num_nodes: int) -> int:
    """Parts joined into one cluster batch of about ``batch_size`` nodes."""
    return max(1, round(batch_size * parts / num_nodes))


def _sampling_graph(data: Data) -> Data:
    return Data(edge_index=data.edge_index.cpu(), num_nodes=int(data.num_nodes),
                train_mask=data.train_mask.cpu(), n_id=torch.arange(int(data.num_nodes)))


def _neighbor_batches(cfg: TrainConfig, data: Data) -> Sequence[Any]:
    cpu = _sampling_graph(data)
    return NeighborLoader(cpu, num_neighbors=parse_num_neighbors(cfg.num_neighbors),
                          batch_size=cfg.batch_size, input_nodes=cpu.train_mask, shuffle=True)


def _cluster_batches(cfg: TrainConfig, data: Data) -> Sequence[Any]:
    """PyG's ClusterData (METIS) and ClusterLoader: ``--loader cluster --partition metis``."""
    parts = min(cfg.num_parts, int(data.num_nodes))
    return ClusterLoader(ClusterData(_sampling_graph(data), num_parts=parts, log=False),
                         batch_size=_parts_per_batch(cfg.batch_size, parts, int(data.num_nodes)),
                         shuffle=True)


@dataclass
class PartitionClusterLoader(NodeLoader):
    """``--loader cluster`` with our own partition (``--partition spectral|rcm|random``): the
    Cluster-GCN batches of PyG's ``ClusterLoader`` without METIS. The graph is cut once into
    ``num_parts`` parts; every epoch the parts are shuffled and joined, about ``batch_size``
    nodes per batch; a batch is the subgraph its nodes induce (edges between joined parts are
    kept, edges to other batches dropped) and its loss is taken on its training nodes."""

    name: str = "cluster"
    parts: list[Tensor] = field(default_factory=list)
    parts_per_batch: int = 1
    device: Any = None

    part: Tensor | None = None

    @classmethod
    def build(cls, cfg: TrainConfig, data: Data, device: torch.device, world_size: int = 1, rank: int = 0,
              accumulate: int = 1, seed: int = 0) -> PartitionClusterLoader:
        n = int(data.num_nodes)
        num_parts = min(cfg.num_parts, n)
        part = assign_parts(data.edge_index, n, num_parts, cfg.node_partition, seed=0)
        _, part = torch.unique(part, return_inverse=True)  # ids 0..P-1 of the non-empty parts
        order = torch.argsort(part, stable=True)
        parts = list(torch.split(order, torch.bincount(part).tolist()))
        per_batch = _parts_per_batch(cfg.batch_size, len(parts), n)
        return cls(data=data, world_size=world_size, rank=rank, accumulate=accumulate, seed=seed,
                   parts=parts, parts_per_batch=per_batch, device=device, part=part)

    def rounds(self, epoch: int) -> list[list[Batch]]:
        """This epoch's batches: the parts in a random order (``seed``, ``epoch``), joined
        ``parts_per_batch`` at a time; one pass over the edges sorts them into their batches."""
        gen = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        order = torch.randperm(len(self.parts), generator=gen)
        batch_of_part = torch.empty_like(order)
        batch_of_part[order] = torch.arange(len(order)) // self.parts_per_batch
        device = self.data.edge_index.device
        batch_of = batch_of_part[self.part].to(device)  # node -> this epoch's batch
        src, dst = self.data.edge_index
        inside = batch_of[src] == batch_of[dst]
        kept = inside.nonzero().view(-1)
        kept = kept[torch.argsort(batch_of[dst[kept]], stable=True)]
        count = int(batch_of.max()) + 1
        edges = torch.split(kept, torch.bincount(batch_of[dst[kept]], minlength=count).tolist())
        nodes_by_batch = torch.argsort(batch_of, stable=True)  # ascending ids within a batch
        sizes = torch.bincount(batch_of, minlength=count).tolist()
        local = torch.empty_like(batch_of)
        train = self.data.train_mask.to(device)
        weight = getattr(self.data, "edge_weight", None)
        self.batches = []
        for nodes, e in zip(torch.split(nodes_by_batch, sizes), edges):
            local[nodes] = torch.arange(nodes.numel(), device=device)
            positions = train[nodes].nonzero().view(-1)
            self.batches.append(Batch(
                inputs=nodes.to(self.device), targets=nodes.index_select(0, positions).to(self.device),
                positions=positions.to(self.device),
                edge_index=torch.stack([local[src[e]], local[dst[e]]]).to(self.device),
                edge_weight=None if weight is None else weight[e].to(self.device)))
        return self._share(self.batches)


SAMPLED_LOADERS: dict[str, Callable[[TrainConfig, Data], Sequence[Any]]] = {
    "neighbor": _neighbor_batches,
    "cluster": _cluster_batches,
}
"""``--loader`` name -> the PyG loader of its sampled mini-batches (``history`` is our own)."""


def make_loader(cfg: TrainConfig, data: Data, model: torch.nn.Module, device: torch.device,
                world_size: int = 1, rank: int = 0, accumulate: int = 1, seed: int = 0) -> NodeLoader:
    """The :class:`NodeLoader` that ``cfg.loader`` names, for the graph ``data`` (with masks).

    Raises:
        SamplingUnavailableError: what :func:`missing_requirement` says is missing.
    """
    missing = missing_requirement(cfg)
    if missing is not None:
        raise SamplingUnavailableError(missing)
    if cfg.loader == "history":
        return HistoryLoader.build(cfg, data, model, device, world_size, rank, accumulate, seed)
    if cfg.loader == "cluster" and cfg.node_partition != "metis":
        return PartitionClusterLoader.build(cfg, data, device, world_size, rank, accumulate, seed)
    if cfg.loader not in SAMPLED_LOADERS:
        names = ", ".join(["history", *SAMPLED_LOADERS])
        raise ValueError(f"make_loader builds mini-batch loaders ({names}); got loader={cfg.loader!r}")
    return SampledLoader(data=data, world_size=world_size, rank=rank, accumulate=accumulate, seed=seed,
                         name=cfg.loader, pyg_loader=SAMPLED_LOADERS[cfg.loader](cfg, data), device=device)

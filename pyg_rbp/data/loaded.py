"""What :func:`pyg_rbp.data.load` returns: one dataset with its task, metric and official split.

Training code is written once against this record, whatever the source: node datasets carry a
PyG ``Data`` with train/val/test masks; graph datasets carry the PyG dataset and OGB's index
split; OGB datasets carry their ``Evaluator`` so that scores are computed as OGB defines them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch_geometric.data import Data

Task = Literal["node", "graph"]
Metric = Literal["acc", "rocauc", "rmse", "ap"]


@dataclass
class LoadedDataset:
    """A loaded dataset.

    Attributes:
        name: the canonical (manifest) name, e.g. ``"cora"``, ``"ogbg-molbace"``.
        task: ``"node"`` (one graph, predict per node) or ``"graph"`` (predict per graph).
        metric: ``"acc"``, ``"rocauc"``, ``"rmse"`` or ``"ap"`` (OGB's ``eval_metric``).
        num_features: input feature width (for OGB molecules: the number of integer-coded atom
            feature columns, to be embedded with OGB's ``AtomEncoder``).
        num_classes: number of outputs: classes for single-label classification, tasks for
            multi-task/multi-label or regression datasets.
        data: node tasks: the graph, with ``train_mask``/``val_mask``/``test_mask`` (the public
            or official split) and ``labelled_mask`` (nodes that have a label); None for graphs.
        dataset: graph tasks: the PyG dataset (OGB ``PygGraphPropPredDataset``); None otherwise.
        split_idx: ``{"train", "valid", "test"}`` index tensors (nodes or graphs) of the split.
        evaluator: the OGB ``Evaluator`` for OGB datasets, None otherwise.
        root: the data root the files were read from (a cache copy if the root was read-only).
        info: free-form provenance (source, loader options).
    """

    name: str
    task: Task
    metric: Metric
    num_features: int
    num_classes: int
    data: Data | None = None
    dataset: Any = None
    split_idx: dict[str, torch.Tensor] | None = None
    evaluator: Any = None
    root: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        sizes = {k: int(v.numel()) for k, v in (self.split_idx or {}).items()}
        return (
            f"LoadedDataset(name={self.name!r}, task={self.task!r}, metric={self.metric!r}, "
            f"num_features={self.num_features}, num_classes={self.num_classes}, split={sizes})"
        )


def split_idx_from_masks(data: Data) -> dict[str, torch.Tensor]:
    """``{"train", "valid", "test"}`` node indices from a Data's boolean masks."""
    return {
        "train": data.train_mask.nonzero().view(-1),
        "valid": data.val_mask.nonzero().view(-1),
        "test": data.test_mask.nonzero().view(-1),
    }

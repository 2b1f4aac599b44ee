"""OGB node (``ogbn-*``) and graph (``ogbg-mol*``) datasets, loaded without prompts or hangs.

OGB 1.3.6 has three traps this module closes: it asks on stdin whether to re-download when the
``RELEASE_v1.txt`` marker is missing, it prompts before downloads over 1 GB (and ``exit``s on
"no"), and under torch >= 2.6 it cannot read back its own processed file because ``torch.load``
defaults to ``weights_only=True``. We check every file against the manifest first (so OGB never
reaches its download/prompt code), and allow-list the PyG storage classes OGB pickles with
``torch.serialization.add_safe_globals`` (no process-wide environment override, never
``weights_only=False``); every ``*.pt`` file is checked to load that way before OGB runs
(:mod:`pyg_rbp.data.safe_load`).
"""

from __future__ import annotations

import os

import torch

from pyg_rbp.data.loaded import LoadedDataset
from pyg_rbp.data.manifest import DatasetEntry
from pyg_rbp.data.safe_load import allow_pyg_pickles
from pyg_rbp.data.storage import prepare_dataset_folder


def _ogb_root(entry: DatasetEntry, root: str | os.PathLike | None, download: bool | None):
    base = prepare_dataset_folder(entry, root, download)
    ogb_root = base / "ogb"
    shadow = ogb_root / (entry.name.replace("-", "_") + "_pyg")
    if shadow.exists():
        raise ValueError(
            f"{shadow} exists and OGB would load it instead of the checked folder "
            f"{base / entry.folder}; remove or rename it"
        )
    allow_pyg_pickles()
    return base, ogb_root


def load_ogbn(
    entry: DatasetEntry, root: str | os.PathLike | None = None, download: bool | None = None
) -> LoadedDataset:
    """Load an ``ogbn-*`` dataset with its official split as masks and its Evaluator.

    Single-label datasets (arxiv, products) get ``y`` of shape ``[N]``; ogbn-proteins keeps its
    ``[N, 112]`` binary labels and, having no node features, gets ``x`` = the mean of its
    incoming edge features (8 columns), the usual practice for that dataset.
    """
    from ogb.nodeproppred import Evaluator, PygNodePropPredDataset
    from torch_geometric.utils import index_to_mask, scatter

    base, ogb_root = _ogb_root(entry, root, download)
    dataset = PygNodePropPredDataset(entry.name, root=str(ogb_root))
    split = dataset.get_idx_split()
    data = dataset[0]
    n = int(data.num_nodes)
    multi_label = dataset.task_type == "binary classification"
    if data.x is None:
        if data.edge_attr is None:
            raise ValueError(f"{entry.name} has neither node nor edge features")
        data.x = scatter(data.edge_attr.float(), data.edge_index[1], dim=0, dim_size=n, reduce="mean")
    if not multi_label and data.y.dim() == 2 and data.y.size(1) == 1:
        data.y = data.y.view(-1)
    data.train_mask = index_to_mask(split["train"], size=n)
    data.val_mask = index_to_mask(split["valid"], size=n)
    data.test_mask = index_to_mask(split["test"], size=n)
    data.labelled_mask = torch.ones(n, dtype=torch.bool)
    return LoadedDataset(
        name=entry.name,
        task="node",
        metric=dataset.eval_metric,
        num_features=int(data.x.size(1)),
        num_classes=int(dataset.num_tasks) if multi_label else int(dataset.num_classes),
        data=data,
        split_idx=split,
        evaluator=Evaluator(entry.name),
        root=base,
        info={"source": entry.source, "split": dataset.meta_info["split"], "task_type": dataset.task_type},
    )


def load_ogbg(
    entry: DatasetEntry, root: str | os.PathLike | None = None, download: bool | None = None
) -> LoadedDataset:
    """Load an ``ogbg-mol*`` dataset with its scaffold split and its Evaluator."""
    from ogb.graphproppred import Evaluator, PygGraphPropPredDataset

    base, ogb_root = _ogb_root(entry, root, download)
    dataset = PygGraphPropPredDataset(entry.name, root=str(ogb_root))
    return LoadedDataset(
        name=entry.name,
        task="graph",
        metric=dataset.eval_metric,
        num_features=int(dataset.num_features),
        num_classes=int(dataset.num_tasks),
        dataset=dataset,
        split_idx=dataset.get_idx_split(),
        evaluator=Evaluator(entry.name),
        root=base,
        info={"source": entry.source, "split": dataset.meta_info["split"], "task_type": dataset.task_type},
    )

"""The TU Dortmund graph-classification sets (MUTAG, PROTEINS, PTC_MR, ENZYMES, NCI1, ...).

Implicit-GNN papers (IGNN, EIGNN) and GIN compare graph classifiers on these sets with 10-fold
cross-validation (:func:`pyg_rbp.data.protocols.kfold_split`). ``load("tu-<name>")`` reads any
TU set through PyG's ``TUDataset``: the manifest lists the common ones with their checksums, and
any other ``tu-<name>`` is read from ``<root>/TU/<NAME>/raw`` in the TU text layout
(``NAME_A.txt``, ``NAME_graph_indicator.txt``, ``NAME_graph_labels.txt``, optional
``NAME_node_labels.txt`` / ``NAME_node_attributes.txt`` / ``NAME_edge_labels.txt``).

Features: node labels one-hot (PyG's encoding), preceded by the node attributes where the set has
them (PROTEINS 1, ENZYMES 18), which are standardised (zero mean, unit variance over all nodes:
unsupervised, so no label leaks into the folds). A set with neither (IMDB-BINARY, COLLAB, ...)
gets the one-hot node degree, as GIN does for the social sets.

Safety: the raw files are text, but PyG caches them in ``processed/*.pt`` pickles and reads
some of them back with ``weights_only=False`` (``Dataset._process``'s ``pre_transform.pt``
check, and ``fs.torch_load``'s fallback). Every ``processed/*.pt`` is therefore loaded with
``weights_only=True`` first (PyG's storage classes allow-listed); a file that needs a full
unpickler is refused with a :class:`ValueError` naming it, before PyG can open it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pyg_rbp.data.download import download_allowed, download_archive
from pyg_rbp.data.errors import DataUnavailableError
from pyg_rbp.data.loaded import LoadedDataset
from pyg_rbp.data.manifest import DatasetEntry, ExpectedFile, manifest
from pyg_rbp.data.safe_load import allow_pyg_pickles
from pyg_rbp.data.storage import configured_root, prepare_dataset_folder

PREFIX = "tu-"
SOURCE = "https://www.chrsmrrs.com/graphkerneldatasets"
REQUIRED_PARTS = ("A", "graph_indicator", "graph_labels")
OPTIONAL_PARTS = ("node_labels", "node_attributes", "edge_labels", "edge_attributes", "graph_attributes")


def is_tu_name(name: str) -> bool:
    """Whether ``name`` names a TU set (``tu-<name>``)."""
    return isinstance(name, str) and name.lower().startswith(PREFIX) and len(name) > len(PREFIX)


def _folder_name(short: str, root: str | os.PathLike | None) -> str:
    """The TU folder of ``short`` (``"ptc_mr"``): an existing ``<root>/TU/<X>`` matching it
    case-insensitively, else the upper-case name (the TU release's spelling for most sets)."""
    tu_dir = configured_root(root) / "TU"
    if tu_dir.is_dir():
        for child in sorted(tu_dir.iterdir()):
            if child.is_dir() and child.name.lower() == short.lower():
                return child.name
    return short.upper()


def tu_entry(name: str, root: str | os.PathLike | None = None) -> DatasetEntry:
    """The manifest entry of ``tu-<name>``, or one built for a TU set the manifest does not list
    (its three required files, no checksums)."""
    if not is_tu_name(name):
        raise ValueError(f"{name!r} is not a TU dataset name (tu-<name>, e.g. tu-mutag)")
    listed = manifest().get(name.lower())
    if listed is not None:
        return listed
    pyg_name = _folder_name(name[len(PREFIX):], root)
    return DatasetEntry(
        name=name.lower(), loader="tu", folder=f"TU/{pyg_name}", source=f"{SOURCE}/{pyg_name}.zip",
        files=tuple(ExpectedFile(f"raw/{pyg_name}_{part}.txt") for part in REQUIRED_PARTS),
        extra={"pyg_name": pyg_name, "archive_folder": pyg_name},
    )


def _prepare(entry: DatasetEntry, root: str | os.PathLike | None, download: bool | None) -> Path:
    """The data root holding ``TU/<NAME>/raw`` complete and verified (downloaded if allowed)."""
    try:
        return prepare_dataset_folder(entry, root, download=False)
    except DataUnavailableError:
        if not download_allowed(download):
            raise
    base = configured_root(root)
    download_archive(entry, base / str(entry.folder) / "raw")
    return prepare_dataset_folder(entry, root, download=False)


def standardize_columns(x: torch.Tensor, columns: int) -> torch.Tensor:
    """``x`` with its first ``columns`` columns shifted to zero mean and scaled to unit variance
    (a constant column becomes 0)."""
    if columns <= 0:
        return x
    x = x.clone()
    block = x[:, :columns].double()
    std = block.std(dim=0, unbiased=False)
    block = (block - block.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std))
    x[:, :columns] = block.to(x.dtype)
    return x


class _OneHotDegree:
    """Transform: ``x`` = one-hot node degree, capped at ``max_degree`` (sets without features)."""

    def __init__(self, max_degree: int) -> None:
        self.max_degree = int(max_degree)

    def __call__(self, data: Any) -> Any:
        from torch_geometric.utils import degree

        deg = degree(data.edge_index[0], data.num_nodes, dtype=torch.long).clamp(max=self.max_degree)
        data.x = torch.nn.functional.one_hot(deg, self.max_degree + 1).float()
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.max_degree})"


MAX_DEGREE_FEATURE = 64
"""Degrees above this share the last one-hot column (sets without node features)."""


def load_tu(entry: DatasetEntry, root: str | os.PathLike | None = None,
            download: bool | None = None) -> LoadedDataset:
    """Load a TU set as a graph-classification dataset (``metric="acc"``, no fixed split: the
    ``10-fold`` protocol draws its folds, :func:`~pyg_rbp.data.protocols.kfold_split`)."""
    from torch_geometric.datasets import TUDataset
    from torch_geometric.utils import degree

    base = _prepare(entry, root, download)
    pyg_name = entry.extra.get("pyg_name") or Path(str(entry.folder)).name
    tu_root = base / Path(str(entry.folder)).parent
    allow_pyg_pickles()  # every *.pt under the folder was checked by prepare_dataset_folder
    dataset = TUDataset(str(tu_root), pyg_name, use_node_attr=True)
    num_attr, num_labels = int(dataset.num_node_attributes), int(dataset.num_node_labels)
    features = "node attributes (standardised) + one-hot node labels"
    if dataset._data.x is not None and num_attr:
        dataset._data.x = standardize_columns(dataset._data.x, num_attr)
    if dataset._data.x is None:
        max_deg = 0
        for data in dataset:
            if data.num_nodes:
                max_deg = max(max_deg, int(degree(data.edge_index[0], data.num_nodes).max()))
        dataset.transform = _OneHotDegree(min(max_deg, MAX_DEGREE_FEATURE))
        features = f"one-hot node degree (capped at {min(max_deg, MAX_DEGREE_FEATURE)})"
    elif not num_attr:
        features = "one-hot node labels"
    elif not num_labels:
        features = "node attributes (standardised)"
    y = dataset._data.y.view(-1)
    return LoadedDataset(
        name=entry.name,
        task="graph",
        metric="acc",
        num_features=int(dataset[0].x.size(1)),
        num_classes=int(y.max()) + 1,
        dataset=dataset,
        split_idx=None,
        root=base,
        info={"source": entry.source, "split": "10-fold (pyg_rbp.data.protocols.kfold_split)",
              "features": features, "num_node_labels": num_labels, "num_node_attributes": num_attr,
              "num_graphs": len(dataset), "class_counts": torch.bincount(y).tolist()},
    )

"""Datasets and evaluation protocols: one ``load(name)`` for Planetoid, OGB and embedded data.

``load`` returns a :class:`LoadedDataset` (task, metric, graph or dataset, official split,
OGB evaluator); ``apply_protocol`` turns a node dataset into the graph a model trains on under
the paper / public / official protocol; ``evaluate`` scores predictions with the dataset's
metric. Files are checked against ``pyg_rbp/data/manifest.json`` before any loader runs, so a
missing file is a :class:`DataUnavailableError` (never a hang or a stdin prompt) and a
corrupted one a :class:`ChecksumError`.
"""

from pyg_rbp.data.baseline import linear_pca_baseline
from pyg_rbp.data.digits import digits_graph
from pyg_rbp.data.errors import ChecksumError, DataUnavailableError, UnsafeDataError
from pyg_rbp.data.loaded import LoadedDataset
from pyg_rbp.data.manifest import dataset_names, manifest
from pyg_rbp.data.metrics import evaluate, higher_is_better
from pyg_rbp.data.mnist import load_mnist, read_idx
from pyg_rbp.data.protocols import (
    FEATURES,
    PAPER_HIDDEN,
    PROTOCOLS,
    apply_protocol,
    paper_hidden,
    paper_split,
    pca_features,
    row_normalize,
    split_sizes,
)
from pyg_rbp.data.registry import load
from pyg_rbp.data.storage import configured_root, default_root

__all__ = [
    "FEATURES",
    "PAPER_HIDDEN",
    "PROTOCOLS",
    "ChecksumError",
    "DataUnavailableError",
    "LoadedDataset",
    "UnsafeDataError",
    "apply_protocol",
    "configured_root",
    "dataset_names",
    "default_root",
    "digits_graph",
    "evaluate",
    "higher_is_better",
    "linear_pca_baseline",
    "load",
    "load_mnist",
    "manifest",
    "paper_hidden",
    "paper_split",
    "pca_features",
    "row_normalize",
    "read_idx",
    "split_sizes",
]

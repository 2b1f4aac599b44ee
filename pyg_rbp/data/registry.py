"""``load(name)``: one entry point from a dataset name to a :class:`LoadedDataset`.

The manifest says which loader a name uses; this module maps loader kinds to the functions
that implement them, so adding a dataset is a manifest row (plus a loader if the kind is new).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pyg_rbp.data.amazon_coauthor import load_shchur
from pyg_rbp.data.digits import load_digits_dataset
from pyg_rbp.data.karate import load_karate
from pyg_rbp.data.loaded import LoadedDataset
from pyg_rbp.data.manifest import DatasetEntry, entry
from pyg_rbp.data.ogb_datasets import load_ogbg, load_ogbn
from pyg_rbp.data.planetoid import load_planetoid
from pyg_rbp.data.storage import dataset_lock
from pyg_rbp.data.tu import is_tu_name, load_tu, tu_entry

_ON_DISK: dict[str, Callable[[DatasetEntry, str | os.PathLike | None, bool | None], LoadedDataset]] = {
    "planetoid": load_planetoid,
    "ogbn": load_ogbn,
    "ogbg": load_ogbg,
    "tu": load_tu,
    "shchur": load_shchur,
}
_EMBEDDED: dict[str, Callable[[], LoadedDataset]] = {
    "digits": load_digits_dataset,
    "karate": load_karate,
}


def load(name: str, root: str | os.PathLike | None = None, download: bool | None = None) -> LoadedDataset:
    """Load dataset ``name`` (case-insensitive; see ``pyg_rbp/data/manifest.json``).

    ``root`` defaults to ``$PYG_RBP_DATA``, else ``<repo>/datasets`` in a clone, else the user
    cache ``~/.cache/pyg_rbp/datasets``; a read-only root is
    copied into a writable cache. Missing files are copied from a local mirror
    (``$PYG_RBP_SHARED`` or ``../shared/datasets``) or, only when ``download`` (or
    ``$PYG_RBP_DOWNLOAD=1``) allows it, downloaded; otherwise a :class:`DataUnavailableError`
    says which files to put where. A file whose sha256 differs from the manifest raises
    :class:`ChecksumError`.
    """
    dataset = tu_entry(name, root) if is_tu_name(name) else entry(name)  # any TU set, listed or not
    if dataset.loader in _EMBEDDED:
        return _EMBEDDED[dataset.loader]()
    if dataset.loader == "mnist":
        raise ValueError("MNIST is not a graph dataset; read it with pyg_rbp.data.load_mnist(root, split)")
    if dataset.loader not in _ON_DISK:
        raise ValueError(f"dataset {dataset.name!r} has an unknown loader {dataset.loader!r} in the manifest")
    with dataset_lock(dataset.name, root):  # one process at a time writes `processed/`
        return _ON_DISK[dataset.loader](dataset, root, download)

"""Shchur et al.'s co-purchase and co-authorship graphs through PyG's ``Amazon`` / ``Coauthor``.

``amazon-computers``, ``amazon-photo``, ``coauthor-cs`` and ``coauthor-physics`` (Shchur et al.,
"Pitfalls of Graph Neural Network Evaluation", 2018) are the mid-size node-classification graphs
(7.6k-34k nodes) between Planetoid and OGB. They have no official split: the ``per-class``
protocol (:func:`pyg_rbp.data.protocols.per_class_split`) draws one per seed.

Two safety rules this module enforces:

* PyG writes its processed file as a torch pickle and its own reader falls back to
  ``torch.load(weights_only=False)`` (arbitrary code) when the safe reader refuses a class.
  :func:`~pyg_rbp.data.storage.prepare_dataset_folder` checks every ``*.pt`` in the folder with
  ``weights_only=True`` and the PyG allow-list before PyG runs
  (:func:`~pyg_rbp.data.safe_load.check_torch_files`); a file that needs anything else is
  refused with :class:`~pyg_rbp.data.UnsafeDataError` naming it, never unpickled.
* The offline copies of these ``.npz`` files were re-packed from another public copy, so their
  sha256 is not the upstream file's (see ``../shared/datasets/README.md``). The manifest therefore
  pins no checksum for them; each loaded graph is instead checked by content against the
  published statistics (nodes, directed edges, features, classes) kept in the manifest row's
  ``expected`` field, and a mismatch is a :class:`~pyg_rbp.data.ChecksumError`.
"""

from __future__ import annotations

import os

import torch
from torch_geometric.datasets import Amazon, Coauthor

from pyg_rbp.data.errors import ChecksumError
from pyg_rbp.data.loaded import LoadedDataset
from pyg_rbp.data.manifest import DatasetEntry
from pyg_rbp.data.storage import prepare_dataset_folder

EXPECTED_KEYS = ("num_nodes", "num_edges", "num_features", "num_classes")


def _pyg_class(kind: str) -> type:
    base = {"Amazon": Amazon, "Coauthor": Coauthor}.get(kind)
    if base is None:
        raise ValueError(f"unknown PyG class {kind!r} in the manifest (expected Amazon or Coauthor)")
    return base


def check_content(name: str, stats: dict[str, int], expected: dict[str, int] | None) -> None:
    """Raise :class:`ChecksumError` if the loaded graph's statistics differ from the published ones."""
    if not expected:
        return
    bad = [f"{k}: {stats[k]} (expected {expected[k]})" for k in EXPECTED_KEYS
           if k in expected and stats[k] != expected[k]]
    if bad:
        raise ChecksumError(
            f"dataset {name!r} differs from the published graph ({'; '.join(bad)}): the raw .npz "
            "is corrupted or another version. Delete it (and processed/) and fetch it again.")


def load_shchur(entry: DatasetEntry, root: str | os.PathLike | None = None,
                download: bool | None = None) -> LoadedDataset:
    """Load an Amazon / Coauthor graph (all nodes, no split; use the ``per-class`` protocol).

    ``data.train_mask``/``val_mask``/``test_mask`` are all False (there is no official split)
    and ``labelled_mask`` all True.
    """
    base = prepare_dataset_folder(entry, root, download)
    cls = _pyg_class(entry.extra["pyg_class"])
    dataset = cls(str(base / entry.extra["pyg_class"]), entry.extra["pyg_name"])
    data = dataset[0]
    n = int(data.num_nodes)
    stats = {"num_nodes": n, "num_edges": int(data.edge_index.size(1)),
             "num_features": int(data.num_features), "num_classes": int(data.y.max()) + 1}
    check_content(entry.name, stats, entry.extra.get("expected"))
    empty = torch.zeros(n, dtype=torch.bool)
    data.train_mask, data.val_mask, data.test_mask = empty, empty.clone(), empty.clone()
    data.labelled_mask = torch.ones(n, dtype=torch.bool)
    return LoadedDataset(
        name=entry.name, task="node", metric="acc", num_features=stats["num_features"],
        num_classes=stats["num_classes"], data=data,
        split_idx={k: torch.zeros(0, dtype=torch.long) for k in ("train", "valid", "test")},
        root=base, info={"source": entry.source, "split": "none (use protocol per-class)", **stats},
    )

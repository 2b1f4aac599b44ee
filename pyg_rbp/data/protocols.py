"""The evaluation protocols: how a loaded node dataset becomes the graph a model trains on.

- ``paper``: the reference protocol of Liao et al. (ICML 2018, and the configs released with
  it): all labelled nodes, a random 1% / 49% / 50% train/val/test split drawn with a seed,
  and the bag-of-words features reduced by PCA to the hidden size (Cora 64, PubMed 16 as in
  the authors' configs; CiteSeer, not in the paper, 64 like Cora). The PCA features are the
  model's initial state.
- ``public``: the dataset's own fixed split with its raw features (Planetoid's public split
  20 per class / 500 / 1000; digits' and karate's fixed splits).
- ``official``: OGB's official split (ogbn-* node datasets).
- ``per-class`` (Shchur et al. 2018, for graphs without an official split such as Amazon and
  Coauthor): the largest connected component, and per seed a random split of 20 labelled nodes
  per class for training, 30 per class for validation, the rest for testing
  (:func:`per_class_split`), with raw or row-normalized features.
- ``10-fold``: graph classification (TU sets) as in Xu et al. (GIN, 2019): a stratified 10-fold
  split drawn with a fixed seed (:func:`kfold_split`); each fold trains on the other nine and
  reports its test fold; a validation part may be carved out of the training folds.

Under ``public`` and ``official`` the features can be used ``raw`` or ``row-normalized``
(each row divided by its sum, as PyG's ``NormalizeFeatures``, which GCN's and APPNP's published
Planetoid numbers used); the ``paper`` protocol always takes PCA features.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from pyg_rbp.data.loaded import LoadedDataset

NODE_PROTOCOLS: tuple[str, ...] = ("paper", "public", "official", "per-class")
"""Protocols that turn a node dataset into the graph a model trains on (:func:`apply_protocol`)."""
KFOLD = "10-fold"
"""The graph-classification cross-validation protocol (GIN, Xu et al. 2019)."""
PROTOCOLS: tuple[str, ...] = NODE_PROTOCOLS + (KFOLD,)
"""Every protocol a training run can name (graph datasets take ``official`` or ``10-fold``)."""
PER_CLASS_TRAIN = 20
PER_CLASS_VAL = 30
FEATURES = ("raw", "row-normalized")
PAPER_HIDDEN = {"cora": 64, "citeseer": 64, "pubmed": 16}
DEFAULT_HIDDEN = 64


def split_sizes(num_nodes: int, train: float = 0.01, val: float = 0.49) -> tuple[int, int, int]:
    """(train, val, test) counts: ``round(train * n)``, ``round(val * n)`` and the rest.

    Cora (2708 labelled): 27 / 1327 / 1354; CiteSeer (3312): 33 / 1623 / 1656;
    PubMed (19717): 197 / 9661 / 9859.
    """
    if not (0 < train < 1 and 0 < val < 1 and train + val < 1):
        raise ValueError(f"need 0 < train, val and train + val < 1; got train={train}, val={val}")
    n_train, n_val = round(train * num_nodes), round(val * num_nodes)
    n_test = num_nodes - n_train - n_val
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(
            f"{num_nodes} labelled nodes are too few for a {train:g}/{val:g}/rest split "
            f"({n_train}/{n_val}/{n_test}): every part needs at least one node"
        )
    return n_train, n_val, n_test


def paper_split(data: Data, seed: int, train: float = 0.01, val: float = 0.49) -> Data:
    """The graph restricted to its labelled nodes, with a random train/val/test split.

    Labelled nodes are ``data.labelled_mask`` (all nodes if absent). The induced subgraph is
    relabelled ``0..n-1``; ``orig_node_index`` maps back to the input's node ids. The input is
    not modified. Same ``seed``, same split.
    """
    if data.y is None or data.y.dim() != 1:
        shape = None if data.y is None else tuple(data.y.shape)
        raise ValueError(f"paper_split needs single-label node targets y of shape [N]; got {shape}")
    n_all = int(data.num_nodes)
    labelled = getattr(data, "labelled_mask", None)
    if labelled is None:
        labelled = torch.ones(n_all, dtype=torch.bool)
    keep = labelled.nonzero().view(-1)
    n = keep.numel()
    n_train, n_val, _ = split_sizes(n, train, val)
    edge_index, _ = subgraph(keep, data.edge_index, relabel_nodes=True, num_nodes=n_all)
    x = data.x.to_dense() if data.x.is_sparse else data.x
    out = Data(x=x[keep], edge_index=edge_index, y=data.y[keep])
    out.orig_node_index = keep
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    masks = torch.zeros(3, n, dtype=torch.bool)
    masks[0, order[:n_train]] = True
    masks[1, order[n_train : n_train + n_val]] = True
    masks[2, order[n_train + n_val :]] = True
    out.train_mask, out.val_mask, out.test_mask = masks
    out.labelled_mask = torch.ones(n, dtype=torch.bool)
    return out


def pca_features(x: torch.Tensor, dim: int, seed: int = 0) -> torch.Tensor:
    """``x`` projected on its top ``dim`` principal components (float32 ``[N, dim]``).

    scikit-learn's PCA (centred; randomized SVD on large inputs, with ``random_state=seed``,
    and a deterministic sign convention), so the same ``seed`` gives the same features.
    """
    if x.dim() != 2:
        raise ValueError(f"pca_features needs a 2-D feature matrix, got shape {tuple(x.shape)}")
    n, f = x.shape
    if not 1 <= dim <= min(n, f):
        raise ValueError(f"PCA dim must be in 1..min(N, F) = 1..{min(n, f)}; got {dim}")
    dense = (x.to_dense() if x.is_sparse else x).detach().cpu().double().numpy()
    reduced = PCA(n_components=dim, random_state=seed).fit_transform(dense)
    return torch.from_numpy(reduced).float()


def paper_hidden(name: str) -> int:
    """The paper's hidden size for a dataset (Cora 64, PubMed 16, CiteSeer 64, else 64)."""
    return PAPER_HIDDEN.get(name, DEFAULT_HIDDEN)


def row_normalize(x: torch.Tensor) -> torch.Tensor:
    """Each row divided by its sum (rows that sum to 0 stay 0), as PyG's ``NormalizeFeatures``."""
    x = x.to_dense() if x.is_sparse else x
    total = x.sum(dim=1, keepdim=True)
    return x / torch.where(total == 0, torch.ones_like(total), total)


def apply_protocol(loaded: LoadedDataset, protocol: str, seed: int = 0, hidden: int | None = None,
                   features: str = "raw") -> Data:
    """The training graph of a node dataset under ``protocol`` ("paper", "public", "official").

    ``paper`` needs ``hidden`` (the PCA width); ``None`` means the paper's size for the dataset
    (:data:`PAPER_HIDDEN`: Cora 64, CiteSeer 64, PubMed 16; 64 otherwise). ``seed`` draws the
    paper split and seeds the PCA; ``public``/``official`` ignore it and return a copy of the
    dataset's graph with its fixed split, its features ``raw`` or ``row-normalized``
    (:func:`row_normalize`).
    """
    if protocol not in NODE_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} for a node dataset; choose one of "
                         f"{', '.join(NODE_PROTOCOLS)}")
    if features not in FEATURES:
        raise ValueError(f"unknown features {features!r}; choose one of {', '.join(FEATURES)}")
    if protocol == "paper" and features != "raw":
        raise ValueError("the paper protocol uses PCA features; features must be 'raw' there")
    if loaded.task != "node" or loaded.data is None:
        raise ValueError(
            f"{loaded.name} is a graph-level dataset: use loaded.dataset with loaded.split_idx "
            f"(OGB's official split), not apply_protocol"
        )
    is_ogb = loaded.name.startswith("ogbn-")
    if protocol == "official" and not is_ogb:
        raise ValueError(
            f"protocol 'official' is for OGB datasets; use 'public' or 'paper' for {loaded.name}"
        )
    if protocol == "public" and is_ogb:
        raise ValueError(f"{loaded.name} has no Planetoid public split; use protocol 'official'")
    if protocol == "public" and not bool(loaded.data.train_mask.any()):
        raise ValueError(f"{loaded.name} has no public split; use protocol 'per-class'")
    if protocol == "per-class":
        data = per_class_split(largest_connected_component(loaded.data), seed)
        if features == "row-normalized":
            data.x = row_normalize(data.x)
        return data
    if protocol in ("public", "official"):
        data = loaded.data.clone()
        if features == "row-normalized":
            data.x = row_normalize(data.x)
        return data
    data = paper_split(loaded.data, seed)
    width = paper_hidden(loaded.name) if hidden is None else int(hidden)
    data.x = pca_features(data.x, width, seed=seed)
    return data


NUM_FOLDS = 10
FOLD_SEED = 0
"""GIN's ``separate_data`` seeds ``StratifiedKFold(n_splits=10, shuffle=True)`` with 0."""


def kfold_split(y: torch.Tensor, fold: int, num_folds: int = NUM_FOLDS, seed: int = FOLD_SEED,
                val_fraction: float = 0.0) -> dict[str, torch.Tensor]:
    """``{"train", "valid", "test"}`` graph indices of fold ``fold`` of a stratified k-fold split.

    scikit-learn's ``StratifiedKFold(num_folds, shuffle=True, random_state=seed)``, as GIN's
    reference code: the test part is fold ``fold``, the training part the other folds. With
    ``val_fraction > 0`` that fraction of the training part (stratified, drawn with ``seed`` and
    ``fold``) becomes the validation part, for model selection that never looks at the test fold;
    with 0 the validation part is empty (GIN's protocol, which trains on all nine folds). Same
    ``y``, ``seed`` and ``fold``: same split, every fold's test part disjoint from the others'.
    """
    y = torch.as_tensor(y).view(-1).cpu()
    if y.is_floating_point():
        raise ValueError(f"kfold_split needs integer class labels, got {y.dtype}")
    if not isinstance(num_folds, int) or num_folds < 2:
        raise ValueError(f"num_folds must be an integer >= 2, got {num_folds!r}")
    if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < num_folds:
        raise ValueError(f"fold must be an integer in 0..{num_folds - 1}, got {fold!r}")
    if not 0.0 <= val_fraction < 0.5:
        raise ValueError(f"val_fraction must be in [0, 0.5), got {val_fraction!r}")
    counts = torch.bincount(y)
    smallest = int(counts[counts > 0].min()) if y.numel() else 0
    if smallest < num_folds:
        raise ValueError(f"the smallest class has {smallest} graphs: too few for {num_folds} "
                         "stratified folds")
    labels = y.numpy()
    folds = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    train, test = list(folds.split(labels.reshape(-1, 1), labels))[fold]
    val = train[:0]
    if val_fraction > 0:
        train, val = train_test_split(train, test_size=val_fraction, stratify=labels[train],
                                      random_state=seed * 1000 + fold)
    return {"train": torch.as_tensor(sorted(train), dtype=torch.long),
            "valid": torch.as_tensor(sorted(val), dtype=torch.long),
            "test": torch.as_tensor(sorted(test), dtype=torch.long)}


def largest_connected_component(data: Data) -> Data:
    """The subgraph induced by the largest (weakly) connected component, relabelled ``0..n-1``.

    Node attributes of shape ``[N, ...]`` are restricted to it; ``orig_node_index`` maps back to
    the input's node ids. Ties between equally large components go to the one holding the
    smallest node id, so the result is deterministic.
    """
    n = int(data.num_nodes)
    row, col = data.edge_index.cpu().numpy()
    adj = sp.coo_matrix((np.ones(row.size, dtype=np.int8), (row, col)), shape=(n, n))
    _, labels = connected_components(adj, directed=True, connection="weak")
    labels = torch.from_numpy(labels).long()
    sizes = torch.bincount(labels)
    keep = (labels == int(torch.argmax(sizes))).nonzero().view(-1)  # argmax: first of the ties
    edge_index, _ = subgraph(keep, data.edge_index, relabel_nodes=True, num_nodes=n)
    out = Data(edge_index=edge_index)
    for key, value in data.items():
        if key == "edge_index":
            continue
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.size(0) == n:
            value = value.to_dense() if value.is_sparse else value
            out[key] = value[keep]
    out.num_nodes = keep.numel()
    out.orig_node_index = keep
    return out


def per_class_split(data: Data, seed: int, train_per_class: int = PER_CLASS_TRAIN,
                    val_per_class: int = PER_CLASS_VAL) -> Data:
    """Shchur et al.'s split: per class ``train_per_class`` random training nodes, then
    ``val_per_class`` validation nodes, all other labelled nodes for testing.

    Returns a copy of ``data`` with new ``train_mask``/``val_mask``/``test_mask``; same ``seed``,
    same split. Raises :class:`ValueError` when a class has too few labelled nodes to give every
    part at least one (train + val + 1).
    """
    if data.y is None or data.y.dim() != 1:
        shape = None if data.y is None else tuple(data.y.shape)
        raise ValueError(f"per_class_split needs single-label node targets y of shape [N]; got {shape}")
    if train_per_class < 1 or val_per_class < 1:
        raise ValueError(f"need at least one train and one validation node per class, got "
                         f"{train_per_class} and {val_per_class}")
    n = int(data.num_nodes)
    labelled = getattr(data, "labelled_mask", None)
    labelled = torch.ones(n, dtype=torch.bool) if labelled is None else labelled.bool()
    y = data.y.cpu()
    gen = torch.Generator().manual_seed(int(seed))
    masks = torch.zeros(3, n, dtype=torch.bool)
    need = train_per_class + val_per_class + 1
    for c in torch.unique(y[labelled]).tolist():
        members = ((y == c) & labelled).nonzero().view(-1)
        if members.numel() < need:
            raise ValueError(
                f"class {c} has {members.numel()} labelled nodes; the per-class split needs at least "
                f"{need} ({train_per_class} train + {val_per_class} validation + 1 test)")
        members = members[torch.randperm(members.numel(), generator=gen)]
        masks[0, members[:train_per_class]] = True
        masks[1, members[train_per_class:train_per_class + val_per_class]] = True
        masks[2, members[train_per_class + val_per_class:]] = True
    out = data.clone()
    out.train_mask, out.val_mask, out.test_mask = masks
    return out

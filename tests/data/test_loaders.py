"""Loaders on the shared offline copies, on generated PubMed / ogbn-arxiv layouts, and embedded data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyg_rbp.data import evaluate, load, load_mnist
from pyg_rbp.data.manifest import dataset_names


def _split_sizes(loaded) -> tuple[int, int, int]:
    return tuple(int(loaded.split_idx[k].numel()) for k in ("train", "valid", "test"))


@pytest.mark.datasets("cora")
def test_cora_public(data_root):
    cora = load("Cora", root=data_root)
    assert (cora.name, cora.task, cora.metric) == ("cora", "node", "acc")
    assert (cora.num_features, cora.num_classes) == (1433, 7)
    data = cora.data
    assert data.num_nodes == 2708 and data.edge_index.size(1) == 10556
    assert _split_sizes(cora) == (140, 500, 1000)
    assert int(data.train_mask.sum()) == 140 and int(data.test_mask.sum()) == 1000
    assert bool(data.labelled_mask.all())
    assert torch.bincount(data.y[data.train_mask]).tolist() == [20] * 7
    assert cora.evaluator is None and cora.dataset is None


@pytest.mark.datasets("citeseer")
def test_citeseer_unlabelled_gap_nodes(data_root):
    citeseer = load("citeseer", root=data_root)
    data = citeseer.data
    assert (data.num_nodes, citeseer.num_features, citeseer.num_classes) == (3327, 3703, 6)
    assert _split_sizes(citeseer) == (120, 500, 1000)
    unlabelled = (~data.labelled_mask).nonzero().view(-1)
    assert unlabelled.numel() == 15
    # the gap nodes PyG fills in: no features, and PyG's label 0 is not a real label
    assert float(data.x[unlabelled].abs().sum()) == 0.0
    assert int(unlabelled.min()) >= 2312 and not bool(data.test_mask[unlabelled].any())


@pytest.mark.datasets("ogbg-molbace")
def test_ogbg_molbace_scaffold_split_and_rocauc(data_root):
    bace = load("ogbg-molbace", root=data_root)
    assert (bace.task, bace.metric, bace.num_classes, bace.num_features) == ("graph", "rocauc", 1, 9)
    assert len(bace.dataset) == 1513 and bace.data is None
    assert _split_sizes(bace) == (1210, 151, 152)
    y = bace.dataset.y[bace.split_idx["test"]]
    assert evaluate(bace, y, y.float() * 4 - 2) == pytest.approx(1.0)
    assert evaluate(bace, y, 2 - y.float() * 4) == pytest.approx(0.0)


@pytest.mark.datasets("ogbg-molesol")
def test_ogbg_molesol_rmse(data_root):
    esol = load("ogbg-molesol", root=data_root)
    assert (esol.task, esol.metric, esol.num_classes) == ("graph", "rmse", 1)
    assert len(esol.dataset) == 1128 and _split_sizes(esol) == (902, 113, 113)
    y = esol.dataset.y
    assert evaluate(esol, y, y) == pytest.approx(0.0)
    assert evaluate(esol, y, y + 0.5) == pytest.approx(0.5, rel=1e-5)


def test_digits_knn_graph():
    digits = load("digits")
    data = digits.data
    assert (data.num_nodes, digits.num_features, digits.num_classes) == (1797, 64, 10)
    assert _split_sizes(digits) == (180, 359, 1258)
    masks = torch.stack([data.train_mask, data.val_mask, data.test_mask]).long()
    assert bool((masks.sum(0) == 1).all())
    # stratified: every class has 17-19 of the 180 training nodes
    per_class = torch.bincount(data.y[data.train_mask], minlength=10)
    assert int(per_class.min()) >= 17 and int(per_class.max()) <= 19
    # symmetric k-NN graph: every edge both ways, no self loops, degree at least k = 10
    edges = set(map(tuple, data.edge_index.t().tolist()))
    assert all((j, i) in edges for i, j in edges) and all(i != j for i, j in edges)
    assert int(torch.bincount(data.edge_index[0]).min()) >= 10
    assert torch.allclose(data.x.mean(0), torch.zeros(64), atol=1e-5)
    assert torch.equal(load("digits").data.train_mask, data.train_mask)


def test_karate_fixed_split():
    karate = load("karate")
    assert (karate.data.num_nodes, karate.num_classes) == (34, 4)
    assert _split_sizes(karate) == (4, 10, 20)
    assert torch.bincount(karate.data.y[karate.data.train_mask]).tolist() == [1, 1, 1, 1]


def test_tiny_pubmed_layout(offline, tiny_pubmed_root):
    root, truth = tiny_pubmed_root
    pubmed = load("pubmed", root=root)
    data = pubmed.data
    assert pubmed.root == root
    assert (data.num_nodes, pubmed.num_features, pubmed.num_classes) == (600, 20, 3)
    assert torch.equal(data.y, torch.from_numpy(truth["y"]))
    assert torch.equal(data.x, torch.from_numpy(truth["x"]))
    assert data.edge_index.size(1) == 2 * truth["num_undirected_edges"]
    assert _split_sizes(pubmed) == (30, 500, 60)
    assert bool(data.labelled_mask.all())
    assert not (root / "Planetoid" / "PubMed" / "processed").exists()  # read from raw, no pickle cache


def test_tiny_ogbn_arxiv_layout(offline, tiny_arxiv_root):
    root, truth = tiny_arxiv_root
    arxiv = load("ogbn-arxiv", root=root)
    data = arxiv.data
    assert (arxiv.task, arxiv.metric, arxiv.num_classes) == ("node", "acc", 40)
    assert (data.num_nodes, arxiv.num_features) == (50, 8)
    assert data.y.shape == (50,) and torch.equal(data.y, torch.from_numpy(truth["y"]))
    assert torch.allclose(data.x, torch.from_numpy(truth["x"]))
    assert data.edge_index.size(1) == 120  # arxiv is stored directed; OGB adds no inverse edges
    for part, mask in (("train", data.train_mask), ("valid", data.val_mask), ("test", data.test_mask)):
        assert torch.equal(mask.nonzero().view(-1), torch.from_numpy(truth["split"][part]))
    logits = torch.nn.functional.one_hot(data.y, 40).float()
    assert evaluate(arxiv, data.y, logits) == pytest.approx(1.0)
    wrong = (data.y + 1) % 40
    assert evaluate(arxiv, data.y, torch.where(torch.arange(50) < 10, wrong, data.y)) == pytest.approx(0.8)


@pytest.mark.datasets("mnist")
def test_mnist_test_split_read_in_place(offline, shared_datasets):
    images, labels = load_mnist(shared_datasets, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels[:5].tolist() == [7, 2, 1, 0, 4]
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(labels).tolist() == counts
    assert int(images.max()) == 255
    assert not offline.exists(), "a complete read-only MNIST folder must be read in place"


def test_every_manifest_name_has_a_loader():
    names = dataset_names()
    for name in (
        "cora",
        "citeseer",
        "pubmed",
        "ogbn-arxiv",
        "ogbn-products",
        "ogbn-proteins",
        "ogbg-molhiv",
        "ogbg-molbace",
        "ogbg-molesol",
        "digits",
        "karate",
    ):
        assert name in names
    assert "mnist" not in names
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*cora"):
        load("imagenet")
    with pytest.raises(ValueError, match="load_mnist"):
        load("mnist")


def test_idx_reader_rejects_truncated_file(tmp_path):
    import gzip
    import struct

    from pyg_rbp.data import read_idx

    path = tmp_path / "bad-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(28 * 28))  # one image of two
    with pytest.raises(ValueError, match=r"declares shape \(2, 28, 28\) \(1568 bytes\) but holds 784"):
        read_idx(path)


def test_tiny_ogbn_proteins_layout(offline, tmp_path):
    """Multi-label ROC-AUC node data without node features; OGB's ``species.csv.gz`` name."""
    import pandas as pd

    rng = np.random.default_rng(0)
    folder = tmp_path / "root" / "ogb" / "ogbn_proteins"
    n, n_edges = 40, 60
    edges = np.stack([np.arange(n_edges) % n, (np.arange(n_edges) * 7 + 1) % n], axis=1)
    edge_feat = rng.random((n_edges, 8)).astype(np.float32)
    labels = rng.integers(0, 2, size=(n, 112))
    labels[0], labels[1] = 0, 1  # every task has both classes
    files = {
        "raw/edge.csv.gz": edges,
        "raw/edge-feat.csv.gz": edge_feat,
        "raw/node-label.csv.gz": labels,
        "raw/species.csv.gz": rng.integers(0, 3, size=(n, 1)),
        "raw/num-node-list.csv.gz": np.array([n]),
        "raw/num-edge-list.csv.gz": np.array([n_edges]),
        "split/species/train.csv.gz": np.arange(0, 24),
        "split/species/valid.csv.gz": np.arange(24, 32),
        "split/species/test.csv.gz": np.arange(32, 40),
    }
    for rel, values in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(values).to_csv(folder / rel, header=False, index=False, compression="gzip")
    (folder / "RELEASE_v1.txt").write_text("tiny\n")

    proteins = load("ogbn-proteins", root=tmp_path / "root")
    data = proteins.data
    assert (proteins.metric, proteins.num_classes, proteins.num_features) == ("rocauc", 112, 8)
    assert data.y.shape == (40, 112) and data.edge_index.size(1) == 2 * n_edges  # OGB adds inverses
    # x = mean of incoming edge features (each edge is stored both ways)
    node = 5
    incoming = [i for i, (s, t) in enumerate(edges) if t == node] + [
        i for i, (s, t) in enumerate(edges) if s == node
    ]
    assert torch.allclose(data.x[node], torch.from_numpy(edge_feat[incoming].mean(0)), atol=1e-6)
    assert [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)] == [24, 8, 8]
    assert evaluate(proteins, data.y, data.y.float() * 2 - 1) == pytest.approx(1.0)

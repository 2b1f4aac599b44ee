"""The paper / public / official protocols, PCA features, the linear baseline and metrics."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.data import (
    apply_protocol,
    evaluate,
    higher_is_better,
    linear_pca_baseline,
    load,
    paper_split,
    pca_features,
    split_sizes,
)


@pytest.fixture(scope="module")
def cora(real_data):
    return load("cora", root=real_data("cora"))


@pytest.fixture(scope="module")
def cora_paper(cora):
    return apply_protocol(cora, "paper", seed=0)


def test_paper_split_sizes_of_the_three_citation_graphs():
    assert split_sizes(2708) == (27, 1327, 1354)  # Cora: every node labelled
    assert split_sizes(3312) == (33, 1623, 1656)  # CiteSeer: 3327 nodes less 15 unlabelled
    assert split_sizes(19717) == (197, 9661, 9859)  # PubMed
    with pytest.raises(ValueError, match="34 labelled nodes are too few.*0/17/17"):
        split_sizes(34)
    with pytest.raises(ValueError, match="train \\+ val < 1"):
        split_sizes(100, train=0.6, val=0.5)


def test_paper_split_on_cora(cora):
    a = paper_split(cora.data, seed=0)
    masks = torch.stack([a.train_mask, a.val_mask, a.test_mask])
    assert masks.sum(1).tolist() == [27, 1327, 1354]
    assert bool((masks.sum(0) == 1).all())
    assert torch.equal(a.orig_node_index, torch.arange(2708))
    b, c = paper_split(cora.data, seed=0), paper_split(cora.data, seed=1)
    assert torch.equal(a.train_mask, b.train_mask) and not torch.equal(a.train_mask, c.train_mask)
    assert cora.data.x.shape == (2708, 1433) and int(cora.data.train_mask.sum()) == 140  # input untouched


@pytest.mark.datasets("citeseer")
def test_paper_split_drops_citeseer_unlabelled_nodes(data_root):
    citeseer = load("citeseer", root=data_root)
    split = paper_split(citeseer.data, seed=3)
    assert split.num_nodes == 3312
    assert [int(m.sum()) for m in (split.train_mask, split.val_mask, split.test_mask)] == [33, 1623, 1656]
    unlabelled = set((~citeseer.data.labelled_mask).nonzero().view(-1).tolist())
    assert len(unlabelled) == 15 and not unlabelled & set(split.orig_node_index.tolist())
    assert int(split.edge_index.max()) < 3312
    assert torch.equal(split.y, citeseer.data.y[split.orig_node_index])


def test_pca_features_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 30, generator=g) @ torch.diag(torch.linspace(3, 0.1, 30))
    z = pca_features(x, 5, seed=0)
    assert z.shape == (200, 5) and z.dtype == torch.float32
    assert torch.allclose(z.mean(0), torch.zeros(5), atol=1e-4)
    variances = z.var(0)
    assert bool((variances[:-1] >= variances[1:]).all())
    # the projection keeps the top principal subspace: same variance as the exact SVD
    s = torch.linalg.svdvals((x - x.mean(0)).double())
    assert torch.allclose(variances.double(), (s[:5] ** 2) / 199, rtol=1e-4)
    assert torch.equal(z, pca_features(x, 5, seed=0))
    with pytest.raises(ValueError, match="PCA dim must be in 1..min\\(N, F\\) = 1..30; got 31"):
        pca_features(x, 31)


def test_apply_protocol_paper_and_public(cora, cora_paper, offline, tiny_pubmed_root):
    paper = cora_paper
    assert paper.x.shape == (2708, 64) and int(paper.train_mask.sum()) == 27
    assert apply_protocol(cora, "paper", seed=0, hidden=16).x.shape == (2708, 16)
    public = apply_protocol(cora, "public", seed=0)
    assert public.x.shape == (2708, 1433) and int(public.train_mask.sum()) == 140
    public.train_mask[:] = False
    assert int(cora.data.train_mask.sum()) == 140  # a copy, not the loaded graph
    pubmed = load("pubmed", root=tiny_pubmed_root[0])
    assert apply_protocol(pubmed, "paper", seed=0).x.shape == (600, 16)  # the paper's PubMed width


@pytest.mark.datasets("ogbg-molesol")
def test_apply_protocol_rejects_mismatches(cora, data_root, offline, tiny_arxiv_root):
    with pytest.raises(ValueError, match="unknown protocol 'papr'"):
        apply_protocol(cora, "papr", seed=0)
    with pytest.raises(ValueError, match="'official' is for OGB datasets"):
        apply_protocol(cora, "official", seed=0)
    with pytest.raises(ValueError, match="graph-level dataset"):
        apply_protocol(load("ogbg-molesol", root=data_root), "paper", seed=0)
    arxiv = load("ogbn-arxiv", root=tiny_arxiv_root[0])
    with pytest.raises(ValueError, match="use protocol 'official'"):
        apply_protocol(arxiv, "public", seed=0)
    assert int(apply_protocol(arxiv, "official", seed=0).train_mask.sum()) == 30


def test_linear_pca_baseline_beats_chance_and_is_deterministic(cora_paper):
    first, second = linear_pca_baseline(cora_paper), linear_pca_baseline(cora_paper, cs=(1.0,))
    assert first["C"] in (0.01, 0.1, 1.0, 10.0, 100.0)
    if first["C"] == 1.0:
        assert first == second
    assert second["C"] == 1.0 and linear_pca_baseline(cora_paper, cs=(1.0,)) == second
    # Cora's majority class is 30% of the nodes: 27 training nodes must already beat that
    assert 0.3 < first["test_acc"] < 0.8 and 0.3 < first["val_acc"] < 0.8


def test_accuracy_and_metric_direction(cora):
    y = cora.data.y[:10]
    logits = torch.nn.functional.one_hot(y, 7).float()
    logits[:3] = torch.nn.functional.one_hot((y[:3] + 1) % 7, 7).float()
    assert evaluate(cora, y, logits) == pytest.approx(0.7)
    assert evaluate(cora, y, logits.argmax(1)) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="y_true has 10 rows but y_pred has 9"):
        evaluate(cora, y, logits[:9])
    with pytest.raises(ValueError, match=r"logits of shape \[N, 7\]"):
        evaluate(cora, y, torch.zeros(10, 3))
    assert higher_is_better("acc") and higher_is_better("rocauc") and not higher_is_better("rmse")
    with pytest.raises(ValueError, match="unknown metric 'mae'"):
        higher_is_better("mae")


def test_row_normalized_features(cora):
    from pyg_rbp.data import row_normalize

    raw = apply_protocol(cora, "public", seed=0)
    norm = apply_protocol(cora, "public", seed=0, features="row-normalized")
    sums = norm.x.sum(dim=1)
    nonzero = raw.x.sum(dim=1) > 0
    assert torch.allclose(sums[nonzero], torch.ones(int(nonzero.sum())), atol=1e-5)
    # same sparsity pattern, rescaled rows
    assert torch.equal(norm.x > 0, raw.x > 0)
    assert torch.equal(row_normalize(torch.tensor([[0.0, 0.0], [1.0, 3.0]])),
                       torch.tensor([[0.0, 0.0], [0.25, 0.75]]))
    with pytest.raises(ValueError, match="unknown features 'l2'"):
        apply_protocol(cora, "public", seed=0, features="l2")
    with pytest.raises(ValueError, match="PCA features"):
        apply_protocol(cora, "paper", seed=0, features="row-normalized")

"""TU graph classification: loaders on the shared copies and on generated TU text layouts, the
10-fold protocol, the graph GCN baseline, and the 10-fold rows of the leaderboard."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from pyg_rbp.data import DataUnavailableError, UnsafeDataError, load
from pyg_rbp.data.protocols import kfold_split
from pyg_rbp.data.safe_load import check_torch_files
from pyg_rbp.data.tu import standardize_columns, tu_entry


def write_tu(root, name: str, graphs: list[tuple[int, list[tuple[int, int]]]], labels: list[int],
             node_labels: list[int] | None = None, node_attr: list[list[float]] | None = None) -> None:
    """Write a TU set in the release's text layout: ``<root>/TU/<name>/raw/<name>_*.txt``.

    ``graphs``: (number of nodes, undirected edges within the graph, 0-based local ids)."""
    raw = root / "TU" / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    a_lines, indicator, offset = [], [], 0
    for g, (n, edges) in enumerate(graphs):
        indicator += [g + 1] * n
        for i, j in edges:  # the TU files list both directions, 1-based global ids
            a_lines.append(f"{offset + i + 1}, {offset + j + 1}")
            a_lines.append(f"{offset + j + 1}, {offset + i + 1}")
        offset += n
    (raw / f"{name}_A.txt").write_text("\n".join(a_lines) + "\n")
    (raw / f"{name}_graph_indicator.txt").write_text("\n".join(map(str, indicator)) + "\n")
    (raw / f"{name}_graph_labels.txt").write_text("\n".join(map(str, labels)) + "\n")
    if node_labels is not None:
        (raw / f"{name}_node_labels.txt").write_text("\n".join(map(str, node_labels)) + "\n")
    if node_attr is not None:
        (raw / f"{name}_node_attributes.txt").write_text(
            "\n".join(", ".join(f"{v:.6f}" for v in row) for row in node_attr) + "\n")


def _toy_graphs(num: int, seed: int = 0) -> tuple[list, list[int]]:
    """Paths (label 0) and stars/cycles (label 1), alternating, of 3-6 nodes."""
    rng = np.random.default_rng(seed)
    graphs, labels = [], []
    for g in range(num):
        n = int(rng.integers(3, 7))
        if g % 2 == 0:
            edges = [(i, i + 1) for i in range(n - 1)]
        else:
            edges = [(0, i) for i in range(1, n)]
        graphs.append((n, edges))
        labels.append(g % 2)
    return graphs, labels


@pytest.fixture
def tu_root(tmp_path, monkeypatch):
    """A private data root without mirrors (generated sets only)."""
    monkeypatch.setenv("PYG_RBP_SHARED", "")
    return tmp_path


def test_mutag_shared_copy(data_root):
    mutag = load("tu-mutag", root=data_root)
    assert (mutag.name, mutag.task, mutag.metric) == ("tu-mutag", "graph", "acc")
    assert (len(mutag.dataset), mutag.num_features, mutag.num_classes) == (188, 7, 2)
    assert mutag.info["class_counts"] == [63, 125]
    x = mutag.dataset._data.x
    assert torch.equal(x.sum(dim=1), torch.ones(x.size(0)))  # one-hot node labels only
    assert mutag.split_idx is None and mutag.info["features"] == "one-hot node labels"


def test_proteins_and_enzymes_attributes_standardised(data_root):
    proteins = load("tu-proteins", root=data_root)
    assert (len(proteins.dataset), proteins.num_features, proteins.num_classes) == (1113, 4, 2)
    x = proteins.dataset._data.x
    assert x[:, 0].mean().abs() < 1e-4 and (x[:, 0].std(unbiased=False) - 1).abs() < 1e-4
    assert torch.equal(x[:, 1:].sum(dim=1), torch.ones(x.size(0)))
    enzymes = load("tu-enzymes", root=data_root)
    assert (len(enzymes.dataset), enzymes.num_features, enzymes.num_classes) == (600, 21, 6)
    assert enzymes.info["class_counts"] == [100] * 6
    ptc = load("tu-ptc_mr", root=data_root)
    assert (len(ptc.dataset), ptc.num_classes) == (344, 2)


def test_generated_set_not_in_manifest(tu_root):
    graphs, labels = _toy_graphs(6)
    n_nodes = sum(n for n, _ in graphs)
    node_labels = [i % 3 for i in range(n_nodes)]
    attr = [[float(i), 2.0] for i in range(n_nodes)]
    write_tu(tu_root, "TOYSET", graphs, labels, node_labels, attr)
    toy = load("tu-toyset", root=tu_root)
    assert toy.task == "graph" and len(toy.dataset) == 6 and toy.num_classes == 2
    assert toy.num_features == 2 + 3
    x = toy.dataset._data.x
    # attributes first, standardised (the constant column becomes 0), then the one-hot labels
    col = torch.arange(n_nodes, dtype=torch.float64)
    assert torch.allclose(x[:, 0].double(), (col - col.mean()) / col.std(unbiased=False), atol=1e-5)
    assert torch.equal(x[:, 1], torch.zeros(n_nodes))
    assert torch.equal(x[:, 2:].argmax(dim=1), torch.tensor(node_labels))
    first = toy.dataset[0]
    assert first.num_nodes == graphs[0][0] and first.edge_index.size(1) == 2 * len(graphs[0][1])
    assert [int(d.y) for d in toy.dataset] == labels


def test_generated_nci1_layout_uses_manifest_entry(tu_root):
    assert tu_entry("tu-nci1").extra["pyg_name"] == "NCI1"
    graphs, labels = _toy_graphs(4)
    write_tu(tu_root, "NCI1", graphs, labels, node_labels=[0] * sum(n for n, _ in graphs))
    nci1 = load("tu-nci1", root=tu_root)
    assert len(nci1.dataset) == 4 and nci1.num_features == 1


def test_set_without_features_gets_degree_one_hot(tu_root):
    graphs, labels = _toy_graphs(4)
    write_tu(tu_root, "NOFEAT", graphs, labels)
    ds = load("tu-nofeat", root=tu_root)
    star = ds.dataset[1]  # a star: the centre has degree n - 1, the leaves 1
    n = graphs[1][0]
    assert star.x.argmax(dim=1).tolist() == [n - 1] + [1] * (n - 1)
    assert "degree" in ds.info["features"]


def test_missing_files_are_reported(tu_root):
    with pytest.raises(DataUnavailableError, match="NOTHERE_A.txt"):
        load("tu-nothere", root=tu_root, download=False)


_RAN: list[int] = []


def _mark_ran() -> None:
    _RAN.append(1)


class _Payload:
    """Any class outside the allow-list: unpickling it fully would call :func:`_mark_ran`."""

    def __reduce__(self):
        return (_mark_ran, ())


def test_processed_pickle_needing_full_unpickler_is_refused(tu_root):
    graphs, labels = _toy_graphs(4)
    write_tu(tu_root, "EVIL", graphs, labels, node_labels=[0] * sum(n for n, _ in graphs))
    load("tu-evil", root=tu_root)  # builds processed/
    processed = tu_root / "TU" / "EVIL" / "processed"
    assert check_torch_files(processed) == []  # what PyG wrote loads with weights_only=True
    torch.save(_Payload(), processed / "pre_transform.pt")
    _RAN.clear()
    with pytest.raises(UnsafeDataError, match="pre_transform.pt: refusing to load it"):
        load("tu-evil", root=tu_root)
    assert _RAN == []  # refused before anything unpickled it


def test_standardize_columns():
    x = torch.tensor([[1.0, 5.0, 1.0], [3.0, 5.0, 0.0]])
    out = standardize_columns(x, 2)
    assert torch.equal(out, torch.tensor([[-1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert torch.equal(x[0], torch.tensor([1.0, 5.0, 1.0]))  # input unchanged


def test_kfold_split_partitions_and_matches_sklearn():
    from sklearn.model_selection import StratifiedKFold

    y = torch.tensor([0] * 63 + [1] * 125)
    tests = [kfold_split(y, f)["test"] for f in range(10)]
    assert torch.equal(torch.cat(tests).sort().values, torch.arange(188))  # disjoint, covering
    ref = list(StratifiedKFold(10, shuffle=True, random_state=0).split(np.zeros(188), y.numpy()))
    for f in range(10):
        s = kfold_split(y, f)
        assert s["test"].tolist() == sorted(ref[f][1].tolist())
        assert s["train"].tolist() == sorted(ref[f][0].tolist()) and s["valid"].numel() == 0
        counts = torch.bincount(y[s["test"]], minlength=2)
        assert abs(int(counts[0]) - 6.3) < 1 and abs(int(counts[1]) - 12.5) < 1  # stratified
    carved = kfold_split(y, 3, val_fraction=0.1)
    assert carved["test"].tolist() == sorted(ref[3][1].tolist())
    joined = torch.cat([carved["train"], carved["valid"]]).sort().values
    assert joined.tolist() == sorted(ref[3][0].tolist())
    assert carved["valid"].numel() == 17
    assert set(carved["valid"].tolist()).isdisjoint(carved["train"].tolist())
    assert torch.equal(kfold_split(y, 3, val_fraction=0.1)["valid"], carved["valid"])  # deterministic
    with pytest.raises(ValueError, match="fold must be"):
        kfold_split(y, 10)
    with pytest.raises(ValueError, match="smallest class"):
        kfold_split(torch.tensor([0] * 20 + [1] * 5), 0)


def test_gcn_graph_model_pools_each_graph_alone():
    from torch_geometric.data import Batch, Data

    from pyg_rbp.training.models import GCNGraphModel

    torch.manual_seed(0)
    model = GCNGraphModel(3, 8, 2, num_layers=2, dropout=0.0, pool="add").eval()
    g1 = Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]]))
    g2 = Data(x=torch.randn(3, 3), edge_index=torch.tensor([[0, 1, 0, 2], [1, 0, 2, 0]]))
    batch = Batch.from_data_list([g1, g2])
    both = model(batch.x, batch.edge_index, batch.batch)
    alone = [model(g.x, g.edge_index, torch.zeros(g.num_nodes, dtype=torch.long)) for g in (g1, g2)]
    assert both.shape == (2, 2)
    assert torch.allclose(both, torch.cat(alone), atol=1e-6)
    # the read-out is a sum over the nodes: permuting a graph's nodes changes nothing
    perm = torch.tensor([2, 0, 3, 1])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(4)
    permuted = model(g1.x[perm], inv[g1.edge_index], torch.zeros(4, dtype=torch.long))
    assert torch.allclose(permuted, alone[0], atol=1e-6)


def _toy_loaded(tu_root, num: int = 40):
    graphs, labels = _toy_graphs(num)
    n_nodes = sum(n for n, _ in graphs)
    write_tu(tu_root, "TOYCV", graphs, labels, node_labels=[0] * n_nodes)
    return load("tu-toycv", root=tu_root)


def test_train_graph_10_fold_rows(tu_root):
    from pyg_rbp.training.config import build_config
    from pyg_rbp.training.runner import run_one

    loaded = _toy_loaded(tu_root)
    cfg = build_config("tu-toycv", "graph", model="gin", epochs=4, batch_size=8)
    assert cfg.protocol == "10-fold" and cfg.val_fraction == 0.1
    row = run_one(cfg, loaded, 2, progress=False)
    assert row["fold"] == 2 and row["split_sizes"] == {"train": 32, "valid": 4, "test": 4}
    assert [h["epoch"] for h in row["history"]] == [1, 2, 3, 4]
    assert all(h["test"] in (0.0, 0.25, 0.5, 0.75, 1.0) for h in row["history"])
    best = max(row["history"], key=lambda h: (h["val"], -h["val_loss"]))
    assert row["test"] == best["test"] and row["best_epoch"] == best["epoch"]
    # GIN's setting: no validation part, the last epoch is reported
    cfg0 = build_config("tu-toycv", "graph", model="gated", grad="neumann", epochs=3, batch_size=8,
                        val_fraction=0.0)
    row0 = run_one(cfg0, loaded, 0, progress=False)
    assert row0["val"] is None and row0["best_epoch"] == 3 and row0["test"] == row0["history"][-1]["test"]
    assert row0["split_sizes"]["valid"] == 0


def test_config_and_cli_for_10_fold():
    from pyg_rbp.cli.train import _runs_spec
    from pyg_rbp.training.config import build_config, dataset_task

    assert dataset_task("tu-mutag") == "graph" and dataset_task("tu-anything") == "graph"
    with pytest.raises(ValueError, match="only --protocol 10-fold"):
        build_config("tu-mutag", "graph", protocol="official", model="gin")
    with pytest.raises(ValueError, match="TU graph-classification"):
        build_config("cora", "node", protocol="10-fold", model="gcn")
    with pytest.raises(ValueError, match="val_fraction applies"):
        build_config("ogbg-molbace", "graph", model="gin", val_fraction=0.1)
    cfg = build_config("tu-mutag", "graph", model="implicit", grad="neumann")
    assert "--protocol 10-fold" in cfg.command() and "--val-fraction 0.1" in cfg.command()
    ns = argparse.Namespace(seeds=None, folds=None)
    assert _runs_spec(ns, "10-fold") == "0-9"
    assert _runs_spec(argparse.Namespace(seeds=None, folds="3,4"), "10-fold") == "3,4"
    with pytest.raises(SystemExit, match="--folds"):
        _runs_spec(argparse.Namespace(seeds="0", folds=None), "10-fold")
    with pytest.raises(SystemExit, match="0-9"):
        _runs_spec(argparse.Namespace(seeds=None, folds="8-10"), "10-fold")
    with pytest.raises(SystemExit, match="10-fold"):
        _runs_spec(argparse.Namespace(seeds=None, folds="1"), "public")


def test_gin_selection_and_board(tmp_path):
    from pyg_rbp.training import leaderboard as lb
    from pyg_rbp.training.leaderboard.tu import gin_selection

    def res(fold, tests, test):
        history = [{"epoch": e + 1, "test": t} for e, t in enumerate(tests)]
        return {"seed": fold, "test": test, "history": history}

    sel = gin_selection([res(0, [0.5, 0.9, 0.7], 0.7), res(1, [0.6, 0.7, 0.9], 0.9)])
    assert sel["gin_epoch"] == 2 and sel["gin_test_mean"] == pytest.approx(0.8)  # ties: earliest
    assert sel["gin_test_std"] == pytest.approx(np.std([0.9, 0.7], ddof=1))
    entries = lb.plan(["tu-mutag"], seeds=2)
    labels = [(e.config.model, e.config.grad) for e in entries]
    assert labels == [("gated", "neumann"), ("gated", "bptt"), ("implicit", "neumann"),
                      ("implicit", "bptt"), ("gin", None), ("gcn", None)]
    assert all(e.seeds == [0, 1] and e.config.protocol == "10-fold" for e in entries)
    cells = tmp_path / "cells"
    for e in entries:
        for fold in e.seeds:
            acc = 0.9 if e.config.model == "gated" else 0.8
            path = e.cell_path(cells, fold)
            path.parent.mkdir(parents=True, exist_ok=True)
            row = {"dataset": "tu-mutag", "protocol": "10-fold", "model": e.config.model,
                   "grad": e.config.grad, "metric": "acc", "seed": fold, "fold": fold, "val": acc,
                   "test": acc, "epochs_run": 2, "history": [{"epoch": 1, "val": acc, "test": acc - 0.1},
                                                              {"epoch": 2, "val": acc, "test": acc}]}
            path.write_text(json.dumps({"result": row}))
    rows = lb.rows(entries, tmp_path)
    gated = rows[0]
    assert gated["gin_epoch"] == 2 and gated["gin_test_mean"] == pytest.approx(0.9)
    md = lb.render_markdown(rows, command="x", env={}, profile="cpu")
    assert "GIN's selection" in md and "89.4" in md and "matches or beats GIN" in md
    assert "below it" not in md and "IGNN 89.3" in md
    assert "--val-fraction 0.1 --folds 0,1" in md and "--seeds 0,1" not in md


def test_molecule_rows_get_gcn_and_the_full_budget():
    from pyg_rbp.training import leaderboard as lb

    full = lb.plan(["ogbg-molbace"], seeds=10, profile="full")
    assert [e.config.model for e in full] == ["gated", "gin", "gcn"]
    assert all(e.config.epochs == 100 and e.config.patience == 0 and e.seeds == list(range(10)) for e in full)
    cpu = lb.plan(["ogbg-molesol"], seeds=10, profile="cpu")
    assert [e.config.model for e in cpu] == ["gated", "gin", "gcn"]
    assert all(e.config.epochs == lb.CPU_GRAPH_EPOCHS and e.config.pool == "add" for e in cpu)
    big = lb.plan(["tu-proteins"], seeds=10, profile="cpu")
    assert [(e.config.model, e.config.grad) for e in big] == [("gated", "neumann"), ("implicit", "neumann"),
                                                              ("gin", None), ("gcn", None)]


@pytest.mark.parametrize("cell", ["gated", "implicit"])
def test_graph_model_mlp_readout_pools_a_per_node_mlp(cell):
    from torch_geometric.data import Batch, Data

    from pyg_rbp.nn.models import FixedPointGraphModel

    torch.manual_seed(0)
    g1 = Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]]))
    g2 = Data(x=torch.randn(3, 3), edge_index=torch.tensor([[0, 1, 0, 2], [1, 0, 2, 0]]))
    batch = Batch.from_data_list([g1, g2])
    model = FixedPointGraphModel(3, 8, 2, cell=cell, max_iter=40, pool="add", readout="mlp").double()
    assert "readout='mlp'" in repr(model)
    out = model(batch.x.double(), batch.edge_index, batch.batch)
    out.sum().backward()
    assert float(model.node_mlp.lins[0].weight.grad.abs().sum()) > 0
    assert float(model.encoder.weight.grad.abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        both = model(batch.x.double(), batch.edge_index, batch.batch)
        h = model.conv(model.encoder(g1.x.double()), g1.edge_index)
        # the read-out is exactly head(sum_i phi(h*_i)), phi the per-node MLP
        ref = model.head(model.node_mlp(h).sum(0, keepdim=True))
        alone = torch.cat([model(g.x.double(), g.edge_index, None) for g in (g1, g2)])
    torch.testing.assert_close(both, alone, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(both[:1], ref, rtol=1e-9, atol=1e-10)
    # the default read-out has no per-node MLP and the old parameter names
    plain = FixedPointGraphModel(3, 8, 2, cell=cell)
    assert plain.node_mlp is None and not any(n.startswith("node_mlp") for n, _ in plain.named_parameters())
    with pytest.raises(ValueError, match="readout"):
        FixedPointGraphModel(3, 8, 2, cell=cell, readout="jk")


def test_tu_fixed_point_rows_use_the_mlp_readout_and_baselines_keep_their_commands():
    from pyg_rbp.training.config import build_config

    for model in ("gated", "implicit"):
        cfg = build_config("tu-mutag", "graph", model=model, grad="neumann")
        assert cfg.readout == "mlp" and "--readout mlp" in cfg.command()
    for model in ("gin", "gcn"):
        cfg = build_config("tu-mutag", "graph", model=model)
        assert cfg.readout == "state" and "--readout" not in cfg.command()
    # elsewhere the default read-out, and its commands (cell names) unchanged
    mol = build_config("ogbg-molbace", "graph", model="gated", grad="neumann")
    assert mol.readout == "state" and "--readout" not in mol.command()
    assert build_config("ogbg-molbace", "graph", model="gated", grad="neumann",
                        readout="mlp").readout == "mlp"
    with pytest.raises(ValueError, match="read-out of the fixed-point graph models"):
        build_config("tu-mutag", "graph", model="gin", readout="mlp")
    with pytest.raises(ValueError, match="read-out of the fixed-point graph models"):
        build_config("cora", "node", model="gated", grad="neumann", readout="mlp")
    with pytest.raises(ValueError, match="readout must be one of"):
        build_config("tu-mutag", "graph", model="gated", grad="neumann", readout="max")

"""Mini-batch node training: history batches, PyG's samplers (when installed), loader settings."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import node_problem

from pyg_rbp.training.config import build_config
from pyg_rbp.training.loaders import (
    HistoryLoader,
    SamplingUnavailableError,
    make_loader,
    metis_available,
    sampling_available,
)
from pyg_rbp.training.models import build_node_model
from pyg_rbp.training.node import train_node

IN_CI = os.environ.get("PYG_RBP_CI") == "1"
needs_sampling = pytest.mark.skipif(
    not sampling_available() and not IN_CI,
    reason="PyG's NeighborLoader/ClusterData need torch-sparse or pyg-lib (pip install "
           "'pyg_rbp[sampling]'); CI (PYG_RBP_CI=1) installs it and runs these")


def _problem():
    loaded, data = node_problem(n=120, classes=3, seed=1)
    data.x = data.x + 1.5 * torch.nn.functional.one_hot(data.y, 6).float()  # an easier task
    return loaded, data


def test_history_rounds_share_every_batch_once_between_ranks():
    loaded, data = _problem()
    cfg = build_config("karate", "node", model="implicit", loader="history", batch_size=25)
    model = build_node_model(cfg, 6, 3)
    shares = [HistoryLoader.build(cfg, data, model, torch.device("cpu"), world_size=2, rank=r)
              for r in (0, 1)]
    assert len(shares[0].batches) == 6  # 5 batches of <= 25 nodes, rounded up to a multiple of 2
    for epoch in (1, 2):
        mine = [[b.targets for rnd in s.rounds(epoch) for b in rnd] for s in shares]
        assert len(mine[0]) == len(mine[1]) == 3
        allnodes = torch.cat(mine[0] + mine[1]).sort().values
        assert torch.equal(allnodes, torch.arange(120))
    assert [b.targets.tolist() for r in shares[0].rounds(1) for b in r] != \
        [b.targets.tolist() for r in shares[0].rounds(2) for b in r]  # reshuffled per epoch


def test_history_training_matches_full_graph_with_less_memory():
    loaded, data = _problem()
    common = dict(model="implicit", epochs=40, dropout=0.0, max_iter=40, tol=1e-6, patience=0, lr=0.02)
    full = train_node(build_config("karate", "node", **common), loaded, data, 0, progress=False)
    hist = train_node(build_config("karate", "node", loader="history", batch_size=30, **common),
                      loaded, data, 0, progress=False)
    assert hist["loader"] == "history" and hist["batches"] == 4 and hist["nodes_per_s"] > 0
    assert full["test"] > 0.8, full["test"]
    assert abs(hist["test"] - full["test"]) < 0.1, (hist["test"], full["test"])
    assert hist["saved_bytes"] < full["saved_bytes"] / 2


@pytest.mark.parametrize("partition", ["rcm", "spectral", "random"])
def test_history_batches_come_from_the_chosen_partition(partition):
    from pyg_rbp.nn.partition import partition_nodes

    loaded, data = _problem()
    cfg = build_config("karate", "node", model="implicit", loader="history", batch_size=25,
                       partition=None if partition == "rcm" else partition)
    loader = make_loader(cfg, data, build_node_model(cfg, 6, 3), torch.device("cpu"))
    want = partition_nodes(data.edge_index, 120, 25, partition)
    assert [b.nodes.tolist() for b in loader.halo_batches] == [w.tolist() for w in want]


def test_loader_settings_are_validated():
    with pytest.raises(ValueError, match="fixed-point model"):
        build_config("karate", "node", model="gcn", loader="history")
    with pytest.raises(ValueError, match="loader must be one of"):
        build_config("karate", "node", loader="saint")
    with pytest.raises(ValueError, match="step_every"):
        build_config("karate", "node", model="ppr", loader="history", step_every="round")
    with pytest.raises(ValueError, match="does not partition"):
        build_config("karate", "node", model="ppr", loader="neighbor", partition="spectral")
    with pytest.raises(ValueError, match="unknown partition 'kmeans'"):
        build_config("karate", "node", model="ppr", loader="history", partition="kmeans")
    cfg = build_config("karate", "node", model="ppr", loader="history", partition="Spectral")
    assert cfg.partition == "spectral" and "--partition spectral" in cfg.command()
    assert build_config("karate", "node", model="ppr", loader="history").node_partition == "rcm"
    assert build_config("karate", "node", model="ppr", loader="cluster").node_partition == "spectral"
    with pytest.raises(ValueError, match="num_neighbors"):
        build_config("karate", "node", loader="neighbor", num_neighbors="10,x")
    cfg = build_config("karate", "node", model="ppr", loader="neighbor", num_neighbors="5,-1")
    assert "--loader neighbor --num-neighbors 5,-1" in cfg.command()
    assert "--loader" not in build_config("karate", "node", model="ppr").command()


def test_sampling_loaders_say_what_to_install(monkeypatch):
    import pyg_rbp.training.loaders as loaders

    loaded, data = _problem()
    monkeypatch.setattr(loaders, "sampling_available", lambda: False)
    for name, partition in (("neighbor", None), ("cluster", "metis")):
        cfg = build_config("karate", "node", model="ppr", loader=name, partition=partition)
        with pytest.raises(SamplingUnavailableError, match="sampling"):
            make_loader(cfg, data, build_node_model(cfg, 6, 3), torch.device("cpu"))


@pytest.mark.parametrize("partition", ["spectral", "rcm", "random"])
def test_cluster_loader_needs_no_metis(monkeypatch, partition):
    """``--loader cluster`` with our own partition: Cluster-GCN batches without pyg-lib,
    torch-sparse or METIS: the parts cover every node once per epoch, a batch keeps exactly the
    edges among its nodes, the loss reads its training nodes, and it trains."""
    import pyg_rbp.training.loaders as loaders
    from pyg_rbp.training.loaders import PartitionClusterLoader

    monkeypatch.setattr(loaders, "sampling_available", lambda: False)
    loaded, data = _problem()
    cfg = build_config("karate", "node", model="implicit", loader="cluster", partition=partition,
                       batch_size=30, num_parts=8, epochs=30, dropout=0.0, lr=0.02, patience=0)
    loader = make_loader(cfg, data, build_node_model(cfg, 6, 3), torch.device("cpu"))
    assert isinstance(loader, PartitionClusterLoader) and loader.parts_per_batch == 2
    batches = [b for r in loader.rounds(1) for b in r]
    assert len(batches) == 4
    assert sorted(torch.cat([b.inputs for b in batches]).tolist()) == list(range(120))
    edges = {tuple(e) for e in data.edge_index.t().tolist()}
    for b in batches:
        nodes = b.inputs.tolist()
        inside = {(u, v) for (u, v) in edges if u in set(nodes) and v in set(nodes)}
        got = {(nodes[u], nodes[v]) for u, v in b.edge_index.t().tolist()}
        assert got == inside
        assert b.targets.tolist() == [n for n in nodes if bool(data.train_mask[n])]
    again = [b for r in loader.rounds(1) for b in r]
    assert [b.inputs.tolist() for b in again] == [b.inputs.tolist() for b in batches]
    later = [b for r in loader.rounds(2) for b in r]  # another epoch joins other parts
    assert [b.inputs.tolist() for b in later] != [b.inputs.tolist() for b in batches]
    # edge weights travel with their edges
    data.edge_weight = torch.arange(data.edge_index.size(1), dtype=torch.float) + 1
    weight_of = {tuple(e): float(w) for e, w in zip(data.edge_index.t().tolist(), data.edge_weight)}
    for b in (b for r in loader.rounds(3) for b in r):
        nodes = b.inputs.tolist()
        pairs = b.edge_index.t().tolist()
        assert b.edge_weight.tolist() == [weight_of[(nodes[u], nodes[v])] for u, v in pairs]
    del data.edge_weight
    res = train_node(cfg, loaded, data, 0, progress=False)
    assert res["loader"] == "cluster" and res["test"] > 0.5


@needs_sampling
@pytest.mark.parametrize("name", ["neighbor", "cluster"])
def test_sampled_loaders_feed_the_fixed_point_layers(name):
    if name == "cluster" and not metis_available():  # (our own partitions: the test above)
        pytest.skip("ClusterData needs METIS: pyg-lib, or torch-sparse built WITH_METIS=1 against "
                    "libmetis; CI's torch-sparse wheel is a plain source build without it")
    loaded, data = _problem()
    cfg = build_config("karate", "node", model="implicit", loader=name, batch_size=30, num_parts=4,
                       partition="metis" if name == "cluster" else None,
                       num_neighbors="5,5", epochs=30, dropout=0.0, lr=0.02, patience=0)
    loader = make_loader(cfg, data, build_node_model(cfg, 6, 3), torch.device("cpu"))
    batches = [b for r in loader.rounds(1) for b in r]
    if name == "neighbor":  # seeded at the 30 training nodes: one batch of 30 targets
        assert sum(b.targets.numel() for b in batches) == int(data.train_mask.sum())
        assert bool(data.train_mask[torch.cat([b.targets for b in batches])].all())
    else:  # METIS parts cover the nodes; targets are the training nodes among them
        assert sum(b.num_nodes for b in batches) == 120
    res = train_node(cfg, loaded, data, 0, progress=False)
    assert res["loader"] == name and res["test"] > 0.5

"""The training harness: per-dataset defaults, node and graph training, losses, dropout."""

from __future__ import annotations

import math

import pytest
import torch

from pyg_rbp.training.config import TrainConfig, build_config, dataset_task, defaults_for
from pyg_rbp.training.node import SparseFeatureDropout
from pyg_rbp.training.objective import is_better, loss_fn


def test_paper_protocol_defaults_follow_the_brief():
    cfg = build_config("cora", "node", protocol="paper")
    assert (cfg.model, cfg.grad, cfg.optimizer) == ("gated", "neumann", "sgd")
    assert (cfg.lr, cfg.momentum, cfg.weight_decay) == (1e-3, 0.9, 5e-4)
    assert (cfg.epochs, cfg.eval_every, cfg.max_iter, cfg.backward_iter, cfg.hidden) == (2000, 20, 100, 5, 64)
    assert cfg.dropout == 0.0 and cfg.tol == 0.0
    assert build_config("pubmed", "node", protocol="paper").hidden == 16


@pytest.mark.parametrize("name,task,protocol,model", [
    ("cora", "node", "public", "ppr"), ("citeseer", "node", "public", "ppr"),
    ("pubmed", "node", "public", "ppr"), ("ogbn-arxiv", "node", "official", "ppr"),
    ("ogbn-proteins", "node", "official", "ppr"), ("digits", "node", "public", "ppr"),
    ("karate", "node", "public", "ppr"), ("ogbg-molbace", "graph", "official", "gated"),
    ("ogbg-molesol", "graph", "official", "gated"),
])
def test_every_dataset_has_defaults(name, task, protocol, model):
    assert dataset_task(name) == task
    cfg = build_config(name, task)
    assert (cfg.protocol, cfg.model, cfg.grad) == (protocol, model, "neumann")


def test_public_ppr_defaults_are_appnp_literature_settings():
    cfg = build_config("cora", "node")
    assert (cfg.hidden, cfg.dropout, cfg.lr, cfg.weight_decay, cfg.alpha) == (64, 0.5, 0.01, 5e-3, 0.1)
    gcn = build_config("cora", "node", model="gcn")
    assert gcn.grad is None and gcn.hidden == 16


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown model"):
        build_config("cora", "node", model="transformer")
    with pytest.raises(ValueError, match="not a graph-level model"):
        build_config("ogbg-molbace", "graph", model="ppr")  # gcn is a graph model too (GCNGraphModel)
    with pytest.raises(ValueError, match="only --protocol official"):
        build_config("ogbg-molbace", "graph", protocol="paper")
    with pytest.raises(ValueError, match="official is for OGB"):
        build_config("cora", "node", protocol="official")
    with pytest.raises(ValueError, match="unknown gradient mode"):
        build_config("cora", "node", grad="adjoint")
    with pytest.raises(ValueError, match="dropout"):
        build_config("cora", "node", dropout=1.5)
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_task("imagenet")
    with pytest.raises(ValueError, match="needs a gradient mode"):
        TrainConfig(dataset="cora", protocol="public", model="ppr", grad=None)
    assert defaults_for("cora", "public", "gcn", "node")["grad"] is None


def test_flags_that_cannot_apply_are_refused_or_reset():
    """Settings a run would accept and then ignore: refused up front, or reset like ``grad``."""
    with pytest.raises(ValueError, match="needs plain steps"):
        build_config("cora", "node", grad="bptt", solver="anderson")
    assert build_config("cora", "node", grad="tbptt", solver="anderson").solver == "anderson"
    assert build_config("cora", "node", model="gcn", solver="anderson").solver == "iteration"
    with pytest.raises(ValueError, match="for node tasks"):
        build_config("ogbg-molbace", "graph", loader="history")
    with pytest.raises(ValueError, match="paper protocol trains full-graph"):
        build_config("cora", "node", protocol="paper", loader="history")


def test_command_rebuilds_the_same_config():
    from pyg_rbp.cli import build_parser
    from pyg_rbp.cli.train import configs_from_args

    cfg = build_config("citeseer", "node", protocol="paper", grad="cg", epochs=300)
    argv = cfg.command().split()[1:]
    assert argv[0] == "train"
    (again,) = configs_from_args(build_parser().parse_args(argv))
    assert again == cfg


def test_losses_skip_missing_labels_and_better_respects_direction():
    out = torch.tensor([[0.0], [2.0], [1.0]])
    y = torch.tensor([[0.0], [float("nan")], [1.0]])
    assert float(loss_fn("rmse", out, y)) == pytest.approx(0.0)
    bce = float(loss_fn("rocauc", out, y))
    assert bce == pytest.approx((math.log(2) + math.log(1 + math.exp(-1))) / 2, rel=1e-5)
    assert float(loss_fn("acc", torch.tensor([[10.0, 0.0]]), torch.tensor([0]))) < 1e-4
    assert is_better("acc", 0.8, 1.0, (0.7, 0.1))
    assert not is_better("rmse", 0.8, 1.0, (0.7, 0.1))
    assert is_better("rmse", 0.7, 0.05, (0.7, 0.1))  # tie on the score: lower loss wins


def test_sparse_feature_dropout_matches_dense_dropout():
    torch.manual_seed(0)
    x = (torch.rand(200, 300) < 0.02).float() * 3.0
    drop = SparseFeatureDropout(x, 0.5)
    assert SparseFeatureDropout.worthwhile(x)
    outs = torch.stack([drop() for _ in range(200)])
    assert bool((outs[:, x == 0] == 0).all())  # zeros stay zero
    assert set(outs[:, x != 0].unique().tolist()) <= {0.0, 6.0}  # survivors scaled by 1/(1-p)
    assert float((outs[:, x != 0] > 0).float().mean()) == pytest.approx(0.5, abs=0.02)


def _tiny(grad, **kw):
    base = dict(hidden=8, max_iter=8, backward_iter=4, epochs=6, eval_every=2, patience=0, dropout=0.0)
    base.update(kw)
    return build_config("karate", "node", model="gated", grad=grad, **base)


def test_train_node_reports_every_field_and_memory_ordering():
    from pyg_rbp.training.runner import load_dataset, run_one

    loaded = load_dataset("karate")
    rows = {g: run_one(_tiny(g), loaded, 0, progress=False) for g in ("bptt", "neumann")}
    for r in rows.values():
        assert 0.0 <= r["test"] <= 1.0 and 0.0 <= r["val"] <= 1.0
        assert r["epochs_run"] == 6 and r["best_epoch"] in (2, 4, 6)
        assert r["epoch_time_s"] > 0 and r["cuda_peak_bytes"] is None
        assert r["metric"] == "acc" and r["dataset"] == "karate"
        assert r["fixed_point"]["forward_iters"] == 8
    # BPTT keeps every step's activations; Neumann-RBP keeps one step's.
    assert rows["bptt"]["saved_bytes"] > 3 * rows["neumann"]["saved_bytes"] > 0
    again = run_one(_tiny("neumann"), loaded, 0, progress=False)
    assert again["test"] == rows["neumann"]["test"] and again["val"] == rows["neumann"]["val"]


def test_early_stopping_and_baselines(monkeypatch):
    import pyg_rbp.training.objective as objective
    from pyg_rbp.training.runner import load_dataset, run_one

    loaded = load_dataset("karate")
    # only the first validation counts as an improvement: patience 3 stops at epoch 1 + 3
    monkeypatch.setattr(objective, "is_better", lambda metric, score, loss, best: best is None)
    cfg = build_config("karate", "node", model="gcn", epochs=50, patience=3)
    r = run_one(cfg, loaded, 0, progress=False)
    assert r["grad"] is None and r["epochs_run"] == 4 and r["best_epoch"] == 1
    monkeypatch.undo()
    lin = run_one(build_config("karate", "node", model="linear-pca"), loaded, 0, progress=False)
    assert lin["saved_bytes"] == 0 and 0.0 <= lin["test"] <= 1.0


@pytest.mark.datasets("ogbg-molesol")
def test_train_graph_on_molecules(data_root):
    from pyg_rbp.training.runner import load_dataset, run_one

    loaded = load_dataset("ogbg-molesol", data_root)
    for model in ("gin", "gated"):
        cfg = build_config("ogbg-molesol", "graph", model=model, epochs=1, max_iter=3, backward_iter=2,
                           batch_size=128)
        r = run_one(cfg, loaded, 0, progress=False)
        assert r["metric"] == "rmse" and r["test"] > 0 and math.isfinite(r["val"])
        assert r["saved_bytes"] > 0 and r["epochs_run"] == 1


def test_aggr_reaches_the_gated_cell_and_the_command():
    from pyg_rbp.nn.models import FixedPointNodeClassifier
    from pyg_rbp.training.config import build_config

    model = FixedPointNodeClassifier(8, 8, 3, cell="gated", aggr="mean")
    assert model.conv.cell.aggr == "mean"
    mean_cfg = build_config("digits", "node", protocol="public", model="gated", grad="neumann",
                            aggr="mean")
    assert "--aggr mean" in mean_cfg.command()
    add_cfg = build_config("digits", "node", protocol="public", model="gated", grad="neumann")
    assert "--aggr" not in add_cfg.command()  # the default keeps existing commands unchanged
    with pytest.raises(ValueError, match="aggr"):
        build_config("digits", "node", protocol="public", model="gated", grad="neumann", aggr="max")


def test_features_option_reaches_the_command_and_round_trips():
    from pyg_rbp.cli import build_parser
    from pyg_rbp.cli.train import configs_from_args

    cfg = build_config("cora", "node", features="row-normalized")
    assert "--features row-normalized" in cfg.command()
    (again,) = configs_from_args(build_parser().parse_args(cfg.command().split()[1:]))
    assert again == cfg
    assert "--features" not in build_config("cora", "node").command()  # raw: existing rows unchanged
    # raw on CiteSeer, whose ppr default is row-normalized: the command must say so to rebuild it
    raw = build_config("citeseer", "node", features="raw")
    assert "--features raw" in raw.command()
    (again,) = configs_from_args(build_parser().parse_args(raw.command().split()[1:]))
    assert again == raw
    with pytest.raises(ValueError, match="features"):
        build_config("cora", "node", features="tfidf")
    with pytest.raises(ValueError, match="PCA features"):
        build_config("cora", "node", protocol="paper", features="row-normalized")


def test_pool_option_reaches_both_graph_models():
    from pyg_rbp.training.models import build_graph_model

    for model in ("gated", "gin"):
        cfg = build_config("ogbg-molesol", "graph", model=model, pool="add")
        assert "--pool add" in cfg.command()
        net = build_graph_model(cfg, 9, 1)
        assert net.pool == "add"
    assert "--pool" not in build_config("ogbg-molbace", "graph").command()  # mean: unchanged rows
    assert "--pool mean" in build_config("ogbg-molesol", "graph", pool="mean").command()  # not its default
    assert build_config("ogbg-molesol", "graph").pool == "add"  # picked on validation
    with pytest.raises(ValueError, match="pool"):
        build_config("ogbg-molesol", "graph", pool="attention")
    # add pooling sums node states: a graph and its disjoint double give doubled GIN read-outs
    torch.manual_seed(0)
    cfg = build_config("ogbg-molesol", "graph", model="gin", pool="add", dropout=0.0)
    gin = build_graph_model(cfg, 9, 1).eval()
    x = torch.zeros(3, 9, dtype=torch.long)
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    one = gin(x, ei, torch.zeros(3, dtype=torch.long))
    two = gin(torch.cat([x, x]), torch.cat([ei, ei + 3], dim=1), torch.zeros(6, dtype=torch.long))
    bias = gin.head.bias
    assert torch.allclose(two - bias, 2 * (one - bias), atol=1e-5)


def _poison_gradient_at(monkeypatch, module, builder: str, bad_call: int, value: float = float("nan")):
    """Make the ``bad_call``-th backward through the built model's first parameter give ``value``:
    an exploding gradient, found by the trainer's own checks. Returns the list the built models
    are appended to."""
    real = getattr(module, builder)
    calls, built = {"n": 0}, []

    def build(*args, **kwargs):
        model = real(*args, **kwargs)
        first = next(iter(model.parameters()))

        def hook(grad):
            calls["n"] += 1
            return grad * value if calls["n"] == bad_call else grad

        first.register_hook(hook)
        built.append(model)
        return model

    monkeypatch.setattr(module, builder, build)
    return built


def _initial_node_scores(loaded, cfg, seed=0):
    """Validation loss and test accuracy of the freshly built model of ``cfg`` (as train_node seeds it)."""
    from pyg_rbp.data import apply_protocol, evaluate
    from pyg_rbp.runtime import set_seed
    from pyg_rbp.training.models import build_node_model
    from pyg_rbp.training.objective import loss_fn

    data = apply_protocol(loaded, cfg.protocol, seed, hidden=cfg.hidden, features=cfg.features)
    set_seed(seed)
    model = build_node_model(cfg, data.x.size(1), loaded.num_classes).eval()
    with torch.no_grad():
        out = model(data.x.float(), data.edge_index)
    val_loss = float(loss_fn("acc", out[data.val_mask], data.y[data.val_mask]))
    return val_loss, evaluate(loaded, data.y[data.test_mask], out[data.test_mask])


def test_check_loss_and_gradients_name_the_problem():
    from pyg_rbp.engine import DivergenceError
    from pyg_rbp.training.objective import check_gradients, check_loss

    lin = torch.nn.Linear(2, 2)
    check_loss(torch.tensor(1.0), "at step 1")
    with pytest.raises(DivergenceError, match="loss became inf at step 4"):
        check_loss(torch.tensor(float("inf")), "at step 4")
    lin(torch.ones(1, 2)).sum().backward()
    check_gradients(lin, "at step 1")
    lin.bias.grad[0] = float("nan")
    with pytest.raises(DivergenceError, match="gradient of bias became NaN/inf at step 2"):
        check_gradients(lin, "at step 2")


def test_model_selection_is_unchanged_when_scoring_the_test_set_fails():
    from pyg_rbp.engine import DivergenceError
    from pyg_rbp.training.objective import ModelSelection

    sel = ModelSelection("acc")
    sel.update(2, 0.5, 1.0, lambda: 0.4, 2)

    def boom():
        raise DivergenceError("test forward blew up")

    with pytest.raises(DivergenceError):
        sel.update(4, 0.6, 0.9, boom, 2)
    assert (sel.val, sel.test, sel.epoch) == (0.5, 0.4, 2) and [h["epoch"] for h in sel.history] == [2]


def test_a_diverging_node_run_keeps_the_best_model_validated_before_it(monkeypatch):
    import pyg_rbp.training.node as node
    from pyg_rbp.training.runner import load_dataset, run_one

    loaded = load_dataset("karate")
    clean = run_one(_tiny("bptt", epochs=4, eval_every=2), loaded, 0, progress=False)
    assert clean["diverged"] is None
    built = _poison_gradient_at(monkeypatch, node, "build_node_model", bad_call=5)
    with pytest.warns(RuntimeWarning, match="diverged at step/epoch 5"):
        r = run_one(_tiny("bptt", epochs=8, eval_every=2), loaded, 0, progress=False)
    assert r["diverged"]["epoch"] == 5 and "NaN/inf at step 5" in r["diverged"]["error"]
    assert r["epochs_run"] == 4 and [h["epoch"] for h in r["history"]] == [2, 4]
    # the check runs before the optimiser step: the bad gradient never reached the weights
    assert all(bool(torch.isfinite(p).all()) for p in built[0].parameters())
    # steps 1-4 are the clean run's
    assert r["history"] == clean["history"]
    assert (r["val"], r["test"], r["best_epoch"]) == (clean["val"], clean["test"], clean["best_epoch"])


def test_a_run_diverging_before_any_validation_reports_the_initial_model(monkeypatch):
    import pyg_rbp.training.node as node
    from pyg_rbp.training.runner import load_dataset, run_one

    loaded = load_dataset("karate")
    cfg = _tiny("neumann", eval_every=5, lr=0.5)
    val_loss, test = _initial_node_scores(loaded, cfg)
    _poison_gradient_at(monkeypatch, node, "build_node_model", bad_call=2, value=float("inf"))
    with pytest.warns(RuntimeWarning, match="diverged"):
        r = run_one(cfg, loaded, 0, progress=False)
    assert r["diverged"]["epoch"] == 2 and r["epochs_run"] == 1
    assert [h["epoch"] for h in r["history"]] == [0] and r["best_epoch"] == 0
    # the step that ran (lr 0.5) was undone: these are the initial weights' scores
    assert r["history"][0]["val_loss"] == pytest.approx(val_loss) and r["test"] == pytest.approx(test)


def test_a_solve_diverging_in_validation_stops_the_run(monkeypatch):
    import pyg_rbp.training.node as node
    from pyg_rbp.engine import DivergenceError
    from pyg_rbp.training.runner import load_dataset, run_one

    real = node.build_node_model
    calls = {"n": 0}

    def build(*args, **kwargs):
        model = real(*args, **kwargs)
        forward = model.forward

        def guarded(*a, **k):
            calls["n"] += 1
            if calls["n"] == 3:  # training steps 1 and 2, then the validation at step 2
                raise DivergenceError("fixed_point forward: the state became NaN/inf at iteration 7")
            return forward(*a, **k)

        model.forward = guarded
        return model

    monkeypatch.setattr(node, "build_node_model", build)
    loaded = load_dataset("karate")
    cfg = _tiny("rbp", eval_every=2)
    val_loss, _ = _initial_node_scores(loaded, cfg)
    with pytest.warns(RuntimeWarning, match="diverged at step/epoch 2"):
        r = run_one(cfg, loaded, 0, progress=False)
    assert r["epochs_run"] == 2 and "iteration 7" in r["diverged"]["error"]
    assert [h["epoch"] for h in r["history"]] == [0]
    assert r["history"][0]["val_loss"] == pytest.approx(val_loss)


def test_summary_lists_the_diverged_seeds():
    from pyg_rbp.training.runner import summarize

    base = {"dataset": "karate", "protocol": "public", "model": "gated", "grad": "bptt", "metric": "acc",
            "val": 0.5, "epoch_time_s": 0.1, "saved_bytes": 1, "cuda_peak_bytes": None}
    rows = summarize([{**base, "seed": 0, "test": 0.6, "epochs_run": 9, "diverged": None},
                      {**base, "seed": 1, "test": 0.2, "epochs_run": 3,
                       "diverged": {"epoch": 4, "error": "x"}}])
    assert rows[0]["diverged"] == {"1": 4} and rows[0]["test_mean"] == pytest.approx(0.4)


@pytest.mark.datasets("ogbg-molesol")
def test_a_diverging_graph_run_stops_with_its_initial_model(monkeypatch, data_root):
    from torch_geometric.loader import DataLoader

    import pyg_rbp.training.graph as graph
    from pyg_rbp.runtime import set_seed
    from pyg_rbp.training.models import build_graph_model
    from pyg_rbp.training.objective import loss_fn
    from pyg_rbp.training.runner import load_dataset, run_one

    loaded = load_dataset("ogbg-molesol", data_root)
    cfg = build_config("ogbg-molesol", "graph", model="gin", epochs=3, batch_size=256, lr=0.05)
    set_seed(0)
    initial = build_graph_model(cfg, loaded.num_features, loaded.num_classes)
    val_loader = DataLoader(loaded.dataset[loaded.split_idx["valid"]], batch_size=256)
    y_val, out_val = graph._predict(initial, val_loader, torch.device("cpu"))
    # the first mini-batch's step runs, the second's gradient is NaN: epoch 1 never completes
    _poison_gradient_at(monkeypatch, graph, "build_graph_model", bad_call=2)
    with pytest.warns(RuntimeWarning, match="diverged at step/epoch 1"):
        r = run_one(cfg, loaded, 0, progress=False)
    assert r["diverged"]["epoch"] == 1 and "in epoch 1" in r["diverged"]["error"] and r["epochs_run"] == 0
    assert [h["epoch"] for h in r["history"]] == [0] and math.isfinite(r["test"]) and r["test"] > 0
    assert r["history"][0]["val_loss"] == pytest.approx(float(loss_fn("rmse", out_val, y_val)), rel=1e-5)

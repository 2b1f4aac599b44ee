"""Model and cell names: one registry each, and every committed board cell still named by its config.

The leaderboard names a cell file by a hash of its config's reproducing command
(``<protocol>__<model>__<grad>__<sha1(command)[:10]>__seed<n>.json``): renaming a model, or
printing a field the command used to leave out, would orphan every committed cell. Here every
committed cell's command is parsed back into a config, which must print the same command (so
hash to the same file name) and hold the same settings.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import fields
from pathlib import Path

import pytest

from pyg_rbp.training.config import TrainConfig, build_config, dataset_task

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
CELLS = sorted(RESULTS.rglob("cells/**/*.json"))


def config_from_command(command: str) -> TrainConfig:
    """The config a ``pyg-rbp train`` command line names (as the CLI builds it)."""
    words = shlex.split(command)
    assert words[:2] == ["pyg-rbp", "train"], command
    flags = dict(zip(words[2::2], words[3::2]))
    kinds = {f.name: f.type for f in fields(TrainConfig)}
    values = {}
    for flag, text in flags.items():
        name = flag.removeprefix("--").replace("-", "_")
        kind = str(kinds[name])
        values[name] = (int(text) if kind == "int" else float(text) if kind == "float" else text)
    dataset = values.pop("dataset")
    return build_config(dataset, dataset_task(dataset), **values)


def test_there_are_committed_cells():
    assert len(CELLS) > 300


@pytest.mark.parametrize("path", CELLS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_committed_cell_commands_rebuild_their_config_and_hash(path):
    cell = json.loads(path.read_text())
    cfg = config_from_command(cell["command"])
    assert cfg.command() == cell["command"]
    key = hashlib.sha1(cfg.command().encode()).hexdigest()[:10]
    assert path.name == f"{cfg.protocol}__{cfg.model}__{cfg.grad or 'none'}__{key}__seed{cell['seed']}.json"
    now = cfg.as_dict()
    assert {k: now[k] for k in cell["config"]} == cell["config"]


def _board_commands() -> list[str]:
    commands = []
    for path in (RESULTS / "leaderboard.json", RESULTS / "scale" / "leaderboard.json"):
        rows = json.loads(path.read_text())
        commands += [r["command"] for r in rows if r.get("command", "").startswith("pyg-rbp train")]
    return commands


def test_committed_board_rows_name_their_cells_by_the_same_command():
    commands = _board_commands()
    assert len(commands) > 50
    for command in commands:
        assert config_from_command(command).command() == command


def test_registry_resolves_names_and_aliases_and_lists_the_choices():
    from pyg_rbp.resolver import Registry

    reg: Registry[int] = Registry("colour")
    reg.register("dark-red", 1, aliases=("maroon",))
    reg.register("blue", 2)
    assert reg["Dark_Red"] == reg["MAROON"] == 1 and reg.canonical("darkred") == "dark-red"
    assert list(reg) == ["dark-red", "blue"] and len(reg) == 2 and "maroon" in reg and 3 not in reg
    assert reg.names(lambda v: v > 1) == ("blue",)
    with pytest.raises(ValueError, match=r"unknown colour 'green': colour must be one of dark-red, blue"):
        reg["green"]
    with pytest.raises(ValueError, match="unknown colour 7"):
        reg.canonical(7)
    with pytest.raises(ValueError, match="colour name 'Maroon' is taken by 'dark-red'"):
        reg.register("Maroon", 3)


def test_models_and_cells_are_one_registration_each():
    from pyg_rbp.nn.models import CELLS, FixedPointGraphModel, FixedPointNodeClassifier
    from pyg_rbp.training import config
    from pyg_rbp.training.models import MODELS, build_graph_model, build_node_model

    assert tuple(CELLS) == ("gated", "implicit", "ppr")
    assert config.MODELS == ("gated", "implicit", "ppr", "linear-pca", "gcn", "gin", "appnp")
    assert config.FIXED_POINT_MODELS == ("gated", "implicit", "ppr")
    assert set(config.NODE_MODELS) == {"gated", "implicit", "ppr", "linear-pca", "gcn", "appnp"}
    assert set(config.GRAPH_MODELS) == {"gated", "implicit", "gin", "gcn"}
    assert MODELS.canonical("LINEAR_PCA") == MODELS.canonical("linear") == "linear-pca"
    # an alias is stored (and hashed) under its canonical name
    cfg = build_config("karate", "node", model="IGNN", grad="neumann")
    assert cfg.model == "implicit" and "--model implicit" in cfg.command()
    assert FixedPointNodeClassifier(4, 8, 2, cell="GGNN").cell_name == "gated"
    with pytest.raises(ValueError, match="unknown cell 'lstm': cell must be one of gated, implicit, ppr"):
        FixedPointGraphModel(4, 8, 2, cell="lstm")
    with pytest.raises(ValueError, match="unknown model 'mlp': model must be one of gated, implicit, ppr"):
        build_config("karate", "node", model="mlp")
    # the builders refuse a model of the other task
    gin = build_config("ogbg-molesol", "graph", model="gin")
    with pytest.raises(ValueError, match="not a node-level model"):
        build_node_model(gin, 4, 2)
    with pytest.raises(ValueError, match="not a graph-level model"):
        build_graph_model(build_config("karate", "node", model="appnp"), 4, 2)


def test_a_registered_cell_builds_without_swapping():
    """The models build the registered cell directly (no model built and then its cell swapped):
    the same seed gives the same weights as the cell built by hand in the same order."""
    import torch

    from pyg_rbp.nn import GatedCell
    from pyg_rbp.nn.models import FixedPointNodeClassifier

    torch.manual_seed(0)
    model = FixedPointNodeClassifier(5, 6, 3, cell="gated", aggr="mean")
    torch.manual_seed(0)
    enc = torch.nn.Linear(5, 6)
    cell = GatedCell(6, aggr="mean", inject_input=True)
    dec = torch.nn.Linear(6, 3)
    assert model.conv.cell.aggr == "mean"
    for a, b in zip(model.parameters(), [*enc.parameters(), *cell.parameters(), *dec.parameters()]):
        assert torch.equal(a, b)

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

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
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

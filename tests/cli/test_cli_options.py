"""The shared ``pyg-rbp`` options: one spelling per option (old spellings deprecated, still
parsed), every committed command parsing to the settings it had, one error -> exit status table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from pyg_rbp.cli import _args, build_parser, main
from pyg_rbp.cli import leaderboard as leaderboard_cli
from pyg_rbp.cli._args import (
    DEPRECATED_SPELLINGS,
    EXIT_RULES,
    CommandError,
    UsageError,
    add_num_seeds,
    add_seeds,
    exit_error,
    parse_seeds,
    resolve_seeds,
)
from pyg_rbp.data.errors import ChecksumError, DataUnavailableError, UnsafeDataError
from pyg_rbp.results import CorruptResultsError, OutputPathError, ResultsFileConflict

sys.path.insert(0, str(Path(__file__).parent))
from commands import argv_of, committed_commands  # noqa: E402

SNAPSHOT = Path(__file__).parent / "data" / "board_commands.json"
"""``vars(namespace)`` of every committed command, parsed by the parser before the options were
unified (the reference: the same command must still mean the same settings)."""

PLACEHOLDERS = ("...", "[", "/--")
"""Prose such as ``pyg-rbp train ...`` or ``[--memory-steps 100,400]``: not commands to run."""

RENAMED_DESTS = {"bench scaling": {"grads": "grad", "quiet": "no_progress", "steps": "max_iter",
                                   "target_steps": "target_max_iter",
                                   "target_k": "target_backward_iter"},
                 "bench solvers": {"quiet": "no_progress"},
                 "bench graph-size": {"grads": "grad", "quiet": "no_progress", "steps": "max_iter"},
                 "hyperopt": {"inner_steps": "max_iter", "truncation": "backward_iter"},
                 "hopfield": {"updates": "max_iter", "truncation": "backward_iter"}}
"""Per command, the namespace attributes that now carry the one spelling's name."""


# Options added since the snapshot, at their defaults (a committed command never sets them).
ADDED_SINCE = {"leaderboard": {"fresh": False}, "train": {"readout": None, "partition": None}}


def _parse(argv: list[str]) -> dict:
    ns = build_parser().parse_args(argv)
    out = {k: v for k, v in vars(ns).items() if k != "func"}
    if out.get("command") == "leaderboard":  # the count it runs, however it was spelled
        out["seeds"] = leaderboard_cli.num_seeds(ns)
        del out["num_seeds"]
    for key, default in ADDED_SINCE.get(out.get("command"), {}).items():
        assert out.pop(key) == default
    return out


def test_every_committed_command_parses_to_the_same_settings(capsys):
    snapshot = json.loads(SNAPSHOT.read_text())
    assert len(snapshot) >= 90  # the README's and the boards' commands
    for command, before in snapshot.items():
        now = _parse(argv_of(command))
        renamed = RENAMED_DESTS.get(" ".join(filter(None, (before["command"], before.get("bench")))), {})
        expected = {renamed.get(k, k): v for k, v in before.items()}
        assert json.loads(json.dumps(now, default=str)) == expected, command
    # commands written since the snapshot parse too (a board command must never break)
    for command in committed_commands():
        if command not in snapshot and not any(p in command for p in PLACEHOLDERS):
            build_parser().parse_args(argv_of(command))
    capsys.readouterr()


def test_deprecated_spellings_parse_like_the_new_one_and_say_so(capsys):
    cases = [  # (command, old argv, new argv)
        (["bench", "scaling"], ["--grads", "bptt,rbp"], ["--grad", "bptt,rbp"]),
        (["bench", "scaling"], ["--quiet"], ["--no-progress"]),
        (["bench", "scaling"], ["--steps", "10,20"], ["--max-iter", "10,20"]),
        (["bench", "scaling"], ["--target-steps", "20"], ["--target-max-iter", "20"]),
        (["bench", "scaling"], ["--target-k", "5"], ["--target-backward-iter", "5"]),
        (["bench", "graph-size"], ["--steps", "7"], ["--max-iter", "7"]),
        (["bench", "graph-size"], ["--grads", "neumann"], ["--grad", "neumann"]),
        (["bench", "solvers"], ["--quiet"], ["--no-progress"]),
        (["bench", "solvers"], ["--modes", "rbp,cg"], ["--grad", "rbp,cg"]),
        (["hyperopt"], ["--inner-steps", "30"], ["--max-iter", "30"]),
        (["hyperopt"], ["--truncation", "5"], ["--backward-iter", "5"]),
        (["hyperopt"], ["-K", "5"], ["--backward-iter", "5"]),
        (["hopfield"], ["--updates", "30"], ["--max-iter", "30"]),
        (["hopfield"], ["--truncation", "5"], ["--backward-iter", "5"]),
    ]
    used = set()
    for command, old, new in cases:
        assert _parse([*command, *old]) == _parse([*command, *new]), (command, old)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"DeprecationWarning: {old[0]} is deprecated, use {new[0]}" in err
        _parse([*command, *new])
        assert capsys.readouterr().err == ""  # the one spelling says nothing
        used.add(old[0])
    assert used == set(DEPRECATED_SPELLINGS)
    # hidden from --help; the one spelling is shown once
    help_text = build_parser()._subparsers._group_actions[0].choices["hyperopt"].format_help()
    assert "--max-iter" in help_text and "--inner-steps" not in help_text


def test_every_command_has_one_spelling_of_each_common_option():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    subs = dict(choices)
    bench = choices["bench"]._subparsers._group_actions[0].choices
    subs.pop("bench")
    subs.update({f"bench {k}": v for k, v in bench.items()})
    for name, sub in subs.items():
        shown = {o for a in sub._actions if a.help != argparse.SUPPRESS for o in a.option_strings}
        assert not shown & set(DEPRECATED_SPELLINGS), name
        for option in ("--device", "--threads", "--json", "--no-progress"):
            if name == "bench solvers" and option == "--device":
                continue  # float64 CPU measurements by design
            if name == "leaderboard" and option == "--json":
                continue  # it writes a cell file per (row, seed) under --results, and --board
            assert option in shown, (name, option)
        if name != "demo":
            assert "--fresh" in shown, name


def test_seeds_are_a_list_or_range_and_the_count_has_its_own_spelling():
    assert parse_seeds("0-9") == list(range(10))
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3") == [3]
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    for bad in ("a,b", "1,1", "", "-1"):
        with pytest.raises(UsageError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(UsageError, match="--folds"):
        parse_seeds("x", "--folds")
    p = argparse.ArgumentParser()
    add_seeds(p)
    add_num_seeds(p, 10)
    ns = p.parse_args(["--num-seeds", "4"])
    assert ns.num_seeds == 4 and ns.seeds is None
    assert parse_seeds(p.parse_args(["--seeds", "0-3"]).seeds) == list(range(ns.num_seeds))


def test_threads_and_device_are_checked_the_same_everywhere(capsys):
    for command in (["train"], ["hyperopt"], ["hopfield"], ["bench", "scaling"],
                    ["bench", "graph-size"], ["bench", "solvers"], ["demo"]):
        with pytest.raises(SystemExit) as info:
            _parse([*command, "--threads", "-1"])
        assert info.value.code == 2 and "expected an integer >= 0" in capsys.readouterr().err
        if command != ["bench", "solvers"]:
            with pytest.raises(SystemExit) as info:
                _parse([*command, "--device", "gpu"])
            assert info.value.code == 2 and "unknown device 'gpu'" in capsys.readouterr().err
    assert _parse(["train"])["threads"] is None and _parse(["bench", "scaling"])["threads"] == 1


def test_one_table_maps_errors_to_exit_statuses():
    cases = [
        (UsageError("pyg-rbp x: bad value"), 2, "pyg-rbp x: bad value"),
        (OutputPathError("--json /dev/full: is not a regular file"), 2,
         "pyg-rbp train: --json /dev/full: is not a regular file"),
        (CorruptResultsError("r.json is not valid JSON"), 2,
         "pyg-rbp train: r.json is not valid JSON; fix or delete it, or pass --fresh to replace it"),
        (ResultsFileConflict("r.json holds results of other settings"), 2,
         "pyg-rbp train: r.json holds results of other settings"),
        (DataUnavailableError("no copy of pubmed"), 2, "pyg-rbp train: data unavailable: no copy of pubmed"),
        (ChecksumError("sha mismatch"), 2, "pyg-rbp train: sha mismatch"),
        (UnsafeDataError("pickled code"), 2, "pyg-rbp train: pickled code"),
        (CommandError("pyg-rbp train: worker 1 failed"), 1, "pyg-rbp train: worker 1 failed"),
    ]
    for err, code, message in cases:
        failure = exit_error(err, "train")
        assert isinstance(failure, SystemExit) and failure.code == code and str(failure) == message, err
    assert exit_error(RuntimeError("a bug"), "train") is None  # a bug keeps its traceback
    assert exit_error(ValueError("a bug"), "train") is None
    assert {r.error for r in EXIT_RULES} >= {UsageError, OutputPathError, CorruptResultsError,
                                              ResultsFileConflict, DataUnavailableError}


@pytest.mark.parametrize("error, code, text", [
    (ResultsFileConflict("h.json holds results of other settings"), 2, "other settings"),
    (DataUnavailableError("MNIST is not here"), 2, "data unavailable: MNIST is not here"),
    (CorruptResultsError("h.json is not valid JSON"), 2, "pass --fresh to replace it"),
])
def test_main_applies_the_table_to_every_command(error, code, text, monkeypatch, capsys):
    from pyg_rbp.cli import hyperopt

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(hyperopt, "run_experiment", fail)
    with pytest.raises(SystemExit) as info:
        main(["hyperopt", "--no-progress", "--meta-steps", "1"])
    assert info.value.code == code and str(info.value).startswith("pyg-rbp hyperopt: ")
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_bug_is_not_swallowed(monkeypatch):
    from pyg_rbp.cli import hyperopt

    def fail(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(hyperopt, "run_experiment", fail)
    with pytest.raises(ZeroDivisionError):
        main(["hyperopt", "--no-progress", "--meta-steps", "1"])


def test_deprecated_alias_helper_copies_type_and_dest(capsys):
    p = argparse.ArgumentParser()
    action = p.add_argument("--new-flag", dest="value", type=int, default=3)
    _args.add_deprecated(p, action, "--old-flag")
    assert p.parse_args([]).value == 3
    assert p.parse_args(["--old-flag", "5"]).value == 5
    assert "--old-flag is deprecated, use --new-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        p.parse_args(["--old-flag", "x"])  # the new option's type applies to the alias


def test_a_count_given_as_seeds_keeps_its_meaning_where_it_was_one(capsys):
    """The leaderboard's ``--seeds 10`` (a count on every committed board) stays ten seeds for a
    release, with a notice; everywhere else ``--seeds`` lists seeds."""
    assert resolve_seeds("10", legacy_count=True) == list(range(10))
    assert "use --num-seeds 10" in capsys.readouterr().err
    assert resolve_seeds("10") == [10]  # train: seed 10
    assert resolve_seeds("0-2", legacy_count=True) == [0, 1, 2]  # a list is a list everywhere
    assert resolve_seeds(None, 4) == [0, 1, 2, 3] and resolve_seeds(None) == [0]
    assert capsys.readouterr().err == ""
    with pytest.raises(UsageError):
        resolve_seeds("0", legacy_count=True)


def test_respelled_readme_commands_keep_the_settings_of_their_committed_spelling(capsys):
    """The README's scaling commands now use the one spelling; they mean what they meant."""
    snapshot = json.loads(SNAPSHOT.read_text())
    respelled = {
        "pyg-rbp bench scaling --dataset cora --steps 10,25,50,100,200 --backward-iter 5,10,20,50 "
        "--grads all --rounds 5 --json benchmarks/results/scaling_cora.json":
        "pyg-rbp bench scaling --dataset cora --max-iter 10,25,50,100,200 --backward-iter 5,10,20,50 "
        "--grad all --rounds 5 --json benchmarks/results/scaling_cora.json",
        "pyg-rbp bench scaling --dataset random --nodes 100000 --edges 1000000 --steps 10,20 "
        "--backward-iter 5 --target-steps 20 --target-k 5 --rounds 1 --repeats 3 --no-accuracy "
        "--peers torchdeq --json benchmarks/results/scaling_random100k.json":
        "pyg-rbp bench scaling --dataset random --nodes 100000 --edges 1000000 --max-iter 10,20 "
        "--backward-iter 5 --target-max-iter 20 --target-backward-iter 5 --rounds 1 --repeats 3 "
        "--no-accuracy --peers torchdeq --json benchmarks/results/scaling_random100k.json",
    }
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().replace("\\\n", " ").split())
    renamed = RENAMED_DESTS["bench scaling"]
    for old, new in respelled.items():
        assert new in readme, new
        expected = {renamed.get(k, k): v for k, v in snapshot[old].items()}
        assert json.loads(json.dumps(_parse(argv_of(new)), default=str)) == expected, new
    assert capsys.readouterr().err == ""  # the one spelling prints no notice

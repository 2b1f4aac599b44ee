"""The leaderboard: interrupted and resumed, it loses nothing and repeats nothing; the board says
what ran, what did not and how to reproduce each row."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from pyg_rbp.cli import build_parser
from pyg_rbp.cli import leaderboard as leaderboard_cli
from pyg_rbp.results import ResultsFileConflict
from pyg_rbp.training import leaderboard as lb
from pyg_rbp.training import runner
from pyg_rbp.training.config import build_config
from pyg_rbp.training.leaderboard.aggregate import _mean_curve

TINY = dict(epochs=3, eval_every=1, patience=0, max_iter=5, backward_iter=3, hidden=8)


def _entries():
    return [
        lb.Entry(build_config("karate", "node", model="ppr", grad="neumann", **TINY), [0, 1, 2]),
        lb.Entry(build_config("karate", "node", model="gcn", **TINY), [0, 1, 2]),
    ]


def test_interrupted_run_resumes_without_loss_or_repeats(tmp_path, monkeypatch):
    out = tmp_path / "results"
    calls: list[tuple[str, int]] = []
    real = runner.run_one

    def flaky(cfg, loaded, seed, **kw):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the 4th cell is interrupted mid-way
        calls.append((cfg.model, seed))
        return real(cfg, loaded, seed, **kw)

    monkeypatch.setattr(runner, "run_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        lb.run(_entries(), out, progress=False, log=lambda s: None)
    cells = sorted((out / "cells").rglob("*.json"))
    assert len(cells) == 3  # every finished cell is on disk
    stamps = {p: p.stat().st_mtime_ns for p in cells}

    calls_before = list(calls)
    calls.clear()
    monkeypatch.setattr(runner, "run_one", lambda cfg, loaded, seed, **kw: (calls.append((cfg.model, seed)),
                                                                            real(cfg, loaded, seed, **kw))[1])
    counts = lb.run(_entries(), out, progress=False, log=lambda s: None)
    assert counts == {"run": 3, "skipped": 3, "unavailable": 0}
    assert set(calls).isdisjoint(calls_before)  # nothing repeated
    assert sorted(calls + calls_before) == sorted((m, s) for m in ("ppr", "gcn") for s in (0, 1, 2))
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished cells untouched
    assert lb.run(_entries(), out, progress=False, log=lambda s: None)["run"] == 0

    board = tmp_path / "LEADERBOARD.md"
    rows = lb.render(_entries(), out, board, command="pyg-rbp leaderboard --datasets karate", profile="cpu")
    data = json.loads((out / "leaderboard.json").read_text())
    assert data == json.loads(json.dumps(rows))
    for row in data:
        assert {"dataset", "protocol", "model", "grad", "metric", "test_mean", "test_std", "seeds",
                "command"} <= set(row)
        assert row["seeds"] == [0, 1, 2] and row["status"] == "ok"
        assert 0.0 <= row["test_mean"] <= 1.0 and row["test_std"] >= 0.0
        assert row["command"].startswith("pyg-rbp train --dataset karate --protocol public")
    # the stored mean is the mean of the cells, not a typed-in number
    cell_tests = [json.loads(p.read_text())["result"]["test"] for p in (out / "cells").rglob("*ppr*.json")]
    assert data[0]["test_mean"] == pytest.approx(sum(cell_tests) / 3)
    text = board.read_text()
    assert "| ppr/neumann |" in text and "| gcn |" in text and "--seeds 0,1,2" in text
    assert (tmp_path / "leaderboard.png").is_file()
    # training curves: every cell keeps its validation history; the rows average it over seeds
    for p in (out / "cells").rglob("*.json"):
        history = json.loads(p.read_text())["result"]["history"]
        assert [h["epoch"] for h in history] == [1, 2, 3]
        assert all(0.0 <= h["val"] <= 1.0 and h["train_loss"] > 0 for h in history)
    ppr_cells = [json.loads(p.read_text())["result"] for p in (out / "cells").rglob("*ppr*.json")]
    expected = [sum(c["history"][i]["val"] for c in ppr_cells) / 3 for i in range(3)]
    curve = data[0]["val_curve"]
    assert [c[0] for c in curve] == [1, 2, 3] and [c[2] for c in curve] == [3] * 3
    assert [c[1] for c in data[0]["val_curve"]] == pytest.approx(expected)
    assert (tmp_path / "leaderboard_curves.png").is_file() and "leaderboard_curves.png" in text


def test_unavailable_dataset_rows_are_kept_with_their_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PYG_RBP_SHARED", str(tmp_path / "no-mirror"))
    monkeypatch.delenv("PYG_RBP_DOWNLOAD", raising=False)
    entries = lb.plan(["pubmed", "ogbn-arxiv"], seeds=2, profile="cpu")
    counts = lb.run(entries, tmp_path / "res", root=tmp_path / "empty", progress=False, log=lambda s: None)
    assert counts["run"] == 0 and counts["unavailable"] > 0
    rows = lb.render(entries, tmp_path / "res", tmp_path / "LB.md", command="x", profile="cpu",
                     root=tmp_path / "empty")
    assert {r["dataset"] for r in rows} == {"pubmed", "ogbn-arxiv"}
    assert all(r["status"] == lb.UNAVAILABLE and r["test_mean"] is None for r in rows)
    assert {r["metric"] for r in rows} == {"acc"}
    arxiv = "pyg-rbp train --dataset ogbn-arxiv --protocol official"
    assert any(r["command"].startswith(arxiv) for r in rows)
    assert "not run: data unavailable offline" in (tmp_path / "LB.md").read_text()


def test_plan_covers_the_issue_matrix():
    entries = lb.plan(["cora", "ogbg-molbace"], seeds=10, profile="full")
    keys = {(e.config.protocol, e.config.model, e.config.grad) for e in entries}
    assert {("paper", "gated", g) for g in ("bptt", "tbptt", "rbp", "cg", "neumann")} <= keys
    assert {("paper", "linear-pca", None), ("public", "ppr", "neumann"), ("public", "gcn", None),
            ("official", "gin", None), ("official", "gated", "neumann")} <= keys
    assert all(e.seeds == list(range(10)) for e in entries)
    paper = [e for e in entries if e.config.protocol == "paper" and e.config.grad]
    assert all(e.config.epochs == 2000 for e in paper)
    cpu = lb.plan(["cora"], seeds=10, profile="cpu")
    paper_cpu = [e for e in cpu if e.config.protocol == "paper" and e.config.grad]
    # the cpu profile keeps the paper protocol whole: its steps and every seed (the issue's target)
    assert len(paper_cpu) == 5
    assert all(e.config.epochs == 2000 and e.seeds == list(range(10)) and not e.note for e in paper_cpu)
    assert {e.key for e in paper_cpu} == {e.key for e in paper}  # same cells as the full profile
    secondary = [e for e in cpu if e.config.protocol == "public" and e.config.grad == "bptt"]
    assert secondary[0].seeds == [0, 1, 2] and "3 of 10 seeds" in secondary[0].note
    with pytest.raises(ValueError, match="profile"):
        lb.plan(["cora"], profile="huge")
    with pytest.raises(ValueError, match="unknown protocol.*'offical'.*valid: paper, public, official"):
        lb.plan(["cora"], protocols=["offical"])
    with pytest.raises(ValueError, match="no leaderboard row for datasets ogbg-molbace under protocol"):
        lb.plan(["ogbg-molbace"], protocols=["paper"])


def test_paper_claim_verdict_is_computed_or_says_what_is_missing():
    def row(grad, test):
        return {"dataset": "cora", "protocol": "paper", "model": "gated", "grad": grad, "metric": "acc",
                "test_mean": test, "test_std": 0.0, "val_mean": test, "status": "ok",
                "seeds": [0], "epochs": 2000, "note": ""}

    both = lb.target_checks([row("neumann", 0.43), row("bptt", 0.39)])
    assert any("**holds** here: Neumann 43.00% vs BPTT 39.00%" in line for line in both)
    worse = lb.target_checks([row("neumann", 0.38), row("bptt", 0.39)])
    assert any("**does not hold**" in line for line in worse)
    missing = lb.target_checks([row("neumann", 0.43), row("bptt", None)])
    assert any("**not checked yet**: no finished BPTT run" in line for line in missing)


def test_paper_claim_reports_the_paired_difference_over_shared_seeds():
    def row(grad, tests):
        vals = list(tests.values())
        return {"dataset": "cora", "protocol": "paper", "model": "gated", "grad": grad, "metric": "acc",
                "test_mean": sum(vals) / len(vals), "test_std": 0.0, "val_mean": 0.5, "status": "ok",
                "seeds": sorted(int(s) for s in tests), "epochs": 2000, "note": "",
                "test_by_seed": tests}

    # seeds 0-2 in both rows; seed 3 only in Neumann's and left out of the pairs
    nm = row("neumann", {"0": 0.43, "1": 0.40, "2": 0.45, "3": 0.10})
    bp = row("bptt", {"0": 0.39, "1": 0.41, "2": 0.42})
    line = next(x for x in lb.target_checks([nm, bp]) if "Paper claim" in x)
    # the verdict compares the shared seeds, not Neumann's 4 seeds with BPTT's 3
    assert "**holds** here: Neumann 42.67% vs BPTT 40.67% test (mean over the 3 seed(s) both finished" in line
    # differences +4, -1, +3 points: mean 2.00, sample std 2.65, standard error 1.53, t(0.975, 2) = 4.303
    assert "Paired by seed (3 seeds): Neumann − BPTT = +2.00 ± 2.65 points" in line
    assert "95 % interval of the mean -4.57 to +8.57 (includes zero)" in line
    assert "Neumann >= BPTT on 2 of 3 seeds" in line
    # +10 and +11 points: half-width t(0.975, 1) = 12.706 times 0.5
    clear = lb.target_checks([row("neumann", {"0": 0.50, "1": 0.51}), row("bptt", {"0": 0.40, "1": 0.40})])
    assert any("interval of the mean +4.15 to +16.85 (excludes zero: Neumann ahead)" in x for x in clear)
    one = lb.target_checks([row("neumann", {"0": 0.5}), row("bptt", {"0": 0.4})])
    assert not any("Paired by seed" in x for x in one)  # one pair is no spread


def test_parallel_workers_write_the_same_cells_as_one_process(tmp_path):
    import os

    import torch

    entries = [lb.Entry(build_config("karate", "node", model="ppr", grad="neumann", **TINY), [0, 1]),
               lb.Entry(build_config("karate", "node", model="gcn", **TINY), [0, 1])]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' single-threaded kernels, for identical numbers
    try:
        serial = lb.run(entries, tmp_path / "serial", progress=False, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    done: list[int] = []
    parallel = lb.run(entries, tmp_path / "parallel", progress=False, log=lambda s: None, jobs=2, threads=1,
                      on_cell=lambda: done.append(1))
    assert serial == parallel == {"run": 4, "skipped": 0, "unavailable": 0} and len(done) == 4

    def cells(folder):
        return {p.name: json.loads(p.read_text()) for p in (tmp_path / folder / "cells").rglob("*.json")}

    a, b = cells("serial"), cells("parallel")
    assert sorted(a) == sorted(b) and len(a) == 4
    for name in a:  # same seeds, same single-threaded kernels: the same numbers
        assert a[name]["result"]["test"] == b[name]["result"]["test"]
        assert a[name]["result"]["val"] == b[name]["result"]["val"]
    # ... trained in worker processes, which the cells record
    assert {c["pid"] for c in a.values()} == {os.getpid()} and {c["jobs"] for c in a.values()} == {1}
    assert os.getpid() not in {c["pid"] for c in b.values()} and {c["jobs"] for c in b.values()} == {2}
    assert lb.run(entries, tmp_path / "parallel", progress=False, log=lambda s: None, jobs=2)["run"] == 0
    with pytest.raises(ValueError, match="jobs"):
        lb.run(entries, tmp_path / "x", jobs=0)


def test_a_failing_cell_in_a_worker_stops_the_parallel_run_with_its_error(tmp_path):
    import multiprocessing

    bad = build_config("karate", "node", model="ppr", grad="neumann", **TINY)
    bad.model = "not-a-model"  # passes planning, fails in the worker
    entries = [lb.Entry(bad, [0]), lb.Entry(build_config("karate", "node", model="gcn", **TINY), [1])]
    with pytest.raises(lb.CellFailed, match="karate/public/not-a-model/neumann/s0: ValueError") as info:
        lb.run(entries, tmp_path, progress=False, log=lambda s: None, jobs=2, threads=1)
    assert isinstance(info.value.__cause__, ValueError)
    assert not multiprocessing.active_children()  # no worker left behind
    # the healthy cell started beside the failing one finished and was saved
    assert [p.name for p in (tmp_path / "cells").rglob("*.json")] == [entries[1].cell_path(tmp_path, 1).name]


@pytest.mark.parametrize("jobs", [1, 2])
def test_keep_going_runs_the_other_cells_and_lists_the_failures(tmp_path, jobs):
    bad = build_config("karate", "node", model="ppr", grad="neumann", **TINY)
    bad.model = "not-a-model"
    good = build_config("karate", "node", model="gcn", **TINY)
    entries = [lb.Entry(bad, [0, 1]), lb.Entry(good, [0, 1, 2])]
    logged: list[str] = []
    with pytest.raises(lb.CellFailed) as info:
        lb.run(entries, tmp_path, progress=False, log=logged.append, jobs=jobs, threads=1, keep_going=True)
    assert sorted(info.value.failures) == ["karate/public/not-a-model/neumann/s0",
                                           "karate/public/not-a-model/neumann/s1"]
    assert sum("failed: ValueError" in line for line in logged) == 2
    assert len(list((tmp_path / "cells").rglob("*.json"))) == 3  # every good cell ran
    # without keep_going the first failure stops the run (one worker: nothing else starts)
    with pytest.raises(lb.CellFailed) as info:
        lb.run(entries, tmp_path / "stop", progress=False, log=lambda s: None)
    assert len(info.value.failures) == 1


def test_parallel_run_skips_a_cell_another_run_finished_meanwhile(tmp_path):
    entries = [lb.Entry(build_config("karate", "node", model="gcn", **TINY), [0, 1, 2, 3])]
    other = entries[0].cell_path(tmp_path / "cells", 3)

    def another_run_finishes_seed_3():  # called after the first finished cell, before seed 3 starts
        if not other.is_file():
            other.write_text(json.dumps({"result": {"test": 0.5}}))

    counts = lb.run(entries, tmp_path, progress=False, log=lambda s: None, jobs=2, threads=1,
                    on_cell=another_run_finishes_seed_3)
    assert counts == {"run": 3, "skipped": 1, "unavailable": 0}
    assert json.loads(other.read_text()) == {"result": {"test": 0.5}}


def test_a_cell_another_run_finished_meanwhile_is_skipped_not_repeated(tmp_path, monkeypatch):
    entries = _entries()
    real = runner.run_one
    calls: list[tuple[str, int]] = []
    other = entries[0].cell_path(tmp_path / "cells", 2)  # ppr seed 2, the last in the order

    def sharing(cfg, loaded, seed, **kw):
        calls.append((cfg.model, seed))
        if len(calls) == 1:  # while the first cell trains, another run finishes ppr seed 2
            other.parent.mkdir(parents=True, exist_ok=True)
            other.write_text(json.dumps({"result": {"test": 0.5}}))
        return real(cfg, loaded, seed, **kw)

    monkeypatch.setattr(runner, "run_one", sharing)
    counts = lb.run(entries, tmp_path, progress=False, log=lambda s: None)
    assert counts == {"run": 5, "skipped": 1, "unavailable": 0}
    assert ("ppr", 2) not in calls and len(calls) == 5
    assert json.loads(other.read_text()) == {"result": {"test": 0.5}}  # left as the other run wrote it


def test_paper_groups_get_a_per_seed_table():
    def row(grad, model, tests):
        return {"dataset": "cora", "protocol": "paper", "model": model, "grad": grad, "metric": "acc",
                "test_mean": 0.4, "test_std": 0.0, "val_mean": 0.4, "val_std": 0.0, "status": "ok",
                "seeds": [int(s) for s in tests], "seeds_planned": list(range(10)), "epochs": 2000,
                "epochs_run_mean": 2000, "epoch_time_s": 0.2, "saved_bytes": 1, "cuda_peak_bytes": None,
                "note": "", "command": "c", "test_by_seed": tests}

    rows = [row("neumann", "gated", {"0": 0.431, "1": 0.45}), row(None, "linear-pca", {"0": 0.41, "2": 0.5})]
    md = lb.render_markdown(rows, command="x", env={}, profile="cpu")
    assert "| model/grad | seed 0 | seed 1 | seed 2 |" in md
    assert "| gated/neumann | 43.10 | 45.00 | - |" in md
    assert "| linear-pca | 41.00 | - | 50.00 |" in md


def test_mean_curve_is_averaged_per_epoch_and_thinned():
    results = [{"history": [{"epoch": e, "val": e / 1000} for e in range(1, 501)]},
               {"history": [{"epoch": e, "val": 3 * e / 1000} for e in range(1, 501)]}, {"history": None}]
    curve = _mean_curve(results, points=50)
    assert len(curve) <= 51 and curve[0][0] == 1 and curve[-1][0] == 500  # first and last kept
    assert all(c[1] == pytest.approx(2 * c[0] / 1000) and c[2] == 2 for c in curve)
    assert _mean_curve([{"test": 0.5}]) == []  # cells from before histories were recorded


def test_a_diverged_seed_is_counted_and_marked_on_the_board(tmp_path):
    cfg = build_config("cora", "node", protocol="paper", model="gated", grad="bptt")
    bptt, neumann = lb.Entry(cfg, [0, 1]), lb.Entry(
        build_config("cora", "node", protocol="paper", model="gated", grad="neumann"), [0, 1])
    cells = [(bptt, 0, 0.40), (bptt, 1, 0.15), (neumann, 0, 0.45), (neumann, 1, 0.44)]
    for e, seed, test in cells:
        diverged = {"epoch": 2, "error": "the gradient of w became NaN/inf at step 2"} if test < 0.2 else None
        path = e.cell_path(tmp_path / "cells", seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"result": {
            "seed": seed, "metric": "acc", "test": test, "val": test, "epochs_run": 2 if diverged else 2000,
            "device": "cpu", "history": [], "diverged": diverged, "epoch_time_s": 0.1 + 0.3 * seed}}))
    rows = lb.rows([bptt, neumann], tmp_path, availability={"cora": True})
    assert rows[0]["epoch_time_s"] == pytest.approx(0.25)  # the median of two seeds is their mean
    assert rows[0]["diverged"] == {"1": 2} and rows[1]["diverged"] == {}
    assert rows[0]["status"] == "ok; diverged: seed 1 at step 2" and rows[1]["status"] == "ok"
    assert rows[0]["test_mean"] == pytest.approx(0.275)  # the diverged seed counts
    md = lb.render_markdown(rows, command="x", env={}, profile="cpu")
    assert "| gated/bptt | 40.00 | 15.00† |" in md and "| gated/neumann | 45.00 | 44.00 |" in md
    assert "† the run diverged" in md
    assert "| 2/2 | 1001 / 2000 (mean; 1 stopped at divergence) |" in md
    assert "| 2/2 | 2000 / 2000 | 0.250 |" in md
    claim = next(x for x in lb.target_checks(rows) if "Paper claim" in x)
    assert "Diverged and counted with the best model before it: gated/bptt on seed(s) 1." in claim
    assert "Without those seeds (1 left): gated/neumann 45.00% vs gated/bptt 40.00%." in claim
    # no shared seed: the row means are compared and the diverged seed is still named
    rows[1]["test_by_seed"] = {"5": 0.45}
    claim = next(x for x in lb.target_checks(rows) if "Paper claim" in x)
    assert "none shared" in claim and "gated/bptt on seed(s) 1." in claim and "Without" not in claim


REPO = Path(__file__).resolve().parents[2]
COMMITTED_BOARDS = [("benchmarks/LEADERBOARD.md", "benchmarks/results"),
                    ("benchmarks/results/scale/LEADERBOARD.md", "benchmarks/results/scale")]


def _board_entries(board: Path) -> list[lb.Entry]:
    """The rows the committed board's own command plans (the command line it records)."""
    line = next(x for x in board.read_text().splitlines() if x.startswith("- board command:"))
    command = shlex.split(line.split("`")[1])
    assert command[:2] == ["pyg-rbp", "leaderboard"], line
    args = build_parser().parse_args(command[1:])
    protocols = [p.strip() for p in args.protocols.split(",")] if args.protocols else None
    return lb.plan(args.datasets.split(","), seeds=leaderboard_cli.num_seeds(args), profile=args.profile,
                   protocols=protocols)


def _history_entries() -> list[lb.Entry]:
    """The mini-batch cells benchmarks/history_vs_full.py keeps beside the scale board's (every
    batch size and learning rate it has run)."""
    return [lb.Entry(build_config(name, "node", protocol="per-class", model="ppr", grad="neumann",
                                  loader="history", batch_size=bs, **over), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
            for name, sizes, overs in (("amazon-computers", (2048, 3072), ({}, {"lr": 0.005})),
                                       ("coauthor-cs", (2048,), ({},)))
            for bs in sizes for over in overs]


def test_every_committed_cell_is_found_by_the_committed_boards_plans():
    """Cell names (the SHA-1 of each row's command) are a contract with the committed results:
    planning the committed boards' commands finds every committed cell file as finished."""
    found = 0
    for board, results in COMMITTED_BOARDS:
        entries = _board_entries(REPO / board)
        if results.endswith("scale"):
            entries += _history_entries()
        store = lb.CellStore(REPO / results)
        planned = {store.path(e, s): (e, s) for e in entries for s in e.seeds}
        committed = sorted((REPO / results / "cells").rglob("*.json"))
        assert committed, f"no committed cell under {results}"
        unplanned = [str(p.relative_to(REPO)) for p in committed if p not in planned]
        assert unplanned == [], f"committed cells no plan finds: {unplanned}"
        for path in committed:
            entry, seed = planned[path]
            assert store.done(entry, seed)  # read, and its command and seed checked against the name
            assert store.read(entry, seed)["command"] == entry.config.command()
        found += len(committed)
    assert found >= 400  # 384 main board cells and 24 scale ones when this test was written


def test_a_cell_file_of_other_settings_is_refused_unless_fresh(tmp_path, monkeypatch):
    entry = lb.Entry(build_config("karate", "node", model="gcn", **TINY), [0, 1])
    other = lb.Entry(build_config("karate", "node", model="gcn", **{**TINY, "epochs": 4}), [0])
    path = entry.cell_path(tmp_path / "cells", 0)
    path.parent.mkdir(parents=True)
    # a file under seed 0's name that records another row's command (a copied or hand-edited file)
    path.write_text(json.dumps({"command": other.config.command(), "seed": 0, "result": {"test": 0.1}}))
    trained: list[int] = []
    monkeypatch.setattr(runner, "run_one", lambda cfg, loaded, seed, **kw: (trained.append(seed), {
        "seed": seed, "metric": "acc", "val": 0.5, "test": 0.5, "epochs_run": 3})[1])
    with pytest.raises(ResultsFileConflict, match=r"seed0\.json holds results of other settings "
                                                  r"\(they differ in: command\); pass --fresh"):
        lb.run([entry], tmp_path, progress=False, log=lambda s: None)
    assert trained == []  # refused before any training
    with pytest.raises(ResultsFileConflict):
        lb.rows([entry], tmp_path, availability={"karate": True})
    # a file naming the wrong seed is refused the same way
    path.write_text(json.dumps({"command": entry.config.command(), "seed": 1, "result": {"test": 0.1}}))
    with pytest.raises(ResultsFileConflict, match="differ in: seed"):
        lb.run([entry], tmp_path, progress=False, log=lambda s: None)
    # --fresh trains every planned cell again and replaces its file; other cells stay
    keep = other.cell_path(tmp_path / "cells", 0)
    keep.write_text(json.dumps({"command": other.config.command(), "seed": 0, "result": {"test": 0.2}}))
    counts = lb.run([entry], tmp_path, progress=False, log=lambda s: None, fresh=True)
    assert counts == {"run": 2, "skipped": 0, "unavailable": 0} and sorted(trained) == [0, 1]
    doc = json.loads(path.read_text())
    assert doc["command"] == entry.config.command() and doc["seed"] == 0 and doc["result"]["test"] == 0.5
    assert json.loads(keep.read_text())["result"]["test"] == 0.2
    assert lb.run([entry], tmp_path, progress=False, log=lambda s: None)["skipped"] == 2


def test_targets_are_a_table_judged_by_one_function():
    """The thresholds live in the table (no number in the verdict code): changing a row of the
    table changes the verdict."""
    cora = next(t for t in lb.TARGETS if t.dataset == "cora" and t.comparison == "threshold")
    assert cora.bar == 0.83 and cora.metric == "acc" and cora.why
    assert {t.comparison for t in lb.TARGETS} <= set(lb.COMPARISONS)

    def row(model, grad, test, val):
        return {"dataset": "cora", "protocol": "public", "model": model, "grad": grad, "metric": "acc",
                "test_mean": test, "test_std": 0.01, "val_mean": val, "seeds": [0, 1], "status": "ok"}

    rows = [row("ppr", "neumann", 0.835, 0.80), row("ppr", "bptt", 0.84, 0.79), row("gcn", None, 0.9, 0.9)]
    (verdict,) = lb.judge(cora, rows)
    assert verdict.candidate is rows[0] and verdict.ok is True and verdict.value == 0.835  # chosen by val
    line = next(x for x in lb.target_checks(rows) if "Public split cora" in x)
    assert line.startswith("- Public split cora, target >= 83.0%: best fixed-point row by validation "
                           "(ppr/neumann) reaches 83.50 ± 1.00% test over 2 seed(s): **met**")
    assert "(highest test among fixed-point rows: ppr/bptt 84.00%)" in line
    stricter = dataclasses.replace(cora, bar=0.85)
    (missed,) = lb.judge(stricter, rows)
    assert missed.ok is False and missed.bar == 0.85
    # a lower-is-better metric reverses the comparison
    assert lb.meets(0.9, 1.0, "rmse") and not lb.meets(1.1, 1.0, "rmse") and lb.meets(0.9, 0.8, "acc")

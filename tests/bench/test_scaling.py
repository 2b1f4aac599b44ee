"""`pyg-rbp bench scaling` on tiny graphs: valid JSON with every mode, values that make sense.

Timings here are only checked for being positive and finite: speed targets live in the
benchmark's printed ratios, never in tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pyg_rbp.bench.floor import bare_gated_step, neumann_floor
from pyg_rbp.bench.graphs import load_bench_graph, random_graph
from pyg_rbp.bench.scaling import (
    ScalingConfig,
    ScalingRun,
    cell_key,
    grid_cells,
    markdown_report,
    upgrade,
    verdicts,
)
from pyg_rbp.bench.scaling import run as scaling_run
from pyg_rbp.cli import main
from pyg_rbp.engine import GRAD_MODES
from pyg_rbp.nn import GatedCell
from pyg_rbp.results import ResultsFileConflict

try:
    import torchdeq  # noqa: F401

    HAVE_TORCHDEQ = True
except ImportError:  # pragma: no cover - depends on the bench extra
    HAVE_TORCHDEQ = False

PEERS = "pyg_gatedgraphconv,torchdeq" if HAVE_TORCHDEQ else "pyg_gatedgraphconv"
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

TINY = ["bench", "scaling", "--dataset", "random", "--nodes", "40", "--edges", "160",
        "--hidden", "8", "--classes", "3", "--max-iter", "3,6", "--backward-iter", "2",
        "--grad", "all", "--peers", PEERS, "--repeats", "1", "--warmup", "0", "--rounds", "1",
        "--target-max-iter", "6", "--target-backward-iter", "2", "--reference-iters", "60",
        "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "scaling_tiny.json"
    assert main([*TINY, "--json", str(out)]) == 0
    return out, json.loads(out.read_text())


def test_json_has_every_mode_and_size(tiny_run):
    path, result = tiny_run
    rows = [r for r in result["results"] if not r["tol"]]
    names = set(PEERS.split(","))
    for grad in [*GRAD_MODES, *names]:
        got = sorted(r["max_iter"] for r in rows if r["contender"] == grad)
        assert got == [3, 6], (grad, got)
    for r in rows:
        assert set(r) >= {"contender", "max_iter", "backward_iter", "saved_bytes", "step_time_s", "device"}
        assert not set(r) & {"grad", "steps"}  # one name per concept
        assert r["device"] == "cpu"
        assert r["saved_bytes"] > 0
        assert math.isfinite(r["step_time_s"]) and r["step_time_s"] > 0
        assert "error" not in r
        if r["contender"] in ("bptt", "pyg_gatedgraphconv"):
            assert r["backward_iter"] is None
        else:
            assert r["backward_iter"] == 2
    assert result["complete"] is True
    assert result["graph"]["num_nodes"] == 40
    assert path.with_suffix(".md").read_text().startswith("# Scaling benchmark")
    assert path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_memory_grows_with_t_only_for_unrolled_modes(tiny_run):
    _, result = tiny_run
    mem = {(r["contender"], r["max_iter"]): r["saved_bytes"] for r in result["results"] if not r["tol"]}
    for grad in ("bptt", "pyg_gatedgraphconv"):
        assert mem[(grad, 6)] > 1.5 * mem[(grad, 3)]
    for grad in ("rbp", "cg", "neumann", "tbptt", *(["torchdeq"] if HAVE_TORCHDEQ else [])):
        assert mem[(grad, 6)] == mem[(grad, 3)], grad
    # One recorded step against six: the implicit modes keep far less than BPTT.
    assert mem[("neumann", 6)] < 0.5 * mem[("bptt", 6)]


def test_targets_floor_and_accuracy_are_reported(tiny_run):
    _, result = tiny_run
    targets = result["targets"]
    assert set(targets["step_time_s"]) >= {"bptt", "tbptt", "neumann", "floor"}
    assert all(v > 0 for v in targets["step_time_s"].values())
    verdicts = {v["target"].split(" (")[0]: v for v in targets["verdicts"]}
    drift = verdicts["neumann memory drift, T=6 vs T=3"]
    assert drift["value"] == 0.0 and drift["pass"] is True
    floors = result["floors"]
    assert {(f["max_iter"], f["backward_iter"]) for f in floors} == {(3, 2), (6, 2)}
    for f in floors:
        assert f["floor_s"] == pytest.approx(f["forward_s"] + f["vjp_s"])
    neumann = [r for r in result["results"] if r["contender"] == "neumann" and not r["tol"]]
    assert all(r["floor_ratio"] > 0 for r in neumann)
    acc = result["accuracy"]
    # The two long reference solves (CG and Neumann) agree, so the reference is trustworthy.
    assert acc["reference"]["neumann_same_budget_cosine"] > 0.999
    for row in acc["rows"]:
        assert row["cosine"] is not None and -1 <= row["cosine"] <= 1 + 1e-9
    tol_rows = [r for r in acc["rows"] if r["tol"]]
    assert len(tol_rows) == 1 and 1 <= tol_rows[0]["forward_iters"] <= 6


def test_rerun_resumes_instead_of_remeasuring(tiny_run, tmp_path):
    path, result = tiny_run
    copy = tmp_path / "resume.json"
    copy.write_text(path.read_text())
    assert main([*TINY, "--json", str(copy), "--redo", "targets"]) == 0
    again = json.loads(copy.read_text())
    before = {(r["contender"], r["max_iter"], r["backward_iter"]): r["step_time_s"]
              for r in result["results"]}
    after = {(r["contender"], r["max_iter"], r["backward_iter"]): r["step_time_s"]
             for r in again["results"]}
    assert after == before  # the grid was reused ...
    assert again["accuracy"] == result["accuracy"]
    # ... and only the target pass was measured again.
    assert again["targets"]["step_time_rounds_s"] != result["targets"]["step_time_rounds_s"]


def test_resume_refuses_targets_and_accuracy_of_other_settings_unless_redone(tiny_run, tmp_path):
    path, result = tiny_run
    copy = tmp_path / "other.json"
    copy.write_text(path.read_text())
    other = ScalingConfig(**{**result["config"], "target_max_iter": 3, "reference_iters": 30})
    # measured with T=6 and 60 iterations: refused, not silently measured again
    with pytest.raises(ResultsFileConflict, match="saved targets were measured with other settings"):
        ScalingRun(other, copy, progress=False, log=lambda _: None)
    with pytest.raises(ResultsFileConflict, match="saved accuracy were measured with other settings"):
        ScalingRun(other, copy, progress=False, log=lambda _: None, redo=["targets"])
    run = ScalingRun(other, copy, progress=False, log=lambda _: None, redo=["targets", "accuracy"])
    assert run.targets is None and run.accuracy is None
    assert len(run.rows) == len(result["results"])  # the grid does not depend on them
    same = ScalingRun(ScalingConfig(**result["config"]), copy, progress=False, log=lambda _: None)
    assert same.targets == result["targets"] and same.accuracy == result["accuracy"]
    # fewer contenders than were measured: their numbers are all there, nothing is redone
    fewer = ScalingRun(ScalingConfig(**{**result["config"], "grads": ["neumann", "bptt"]}), copy,
                       progress=False, log=lambda _: None)
    assert fewer.targets == result["targets"] and fewer.accuracy == result["accuracy"]
    assert fewer.store.settings["grads"] == result["config"]["grads"]  # the file still holds all


def test_resume_refuses_a_file_of_other_settings_unless_fresh(tiny_run, tmp_path):
    path, result = tiny_run
    copy = tmp_path / "other.json"
    copy.write_text(path.read_text())
    other = ScalingConfig(**{**result["config"], "hidden": 16})
    with pytest.raises(ResultsFileConflict, match="hidden"):
        ScalingRun(other, copy, progress=False, log=lambda _: None)
    fresh = ScalingRun(other, copy, progress=False, log=lambda _: None, fresh=True)
    assert fresh.rows == {} and fresh.targets is None and fresh.accuracy is None
    copy.write_text(json.dumps({"config": result["config"], "schema": "something/else"}))
    with pytest.raises(ResultsFileConflict, match="not a bench scaling result"):
        ScalingRun(ScalingConfig(**result["config"]), copy, progress=False, log=lambda _: None)
    with pytest.raises(SystemExit, match="hidden"):  # the command line says the same
        copy.write_text(path.read_text())
        main([*TINY, "--json", str(copy), "--hidden", "16"])


@pytest.mark.parametrize("name", ["scaling_cora", "scaling_random100k"])
def test_committed_results_resume_without_measuring_and_render_identically(name, tmp_path, monkeypatch,
                                                                           real_data):
    if name == "scaling_cora":
        real_data("cora")  # the graph is loaded (not trained on); skipped without it, as every data test
    committed = RESULTS / f"{name}.json"
    doc = json.loads(committed.read_text())
    assert markdown_report(doc) == committed.with_suffix(".md").read_text()
    # the committed files say steps / target_steps / target_k and a row's grad: read as today's names
    up = upgrade(doc)
    assert "steps" in doc["config"] and "grad" in doc["results"][0]
    assert up["config"]["max_iter"] == doc["config"]["steps"]
    assert (up["config"]["target_max_iter"], up["config"]["target_backward_iter"]) == (
        doc["config"]["target_steps"], doc["config"]["target_k"])
    assert [(r["contender"], r["max_iter"]) for r in up["results"]] == [
        (r["grad"], r["steps"]) for r in doc["results"]]
    assert upgrade(up) == up and markdown_report(up) == markdown_report(doc)
    copy = tmp_path / committed.name
    copy.write_text(committed.read_text())

    def no_measuring(*args, **kwargs):
        raise AssertionError("a committed result was measured again")

    for fn in ("measure_cell", "measure_floor", "target_pass", "accuracy_study"):
        monkeypatch.setattr(scaling_run, fn, no_measuring)
    run = ScalingRun(ScalingConfig(**up["config"]), copy, progress=False, log=lambda _: None)
    assert {k: run.rows[k] for k in sorted(run.rows)} == {
        cell_key(r["contender"], r["max_iter"], r["backward_iter"], r.get("tol") or 0.0): r
        for r in sorted(up["results"], key=lambda r: cell_key(r["contender"], r["max_iter"],
                                                             r["backward_iter"], r.get("tol") or 0.0))}
    assert run.targets == up["targets"] and run.accuracy == up["accuracy"]
    # the verdicts, judged again from the table of targets, are the committed ones
    assert verdicts(doc["targets"], doc["accuracy"]) == doc["targets"]["verdicts"]
    assert verdicts(up["targets"], up["accuracy"]) == doc["targets"]["verdicts"]
    saved = run.run()  # loads the graph, measures nothing, judges and writes
    assert saved["complete"] and saved["graph"] == doc["graph"]
    assert saved["results"] == up["results"] and saved["floors"] == up["floors"]
    assert markdown_report({**saved, "machine_load": doc["machine_load"]}) == markdown_report(doc)
    written = json.loads(copy.read_text())
    assert written["results"] == up["results"] and "steps" not in written["config"]


def test_grid_cells_measure_k_independent_rows_once():
    cfg = ScalingConfig(max_iter=[10, 20], backward_iters=[1, 2, 3], grads=["bptt", "neumann"],
                        peers=["pyg_gatedgraphconv"])
    cells = grid_cells(cfg)
    assert [c for c in cells if c[0] == "bptt"] == [("bptt", 10, None), ("bptt", 20, None)]
    assert len([c for c in cells if c[0] == "neumann"]) == 6
    assert len([c for c in cells if c[0] == "pyg_gatedgraphconv"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--max-iter", "0,5"], "positive integers"),
    (["--max-iter", "a"], "comma-separated integers"),
    (["--grad", "bptt,adam"], "unknown gradient mode"),
    (["--peers", "jax"], "unknown peers"),
    (["--redo", "everything", "--dataset", "random", "--nodes", "5", "--edges", "5",
      "--peers", "pyg_gatedgraphconv"], "unknown parts to redo"),
])
def test_bad_arguments_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "scaling", *argv])
    # argparse prints its errors; our own checks exit with the message
    assert message in capsys.readouterr().err + str(exc.value.code)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="aggr"):
        ScalingRun(ScalingConfig(aggr="max"), None)
    with pytest.raises(ValueError, match="unknown benchmark dataset"):
        load_bench_graph("imagenet")


def test_random_graph_is_seeded_and_clean():
    a = random_graph(50, 300, num_features=4, num_classes=3, seed=1)
    b = random_graph(50, 300, num_features=4, num_classes=3, seed=1)
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.x, b.x)
    assert not bool((a.edge_index[0] == a.edge_index[1]).any())
    keys = a.edge_index[0] * 50 + a.edge_index[1]
    assert keys.unique().numel() == a.num_edges <= 300
    assert a.x.shape == (50, 4) and int(a.y.max()) < 3 and a.train_mask.sum() == 5
    with pytest.raises(ValueError, match="num_edges"):
        random_graph(10, 0)


def test_bare_step_matches_the_gated_cell():
    """The floor times the same arithmetic as the layer: same weights give the same step."""
    g = random_graph(30, 120, num_features=6, seed=3)
    for aggr in ("add", "mean"):
        step, h0 = bare_gated_step(30, g.edge_index, 6, dtype=torch.float64, aggr=aggr)
        cell = GatedCell(6, aggr=aggr, inject_input=False).double()  # the paper's cell
        cell.gru.load_state_dict(step.gru.state_dict())
        expected = cell(h0, h0, g.edge_index)
        torch.testing.assert_close(step(h0), expected)


def test_floor_reports_both_parts():
    g = random_graph(30, 120, num_features=6, seed=3)
    out = neumann_floor(30, g.edge_index, 6, steps=4, backward_iter=3, repeats=1, warmup=0)
    assert out["forward_s"] > 0 and out["vjp_s"] > 0
    assert out["floor_s"] == pytest.approx(out["forward_s"] + out["vjp_s"])

"""The committed results of hyperopt, ``bench solvers`` and ``bench graph-size`` resume through
:class:`pyg_rbp.results.ResumableResults` without measuring anything again, render as they were
committed, and a file of other settings is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pyg_rbp.results import ResultsFileConflict, ResumableResults

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _refuse(*args, **kwargs):
    raise AssertionError("a finished unit of a committed result was measured again")


def _copy(name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    shutil.copy(RESULTS / name, path)
    return path


@pytest.mark.parametrize("name", ["hyperopt_gcn_cora", "hyperopt_mlp_digits", "hyperopt_mlp_mnist"])
def test_committed_hyperopt_results_resume_and_render_unchanged(name, tmp_path, monkeypatch, real_data):
    needs = {"hyperopt_gcn_cora": "cora", "hyperopt_mlp_mnist": "mnist"}.get(name)
    if needs:
        real_data(needs)  # the data is loaded (nothing is trained); skipped without it
    from pyg_rbp.tasks.hyperopt import experiment
    from pyg_rbp.tasks.hyperopt.report import render_markdown, upgrade

    committed = json.loads((RESULTS / f"{name}.json").read_text())
    assert render_markdown(committed) == (RESULTS / f"{name}.md").read_text()  # the old keys read
    for fn in ("meta_train", "hypergradient", "memory_scaling", "evaluate_hyperparameters",
               "last_step_spectral_radius"):
        monkeypatch.setattr(experiment, fn, _refuse)
    path = _copy(f"{name}.json", tmp_path)
    cfg = upgrade(committed)["config"]
    config = experiment.ExperimentConfig(**cfg)
    mem = committed.get("memory_scaling") or {}
    sweep = committed.get("cosine_vs_truncation") or {}
    doc = experiment.run_experiment(config, json_path=path, md_path=tmp_path / "h.md",
                                    memory_steps=mem.get("inner_steps", ()),
                                    cosine_sweep=sweep.get("truncations", ()),
                                    progress=False, log=lambda s: None)
    assert doc["results"] == committed["results"]
    assert doc["initial"] == committed["initial"] and doc["reference"] == committed["reference"]
    assert doc["config_key"] == config.key() and doc["config"]["max_iter"] == cfg["max_iter"]
    assert doc["cosine_vs_backward_iter"]["rows"] == [
        {("backward_iter" if k == "truncation" else k): v for k, v in r.items()} for r in sweep["rows"]]
    written = json.loads(path.read_text())
    assert "cosine_vs_truncation" not in written and written["results"] == committed["results"]
    # the rendered report is the committed one but for the machine line (this run's environment)
    skip = ("Inner steps",)
    mine = [x for x in (tmp_path / "h.md").read_text().splitlines() if not x.startswith(skip)]
    theirs = [x for x in (RESULTS / f"{name}.md").read_text().splitlines() if not x.startswith(skip)]
    assert mine == theirs
    # other settings are refused, not overwritten
    other = experiment.ExperimentConfig(**{**cfg, "meta_steps": cfg["meta_steps"] + 1})
    with pytest.raises(ResultsFileConflict, match="meta_steps"):
        experiment.run_experiment(other, json_path=path, progress=False, log=lambda s: None)
    assert json.loads(path.read_text())["results"] == committed["results"]


def test_committed_solvers_result_resumes_without_measuring(tmp_path, monkeypatch, real_data):
    real_data("cora")  # the maps are built on Cora (nothing is measured); skipped without it
    from pyg_rbp.bench.solvers import SolversConfig, markdown_report
    from pyg_rbp.bench.solvers import run as solvers_run

    committed = json.loads((RESULTS / "solvers_cora.json").read_text())
    assert markdown_report(committed) == (RESULTS / "solvers_cora.md").read_text()
    for fn in ("forward_study", "adjoint_study", "training_study", "contractivity_study",
               "fixed_point"):
        monkeypatch.setattr(solvers_run, fn, _refuse)
    path = _copy("solvers_cora.json", tmp_path)
    cfg = SolversConfig(**committed["config"])
    doc = solvers_run.run_solvers_bench(cfg, path, progress=False)
    for field in ("forward", "adjoint", "adjoint_reference", "training", "contractivity", "verdicts"):
        assert doc[field] == committed[field], field
    assert markdown_report(doc) == markdown_report(committed)
    assert json.loads(path.read_text())["forward"] == committed["forward"]
    with pytest.raises(ResultsFileConflict, match="repeats"):
        solvers_run.run_solvers_bench(SolversConfig(**{**committed["config"], "repeats": 5}), path,
                                      progress=False)


def test_committed_graph_size_result_resumes_without_measuring(tmp_path):
    from pyg_rbp.bench.graph_size import GraphSizeConfig, GraphSizeRun, markdown_report, parse_graph
    from pyg_rbp.bench.graph_size.config import upgrade

    committed = json.loads((RESULTS / "graph_size.json").read_text())
    assert markdown_report(committed) == (RESULTS / "graph_size.md").read_text()
    path = _copy("graph_size.json", tmp_path)
    current = upgrade(committed)  # written when the forward steps were called "steps"
    assert "steps" in committed["config"] and markdown_report(current) == markdown_report(committed)
    cfg = GraphSizeConfig(**current["config"])
    largest = sorted({ls["grad"] for ls in committed["largest_steps"]})
    searched = {ls["graph"] for ls in committed["largest_steps"]}
    graphs = [g for g in cfg.graphs if parse_graph(g, cfg.degree).name in searched]
    bench = GraphSizeRun(cfg, path, largest_steps=largest, largest_steps_graphs=graphs,
                         progress=False, log=lambda s: None, runner=_refuse)
    doc = bench.run()
    assert doc["results"] == current["results"]
    assert doc["largest_steps"] == current["largest_steps"]
    assert doc["targets"] == committed["targets"]
    assert json.loads(path.read_text())["fingerprint"] == cfg.fingerprint()  # now in today's names
    with pytest.raises(ResultsFileConflict, match="hidden"):
        GraphSizeRun(GraphSizeConfig(**{**current["config"], "hidden": 32}), path, runner=_refuse)


def test_resumable_results_reads_settings_under_their_old_names(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"settings": {"inner_steps": 5, "truncation": 2}, "units": [{"k": 1}]}))
    store = ResumableResults(path, {"max_iter": 5, "backward_iter": 2}, key=lambda u: u["k"],
                             renamed={"inner_steps": "max_iter", "truncation": "backward_iter"})
    assert store.done(1) and store.previous_settings == {"max_iter": 5, "backward_iter": 2}
    with pytest.raises(ResultsFileConflict, match="backward_iter"):
        ResumableResults(path, {"max_iter": 5, "backward_iter": 3}, key=lambda u: u["k"],
                         renamed={"inner_steps": "max_iter", "truncation": "backward_iter"})

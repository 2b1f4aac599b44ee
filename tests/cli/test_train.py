"""`pyg-rbp train` and `pyg-rbp demo` end to end on tiny runs."""

from __future__ import annotations

import json

import pytest

from pyg_rbp.cli import main


def test_train_cli_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "out.json"
    argv = ["train", "--dataset", "karate", "--model", "gated", "--grad", "neumann,bptt", "--hidden", "8",
            "--max-iter", "5", "--backward-iter", "3", "--epochs", "4", "--seeds", "0,1", "--json", str(out),
            "--no-progress"]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {"config", "env", "results", "summary"}
    assert doc["config"]["grad"] == ["neumann", "bptt"] and doc["config"]["seeds"] == [0, 1]
    assert len(doc["results"]) == 4
    for r in doc["results"]:
        assert {"seed", "grad", "model", "metric", "val", "test", "epoch_time_s", "saved_bytes"} <= set(r)
        assert 0.0 <= r["test"] <= 1.0 and r["saved_bytes"] > 0 and r["model"] == "gated"
    summary = {s["grad"]: s for s in doc["summary"]}
    tests = [r["test"] for r in doc["results"] if r["grad"] == "neumann"]
    assert summary["neumann"]["test_mean"] == pytest.approx(sum(tests) / 2)
    assert summary["neumann"]["seeds"] == [0, 1]
    text = capsys.readouterr().out
    assert "pyg-rbp train --dataset karate" in text and "| karate | gated | neumann |" in text
    assert "| diverged (step) |" in text and all(r["diverged"] is None for r in doc["results"])
    # a rerun with the same settings keeps the finished seeds and trains nothing
    before = out.read_text()
    assert main(argv) == 0
    assert "resuming" in capsys.readouterr().out
    assert json.loads(out.read_text())["results"] == json.loads(before)["results"]
    # another seed, one mode: added to the file, nothing finished is dropped
    more = [a if a != "neumann,bptt" else "neumann" for a in argv]
    more[more.index("0,1")] = "2"
    assert main(more) == 0
    doc = json.loads(out.read_text())
    assert sorted((r["grad"], r["seed"]) for r in doc["results"]) == [
        ("bptt", 0), ("bptt", 1), ("neumann", 0), ("neumann", 1), ("neumann", 2)]
    assert doc["config"]["grad"] == ["neumann", "bptt"] and doc["config"]["seeds"] == [0, 1, 2]
    assert {s["grad"]: s["seeds"] for s in doc["summary"]} == {"neumann": [0, 1, 2], "bptt": [0, 1]}
    assert [r for r in doc["results"] if r["seed"] < 2] == json.loads(before)["results"]
    # other settings never overwrite the file silently; --fresh does, on purpose
    other = [a if a != "4" else "5" for a in argv]
    with pytest.raises(SystemExit, match="other settings .*epochs.*--fresh"):
        main(other)
    assert len(json.loads(out.read_text())["results"]) == 5
    assert main([*other, "--fresh"]) == 0
    assert len(json.loads(out.read_text())["results"]) == 4


def test_train_cli_defaults_and_errors(tmp_path, capsys):
    assert main(["train", "--dataset", "karate", "--epochs", "2", "--max-iter", "3", "--no-progress"]) == 0
    assert "--protocol public --model ppr --grad neumann" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown gradient mode"):
        main(["train", "--dataset", "karate", "--grad", "magic"])
    with pytest.raises(SystemExit, match="cg given more than once"):
        main(["train", "--dataset", "karate", "--grad", "cg,neumann,cg_rbp"])
    with pytest.raises(SystemExit, match="seeds"):
        main(["train", "--dataset", "karate", "--seeds", "a,b"])
    with pytest.raises(SystemExit, match="not a node-level model"):
        main(["train", "--dataset", "karate", "--model", "gin"])
    with pytest.raises(SystemExit, match="data unavailable"):
        main(["train", "--dataset", "pubmed", "--root", str(tmp_path / "empty"), "--no-progress"])


def test_demo_runs_all_modes_quickly(capsys):
    assert main(["demo", "--epochs", "2", "--max-iter", "3", "--no-progress"]) == 0
    text = capsys.readouterr().out
    for mode in ("bptt", "tbptt", "rbp", "cg", "neumann"):
        assert f"| {mode} |" in text
    assert "saved for backward" in text


def test_resume_refuses_another_device_and_reads_files_that_predate_a_field(tmp_path):
    from pyg_rbp.training.config import build_config
    from pyg_rbp.training.runner import ResultsFileConflict, run_seeds

    cfg = build_config("karate", "node", model="gated", grad="neumann", epochs=1, max_iter=2)
    base = {**cfg.as_dict(), "grad": "neumann", "seeds": [1], "commands": [cfg.command()], "device": "cpu"}
    older = {k: v for k, v in base.items() if k not in ("aggr", "features", "pool")}  # added later
    path = tmp_path / "old.json"
    result = run_seeds([cfg], [0], json_path=path, progress=False, log=lambda s: None)["results"][0]
    path.write_text(json.dumps({"config": {**older, "seeds": [0]}, "results": [result]}))
    doc = run_seeds([cfg], [0, 1], json_path=path, progress=False, log=lambda s: None)
    assert doc["results"][0] == result and doc["config"]["seeds"] == [0, 1]
    assert doc["config"]["grad"] == "neumann"
    assert json.loads(path.read_text())["results"][0] == result  # kept, not retrained
    path.write_text(json.dumps({"config": {**older, "device": "cuda"}, "results": [result]}))
    with pytest.raises(ResultsFileConflict, match="differ in: device"):
        run_seeds([cfg], [0], json_path=path, progress=False, log=lambda s: None)
    doc = run_seeds([cfg], [0], json_path=path, progress=False, resume=False, log=lambda s: None)
    assert [r["seed"] for r in doc["results"]] == [0] and doc["config"]["seeds"] == [0]


def test_settings_that_would_fail_every_rank_are_refused_before_spawning(monkeypatch):
    """``--world-size N`` checks its settings and outputs once, in the launcher (exit 2)."""
    from pyg_rbp.training import distributed, loaders

    def refuse(*args, **kwargs):
        raise AssertionError("spawned before the settings were checked")

    monkeypatch.setattr(distributed, "spawn", refuse)
    cases = [
        (["--world-size", "2"], "several processes share mini-batches"),
        (["--world-size", "2", "--loader", "history", "--json", "/dev/full"], "not a regular file"),
        (["--world-size", "2", "--loader", "history", "--grad", "bptt", "--solver", "anderson"],
         "needs plain steps"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as info:
            main(["train", "--dataset", "karate", *extra])
        assert info.value.code == 2 and message in str(info.value), extra
    monkeypatch.setattr(loaders, "sampling_available", lambda: False)
    with pytest.raises(SystemExit, match="sampling"):
        main(["train", "--dataset", "karate", "--loader", "neighbor"])
    with pytest.raises(SystemExit, match="--loader cluster --partition metis needs PyG's samplers"):
        main(["train", "--dataset", "karate", "--loader", "cluster", "--partition", "metis"])
    monkeypatch.setattr(loaders, "metis_available", lambda: False)
    for loader in ("history", "cluster"):
        monkeypatch.setattr(loaders, "sampling_available", lambda: True)
        with pytest.raises(SystemExit) as info:
            main(["train", "--dataset", "karate", "--model", "ppr", "--loader", loader,
                  "--partition", "metis"])
        assert info.value.code == 2 and "--partition spectral needs nothing" in str(info.value)


def test_cluster_loader_trains_from_the_cli_without_sampling_packages(monkeypatch, tmp_path, one_thread):
    from pyg_rbp.training import loaders

    monkeypatch.setattr(loaders, "sampling_available", lambda: False)
    out = tmp_path / "r.json"
    code = main(["train", "--dataset", "karate", "--model", "ppr", "--loader", "cluster",
                 "--batch-size", "12",
                 "--num-parts", "8", "--epochs", "3", "--seeds", "0", "--no-progress", "--json", str(out)])
    assert code == 0
    run = json.loads(out.read_text())
    text = json.dumps(run)
    assert '"loader": "cluster"' in text and '"batches": 3' in text

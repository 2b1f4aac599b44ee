"""`pyg-rbp bench solvers` on a tiny graph: it runs, resumes, reports and judges its targets."""

from __future__ import annotations

import json

import pytest
import torch

from pyg_rbp.bench.solvers import SolversConfig, build_map, verdicts


def test_bench_solvers_cli_on_a_tiny_random_graph(tmp_path, capsys):
    pytest.importorskip("torchdeq")
    from pyg_rbp.cli import main

    out = tmp_path / "s.json"
    argv = ["bench", "solvers", "--dataset", "random", "--nodes", "80", "--edges", "300",
            "--hidden", "8", "--maps", "ppr_a0.1,implicit_k0.95", "--train-maps", "ppr_a0.1",
            "--repeats", "1", "--reference-iters", "60", "--max-iter", "400", "--json", str(out),
            "--no-progress"]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    fwd = {(r["impl"], r["solver"]): r for r in doc["forward"]["implicit_k0.95"]}
    assert fwd[("ours", "anderson")]["steps_1e-06"] < fwd[("ours", "iteration")]["steps_1e-06"]
    assert fwd[("ours", "iteration")]["steps_1e-06"] == fwd[("torchdeq", "fixed_point_iter")]["steps_1e-06"]
    adj = {(r["impl"], r["mode"]): r for r in doc["adjoint"]["ppr_a0.1"]}
    assert adj[("ours", "gmres")]["products_1e-06"] <= adj[("ours", "neumann")]["products_1e-06"]
    assert doc["adjoint_reference"]["ppr_a0.1"]["adjoint_residual"] < 1e-10
    assert {r["impl"] for r in doc["training"]["ppr_a0.1"]} == {"ours", "torchdeq"}
    assert all(r["grad_error"] < 1e-3 for r in doc["training"]["ppr_a0.1"] if r["backward_iter"])
    assert doc["verdicts"] and "gmres" in (tmp_path / "s.md").read_text()
    assert (tmp_path / "s.png").stat().st_size > 0
    # a second call resumes: nothing is measured again
    before = out.read_text()
    assert main(argv) == 0
    assert json.loads(out.read_text())["forward"] == json.loads(before)["forward"]
    with pytest.raises(SystemExit, match="other settings"):
        main([*argv[:-3], "--repeats", "2", "--json", str(out), "--no-progress"])


def test_maps_are_the_same_in_both_precisions_and_the_bound_is_active():
    x = torch.randn(30, 8)
    ei = torch.randint(0, 30, (2, 90))
    a = build_map("implicit_k0.95", x, ei, 8, 100, dtype=torch.float32)
    b = build_map("implicit_k0.95", x, ei, 8, 100, dtype=torch.float64)
    assert torch.allclose(a.step(a.h0).double(), b.step(b.h0), atol=1e-5)
    cell_w = [p for p in b.params if p.dim() == 2 and p.shape == (8, 8)][0]
    assert float(cell_w.detach().abs().sum(1).min()) > 5  # every row gets rescaled to kappa


def test_verdicts_judge_each_target():
    row = {"steps_0.0001": 50, "time_0.0001": 1.0, "steps_1e-06": 200, "time_1e-06": 2.0}
    fwd = [{"impl": "ours", "solver": "iteration", **row},
           {"impl": "ours", "solver": "anderson", **row, "steps_1e-06": 50, "time_1e-06": 0.5},
           {"impl": "torchdeq", "solver": "anderson", **row, "time_1e-06": 2.0}]
    adj = [{"impl": "ours", "mode": "neumann", "products_0.0001": None},
           {"impl": "ours", "mode": "gmres", "products_0.0001": 30}]
    out = verdicts({"config": {"train_tol": 1e-4}, "forward": {"m": fwd}, "adjoint": {"m": adj},
                    "training": {}})
    by = {v["target"]: v for v in out}
    assert by["m: Anderson steps / plain steps to 1e-6"]["value"] == 0.25
    assert by["m: Anderson time / plain time to 1e-6"]["pass"] is True
    assert by["m: our Anderson / torchdeq Anderson time to 1e-06"]["value"] == 0.25
    bound = by["m: gmres VJPs / Neumann VJPs to grad error 1e-4 (Neumann not there in 256: upper bound)"]
    assert bound["value"] == 30 / 256 and bound["pass"] is True


def test_config_rejects_unknown_maps_and_modes():
    with pytest.raises(ValueError, match="unknown map"):
        SolversConfig(maps=["nope"]).validate()
    with pytest.raises(ValueError, match="forward's steps"):
        SolversConfig(modes=["bptt"]).validate()
    with pytest.raises(ValueError, match="unknown solver"):
        SolversConfig(solvers=["newton"]).validate()

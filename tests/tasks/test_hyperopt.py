"""Hyperparameter optimisation through the training dynamics: hypergradients against finite
differences (float64), memory independence of the implicit modes, the GCN problem, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pyg_rbp.tasks.hyperopt.dynamics import InnerTraining
from pyg_rbp.tasks.hyperopt.meta import cosine, hypergradient, meta_train
from pyg_rbp.tasks.hyperopt.problems import MLPProblem, load_task

DT = torch.float64
T = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_problem(seed: int = 0, final_full_batch: bool = True) -> MLPProblem:
    """5 inputs -> 4 tanh -> 3 classes, 24 training points, batches of 6: 47 weights."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int):
        return torch.randn(n, 5, generator=g, dtype=DT), torch.randint(0, 3, (n,), generator=g)

    splits = {"train": split(24), "val": split(10), "test": split(10)}
    # A larger init than the paper's e^-3 so that every weight matters within a few steps.
    return MLPProblem(splits, hidden=(4,), batch_size=6, init_scale=0.5, final_full_batch=final_full_batch)


def tiny_hyper(problem: MLPProblem):
    hyper = problem.hyperparameters(theta0=-1.0, phi0=0.0, psi0=math.log(0.3))
    g = torch.Generator().manual_seed(1)
    hyper.load_flat(hyper.flat() + 0.3 * torch.randn(hyper.flat().shape, generator=g, dtype=DT))
    return hyper


def meta_objective_at(problem, hyper, flat: torch.Tensor, seed: int = 0) -> float:
    hyper.load_flat(flat)
    training = InnerTraining(problem, hyper, problem.episode(seed, T))
    with torch.no_grad():
        return float(problem.meta_loss(training.weights(training.run(T))))


def test_bptt_hypergradient_matches_finite_differences():
    problem = tiny_problem()
    hyper = tiny_hyper(problem)
    base = hyper.flat().clone()
    hg = hypergradient(problem, hyper, grad="bptt", max_iter=T, backward_iter=T, seed=0).flat()
    eps = 1e-6
    fd = torch.empty_like(base)
    for i in range(base.numel()):
        e = torch.zeros_like(base)
        e[i] = eps
        plus, minus = meta_objective_at(problem, hyper, base + e), meta_objective_at(problem, hyper, base - e)
        fd[i] = (plus - minus) / (2 * eps)
    hyper.load_flat(base)
    assert fd.abs().max() > 1e-3  # the check is not vacuous
    torch.testing.assert_close(hg, fd, rtol=1e-6, atol=1e-9)
    # TBPTT through all T steps is BPTT.
    full = hypergradient(problem, hyper, grad="tbptt", max_iter=T, backward_iter=T, seed=0).flat()
    torch.testing.assert_close(full, hg, rtol=1e-10, atol=1e-13)


def _flat_state(state):
    return torch.cat([t.reshape(-1) for t in state[:-1]])


def _unflat_state(vec, like):
    out, offset = [], 0
    for t in like[:-1]:
        out.append(vec[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return (*out, like[-1])


@pytest.mark.parametrize("final_full_batch", [True, False])
def test_implicit_modes_match_dense_formulas_built_by_finite_differences(final_full_batch):
    """Neumann/RBP/CG use the Jacobians of the LAST step (with its own data: the whole training
    set, or the last mini-batch) only: build J = d s_T / d s_{T-1} and B = d s_T / d lambda by
    central differences and compare."""
    problem = tiny_problem(final_full_batch=final_full_batch)
    hyper = tiny_hyper(problem)
    base = hyper.flat().clone()
    training = InnerTraining(problem, hyper, problem.episode(0, T))
    s_prev = training.run(T - 1)  # the state entering the last step (counter = T - 1)
    assert float(s_prev[-1]) == T - 1
    x0 = _flat_state(s_prev)
    eps = 1e-6

    def step_flat(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return _flat_state(training.step(_unflat_state(x, s_prev)))

    J = torch.stack([(step_flat(x0 + eps * e) - step_flat(x0 - eps * e)) / (2 * eps)
                     for e in torch.eye(x0.numel(), dtype=DT)], dim=1)
    cols = []
    for i in range(base.numel()):
        e = torch.zeros_like(base)
        e[i] = eps
        hyper.load_flat(base + e)
        plus = step_flat(x0)
        hyper.load_flat(base - e)
        cols.append((plus - step_flat(x0)) / (2 * eps))
    hyper.load_flat(base)
    B = torch.stack(cols, dim=1)
    # g = dL/ds_T (momenta and counter get no gradient from the meta objective)
    s_T = _unflat_state(step_flat(x0), s_prev)
    w_T = tuple(w.detach().requires_grad_(True) for w in training.weights(s_T))
    g_w = torch.autograd.grad(problem.meta_loss(w_T), w_T)
    zeros_for_momenta = torch.zeros(x0.numel() - sum(t.numel() for t in g_w), dtype=DT)
    g = torch.cat([*(t.reshape(-1) for t in g_w), zeros_for_momenta])

    def neumann(k: int) -> torch.Tensor:
        z, v = g.clone(), g.clone()
        for _ in range(k):
            v = J.T @ v
            z = z + v
        return B.T @ z

    exact = B.T @ torch.linalg.solve(torch.eye(J.shape[0], dtype=DT) - J.T, g)
    expected = {"neumann": (5, neumann(5)), "rbp": (6, neumann(5)), "cg": (400, exact)}
    meta_values = set()
    for mode, (k, reference) in expected.items():
        hg = hypergradient(problem, hyper, grad=mode, max_iter=T, backward_iter=k, seed=0)
        meta_values.add(round(hg.meta_objective, 12))
        torch.testing.assert_close(hg.flat(), reference, rtol=1e-5, atol=1e-8, msg=mode)
    assert len(meta_values) == 1  # every mode ran the same forward (same episode)


def test_neumann_memory_independent_of_inner_steps_bptt_grows():
    problem = tiny_problem()
    saved = {}
    for mode in ("neumann", "rbp", "bptt"):
        for steps in (10, 40):
            hyper = problem.hyperparameters()
            saved[mode, steps] = hypergradient(problem, hyper, grad=mode, max_iter=steps, backward_iter=5,
                                               seed=0, measure_memory=True).saved_bytes
    assert saved["neumann", 10] == saved["neumann", 40] > 0
    assert saved["rbp", 10] == saved["rbp", 40]
    assert saved["bptt", 40] > 2 * saved["bptt", 10]  # grows about linearly with T
    assert saved["bptt", 40] > 5 * saved["neumann", 40]


def test_meta_training_lowers_meta_objective_and_same_episode_for_all_modes():
    problem = tiny_problem()
    runs = {}
    for mode in ("bptt", "neumann"):
        run, hyper = meta_train(problem, grad=mode, meta_steps=6, max_iter=T, backward_iter=4, meta_lr=0.1)
        assert run.status == "ok" and len(run.curve) == 6
        assert run.curve[-1] < run.curve[0]
        runs[mode] = run
    assert runs["bptt"].curve[0] == pytest.approx(runs["neumann"].curve[0], rel=1e-12)
    assert cosine(runs["bptt"].first_hypergradient, runs["bptt"].first_hypergradient) == pytest.approx(1.0)


def test_bad_input_raises_clear_errors():
    problem = tiny_problem()
    hyper = problem.hyperparameters()
    with pytest.raises(ValueError, match="unknown gradient mode"):
        hypergradient(problem, hyper, grad="adjoint", max_iter=3, backward_iter=2, seed=0)
    with pytest.raises(ValueError, match="max_iter"):
        hypergradient(problem, hyper, grad="bptt", max_iter=0, backward_iter=2, seed=0)
    with pytest.raises(ValueError, match="unknown task"):
        load_task("mlp-cifar")
    with pytest.raises(ValueError, match="batch_size"):
        MLPProblem(problem.splits, batch_size=1000)
    with pytest.raises(ValueError, match="meta_split"):
        MLPProblem(problem.splits, meta_split="test")
    from pyg_rbp.tasks.hyperopt.experiment import ExperimentConfig

    with pytest.raises(ValueError, match="exceeds max_iter"):
        ExperimentConfig(task="mlp-digits", grads=["neumann"], max_iter=10, backward_iter=20)
    for name in ("max_iter", "backward_iter", "batch_size"):  # 0 is an error, not "the default"
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
            ExperimentConfig(task="mlp-digits", grads=["neumann"], **{name: 0})


@pytest.mark.datasets("cora")
def test_gcn_cora_hypergradients_are_finite_in_every_mode(data_root):
    problem = load_task("gcn-cora", root=data_root)
    assert problem.meta_split == "val" and problem.group_names == ["layer1", "layer2"]
    hyper = problem.hyperparameters()
    assert hyper.psi is not None  # weight decay is tuned for the graph version
    flats = {}
    for mode in ("bptt", "neumann", "cg"):
        hg = hypergradient(problem, hyper, grad=mode, max_iter=4, backward_iter=3, seed=0)
        flats[mode] = hg.flat()
        assert torch.isfinite(flats[mode]).all() and flats[mode].abs().sum() > 0
    assert flats["bptt"].numel() == 6  # lr, momentum, weight decay for each of the two layers


def test_cli_tiny_run_writes_outputs_and_resumes(tmp_path, capsys):
    from pyg_rbp.cli import main

    out = tmp_path / "h.json"
    png = tmp_path / "h.png"
    base = ["hyperopt", "--task", "mlp-digits", "--meta-steps", "2", "--inner-steps", "6", "-K", "3",
            "--eval-seeds", "7", "--json", str(out), "--png", str(png), "--no-progress"]
    assert main([*base, "--grad", "bptt,neumann", "--memory-steps", "3,6"]) == 0
    doc = json.loads(out.read_text())
    rows = {r["grad"]: r for r in doc["results"]}
    assert set(rows) == {"bptt", "neumann"}
    for r in rows.values():
        for key in ("hypergrad_cosine_vs_bptt", "meta_objective", "meta_step_time_s", "saved_bytes"):
            assert r[key] is not None
        assert len(r["curve"]) == 2
    assert rows["bptt"]["hypergrad_cosine_vs_bptt"] == pytest.approx(1.0)
    assert doc["config"]["max_iter"] == 6 and doc["config"]["backward_iter"] == 3
    # Equal up to a few bytes: the very first solve of a process saves one extra 4-byte scalar.
    assert doc["memory_scaling"]["ratio_last_to_first"]["neumann"] == pytest.approx(1.0, rel=1e-4)
    assert png.stat().st_size > 0 and out.with_suffix(".md").exists()
    # Rerun with one more mode: finished modes are kept, only TBPTT runs.
    bptt_wall = rows["bptt"]["wall_s"]
    assert main([*base, "--grad", "bptt,neumann,tbptt", "--memory-steps", "3,6"]) == 0
    doc = json.loads(out.read_text())
    rows = {r["grad"]: r for r in doc["results"]}
    assert set(rows) == {"bptt", "tbptt", "neumann"} and rows["bptt"]["wall_s"] == bptt_wall
    assert set(doc["memory_scaling"]["ratio_last_to_first"]) == {"bptt", "tbptt", "neumann"}
    assert "skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown gradient mode"):
        main([*base, "--grad", "bptt,foo"])


def test_hyperopt_cli_without_data_exits_with_the_message(tmp_path, monkeypatch):
    from pyg_rbp.cli import main

    monkeypatch.setenv("PYG_RBP_SHARED", str(tmp_path / "no_mirror"))
    monkeypatch.setenv("PYG_RBP_DOWNLOAD", "0")
    with pytest.raises(SystemExit, match="pyg-rbp hyperopt: .*MNIST"):
        main(["hyperopt", "--task", "mlp-mnist", "--root", str(tmp_path / "empty"), "--no-progress",
              "--json", str(tmp_path / "h.json")])

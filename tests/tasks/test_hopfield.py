"""HopfieldCell and the Hopfield associative-memory task, against independent references."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.func import functional_call

import pyg_rbp
import pyg_rbp.tasks.hopfield as hopfield_package
from pyg_rbp import GRAD_MODES
from pyg_rbp.cli import main
from pyg_rbp.nn import FixedPointConv, HopfieldCell
from pyg_rbp.profiling import WeightAwareSavedBytes
from pyg_rbp.results import ResultsFileConflict
from pyg_rbp.tasks.hopfield import (
    HopfieldConfig,
    HopfieldMemory,
    allowed_wrong_pixels,
    evaluate_retrieval,
    recall_loss,
    results_table,
    run_experiment,
    train_memory,
)
from pyg_rbp.tasks.hopfield import experiment as experiment
from pyg_rbp.tasks.hopfield import sparse as hs
from pyg_rbp.tasks.hopfield.config import paper_deviations, upgrade_config
from pyg_rbp.tasks.hopfield.data import flip_bits, load_patterns, pixel_errors, switch_off
from pyg_rbp.tasks.hopfield.experiment import measure_saved_bytes, weight_tensors
from pyg_rbp.tasks.hopfield.graphs import (
    build_topology,
    complete_graph,
    count_synapses,
    knn_graph,
    local_graph,
    neuron_positions,
)

DT = torch.float64
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def small_cell(n: int = 9, clamp: int = 3, std: float = 0.3, seed: int = 0, **kwargs) -> HopfieldCell:
    torch.manual_seed(seed)
    return HopfieldCell(n, complete_graph(n), clamp=torch.arange(clamp), init_std=std, **kwargs).double()


def node_input(n: int, clamp: int, cols: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, cols, dtype=DT)
    x[:clamp] = torch.rand(clamp, cols, generator=g, dtype=DT)
    x[clamp:] = 0.1 * torch.randn(n - clamp, cols, generator=g, dtype=DT)  # input currents
    return x


def dense_reference_step(cell: HopfieldCell, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The update rule written out with an explicit symmetric matrix (independent of the cell)."""
    n = cell.num_nodes
    W = torch.zeros(n, n, dtype=h.dtype)
    i, j = cell.pair_index
    W[i, j] = cell.weight.detach()
    W[j, i] = cell.weight.detach()
    mask = cell.clamp_mask.unsqueeze(-1)
    h = torch.where(mask, x, h)  # clamped neurons are read at their input
    out = (1 - cell.a) * h + W @ torch.sigmoid(cell.b * h) + x
    return torch.where(mask, x, out)


# --- the cell --------------------------------------------------------------------------------


@pytest.mark.parametrize("dense", [True, False])
def test_step_matches_update_rule(dense):
    cell = small_cell(dense=dense)
    cell.a = 0.7
    x = node_input(9, 3, 4)
    h = torch.randn(9, 4, dtype=DT)
    expected = dense_reference_step(cell, h, x)
    torch.testing.assert_close(cell(h, x, cell.edge_index), expected, rtol=0, atol=1e-14)
    assert "path=" + ("dense" if dense else "sparse-csr") in repr(cell)


def test_dense_and_sparse_paths_agree_on_states_and_gradients():
    cells = [small_cell(n=12, clamp=4), small_cell(n=12, clamp=4, dense=False),
             small_cell(n=12, clamp=4, dense=False, fused=False)]
    assert [c.dense for c in cells] == [True, False, False]
    x = node_input(12, 4, 3)
    for mode in GRAD_MODES:
        states, grads = [], []
        for c in cells:
            c.weight.grad = None
            conv = FixedPointConv(c, grad=mode, max_iter=40, backward_iter=15)
            out = conv(x, c.edge_index)
            (out.sin().sum()).backward()
            states.append(out.detach())
            grads.append(c.weight.grad.clone())
        for s, g in zip(states[1:], grads[1:]):
            torch.testing.assert_close(s, states[0], rtol=0, atol=1e-13)
            torch.testing.assert_close(g, grads[0], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_torch_sparse_adjacency_gives_the_edge_index_results(layout):
    """A torch.sparse adjacency of the cell's own graph (adj_t convention, any entry order) runs
    exactly as its edge_index; values other than one act as edge weights."""
    torch.manual_seed(0)
    ei = build_topology("random", 4, (2, 2), 4, avg_degree=4.0, seed=3)
    n = 12
    cell = HopfieldCell(n, ei, clamp=torch.arange(4), init_std=0.3).double()
    x = node_input(n, 4, 3)

    def adjacency(values):
        adj = torch.sparse_coo_tensor(ei.flip(0), values, (n, n)).coalesce()  # adj_t[i, j]: j -> i
        return adj if layout == "coo" else adj.to_sparse_csr()

    for mode in ("bptt", "neumann", "cg"):
        results = []
        for graph in (cell.edge_index, adjacency(torch.ones(ei.size(1), dtype=DT))):
            cell.weight.grad = None
            out = FixedPointConv(cell, grad=mode, max_iter=30, backward_iter=10)(x, graph)
            out.sin().sum().backward()
            results.append((out.detach(), cell.weight.grad.clone()))
        torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-13)
        torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-12, atol=1e-13)
    w = torch.rand(ei.size(1), dtype=DT) + 0.5
    h = torch.randn(n, 3, dtype=DT)
    torch.testing.assert_close(cell(h, x, adjacency(w)), cell(h, x, cell.edge_index, w), rtol=0, atol=1e-14)
    other = build_topology("random", 4, (2, 2), 4, avg_degree=4.0, seed=4)
    wrong = torch.sparse_coo_tensor(other.flip(0), torch.ones(other.size(1), dtype=DT), (n, n))
    with pytest.raises(ValueError, match="not exactly the cell's"):
        cell(h, x, wrong)


@pytest.mark.parametrize("dense", [True, False])
def test_gradcheck_float64(dense):
    cell = small_cell(n=7, clamp=2, dense=dense)
    x = node_input(7, 2, 2).requires_grad_(True)
    h = torch.randn(7, 2, dtype=DT, requires_grad=True)
    w = cell.weight.detach().clone().requires_grad_(True)

    def step(w, h, x):
        return functional_call(cell, {"weight": w}, (h, x, cell.edge_index))

    assert torch.autograd.gradcheck(step, (w, h, x))
    # Second order: CG-RBP's Jacobian-vector products differentiate the backward pass.
    assert torch.autograd.gradgradcheck(step, (w, h, x))


def test_exact_implicit_gradient_all_modes():
    """Every mode against the dense solve of (I - J^T) z = g at a converged fixed point."""
    cell = small_cell(n=10, clamp=3, std=0.25)
    x = node_input(10, 3, 2).requires_grad_(True)
    target = torch.randn(10, 2, dtype=DT)

    def loss_fn(h):
        return ((h - target) ** 2).sum()

    with torch.no_grad():
        h = x.detach().clone()
        for _ in range(500):
            h = cell(h, x.detach(), cell.edge_index)
    hs = h.clone()
    J = torch.autograd.functional.jacobian(
        lambda v: cell(v.view_as(hs), x.detach(), cell.edge_index).reshape(-1), hs.reshape(-1))
    assert torch.linalg.eigvals(J).abs().max() < 0.9  # a contraction: every mode converges
    hl = hs.clone().requires_grad_(True)
    g = torch.autograd.grad(loss_fn(hl), hl)[0].reshape(-1)
    z = torch.linalg.solve(torch.eye(J.shape[0], dtype=DT) - J.T, g)
    out = cell(hs, x, cell.edge_index)
    exact_w, exact_x = torch.autograd.grad(out, [cell.weight, x], z.view_as(out))

    budgets = {"bptt": 300, "tbptt": 300, "rbp": 300, "cg": 60, "neumann": 300}
    for mode in GRAD_MODES:
        conv = FixedPointConv(cell, grad=mode, max_iter=300, backward_iter=budgets[mode])
        gw, gx = torch.autograd.grad(loss_fn(conv(x, cell.edge_index)), [cell.weight, x])
        torch.testing.assert_close(gw, exact_w, rtol=1e-8, atol=1e-10, msg=f"{mode} weight gradient")
        torch.testing.assert_close(gx, exact_x, rtol=1e-8, atol=1e-10, msg=f"{mode} input gradient")


def test_symmetry_and_zero_diagonal_survive_optimiser_steps():
    cell = small_cell(n=8, clamp=2, std=0.1)
    opt = torch.optim.Adam(cell.parameters(), lr=0.05)
    x = node_input(8, 2, 3)
    conv = FixedPointConv(cell, grad="cg", max_iter=20, backward_iter=10)
    for _ in range(5):
        opt.zero_grad()
        conv(x, cell.edge_index)[5:].pow(2).sum().backward()
        opt.step()
    W = cell.weight_matrix().detach()
    assert torch.equal(W, W.T)
    assert torch.equal(torch.diagonal(W), torch.zeros(8, dtype=DT))
    assert W.abs().max() > 0.1  # the steps did move the weights
    # The dense fast path computes with exactly this symmetric matrix.
    h = torch.randn(8, 3, dtype=DT)
    expected = dense_reference_step(cell, h, x)
    torch.testing.assert_close(cell(h, x, cell.edge_index), expected, rtol=0, atol=1e-14)


def test_clamped_neurons_never_change():
    cell = small_cell(n=10, clamp=4, std=0.5)
    x = node_input(10, 4, 3)
    h0 = torch.randn(10, 3, dtype=DT)
    for mode in ("bptt", "neumann"):
        conv = FixedPointConv(cell, grad=mode, max_iter=30)
        out = conv(x, cell.edge_index, h0=h0)
        assert torch.equal(out[:4], x[:4])
    with torch.no_grad():
        h = h0
        for _ in range(10):
            h = cell(h, x, cell.edge_index)
            assert torch.equal(h[:4], x[:4])


def test_energy_formula_and_descent_along_continuous_dynamics():
    cell = small_cell(n=9, clamp=3, std=0.4)
    x = node_input(9, 3, 2)
    h = torch.randn(9, 2, dtype=DT)
    # Direct formula with an explicit matrix.
    hc = torch.where(cell.clamp_mask.unsqueeze(-1), x, h)
    s = torch.sigmoid(cell.b * hc)
    W = cell.weight_matrix().detach()
    free = (~cell.clamp_mask).unsqueeze(-1).to(DT)
    ent = s * torch.log(s) + (1 - s) * torch.log(1 - s)
    ref = -0.5 * (s * (W @ s)).sum(0) - (free * x * s).sum(0) + cell.a / cell.b * (free * ent).sum(0)
    torch.testing.assert_close(cell.energy(h, x), ref, rtol=1e-12, atol=1e-12)
    # Small Euler steps of dh/dt = F(h) - h never increase the energy (symmetric weights).
    with torch.no_grad():
        energies = [cell.energy(h, x)]
        for _ in range(200):
            h = h + 0.05 * (cell(h, x, cell.edge_index) - h)
            energies.append(cell.energy(h, x))
    e = torch.stack(energies)
    assert bool(((e[1:] - e[:-1]) <= 1e-12).all())
    assert float(e[0].sum() - e[-1].sum()) > 1e-3


def test_bad_inputs_raise_value_errors():
    n = 5
    full = complete_graph(n)
    with pytest.raises(ValueError, match="undirected"):
        HopfieldCell(n, full[:, : full.size(1) // 2])
    with pytest.raises(ValueError, match="self-loops"):
        HopfieldCell(n, torch.tensor([[0, 1, 1], [1, 0, 1]]))
    with pytest.raises(ValueError, match="duplicate"):
        HopfieldCell(n, torch.cat([full, full[:, :2]], dim=1))
    with pytest.raises(ValueError, match="outside"):
        HopfieldCell(3, full)
    with pytest.raises(ValueError, match="b"):
        HopfieldCell(n, full, b=0.0)
    with pytest.raises(ValueError, match="clamp"):
        HopfieldCell(n, full, clamp=torch.tensor([7]))
    cell = HopfieldCell(n, full, clamp=torch.tensor([0]))
    h = torch.zeros(n, 2)
    with pytest.raises(ValueError, match="rows"):
        cell(h, torch.zeros(n + 1, 2), full)
    with pytest.raises(ValueError, match="graph it was built for"):
        cell(h, torch.zeros(n, 2), complete_graph(n)[:, :4])
    x = torch.zeros(n, 2)
    torch.testing.assert_close(cell(h, x, complete_graph(n)), cell(h, x, full))


# --- data, graphs, task ----------------------------------------------------------------------


def test_corruptions_are_exact_and_seeded():
    images = (torch.rand(4, 50, generator=torch.Generator().manual_seed(0)) > 0.6).float()
    off = switch_off(images, 0.5, seed=3)
    assert torch.equal(off, switch_off(images, 0.5, seed=3))
    assert bool((off <= images).all())  # only switches pixels off
    for p in range(4):
        n_on = int(images[p].sum())
        assert int(images[p].sum() - off[p].sum()) == n_on // 2
    flipped = flip_bits(images, 0.1, seed=1)
    assert ((flipped != images).sum(dim=1) == 5).all()
    torch.testing.assert_close(pixel_errors(flipped, images), torch.full((4,), 0.1))
    with pytest.raises(ValueError):
        switch_off(images, 1.5, seed=0)
    # success bound: 1% of the pixels, at least one
    assert allowed_wrong_pixels(784) == 7 and allowed_wrong_pixels(64) == 1
    assert allowed_wrong_pixels(784, 0.0) == 1


def test_topologies():
    ei = build_topology("knn", 16, (4, 4), 8, k=3, seed=0)
    cell = HopfieldCell(40, ei)
    assert not cell.dense and cell.num_synapses == ei.size(1) // 2
    pos = neuron_positions(16, (4, 4), 8, seed=0)
    assert knn_graph(pos, 1).size(1) >= 40  # every neuron has a neighbour
    # the input and output neuron of a pixel share a position and are wired together
    pairs = set(map(tuple, ei.T.tolist()))
    assert all((p, 24 + p) in pairs for p in range(16))
    rnd = build_topology("random", 16, (4, 4), 8, avg_degree=6.0, seed=0)
    assert abs(rnd.size(1) / 40 - 6.0) < 1.5
    assert HopfieldCell(40, build_topology("complete", 16, (4, 4), 8)).dense


@pytest.mark.datasets("mnist")
def test_mnist_and_digits_patterns(data_root):
    mnist = load_patterns("mnist", root=data_root)
    assert mnist.images.shape == (10, 784) and mnist.shape == (28, 28)
    assert mnist.labels.tolist() == list(range(10))
    assert set(mnist.images.unique().tolist()) == {0.0, 1.0}
    digits = load_patterns("digits")
    assert digits.images.shape == (10, 64) and digits.labels.tolist() == list(range(10))


def tiny_patterns() -> torch.Tensor:
    pats = torch.zeros(3, 16)
    pats[0, [0, 1, 2, 3, 4, 8, 12]] = 1
    pats[1, [3, 7, 11, 12, 13, 14, 15]] = 1
    pats[2, [0, 5, 6, 9, 10, 15]] = 1
    return pats


def test_tiny_training_run_improves_retrieval():
    pats = tiny_patterns()
    test = switch_off(pats, 0.5, seed=0)
    torch.manual_seed(0)
    model = HopfieldMemory(16, 8, complete_graph(40), grad="neumann")
    before = evaluate_retrieval(model, pats, test)
    result = train_memory(model, pats, 200, lr=0.05, lr_schedule="cosine")
    after = evaluate_retrieval(model, pats, test)
    assert result.diverged is None and result.epochs_done == 200
    assert result.loss[-1] < 0.5 * result.loss[0]
    assert after["pixel_error"] < 0.5 * before["pixel_error"]
    assert after["success_rate"] > before["success_rate"]
    assert evaluate_retrieval(model, pats, pats)["success_rate"] == 1.0


def test_batched_recall_equals_one_image_at_a_time():
    pats = tiny_patterns()
    torch.manual_seed(0)
    model = HopfieldMemory(16, 8, complete_graph(40), grad="neumann", init_std=0.2)
    together = model(pats)
    alone = torch.cat([model(pats[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    # the summed loss has the sum of the per-image gradients
    g_all = torch.autograd.grad(recall_loss(model(pats), pats), model.cell.weight)[0]
    g_sum = sum(torch.autograd.grad(recall_loss(model(pats[i:i + 1]), pats[i:i + 1]), model.cell.weight)[0]
                for i in range(3))
    torch.testing.assert_close(g_all, g_sum, rtol=1e-4, atol=1e-7)


def test_cli_writes_json_png_and_resumes(tmp_path, capsys):
    out = tmp_path / "h.json"
    png = tmp_path / "h.png"
    argv = ["hopfield", "--images", "digits", "--grad", "neumann,cg", "--epochs", "3", "--hidden", "16",
            "--max-iter", "10", "--backward-iter", "5", "--json", str(out), "--png", str(png),
            "--no-progress"]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    rows = {r["grad"]: r for r in doc["results"]}
    assert set(rows) == {"neumann", "cg"}
    for r in rows.values():
        for key in ("success_rate", "pixel_error", "epoch_time_s", "saved_bytes"):
            assert r[key] is not None
        assert 0 <= r["success_rate"] <= 1 and r["saved_bytes"] > 0
        assert len(r["energy"]["per_image"]) == 10 and len(r["energy"]["per_image"][0]) == 11
    assert png.stat().st_size > 1000 and (tmp_path / "h.md").exists()
    assert "Neumann-RBP" in capsys.readouterr().out
    # A rerun reuses the finished modes (same numbers) and adds only the new one.
    assert main(argv[:4] + ["neumann,cg,tbptt"] + argv[5:]) == 0
    doc2 = json.loads(out.read_text())
    rows2 = {r["grad"]: r for r in doc2["results"]}
    assert set(rows2) == {"neumann", "cg", "tbptt"}
    assert rows2["neumann"]["epoch_time_s"] == rows["neumann"]["epoch_time_s"]
    with pytest.raises(SystemExit, match="other settings") as info:
        main(argv[:6] + ["4"] + argv[7:])
    assert info.value.code == 2  # refused before any work, through the shared exit table
    # timings of one file come from one machine setting: other thread counts are refused
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit, match="was measured on"):
            main([*argv[:4], "neumann,cg,rbp", *argv[5:], "--threads", str(threads + 1)])
    finally:
        torch.set_num_threads(threads)
    assert {r["grad"] for r in json.loads(out.read_text())["results"]} == {"neumann", "cg", "tbptt"}
    # the old flags still parse (deprecated) and name the same settings: nothing is trained again
    assert main([*argv[:9], "--updates", "10", "--truncation", "5", *argv[13:], "--threads", "0"]) == 0
    assert "--updates is deprecated, use --max-iter" in capsys.readouterr().err
    assert json.loads(out.read_text())["results"] == doc2["results"]
    for bad, message in ((["--grad", "adam"], "--grad"), (["--max-iter", "0"], "max_iter must be >= 1")):
        with pytest.raises(SystemExit, match=message) as info:
            main(["hopfield", *bad, "--no-progress"])
        assert info.value.code == 2


def test_memory_measurement_excludes_weights():
    pats = tiny_patterns()
    sizes = {}
    for mode in ("bptt", "neumann"):
        torch.manual_seed(0)
        model = HopfieldMemory(16, 8, complete_graph(40), grad=mode, max_iter=30)
        sizes[mode] = measure_saved_bytes(model, pats, pats)
    # BPTT keeps every one of the 30 steps, Neumann-RBP one.
    assert sizes["bptt"]["saved_bytes"] > 10 * sizes["neumann"]["saved_bytes"]
    # the 24 x 24 free-neuron weight block is saved by the matrix product, counted as weights
    assert sizes["neumann"]["saved_bytes_total"] >= sizes["neumann"]["saved_bytes"] + 24 * 24 * 4
    assert sizes["neumann"]["saved_bytes"] < 24 * 24 * 4
    assert pyg_rbp.GRAD_MODES  # the package imports cleanly with the task modules


def test_dense_and_sparse_weights_give_the_same_activation_memory():
    """The sparse path's per-edge weights and CSR layout are weights too, not activations.

    (Neumann-RBP records one step on either path; under BPTT the sparse path's states are wider,
    since it iterates the clamped neurons too, so their activations genuinely differ.)"""
    mode = "neumann"

    pats = tiny_patterns()
    sizes = []
    for dense in (True, False):
        torch.manual_seed(0)
        model = HopfieldMemory(16, 8, complete_graph(40), grad=mode, max_iter=12, dense=dense)
        sizes.append(measure_saved_bytes(model, pats, pats))
    assert sizes[0]["saved_bytes"] == sizes[1]["saved_bytes"]
    assert sizes[1]["saved_bytes_total"] > sizes[1]["saved_bytes"]  # the weights were saved


def test_an_activation_at_a_freed_weight_blocks_address_counts():
    """A weight block freed after prepare() may leave its address to an activation."""
    model = HopfieldMemory(16, 8, complete_graph(40))
    x = model.node_input(tiny_patterns())
    with weight_tensors(model) as weights:
        inputs = model.cell.prepare(x, model.cell.edge_index)
        w_ff = inputs.extra["W_ff"].untyped_storage().data_ptr()
        freed = [p for p in weights.storages() if p != w_ff]
        assert freed and not any(weights.is_weight_storage(p) for p in freed)  # W_fc is gone
        assert weights.is_weight_storage(w_ff)  # W_ff is alive in the prepared inputs
        # the accounting asks exactly this of every saved tensor: W_ff is a weight, v an activation
        w_ff = inputs.extra["W_ff"]
        v = torch.rand(w_ff.size(1), 3, requires_grad=True)
        with WeightAwareSavedBytes(weights) as mem:
            out = w_ff @ v  # saves both
    assert mem.weight_bytes == w_ff.numel() * 4 and mem.bytes == (w_ff.numel() + v.numel()) * 4
    del out
    # the cell's builders are its own again outside the block: nn/ carries no accounting state
    assert "dense_blocks" not in vars(model.cell) and "_weight_tensors" not in vars(model.cell)


def test_mnist_defaults_and_their_documented_deviations():
    cfg = HopfieldConfig(images="mnist").resolved()
    assert (cfg.hidden, cfg.max_iter, cfg.backward_iter, cfg.b, cfg.corrupt) == (1024, 50, 20, 0.5, 0.5)
    assert (cfg.a, cfg.train_input, cfg.lr_schedule, cfg.epochs) == (0.5, "corrupted", "cosine", 3000)
    notes = paper_deviations(cfg)
    assert any(n.startswith("a: 0.5 (paper: 1.0); ") and "fixed points" in n for n in notes)
    assert any(n.startswith("train_input: 'corrupted'") and "copies the input" in n for n in notes)
    paper = HopfieldConfig(images="mnist", a=1.0, lr=1e-3, lr_schedule="constant", epochs=1000,
                           train_input="clean", batch_size=1, split="train").resolved()
    assert [n.split(":")[0] for n in paper_deviations(paper)] == ["weights"]
    assert HopfieldConfig(images="digits").resolved().a == 1.0


# --- sparse topologies -----------------------------------------------------------------------


def test_local_topology_receptive_fields_and_long_range():
    d, hidden, shape = 16, 6, (4, 4)
    n = 2 * d + hidden
    ei = local_graph(d, shape, hidden, radius=1.0, long_range=0, seed=0)
    pos = neuron_positions(d, shape, hidden, 0)
    dist = torch.cdist(pos, pos)
    expected = (dist <= 1.0 + 1e-9) & ~torch.eye(n, dtype=torch.bool)
    expected[:d, :d] = False  # no synapse between two clamped inputs
    got = torch.zeros(n, n, dtype=torch.bool)
    got[ei[0], ei[1]] = True
    assert torch.equal(got, expected)
    assert bool(got[torch.arange(d), torch.arange(d) + d + hidden].all())  # pixel input -> its output
    with_long = local_graph(d, shape, hidden, radius=1.0, long_range=3, seed=0)
    extra = with_long.size(1) - ei.size(1)
    assert 0 < extra <= 2 * 3 * hidden  # repeats and existing synapses merge
    HopfieldCell(n, with_long, clamp=torch.arange(d))  # undirected, no loops, no duplicates
    c = count_synapses(ei, n)
    assert c["synapses"] == int(expected.sum()) // 2 and c["complete_synapses"] == n * (n - 1) // 2


def test_sparse_study_timing_and_verdict():
    images = (torch.rand(3, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    pts = [{"topology": "local", "radius": 1.0, "long_range": 1}]
    t = hs.step_times(pts, images, (4, 4), hidden=8, repeats=2, steps=2)
    assert set(t) == {"complete", "local_r1_lr1"}
    assert t["complete"]["speedup"] == 1.0 and t["complete"]["fraction"] == 1.0
    assert 0 < t["local_r1_lr1"]["fraction"] < 1 and t["local_r1_lr1"]["step_s"] > 0
    row = {"label": "a", "synapses": 100, "complete_synapses": 2000, "fraction": 0.05, "speedup": 6.0}
    assert hs.verdict([{**row, "success_rate": 0.8}]).startswith("**Met**")
    assert hs.verdict([{**row, "success_rate": 0.7}]).startswith("**Not met**")
    assert hs.verdict([{**row, "success_rate": 0.9, "speedup": 4.0}]).startswith("**Not met**")
    two = [{**row, "success_rate": 0.9}, {**row, "label": "b", "synapses": 50, "success_rate": 0.3}]
    assert "Below the target" in hs.verdict(two)


def test_evaluate_is_a_deprecated_alias_of_evaluate_retrieval():
    with pytest.warns(DeprecationWarning, match="evaluate_retrieval"):
        old = hopfield_package.evaluate
    assert old is evaluate_retrieval
    with pytest.raises(AttributeError):
        hopfield_package.no_such_name  # noqa: B018


@pytest.mark.parametrize("name", ["hopfield_digits", "hopfield_mnist", "hopfield_mnist_paper_recipe",
                                  "hopfield_sparse/local_r5_lr16"])
def test_committed_results_resume_without_training(name, tmp_path, monkeypatch, real_data):
    if name != "hopfield_digits":
        real_data("mnist")  # the patterns are loaded (not trained on); skipped without them
    committed = RESULTS / f"{name}.json"
    doc = json.loads(committed.read_text())
    assert results_table(doc) == committed.with_suffix(".md").read_text()
    copy = tmp_path / committed.name
    copy.write_text(committed.read_text())

    def no_training(*args, **kwargs):
        raise AssertionError("a committed mode was trained again")

    monkeypatch.setattr(experiment, "run_mode", no_training)
    fields = {f.name for f in dataclasses.fields(HopfieldConfig)}
    saved = upgrade_config(doc["config"])  # the committed files say updates / truncation
    assert (saved["max_iter"], saved["backward_iter"]) == (doc["config"]["updates"],
                                                           doc["config"]["truncation"])
    cfg = HopfieldConfig(**{k: v for k, v in saved.items() if k in fields})
    threads = torch.get_num_threads()
    torch.set_num_threads(doc["environment"]["torch_threads"])  # one file, one thread setting
    try:
        again = run_experiment(cfg, [r["grad"] for r in doc["results"]], json_path=copy,
                               progress=False, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    assert again["results"] == doc["results"] and again["patterns"] == doc["patterns"]
    assert copy.with_suffix(".md").read_text() == committed.with_suffix(".md").read_text()
    # settings the committed files predate count at the value they had
    assert again["config"] == {**saved, "train_corrupt": doc["config"]["corrupt"],
                               "train_copies": 1}
    with pytest.raises(ResultsFileConflict, match="epochs"):
        run_experiment(dataclasses.replace(cfg, epochs=cfg.epochs + 1), ["neumann"], json_path=copy,
                       progress=False, log=lambda _: None)


def test_dense_blocks_are_the_weight_matrix_blocks():
    cell = small_cell()
    W = cell.weight_matrix()
    W_ff, W_fc = cell.dense_blocks()
    free, clamp = cell.free_index, cell.clamp_index
    torch.testing.assert_close(W_ff, W[free][:, free], rtol=0, atol=0)
    torch.testing.assert_close(W_fc, W[free][:, clamp], rtol=0, atol=0)
    # the sparse layout carries the same synapses: its message passing is the matrix product
    s = torch.rand(cell.num_nodes, 2, dtype=DT)
    graph = cell.sparse_graph(s)
    torch.testing.assert_close(cell.aggregate_neighbours(s, graph), W @ s)

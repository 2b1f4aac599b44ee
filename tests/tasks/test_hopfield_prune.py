"""Prune-and-retrain Hopfield memories (pyg_rbp.tasks.hopfield.prune): the pruned graph keeps the
largest synapses with their weights, the dense kernel and the sparse path give the same states
and gradients, and retraining leaves the pruned synapses out."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.tasks.hopfield import HopfieldMemory, recall_loss, train_memory
from pyg_rbp.tasks.hopfield.graphs import complete_graph
from pyg_rbp.tasks.hopfield.prune import (
    magnitude_prune,
    pruned_memory,
    sparse_twin,
    time_steps,
    verdict,
)


def _memory(pixels: int = 6, hidden: int = 5, seed: int = 0) -> HopfieldMemory:
    torch.manual_seed(seed)
    n = 2 * pixels + hidden
    m = HopfieldMemory(pixels, hidden, complete_graph(n), max_iter=30, backward_iter=10, a=0.5,
                       init_std=0.3).double()
    return m


def _images(pixels: int = 6, count: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(count, pixels, generator=g) > 0.5).double()


def test_magnitude_prune_keeps_the_largest_synapses_with_their_weights():
    m = _memory()
    w = m.cell.weight.detach()
    keep = 20
    edge_index, kept = magnitude_prune(m, keep)
    assert edge_index.shape == (2, 2 * keep)
    # exactly the keep largest magnitudes survive
    assert sorted(kept.abs().tolist()) == pytest.approx(sorted(w.abs().topk(keep).values.tolist()))
    n = m.num_nodes
    dense_w = m.cell.weight_matrix().detach()
    i, j = edge_index[:, :keep]
    torch.testing.assert_close(dense_w[i, j], kept)
    # the pruned memory carries the same weights on the same synapses, zero elsewhere
    p = pruned_memory(m, keep, dense=True)
    assert p.cell.num_synapses == keep
    pw = p.cell.weight_matrix().detach()
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[edge_index[0], edge_index[1]] = True
    torch.testing.assert_close(pw[mask], dense_w[mask])
    assert float(pw[~mask].abs().max()) == 0.0
    with pytest.raises(ValueError, match="keep"):
        magnitude_prune(m, 0)
    with pytest.raises(ValueError, match="keep"):
        magnitude_prune(m, m.cell.num_synapses + 1)


def test_pruned_dense_kernel_and_sparse_path_agree_on_states_and_gradients():
    m = _memory()
    p = pruned_memory(m, 25, dense=True)
    s = sparse_twin(p)
    assert p.cell.dense and not s.cell.dense
    x = _images()
    torch.testing.assert_close(p(x), s(x), rtol=1e-10, atol=1e-12)
    for model in (p, s):
        model.zero_grad()
        recall_loss(model(x), x).backward()
    torch.testing.assert_close(p.cell.weight.grad, s.cell.weight.grad, rtol=1e-8, atol=1e-10)
    # and the pruned memory differs from the complete one (the pruning did something)
    with torch.no_grad():
        assert float((m(x) - p(x)).abs().max()) > 1e-6


def test_retraining_a_pruned_memory_trains_only_its_synapses():
    m = _memory()
    p = pruned_memory(m, 30, dense=True)
    before = p.cell.weight.detach().clone()
    x = _images()
    res = train_memory(p, x, 5, lr=1e-2)
    assert res.epochs_done == 5 and res.loss[-1] < res.loss[0]
    assert p.cell.num_synapses == 30 and not torch.equal(p.cell.weight.detach(), before)
    n = p.num_nodes
    i, j = p.cell.pair_index
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[i, j] = mask[j, i] = True
    assert float(p.cell.weight_matrix().detach()[~mask].abs().max()) == 0.0


def test_time_steps_and_verdict():
    m = _memory().float()
    x = _images().float()
    t = time_steps({"complete": m, "pruned": sparse_twin(pruned_memory(m, 10, dense=True))}, x,
                   repeats=2, steps=2)
    assert t["complete"]["speedup"] == pytest.approx(1.0)
    assert t["pruned"]["step_s"] > 0
    point = {"label": "magnitude_10pct", "synapses": 100, "fraction": 0.1, "complete_synapses": 1000,
             "success_rate": 0.9, "speedup": 6.0, "pruned_no_retrain": {"success_rate": 0.0}}
    low = dict(point, label="magnitude_1pct", synapses=10, fraction=0.01, success_rate=0.2, speedup=20.0)
    text = verdict({"units": [{"label": "dense"}, point, low]})
    assert text.startswith("**Met**") and "100 synapses" in text
    assert "falls below 8/10 at 10 synapses" in text
    slow = dict(point, speedup=3.0)
    assert verdict({"units": [slow]}).startswith("**Not met**")

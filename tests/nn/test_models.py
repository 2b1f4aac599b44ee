"""The ready-made models: contracts the tasks rely on, learning, batching, drop-in use."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GCNConv

from pyg_rbp.nn import FixedPointConv, GatedCell, ImplicitCell, PPRCell
from pyg_rbp.nn.models import FixedPointGraphModel, FixedPointNodeClassifier

pytestmark = pytest.mark.usefixtures("one_thread")


def _graph(n: int = 30, f: int = 6, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, 4 * n), generator=g)
    x = torch.randn(n, f, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # 3 classes, learnable from features
    return Data(x=x, edge_index=ei, y=y)


@pytest.mark.parametrize(("cell", "cell_type"),
                         [("gated", GatedCell), ("implicit", ImplicitCell), ("ppr", PPRCell)])
def test_node_classifier_contract(cell, cell_type):
    data = _graph()
    model = FixedPointNodeClassifier(6, 16, 3, cell=cell, grad="cg", max_iter=20,
                                     backward_iter=7, tol=0.0, dropout=0.1)
    assert isinstance(model.conv, FixedPointConv) and isinstance(model.conv.cell, cell_type)
    assert (model.conv.grad, model.conv.max_iter, model.conv.backward_iter) == ("cg", 20, 7)
    out = model(data.x, data.edge_index)
    assert out.shape == (30, 3)
    assert model.conv.stats.forward_iters == 20
    model.conv.max_iter = 5  # benchmarks sweep settings on one model
    model(data.x, data.edge_index)
    assert model.conv.stats.forward_iters == 5


def test_node_classifier_options():
    m = FixedPointNodeClassifier(16, 16, 4, cell="gated", encoder=False)
    assert m.encoder is None and m.conv.cell.inject_input is False
    x = torch.randn(10, 16)
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    m.eval()
    # encoder=False: the features are the initial state, unchanged, for max_iter steps
    m.conv.max_iter = 1
    torch.testing.assert_close(m(x, ei), m.decoder(m.conv.cell(x, x, ei)))
    with pytest.raises(ValueError, match="in_channels .* must equal hidden_channels"):
        FixedPointNodeClassifier(8, 16, 4, cell="gated", encoder=False)
    with pytest.raises(ValueError, match="cell must be one of"):
        FixedPointNodeClassifier(8, 16, 4, cell="gcn")
    ppr = FixedPointNodeClassifier(8, 16, 4, cell="ppr", alpha=0.3, num_mlp_layers=3)
    assert ppr.conv.cell.alpha == 0.3 and ppr.mlp.num_layers == 3
    imp = FixedPointNodeClassifier(8, 16, 4, cell="implicit", kappa=0.5, damping=0.5)
    assert imp.conv.cell.kappa == 0.5 and imp.conv.damping == 0.5


@pytest.mark.parametrize("cell", ["gated", "implicit", "ppr"])
@pytest.mark.parametrize("grad", ["neumann", "cg"])
def test_node_classifier_learns_and_every_part_gets_gradient(cell, grad):
    torch.manual_seed(0)
    data = _graph(seed=1)
    model = FixedPointNodeClassifier(6, 16, 3, cell=cell, grad=grad, max_iter=25, backward_iter=10)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.cross_entropy(model(data.x, data.edge_index), data.y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0], losses[::10]
    for name, p in model.named_parameters():  # the encoder too, in an implicit mode
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


@pytest.mark.parametrize("cell", ["gated", "implicit", "ppr"])
@pytest.mark.parametrize("pool", ["mean", "add", "max"])
def test_graph_model_batch_equals_graphs_one_by_one(cell, pool):
    torch.manual_seed(0)
    graphs = [_graph(n, 5, seed) for seed, n in enumerate((6, 9, 4))]
    batch = Batch.from_data_list(graphs)
    model = FixedPointGraphModel(5, 8, 2, cell=cell, max_iter=30, pool=pool).double().eval()
    out = model(batch.x.double(), batch.edge_index, batch.batch)
    assert out.shape == (3, 2)
    singles = torch.cat([model(g.x.double(), g.edge_index, None) for g in graphs])
    torch.testing.assert_close(out, singles, rtol=1e-10, atol=1e-12)


def test_graph_model_with_a_node_encoder_for_integer_features():
    from ogb.graphproppred.mol_encoder import AtomEncoder

    torch.manual_seed(0)
    x = torch.randint(0, 2, (12, 9))  # OGB molecule atom features are integers
    ei = torch.randint(0, 12, (2, 30))
    batch = torch.tensor([0] * 5 + [1] * 7)
    model = FixedPointGraphModel(-1, 16, 1, cell="gated", grad="neumann", max_iter=10,
                                 backward_iter=5, node_encoder=AtomEncoder(16))
    out = model(x, ei, batch)
    assert out.shape == (2, 1)
    out.sum().backward()
    assert float(model.encoder.atom_embedding_list[0].weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="pool"):
        FixedPointGraphModel(4, 8, 1, pool="sort")


class _GCN(torch.nn.Module):
    """A plain two-layer PyG model, as a user would write it."""

    def __init__(self, conv1: torch.nn.Module, conv2: torch.nn.Module):
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


def test_drop_in_replacement_of_a_gcn_layer():
    """The README example: swap the first GCNConv for a fixed-point layer, train unchanged."""
    torch.manual_seed(0)
    data = _graph(seed=2)
    baseline = _GCN(GCNConv(6, 16), GCNConv(16, 3))
    model = _GCN(FixedPointConv(ImplicitCell(6, 16), grad="neumann", max_iter=30), GCNConv(16, 3))
    for m in (baseline, model):
        assert m(data.x, data.edge_index).shape == (30, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(data.x, data.edge_index), data.y)
        loss.backward()
        opt.step()
        first = float(loss) if first is None else first
    assert float(loss) < 0.7 * first

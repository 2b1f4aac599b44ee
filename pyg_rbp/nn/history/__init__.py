r"""Historical fixed points: solve a graph's fixed point one mini-batch of nodes at a time.

A fixed-point layer on the full graph keeps every node's state on one device. Here a per-node
state buffer (:class:`HistoryBuffer`, no gradient, on the compute device or another one) holds
the latest solved state of every node instead, and a mini-batch :math:`B` of target nodes is
solved with the states of its 1-hop halo :math:`H` (the out-of-batch nodes with an edge into
:math:`B`) read from the buffer as constants:

.. math::
    \mathbf{h}_B^* = F_B\left(\mathbf{h}_B^*, \bar{\mathbf{h}}_H\right),
    \qquad
    \hat A \mathbf{h} \big|_B = \hat A_{BB} \mathbf{h}_B + \underbrace{\hat A_{BH}
    \bar{\mathbf{h}}_H}_{\text{constant } \mathbf{c}_B}

where :math:`F` is the full-graph map (its adjacency normalised on the *full* graph, so a
node's degree is its full degree) and :math:`\bar{\mathbf{h}}_H` the buffer's rows. The solved
:math:`\mathbf{h}_B^*` is written back. The halo enters only through the constant
:math:`\mathbf{c}_B`, computed once per solve without gradient, so one step's memory is
:math:`O(|B| + |H|)` (the halo's states are read once; nothing of the halo is saved for
backward) and the batch solve starts warm from the buffer's rows of :math:`B`.

**Convergence.** A sweep over a partition :math:`B_1, \dots, B_m` of the nodes, each solved to
its fixed point with the latest states of the others, is one step of block Gauss-Seidel on the
full-graph map. When the map is a contraction in a (weighted) max-norm, as
:class:`~pyg_rbp.nn.ImplicitCell`'s projection guarantees, every block update is too, and
repeated sweeps converge to the full-graph fixed point from any buffer
(``tests/nn/test_history.py`` checks 1e-5 relative).

**Gradients.** The gradient of a batch's output is the implicit gradient of the *batch's* fixed
point with the halo held constant: :math:`z = (I - J_{BB}^\top)^{-1} g_B` with
:math:`J_{BB} = \partial F_B / \partial \mathbf{h}_B` at :math:`\mathbf{h}_B^*`, then
:math:`\partial L / \partial w = (\partial F_B / \partial w)^\top z`, computed by the layer's
gradient mode (Neumann, CG, ...) on the batch alone. The dependence of the halo's states on the
parameters is ignored (they are treated as data, as in GNNAutoScale); at the full-graph fixed
point this drops the cross-batch terms :math:`J_{BH}` of the exact implicit gradient.

Works without ``pyg-lib``/``torch-sparse``: halos are sliced from the CSR layout of the full
graph (:func:`build_halo_batches`), and the batches come from :func:`partition_nodes`
(:mod:`pyg_rbp.nn.partition`; by default reverse Cuthill-McKee chunks; the dropped cross-batch
terms are those of the cut edges, which ``partition="spectral"`` keeps fewest of).

Example::

    model = FixedPointNodeClassifier(F, 64, C, cell="implicit")
    batches = build_halo_batches(model.conv.cell, edge_index, N,
                                 partition_nodes(edge_index, N, batch_size=1024))
    buffer = HistoryBuffer(N)
    for batch in batches:
        logits = history_forward(model, x.index_select(0, batch.nodes), batch, buffer)
        loss_fn(logits[batch_train_mask], y_batch).backward()
"""

from pyg_rbp.nn.history.adjoint import HistoryAdjoint
from pyg_rbp.nn.history.batches import HaloBatch, HaloCSR, HistoryBuffer, build_halo_batches
from pyg_rbp.nn.history.solve import batch_solves, find_fixed_point_conv, history_forward, solve_batch, sweep
from pyg_rbp.nn.partition import PARTITIONS, edge_cut, partition_nodes

__all__ = ["PARTITIONS", "HaloBatch", "HaloCSR", "HistoryAdjoint", "HistoryBuffer", "batch_solves",
           "build_halo_batches", "edge_cut", "find_fixed_point_conv", "history_forward", "partition_nodes",
           "solve_batch", "sweep"]

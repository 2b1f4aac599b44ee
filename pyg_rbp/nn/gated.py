r"""The gated graph neural network cell of Liao et al. (2018): :class:`GatedCell`.

The paper's citation-network model runs this cell 100 times: every node sums its neighbours'
states and feeds the sum into one weight-tied GRU cell. It is the cell the paper trains with
BPTT, TBPTT and the RBP variants, so its step is written for speed: the aggregation is one CSR
sparse-dense matmul and the GRU is evaluated with in-place kernels (the recurrent products
accumulate straight into the gate buffer, the weights are split by gate once per solve), which
on CPU costs about half of ``torch.nn.GRUCell`` (see ``benchmarks/kernel_ratio.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.parametrizations import spectral_norm as _sn

from pyg_rbp.nn.cell import CellInputs, FixedPointCell


def gru_weights(gru: torch.nn.GRUCell) -> dict[str, Tensor]:
    """The GRU's weights split by gate and transposed, once per solve (views: differentiable).

    Keys: ``w_ih_rz``, ``w_hh_rz`` (reset/update gates), ``w_ih_n``, ``w_hh_n`` (new gate),
    and with biases ``b_rz`` (input and state biases of r, z summed), ``b_in``, ``b_hn``.
    """
    c = gru.hidden_size
    w_ih, w_hh = gru.weight_ih, gru.weight_hh
    weights = {
        "w_ih_rz": w_ih[: 2 * c].t(), "w_hh_rz": w_hh[: 2 * c].t(),
        "w_ih_n": w_ih[2 * c:].t(), "w_hh_n": w_hh[2 * c:].t(),
    }
    if gru.bias:
        weights["b_rz"] = gru.bias_ih[: 2 * c] + gru.bias_hh[: 2 * c]
        weights["b_in"] = gru.bias_ih[2 * c:]
        weights["b_hn"] = gru.bias_hh[2 * c:]
    return weights


def gru_update(m: Tensor, h: Tensor, weights: dict[str, Tensor]) -> Tensor:
    r"""``torch.nn.GRUCell(m, h)``, same math, in fewer memory passes (``weights``: :func:`gru_weights`).

    .. math::
        r, z = \sigma(W_{ir} m + W_{hr} h + b_r),\ \sigma(W_{iz} m + W_{hz} h + b_z) \\
        n = \tanh(W_{in} m + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
        h' = n + z \odot (h - n)

    The reset/update pre-activations of input and state share one buffer (the second matmul
    accumulates into the first), and the last line is one ``lerp``. All ops are
    differentiable twice, as the double-VJP trick of CG-RBP needs.
    """
    c = h.size(-1)
    if "b_rz" in weights:
        rz = torch.addmm(weights["b_rz"], m, weights["w_ih_rz"])
        gate_hn = torch.addmm(weights["b_hn"], h, weights["w_hh_n"])
        gate_in = torch.addmm(weights["b_in"], m, weights["w_ih_n"])
    else:
        rz = torch.mm(m, weights["w_ih_rz"])
        gate_hn = torch.mm(h, weights["w_hh_n"])
        gate_in = torch.mm(m, weights["w_ih_n"])
    rz = rz.addmm_(h, weights["w_hh_rz"]).sigmoid_()
    r, z = rz[:, :c], rz[:, c:]
    n = gate_in.addcmul_(r, gate_hn).tanh_()
    return torch.lerp(n, h, z)


class GatedCell(FixedPointCell):
    r"""One step of the gated graph network of Liao et al. (2018) (Li et al.'s GGNN without
    the message transform, whose weights the GRU's input matrix already contains).

    .. math::
        \mathbf{m}_i = \bigoplus_{j \in \mathcal{N}(i)} e_{j,i} \cdot \mathbf{h}_j
        \ [+\ \mathbf{x}_i]

        \mathbf{h}_i' = \mathrm{GRU}(\mathbf{m}_i, \mathbf{h}_i)

    with :math:`\bigoplus` the aggregation ``aggr`` and :math:`e_{j,i}` the edge weight
    (default 1). The bracketed input injection is on by default (``inject_input=True``).

    Default initial state (in :class:`~pyg_rbp.nn.FixedPointConv`): :math:`\mathbf{h}^{(0)} =
    \mathbf{x}`, as in the paper, where the (PCA-reduced) node features are the initial state.
    The paper's model does not inject the input (``inject_input=False``, what its protocol
    uses): the step itself then does not read ``x``, so the fixed point of a contractive map
    does not depend on ``x`` at all; the implicit gradient modes give ``x`` no gradient and
    BPTT/TBPTT only the gradient through ``h0`` (``FixedPointConv`` warns when such a solve
    settles).

    ``spectral_norm=True`` reparametrises the GRU's weights (``weight_ih``, which multiplies the
    aggregated neighbour states, and ``weight_hh``) with PyTorch's spectral normalisation, so
    each has spectral norm 1 (by power iteration, one step per training forward). This bounds
    the gates' linear parts; it does not by itself make the map a contraction, whose spectral
    radius also depends on the aggregation and the gate values (measured in
    ``benchmarks/results/solvers_*.md``).

    The map is not guaranteed to be a contraction; with 100 steps the state usually settles
    (check ``FixedPointConv.stats.residual``), and ``damping`` in the solver helps when not.

    Args:
        channels (int): size of the state (and of ``x``).
        aggr (str, optional): ``"add"`` (the paper), ``"mean"``, or any PyG aggregation
            (``"max"``, ...); sum and mean use the fused CSR kernel. (default: ``"add"``)
        inject_input (bool, optional): add ``x`` to the aggregated message. (default: ``True``;
            the paper's model: ``False``)
        spectral_norm (bool, optional): spectral normalisation of the GRU weights.
            (default: ``False``)
        bias (bool, optional): GRU biases. (default: ``True``)
        fused (bool, optional): use the CSR kernel for sum/mean aggregation; ``False`` uses
            PyG's gather/scatter path. (default: ``True``)

    Shapes:
        - **input:** state :math:`(|\mathcal{V}|, C)`, node features :math:`(|\mathcal{V}|, C)`,
          edge indices :math:`(2, |\mathcal{E}|)` or a sparse adjacency, edge weights
          :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** next state :math:`(|\mathcal{V}|, C)`

    Example:
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> x = torch.randn(3, 16)
        >>> cell = GatedCell(16, aggr="mean")
        >>> cell(x, x, edge_index).shape  # one step from h = x
        torch.Size([3, 16])
        >>> FixedPointConv(cell, grad="cg", max_iter=50)(x, edge_index).shape  # the fixed point
        torch.Size([3, 16])
    """

    def __init__(self, channels: int, aggr: str = "add", inject_input: bool = True,
                 bias: bool = True, fused: bool = True, spectral_norm: bool = False,
                 **kwargs: Any) -> None:
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        kwargs.setdefault("aggr", aggr)
        super().__init__(fused=fused, **kwargs)
        self.channels = channels
        self.inject_input = bool(inject_input)
        self.spectral_norm = bool(spectral_norm)
        self.gru = torch.nn.GRUCell(channels, channels, bias=bias)
        if self.spectral_norm:
            _sn(self.gru, "weight_ih")
            _sn(self.gru, "weight_hh")
        self.reset_parameters()

    @property
    def reads_input(self) -> bool:
        return self.inject_input

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.gru.reset_parameters()

    def in_channels_expected(self) -> int | None:
        return self.channels

    def _prepare_extra(self, inputs: CellInputs) -> dict[str, Tensor]:
        return gru_weights(self.gru)

    def step(self, h: Tensor, inputs: CellInputs) -> Tensor:
        m = self.aggregate_neighbours(h, inputs.graph)
        if self.inject_input:
            m = m + inputs.x
        return gru_update(m, h, inputs.extra)

    def initial_state(self, inputs: CellInputs) -> Tensor:
        return inputs.x

    def __repr__(self) -> str:
        sn = ", spectral_norm=True" if self.spectral_norm else ""
        return (f"{self.__class__.__name__}({self.channels}, aggr={self.aggr!r}, "
                f"inject_input={self.inject_input}, fused={self.fused}{sn})")

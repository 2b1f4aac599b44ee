"""Recurrent fixed-point message-passing layers for PyG.

:class:`FixedPointConv` solves a one-step message-passing cell to its fixed point with
:func:`pyg_rbp.fixed_point` and any of its five gradient modes. The cells
(:class:`GatedCell`, :class:`ImplicitCell`, :class:`PPRCell`, and :class:`HopfieldCell` for
associative memory) are PyG ``MessagePassing`` layers
called as ``cell(h, x, edge_index, edge_weight=None)``; sum aggregation runs as one CSR
sparse-dense matmul per step on an adjacency built once per solve (:mod:`pyg_rbp.nn.adjacency`).
Ready-made models are in :mod:`pyg_rbp.nn.models`.
"""

from pyg_rbp.nn.adjacency import CSRAdjacency, validate_edge_index, validate_edge_weight
from pyg_rbp.nn.cell import CellInputs, FixedPointCell
from pyg_rbp.nn.fixed_point_conv import FixedPointConv
from pyg_rbp.nn.gated import GatedCell
from pyg_rbp.nn.hopfield import HopfieldCell
from pyg_rbp.nn.implicit import ImplicitCell
from pyg_rbp.nn.models import FixedPointGraphModel, FixedPointNodeClassifier
from pyg_rbp.nn.ppr import PPRCell

__all__ = [
    "CSRAdjacency",
    "CellInputs",
    "FixedPointCell",
    "FixedPointConv",
    "FixedPointGraphModel",
    "FixedPointNodeClassifier",
    "GatedCell",
    "HopfieldCell",
    "ImplicitCell",
    "PPRCell",
    "validate_edge_index",
    "validate_edge_weight",
]

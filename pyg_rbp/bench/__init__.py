"""Benchmarks of the gradient modes against each other and against what PyG users use today.

This package holds the measuring code behind ``pyg-rbp bench``; it is importable so that tests
and notebooks can call it, but the library itself never imports it. Peers (PyG's
``GatedGraphConv``, ``torchdeq``) are imported only inside the functions that run them, so they
stay optional benchmark extras.
"""

from pyg_rbp.bench.graphs import BenchGraph, load_bench_graph, random_graph

__all__ = ["BenchGraph", "load_bench_graph", "random_graph"]

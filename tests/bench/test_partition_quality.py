"""benchmarks/partition_quality.py: the halo and class-mix measures it reports, on a graph
small enough to count by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "partition_quality.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("partition_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_halo_fraction_counts_outside_sources_per_batch_node(script):
    # path 0-1-2-3-4 (both directions), batches {0,1} and {2,3,4}
    path = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4], [1, 0, 2, 1, 3, 2, 4, 3]])
    halos = script.halo_fractions(path, 5, [torch.tensor([0, 1]), torch.tensor([2, 3, 4])])
    assert halos == pytest.approx([1 / 2, 1 / 3])  # node 2 for the first, node 1 for the second


def test_class_mix_is_the_total_variation_from_the_graph(script):
    y = torch.tensor([0, 0, 1, 1])
    assert script.class_mix(y, [torch.tensor([0, 2]), torch.tensor([1, 3])]) == pytest.approx(0.0)
    assert script.class_mix(y, [torch.tensor([0, 1]), torch.tensor([2, 3])]) == pytest.approx(0.5)

"""Every public layer documents itself as PyG's do (update rule in math, Args, Shapes, Example),
and its Example runs and prints what it shows."""

from __future__ import annotations

import doctest

import pytest
import torch

import pyg_rbp.nn as pnn

pytestmark = pytest.mark.usefixtures("one_thread")
SECTIONS = (".. math::", "Args:", "Shapes:", "Example:")
LAYERS = ["FixedPointConv", "GatedCell", "ImplicitCell", "PPRCell", "FixedPointNodeClassifier",
          "FixedPointGraphModel", "HopfieldCell"]


@pytest.mark.parametrize("name", LAYERS)
def test_docstring_has_the_pyg_sections(name):
    doc = getattr(pnn, name).__doc__ or ""
    missing = [s for s in SECTIONS if s not in doc]
    assert not missing, f"{name}'s docstring lacks {missing}"


@pytest.mark.parametrize("name", LAYERS)
def test_docstring_example_runs(name):
    layer = getattr(pnn, name)
    globs = {"torch": torch, **{k: getattr(pnn, k) for k in pnn.__all__}}
    tests = [t for t in doctest.DocTestFinder().find(layer, name, globs=globs) if t.name == name]
    assert tests and tests[0].examples, f"{name}'s docstring has no example to run"
    torch.manual_seed(0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out: list[str] = []
    runner.run(tests[0], out=out.append)
    assert runner.failures == 0, "".join(out)

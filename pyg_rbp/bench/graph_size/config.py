"""The settings of one ``bench graph-size`` run and the vocabulary its rows use (modes, the probe,
the statuses a resume keeps); the fingerprint decides whether a saved file may be resumed.
:func:`upgrade` reads a result written before the one vocabulary (``steps`` -> ``max_iter``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyg_rbp.bench.graph_size.specs import GraphSpec, parse_graph
from pyg_rbp.engine import grad_mode_names
from pyg_rbp.results import rename_keys

SCHEMA = "pyg_rbp.bench.graph_size/1"

GRAPH_SIZE_GRADS = ("bptt", "tbptt", "neumann")
"""The modes this benchmark compares (any engine mode is accepted)."""

UNROLLED = ("bptt", "tbptt")
"""Modes whose saved bytes grow with the recorded steps (probed and predicted)."""

PROBE = "probe"
"""The configuration that measures BPTT's bytes at T=1 and T=2 on a graph (no training)."""

DEFAULT_GRAPHS = ("powerlaw:10k", "powerlaw:100k", "powerlaw:1m",
                  "amazon-computers", "amazon-photo", "coauthor-cs")

FINISHED = ("ok", "out_of_memory", "skipped")
"""Statuses a resumed run keeps (``skipped`` only while predicted failures are still skipped);
``error``, ``timeout`` and ``killed`` rows are measured again."""


@dataclass
class GraphSizeConfig:
    """Everything that defines one graph-size run (and decides whether saved rows are reused)."""

    graphs: list[str] = field(default_factory=lambda: list(DEFAULT_GRAPHS))
    grads: list[str] = field(default_factory=lambda: list(GRAPH_SIZE_GRADS))
    max_iter: int = 100
    backward_iter: int = 20
    hidden: int = 64
    degree: int = 10
    classes: int = 7
    exponent: float = 2.5
    aggr: str = "mean"
    repeats: int = 3
    step_budget_s: float = 60.0
    memory_limit_gb: float = 8.0
    predict: bool = True
    skip_predicted_oom: bool = False
    device: str = "cpu"
    threads: int | None = 1
    seed: int = 0
    lr: float = 1e-3
    root: str | None = None
    jobs: int = 1
    timeout_s: float = 3600.0

    def validate(self) -> None:
        if not self.graphs:
            raise ValueError("no graph given")
        for g in self.graphs:
            parse_graph(g, self.degree)
        unknown = [g for g in self.grads if g not in grad_mode_names()]
        if unknown or not self.grads:
            raise ValueError(f"unknown gradient modes {unknown or self.grads}; "
                             f"valid: {', '.join(grad_mode_names())}")
        for name in ("max_iter", "backward_iter", "hidden", "degree", "classes", "repeats", "jobs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.jobs > 2:
            raise ValueError(f"jobs must be 1 or 2 (configurations share the machine), got {self.jobs}")
        if not self.memory_limit_gb > 0:
            raise ValueError(f"memory_limit_gb must be positive, got {self.memory_limit_gb!r}")
        if not self.step_budget_s > 0 or not self.timeout_s > 0:
            raise ValueError("step_budget_s and timeout_s must be positive")
        if self.aggr not in ("add", "mean"):
            raise ValueError(f"aggr must be 'add' or 'mean', got {self.aggr!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not self.exponent > 2:
            raise ValueError(f"exponent must be > 2, got {self.exponent!r}")

    def specs(self) -> list[GraphSpec]:
        return [parse_graph(g, self.degree) for g in self.graphs]

    def fingerprint(self) -> dict[str, Any]:
        """The settings every saved row depends on (graphs and modes may be added on resume)."""
        keys = ("max_iter", "backward_iter", "hidden", "degree", "classes", "exponent", "aggr",
                "repeats", "step_budget_s", "memory_limit_gb", "predict", "device", "threads",
                "seed", "lr")
        return {k: getattr(self, k) for k in keys}

    @property
    def memory_limit_bytes(self) -> int:
        return int(self.memory_limit_gb * 2**30)


RENAMED = {"steps": "max_iter"}
"""Keys of settings and rows written before the one vocabulary (old -> new)."""


def _renamed(row: dict[str, Any]) -> dict[str, Any]:
    return rename_keys(row, RENAMED)


def upgrade(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the keys of an older file (``steps``) under their names now
    (``max_iter``) in its config, fingerprint, rows and bisection tries; a current result is
    returned as it is (an equal copy)."""
    out = dict(result)
    for name in ("config", "fingerprint"):
        if isinstance(out.get(name), dict):
            out[name] = _renamed(out[name])
    out["results"] = [_renamed(r) for r in out.get("results") or []]
    out["largest_steps"] = [{**ls, "tries": [_renamed(t) for t in ls.get("tries", [])]}
                            for ls in out.get("largest_steps") or []]
    return out

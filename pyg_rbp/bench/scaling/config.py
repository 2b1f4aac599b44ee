"""What defines a ``bench scaling`` run: its settings, the grid of cells and the rows' keys.

Kept apart from the measuring so that the driver, the target pass, the accuracy study and the
report agree on one vocabulary: a *cell* is one ``(contender, max_iter, backward_iter, tol)`` of
the grid, where the *contender* is a gradient mode or a peer. :func:`upgrade` reads a result
written before the one vocabulary (``steps``, ``target_steps``, ``target_k``, a row's ``grad``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyg_rbp.bench.peers import PEERS
from pyg_rbp.engine import GRAD_MODES, grad_mode_names
from pyg_rbp.results import rename_keys

SCHEMA = "pyg_rbp.bench.scaling/1"

K_INDEPENDENT = ("bptt", "pyg_gatedgraphconv")
"""Rows whose cost does not depend on ``K`` (measured once per ``T``, ``backward_iter`` null)."""

REDO_PARTS = ("grid", "floors", "targets", "accuracy")
"""Parts of a saved run that ``redo`` re-measures (the rest is reused)."""

PART_SETTINGS: dict[str, tuple[str, ...]] = {
    "targets": ("target_max_iter", "target_backward_iter", "rounds"),
    "accuracy": ("target_max_iter", "target_backward_iter", "reference_iters", "forward_tol"),
}
"""Settings the target pass and the accuracy study depend on beyond the grid's: a saved part
measured with other values is refused on resume unless that part is redone (``redo``)."""

CONTENDERS = ("grads", "peers")
"""The settings naming the contenders: a rerun may measure a subset or add some."""

GRID_SETTINGS = ("max_iter", "backward_iters")
"""The grid's axes: a rerun may add values (their cells are measured, the others kept)."""


@dataclass
class ScalingConfig:
    """Everything that defines one scaling run (and decides whether saved rows can be reused)."""

    dataset: str = "cora"
    root: str | None = None
    nodes: int = 2708
    edges: int = 10556
    features: int | None = None
    classes: int = 7
    hidden: int = 64
    aggr: str = "mean"
    max_iter: list[int] = field(default_factory=lambda: [10, 50, 100])
    backward_iters: list[int] = field(default_factory=lambda: [5, 20])
    grads: list[str] = field(default_factory=lambda: list(GRAD_MODES))
    peers: list[str] = field(default_factory=lambda: list(PEERS))
    repeats: int = 5
    warmup: int = 1
    rounds: int = 3
    target_max_iter: int = 100
    target_backward_iter: int = 20
    accuracy: bool = True
    reference_iters: int = 400
    forward_tol: float = 1e-4
    device: str = "cpu"
    threads: int | None = 1
    seed: int = 0
    lr: float = 1e-3

    def validate(self) -> None:
        if not self.max_iter or any(int(t) < 1 for t in self.max_iter):
            raise ValueError(f"max_iter (forward steps T) must be positive integers, got {self.max_iter}")
        if not self.backward_iters or any(int(k) < 1 for k in self.backward_iters):
            raise ValueError(f"backward_iters must be positive integers, got {self.backward_iters}")
        unknown = [g for g in self.grads if g not in grad_mode_names()]
        if unknown:
            raise ValueError(f"unknown gradient modes {unknown}; valid: {', '.join(grad_mode_names())}")
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            raise ValueError(f"unknown peers {unknown}; valid: {', '.join(PEERS)}")
        if self.repeats < 1 or self.warmup < 0 or self.rounds < 0:
            raise ValueError("repeats must be >= 1, warmup >= 0 and rounds >= 0")
        if self.aggr not in ("add", "mean"):
            raise ValueError(f"aggr must be 'add' or 'mean', got {self.aggr!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def fingerprint(self) -> dict[str, Any]:
        """The settings a saved row depends on: rows are reused only when these match."""
        keys = ("dataset", "nodes", "edges", "features", "classes", "hidden", "aggr",
                "repeats", "warmup", "device", "threads", "seed", "lr")
        out = {k: getattr(self, k) for k in keys}
        if self.dataset != "random":
            for k in ("nodes", "edges", "classes"):
                out.pop(k)
            if self.features is None:  # the dataset's own width; set, it is Cora's PCA width
                out.pop("features")
        return out


def grid_cells(cfg: ScalingConfig) -> list[tuple[str, int, int | None]]:
    """All ``(contender, T, K)`` cells of the run; K-independent rows get ``K = None``."""
    cells: list[tuple[str, int, int | None]] = []
    for name in [*cfg.grads, *cfg.peers]:
        for t in cfg.max_iter:
            if name in K_INDEPENDENT:
                cells.append((name, t, None))
            else:
                cells.extend((name, t, k) for k in cfg.backward_iters)
    return cells


def cell_key(contender: str, max_iter: int, k: int | None, tol: float = 0.0) -> str:
    """The key of a grid row (and, with ``contender="floor"``, of a floor) in a run."""
    return f"{contender}|{max_iter}|{k}|{tol:g}"


def row_key(row: dict[str, Any]) -> str:
    """:func:`cell_key` of a saved grid row."""
    return cell_key(row["contender"], row["max_iter"], row["backward_iter"], row.get("tol") or 0.0)


def row_order(row: dict[str, Any]) -> tuple:
    """Sort key of grid rows: modes then peers in their registry order, then T, K, tol."""
    names = [*GRAD_MODES, *PEERS]
    g = row["contender"]
    return (names.index(g) if g in names else len(names), row["max_iter"],
            row["backward_iter"] or 0, row.get("tol") or 0.0)


RENAMED: dict[str, str] = {"steps": "max_iter", "target_steps": "target_max_iter",
                           "target_k": "target_backward_iter", "grad": "contender"}
"""Keys of a result written before the one vocabulary (old -> new): the forward steps ``T`` are
``max_iter``, the target pass's ``(T, K)`` ``target_max_iter``/``target_backward_iter``, and what
a row measures (a gradient mode or a peer) its ``contender``."""


def _renamed(obj: dict[str, Any]) -> dict[str, Any]:
    return rename_keys(obj, RENAMED)


def upgrade(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the keys of an older file (:data:`RENAMED`) under their names now, in its
    config, grid rows, floors, target pass and accuracy study; a current result is returned as
    it is (an equal copy). Only the parts ``result`` has are returned."""
    out = dict(result)
    if isinstance(out.get("config"), dict):
        out["config"] = _renamed(out["config"])
    for name in ("results", "floors"):
        if name in out:
            out[name] = [_renamed(r) for r in out[name] or []]
    if isinstance(out.get("targets"), dict):
        targets = _renamed(out["targets"])
        if "floor_parts" in targets:
            targets["floor_parts"] = [_renamed(f) for f in targets["floor_parts"] or []]
        out["targets"] = targets
    if isinstance(out.get("accuracy"), dict):
        acc = _renamed(out["accuracy"])
        if isinstance(acc.get("reference"), dict):
            acc["reference"] = _renamed(acc["reference"])
        acc["rows"] = [_renamed(r) for r in acc.get("rows") or []]
        out["accuracy"] = acc
    return out

"""Which rows the leaderboard runs for each dataset, under which budget profile.

:func:`plan` lists the rows: for the Planetoid sets the paper protocol's five gradient modes and
linear-PCA baseline, the public split's best fixed-point model and GCN; the per-class protocol's
fixed-point models against GCN and APPNP; the graph datasets' fixed-point model, GIN and GCN; the
TU sets' rows from :mod:`~pyg_rbp.training.leaderboard.tu`.

Budget profiles: ``full`` runs every row with the protocol's own settings and every seed;
``cpu`` shortens the secondary rows (fewer seeds for the other gradient modes of the public
split, fewer epochs and seeds for the molecules) and keeps the paper protocol whole, whose seeds
take many hours on a small CPU: a run cut short shows "partial: k of 10 seeds". The board
records the seeds and epochs each row actually ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyg_rbp.engine import GRAD_MODES
from pyg_rbp.training.config import PLANETOID, PROTOCOLS, SHCHUR, build_config, dataset_task
from pyg_rbp.training.leaderboard import tu
from pyg_rbp.training.leaderboard.cells import Entry

DEFAULT_DATASETS: tuple[str, ...] = ("cora", "citeseer", "pubmed", "ogbg-molbace", "ogbg-molesol",
                                     "ogbn-arxiv")
PROFILES: tuple[str, ...] = ("full", "cpu")

# The `cpu` profile (what fits on a shared 2-core CPU, over several working sessions) shortens the
# secondary rows. The paper rows keep the protocol's 2000 SGD steps and every seed: they are the
# board's target, so the board shows how many of them have finished ("partial: k of 10 seeds")
# rather than a smaller plan (one seed of the five modes costs about an hour per dataset here).
CPU_SECONDARY_SEEDS = 3
# The molecules: 30 epochs instead of OGB's 100 (the full profile), every seed (10 seeds of the
# three rows of both sets take about 40 minutes on one core).
CPU_GRAPH_EPOCHS = 30
CPU_GRAPH_SEEDS = 10
# Per-class protocol (Amazon, Coauthor): Coauthor CS (6,805 dense features) costs about 1.4 s per
# full-graph epoch on one busy core, so the cpu profile gives it 3 seeds and no IGNN-style row
# (about 3x dearer); Amazon Photo and Computers run every row with every seed.
CPU_PER_CLASS_SEEDS = {"coauthor-cs": 3, "coauthor-physics": 3}

# The `full` profile trains the molecules as OGB's own examples do: 100 epochs, the model of the
# best validation epoch (no early stopping).
FULL_GRAPH: dict[str, Any] = {"epochs": 100, "patience": 0}


def _seeds(n: int, cap: int | None = None) -> list[int]:
    return list(range(min(n, cap) if cap else n))


def plan(datasets: Sequence[str], seeds: int = 10, profile: str = "cpu",
         protocols: Sequence[str] | None = None) -> list[Entry]:
    """The leaderboard rows of ``datasets`` with ``seeds`` seeds under a budget ``profile``
    (only the rows of ``protocols`` when given).

    Raises :class:`ValueError` on an unknown protocol, and when the selection leaves no row
    (a board with nothing to run is a mistake, not a success)."""
    entries = _plan(list(dict.fromkeys(d.strip().lower() for d in datasets)), seeds, profile)
    if protocols is not None:
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown:
            raise ValueError(f"unknown protocol(s) {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(PROTOCOLS)}")
        entries = [e for e in entries if e.config.protocol in protocols]
    if not entries:
        raise ValueError(f"no leaderboard row for datasets {', '.join(datasets)}"
                         + (f" under protocol(s) {', '.join(protocols)}" if protocols else ""))
    return entries


def _plan(datasets: Sequence[str], seeds: int, profile: str) -> list[Entry]:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    cpu = profile == "cpu"
    entries: list[Entry] = []
    for name in datasets:
        name = name.strip().lower()
        task = dataset_task(name)
        if name in PLANETOID:
            entries.extend(_planetoid_rows(name, task, seeds, cpu))
        elif name.startswith("tu-"):  # TU graph classification, 10-fold
            entries.extend(tu.tu_entries(name, seeds, cpu))
        elif name in SHCHUR:
            entries.extend(_per_class_rows(name, task, seeds, cpu))
        elif task == "graph":
            entries.extend(_graph_rows(name, task, seeds, cpu))
        else:
            entries.append(Entry(build_config(name, task, model="ppr", grad="neumann"), _seeds(seeds)))
            entries.append(Entry(build_config(name, task, model="gcn"), _seeds(seeds)))
    return entries


def _planetoid_rows(name: str, task: str, seeds: int, cpu: bool) -> list[Entry]:
    """The paper protocol (gated GNN in the five modes and the linear-PCA baseline) and the public
    split (APPNP-style fixed point with Neumann-RBP against GCN, plus other modes)."""
    entries = [Entry(build_config(name, task, protocol="paper", model="gated", grad=g), _seeds(seeds))
               for g in GRAD_MODES]
    entries.append(Entry(build_config(name, task, protocol="paper", model="linear-pca"), _seeds(seeds)))
    entries.append(Entry(build_config(name, task, protocol="public", model="ppr", grad="neumann"),
                         _seeds(seeds)))
    other = ["bptt"] if cpu else [g for g in GRAD_MODES if g != "neumann"]
    for g in other:
        s = _seeds(seeds, CPU_SECONDARY_SEEDS) if cpu else _seeds(seeds)
        entries.append(Entry(build_config(name, task, protocol="public", model="ppr", grad=g), s,
                             f"cpu budget: {len(s)} of {seeds} seeds" if cpu and len(s) < seeds else ""))
    entries.append(Entry(build_config(name, task, protocol="public", model="gcn"), _seeds(seeds)))
    return entries


def _graph_rows(name: str, task: str, seeds: int, cpu: bool) -> list[Entry]:
    """Graph property prediction (OGB molecules): the gated fixed point with Neumann-RBP, GIN, GCN."""
    over: dict[str, Any] = {"epochs": CPU_GRAPH_EPOCHS} if cpu else dict(FULL_GRAPH)
    s = _seeds(seeds, CPU_GRAPH_SEEDS) if cpu else _seeds(seeds)
    note = (f"cpu budget: {CPU_GRAPH_EPOCHS} epochs, {len(s)} of {seeds} seeds (same for every row)"
            if cpu else "")
    return [Entry(build_config(name, task, model="gated", grad="neumann", **over), s, note),
            Entry(build_config(name, task, model="gin", **over), s, note),
            Entry(build_config(name, task, model="gcn", **over), s, note)]


def _per_class_rows(name: str, task: str, seeds: int, cpu: bool) -> list[Entry]:
    """Per-class protocol rows: the fixed-point models with Neumann-RBP (APPNP-style ``ppr``
    solved to its limit, IGNN-style ``implicit``) against GCN and APPNP (K = 10) baselines."""
    cap = CPU_PER_CLASS_SEEDS.get(name) if cpu else None
    s = _seeds(seeds, cap)
    note = f"cpu budget: {len(s)} of {seeds} seeds (same for every row)" if len(s) < seeds else ""
    models = [("ppr", "neumann"), ("implicit", "neumann"), ("gcn", None), ("appnp", None)]
    if cpu and cap is not None:
        models.remove(("implicit", "neumann"))
    return [Entry(build_config(name, task, protocol="per-class", model=m, grad=g), s, note)
            for m, g in models]

"""Leaderboard cells: a row to run (:class:`Entry`) and its finished (row, seed) cells on disk.

A cell is one seed (or fold) of one row, stored as its own JSON file
``<results>/cells/<dataset>/<protocol>__<model>__<grad>__<key>__seed<seed>.json`` whose ``key`` is
the first 10 hex digits of the SHA-1 of the row's reproducing command, so cells of a changed
config never mix with the old ones (those stay on disk, and count again if the config comes
back). The names are the contract with every committed cell: they do not change.

:class:`CellStore` applies the project's one resume policy (:mod:`pyg_rbp.results`) to these
files: a cell file recording another command or seed than its name says is refused with
:class:`~pyg_rbp.results.ResultsFileConflict` (through :func:`~pyg_rbp.results.check_settings`,
the comparison :class:`~pyg_rbp.results.ResumableResults` makes) unless ``fresh``; every finished
cell is kept; each cell is written atomically, once, by the one process holding its lock.

Why one file per cell rather than one :class:`~pyg_rbp.results.ResumableResults` file per board:
the cells of a board are written by several processes at once (``--jobs`` workers, and several
runs sharing one results folder), which a single read-modify-write file would make lose each
other's cells; each row has its own settings (the hash), so a changed row must not invalidate the
board's other rows; and committed cells added on different machines merge without conflicts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyg_rbp.results import CorruptResultsError, atomic_write_json, check_settings, read_json, try_lock
from pyg_rbp.training.config import TrainConfig


@dataclass
class Entry:
    """One leaderboard row to run: a config, the seeds it gets, and why it deviates (if it does)."""

    config: TrainConfig
    seeds: list[int]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Short hash of the reproducing command: cells of a changed config never mix."""
        return hashlib.sha1(self.config.command().encode()).hexdigest()[:10]

    def cell_path(self, cells_dir: Path, seed: int) -> Path:
        """The file of this row's cell ``seed`` under ``cells_dir``."""
        c = self.config
        name = f"{c.protocol}__{c.model}__{c.grad or 'none'}__{self.key}__seed{seed}.json"
        return Path(cells_dir) / c.dataset / name


def cell_label(entry: Entry, seed: int) -> str:
    """``"cora/paper/gated/bptt/s3"``: how progress and failures name a cell."""
    c = entry.config
    return f"{c.dataset}/{c.protocol}/{c.model}/{c.grad or '-'}/s{seed}"


class CellStore:
    """The finished cells under ``<out_dir>/cells``, read and written under the resume policy.

    With ``fresh`` every cell asked for is trained again and its file replaced (nothing else is
    touched); otherwise a finished cell is never trained twice.
    """

    def __init__(self, out_dir: str | Path, *, fresh: bool = False) -> None:
        self.cells_dir = Path(out_dir) / "cells"
        self.fresh = fresh

    def path(self, entry: Entry, seed: int) -> Path:
        """The file of cell ``(entry, seed)``."""
        return entry.cell_path(self.cells_dir, seed)

    @staticmethod
    def settings(entry: Entry, seed: int) -> dict[str, Any]:
        """What a cell file must record to be this cell: the row's command and the seed."""
        return {"command": entry.config.command(), "seed": seed}

    def exists(self, entry: Entry, seed: int) -> bool:
        """Whether the cell's file is on disk (written by this or another run)."""
        return self.path(entry, seed).is_file()

    def read(self, entry: Entry, seed: int) -> dict[str, Any] | None:
        """The finished cell's document, or ``None`` when it is not on disk. A file recording
        another command or seed raises :class:`~pyg_rbp.results.ResultsFileConflict`; a field it
        predates counts as this cell's."""
        path = self.path(entry, seed)
        if not path.is_file():
            return None
        doc = read_json(path)
        if not isinstance(doc, dict):
            raise CorruptResultsError(f"{path} is not a leaderboard cell (expected a JSON object)")
        mine = self.settings(entry, seed)
        check_settings(path, mine, doc, defaults=mine)
        return doc

    def done(self, entry: Entry, seed: int) -> bool:
        """Whether this run skips the cell: it is finished (and checked) and the run is not fresh."""
        if self.fresh:
            return False
        return self.read(entry, seed) is not None

    @contextmanager
    def claim(self, entry: Entry, seed: int) -> Iterator[bool]:
        """The cell's lock: of several runs sharing the results folder, one trains the cell; yields
        whether this process holds it."""
        path = self.path(entry, seed)
        with try_lock(path.with_name(path.name + ".lock")) as mine:
            yield mine

    def write(self, entry: Entry, seed: int, doc: dict[str, Any]) -> Path:
        """Write the finished cell atomically."""
        return atomic_write_json(self.path(entry, seed), doc)

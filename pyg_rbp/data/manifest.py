"""The dataset manifest: where each dataset lives under the data root and which files it needs.

``pyg_rbp/data/manifest.json`` (package data, so an installed wheel has it too) is the single
list of supported datasets, their public sources, the files each loader reads and the sha256
of those files where an offline copy was available to hash. Every loader checks its files
against it *before* handing the folder to PyG or OGB, so that a missing file becomes a
:class:`DataUnavailableError` naming what to put where (instead of a network hang or OGB's
stdin prompt) and a corrupted file a
:class:`ChecksumError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pyg_rbp.data.errors import ChecksumError

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_PATH = Path(__file__).resolve().with_name("manifest.json")  # package data: ships in the wheel


@dataclass(frozen=True)
class ExpectedFile:
    """One file a dataset needs: its path relative to the dataset folder and its sha256."""

    path: str
    sha256: str | None = None
    alternatives: tuple[str, ...] = ()

    def present_path(self, folder: Path) -> Path | None:
        """The first of ``path`` and its alternatives that exists under ``folder``, else None."""
        for rel in (self.path, *self.alternatives):
            candidate = folder / rel
            if candidate.is_file():
                return candidate
        return None


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the manifest."""

    name: str
    loader: str
    folder: str | None
    source: str | tuple[str, ...]
    files: tuple[ExpectedFile, ...] = ()
    optional_files: tuple[ExpectedFile, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, str) else self.source


def _expected(rows: list[dict[str, Any]]) -> tuple[ExpectedFile, ...]:
    return tuple(ExpectedFile(r["path"], r.get("sha256"), tuple(r.get("alternatives", ()))) for r in rows)


@lru_cache(maxsize=4)
def _read_manifest(path: str) -> dict[str, DatasetEntry]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset manifest not found at {path}")
    with open(path) as fh:
        raw = json.load(fh)
    entries: dict[str, DatasetEntry] = {}
    known = {"name", "loader", "folder", "source", "files", "optional_files"}
    for row in raw["datasets"]:
        source = row["source"]
        entries[row["name"]] = DatasetEntry(
            name=row["name"],
            loader=row["loader"],
            folder=row.get("folder"),
            source=source if isinstance(source, str) else tuple(source),
            files=_expected(row.get("files", [])),
            optional_files=_expected(row.get("optional_files", [])),
            extra={k: v for k, v in row.items() if k not in known},
        )
    return entries


def manifest(path: str | os.PathLike | None = None) -> dict[str, DatasetEntry]:
    """All manifest entries by dataset name (``pyg_rbp/data/manifest.json`` unless ``path``)."""
    return _read_manifest(str(path or MANIFEST_PATH))


def dataset_names() -> list[str]:
    """Names :func:`pyg_rbp.data.load` accepts (MNIST is read by :func:`load_mnist` instead)."""
    return [name for name, entry in manifest().items() if entry.loader != "mnist"]


def entry(name: str) -> DatasetEntry:
    """The manifest entry of ``name`` (case-insensitive), or a ValueError listing valid names."""
    entries = manifest()
    key = name.lower()
    if key not in entries:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(entries))}")
    return entries[key]


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def missing_files(
    dataset: DatasetEntry, folder: Path, files: tuple[ExpectedFile, ...] | None = None
) -> list[str]:
    """Paths (relative to ``folder``) of the required files that are absent."""
    wanted = dataset.files if files is None else files
    return [f.path for f in wanted if f.present_path(folder) is None]


def unavailable_message(dataset: DatasetEntry, folder: Path, missing: list[str], reason: str = "") -> str:
    """The text of a :class:`DataUnavailableError`: which files to put where, from where."""
    lines = [
        f"dataset {dataset.name!r}: {len(missing)} required file(s) missing in {folder}:",
        *(f"  - {folder / rel}" for rel in missing),
        f"Put these files there (public source: {', '.join(dataset.sources)}),",
        *(
            [f"  (the source is a zip: its folder {dataset.extra['archive_folder']}/ becomes {folder})"]
            if "archive_folder" in dataset.extra
            else []
        ),
        "or point PYG_RBP_DATA / root= at a folder that has them "
        "(layout: Planetoid/<Name>/raw, ogb/<ogb_dir>/..., MNIST/raw),",
        "or allow downloading with download=True or PYG_RBP_DOWNLOAD=1 on a machine with network access.",
    ]
    if reason:
        lines.append(reason)
    return "\n".join(lines)


def verify_checksums(dataset: DatasetEntry, folder: Path, files: tuple[ExpectedFile, ...]) -> None:
    """Raise :class:`ChecksumError` if a present file with a known sha256 does not match it."""
    bad = []
    for expected in files:
        if expected.sha256 is None:
            continue
        path = expected.present_path(folder)
        if path is None:
            continue
        actual = sha256_of(path)
        if actual != expected.sha256:
            bad.append(f"  - {path}: sha256 {actual}, expected {expected.sha256}")
    if bad:
        raise ChecksumError(
            f"dataset {dataset.name!r}: {len(bad)} file(s) differ from the published copy "
            f"(corrupted or a different version):\n" + "\n".join(bad) + "\n"
            f"Delete them and fetch them again from {', '.join(dataset.sources)}."
        )

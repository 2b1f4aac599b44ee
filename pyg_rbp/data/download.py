"""Fetching missing dataset files over plain HTTP, only when the caller allows it.

Downloading is opt-in (``download=True`` or ``PYG_RBP_DOWNLOAD=1``): on the offline machines this
project is developed on, a loader must fail at once with a clear message instead of waiting on
the network. PyG and OGB are never left to download by themselves (PyG's ``fs.cp`` can hang and
OGB prompts on stdin for large files); we fetch with ``urllib`` under a timeout, write to a
temporary file and rename, so an interrupted download never leaves a half file behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from pyg_rbp.data.errors import DataUnavailableError
from pyg_rbp.data.manifest import DatasetEntry

DOWNLOAD_ENV = "PYG_RBP_DOWNLOAD"
TIMEOUT_S = 60.0


def download_allowed(download: bool | None = None) -> bool:
    """``download`` if given, else whether ``$PYG_RBP_DOWNLOAD`` is 1/true/yes/on (default: no)."""
    if download is not None:
        return bool(download)
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def fetch_url(url: str, dest: Path, timeout: float = TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` atomically; a DataUnavailableError if the fetch fails."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DataUnavailableError(f"could not download {url} to {dest}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def download_files(entry: DatasetEntry, folder: Path, missing: list[str]) -> None:
    """Fetch each missing file by name from the entry's sources (Planetoid, MNIST mirrors)."""
    for rel in missing:
        name = Path(rel).name
        errors = []
        for source in entry.sources:
            try:
                fetch_url(f"{source.rstrip('/')}/{name}", folder / rel)
                break
            except DataUnavailableError as exc:
                errors.append(str(exc))
        else:
            raise DataUnavailableError(
                f"dataset {entry.name!r}: every source failed for {rel}:\n" + "\n".join(errors)
            )


def download_archive(entry: DatasetEntry, folder: Path) -> None:
    """Fetch an OGB release zip and unpack its top folder (``archive_folder``) into ``folder``."""
    url = entry.sources[0]
    archive_folder = entry.extra.get("archive_folder")
    if not archive_folder:
        raise ValueError(f"manifest entry {entry.name!r} has no archive_folder to unpack")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.download.") as tmp:
        zip_path = fetch_url(url, Path(tmp) / Path(url).name)
        try:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise DataUnavailableError(f"downloaded {url} is not a valid zip archive: {exc}") from exc
        unpacked = Path(tmp) / archive_folder
        if not unpacked.is_dir():
            raise DataUnavailableError(f"archive {url} has no top folder {archive_folder!r}")
        for path in sorted(unpacked.rglob("*")):
            target = folder / path.relative_to(unpacked)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), target)


def download_missing(entry: DatasetEntry, folder: Path, missing: list[str]) -> None:
    """Fetch what ``folder`` lacks, the way the entry's source publishes it."""
    if entry.loader in {"ogbn", "ogbg"}:
        download_archive(entry, folder)
    elif entry.loader in {"planetoid", "mnist"}:
        download_files(entry, folder, missing)
    else:
        raise ValueError(f"dataset {entry.name!r} ({entry.loader}) has nothing to download")

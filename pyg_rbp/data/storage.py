"""Where dataset files live: the data root, the writable cache, and local mirrors.

The root comes from an argument, else ``$PYG_RBP_DATA``, else ``<repo>/datasets`` when running
from a source checkout, else (an installed package) the user cache folder
``$XDG_CACHE_HOME/pyg_rbp/datasets`` (``~/.cache/pyg_rbp/datasets``); its layout
mirrors ``../shared/datasets`` (``Planetoid/<Name>/raw``, ``ogb/<ogb_dir>/...``, ``MNIST/raw``).
Loaders write ``processed/`` next to ``raw/``, so a read-only root (the shared offline copies)
is never written to: the dataset's folder is copied into a writable cache
(``$PYG_RBP_CACHE``, else ``~/.cache/pyg_rbp``) and loaded from there. Missing files are first
copied from a local mirror (``$PYG_RBP_SHARED``, else, in a checkout, ``<repo>/../shared/datasets``), then
downloaded if allowed, and otherwise reported with a :class:`DataUnavailableError`.
Processes that load the same dataset under the same root at once take turns
(:func:`dataset_lock`): PyG and OGB write ``processed/`` non-atomically.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyg_rbp.data.download import download_allowed, download_missing
from pyg_rbp.data.errors import DataUnavailableError
from pyg_rbp.data.manifest import (
    REPO_ROOT,
    DatasetEntry,
    ExpectedFile,
    missing_files,
    unavailable_message,
    verify_checksums,
)
from pyg_rbp.data.safe_load import check_torch_files

ROOT_ENV = "PYG_RBP_DATA"
CACHE_ENV = "PYG_RBP_CACHE"
MIRROR_ENV = "PYG_RBP_SHARED"


def source_checkout() -> Path | None:
    """The repository folder when pyg_rbp runs from a clone (``pyproject.toml`` beside the package),
    None when it runs from an installed wheel (site-packages has no ``pyproject.toml``)."""
    pyproject = REPO_ROOT / "pyproject.toml"
    if pyproject.is_file() and (REPO_ROOT / "pyg_rbp" / "__init__.py").is_file():
        return REPO_ROOT
    return None


def user_cache_base() -> Path:
    """``$XDG_CACHE_HOME/pyg_rbp``, else ``~/.cache/pyg_rbp``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "pyg_rbp"


def configured_root(root: str | os.PathLike | None = None) -> Path:
    """The data root as configured: ``root``, else ``$PYG_RBP_DATA``, else ``<repo>/datasets`` in a
    source checkout, else ``~/.cache/pyg_rbp/datasets`` (see :func:`user_cache_base`)."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    checkout = source_checkout()
    return checkout / "datasets" if checkout is not None else user_cache_base() / "datasets"


def is_writable(path: Path) -> bool:
    """Whether ``path`` (or, if absent, its nearest existing parent) may be written.

    Permission bits are checked as well as ``os.access``: running as root, ``os.access`` says
    yes to a ``chmod a-w`` folder, but such a folder is read-only by intent.
    """
    path = Path(path)
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    mode = path.stat().st_mode
    return bool(mode & stat.S_IWUSR) and os.access(path, os.W_OK)


def is_writable_tree(folder: Path) -> bool:
    """Whether ``folder`` and every folder under it may be written (loaders write inside)."""
    if not is_writable(folder):
        return False
    if folder.is_dir():
        return all(is_writable(p) for p in folder.rglob("*") if p.is_dir())
    return True


def cache_root_for(root: Path) -> Path:
    """The writable cache standing in for a read-only ``root`` (one per root path)."""
    base = os.environ.get(CACHE_ENV, "").strip()
    cache_base = Path(base).expanduser() if base else user_cache_base()
    resolved = str(Path(root).resolve())
    tag = hashlib.sha1(resolved.encode()).hexdigest()[:10]
    return cache_base / f"{Path(resolved).name or 'root'}-{tag}"


def copy_missing(source: Path, target: Path) -> None:
    """Copy every file of ``source`` absent (or of another size) in ``target``; make it writable.

    ``processed/`` folders are not copied: processed files are pickles, rebuilt here from the
    verified raw files rather than trusted from a mirror or a read-only root.
    """
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(target.stat().st_mode | stat.S_IWUSR)
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if "processed" in rel.parts:
            continue
        dest = target / rel
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            dest.chmod(dest.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
        elif path.is_file() and (not dest.exists() or dest.stat().st_size != path.stat().st_size):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            dest.chmod(0o644)


def default_root(root: str | os.PathLike | None = None) -> Path:
    """A writable data root: :func:`configured_root`, or a cache copy of it if it is read-only."""
    configured = configured_root(root)
    if is_writable_tree(configured):
        configured.mkdir(parents=True, exist_ok=True)
        return configured
    cache = cache_root_for(configured)
    if configured.is_dir():
        copy_missing(configured, cache)
    else:
        cache.mkdir(parents=True, exist_ok=True)
    return cache


def mirror_roots() -> list[Path]:
    """Local read-only copies to seed from: ``$PYG_RBP_SHARED`` (``os.pathsep``-separated;
    set it to an empty string to disable), else ``<repo>/../shared/datasets`` in a checkout."""
    env = os.environ.get(MIRROR_ENV)
    if env is None:
        checkout = source_checkout()
        candidates = [checkout.parent / "shared" / "datasets"] if checkout is not None else []
    else:
        candidates = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    return [p for p in candidates if p.is_dir()]


def _seed_from_mirror(entry: DatasetEntry, folder: Path, wanted: tuple[ExpectedFile, ...]) -> Path | None:
    """Copy the dataset's folder from the first mirror holding all ``wanted`` files."""
    assert entry.folder is not None
    for mirror in mirror_roots():
        source = mirror / entry.folder
        if source.resolve() == folder.resolve() or missing_files(entry, source, wanted):
            continue
        copy_missing(source, folder)
        return source
    return None


def prepare_dataset_folder(
    entry: DatasetEntry,
    root: str | os.PathLike | None = None,
    download: bool | None = None,
    files: tuple[ExpectedFile, ...] | None = None,
    needs_write: bool = True,
) -> Path:
    """Make ``<root>/<entry.folder>`` complete, writable and verified; return the root used.

    Steps: a read-only root is swapped for its cache copy; missing files are seeded from a
    local mirror, then downloaded if allowed; anything still missing raises
    :class:`DataUnavailableError`; a checksum mismatch raises :class:`ChecksumError`. The
    returned root is what to hand to PyG/OGB (the cache root when the given one was read-only).
    A reader that writes nothing (``needs_write=False``) reads a complete read-only folder in place.
    """
    if entry.folder is None:
        raise ValueError(f"dataset {entry.name!r} is embedded and has no folder on disk")
    wanted = entry.files if files is None else files
    base = configured_root(root)
    folder = requested = base / entry.folder
    checked = wanted + (entry.optional_files if files is None else ())
    if not needs_write and not missing_files(entry, folder, wanted):
        verify_checksums(entry, folder, checked)
        check_torch_files(folder)
        return base
    if not is_writable_tree(folder):
        cache = cache_root_for(base)
        if folder.is_dir():
            copy_missing(folder, cache / entry.folder)
        base, folder = cache, cache / entry.folder
    missing = missing_files(entry, folder, wanted)
    if missing and _seed_from_mirror(entry, folder, wanted) is not None:
        missing = missing_files(entry, folder, wanted)
    note = (
        "" if folder == requested else f"({requested} is read-only: a writable copy is kept in {folder}.)\n"
    )
    if missing:
        if not download_allowed(download):
            raise DataUnavailableError(
                unavailable_message(entry, requested, missing, note + "Downloading is off.")
            )
        download_missing(entry, folder, missing)
        missing = missing_files(entry, folder, wanted)
        if missing:
            reason = note + "The download did not provide them."
            raise DataUnavailableError(unavailable_message(entry, requested, missing, reason))
    verify_checksums(entry, folder, checked)
    check_torch_files(folder)  # every *.pt loads under weights_only=True, else refused (or rebuilt)
    return base


def private_temp_folder(name: str) -> Path:
    """``<tmp>/<name>-<uid>``, created 0700, refused if it is a symlink, another user's, or
    writable by others (the system temporary folder is shared: anyone may plant a name there)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = Path(tempfile.gettempdir()) / f"{name}-{uid}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if (
        stat.S_ISLNK(info.st_mode)
        or not stat.S_ISDIR(info.st_mode)
        or (hasattr(os, "getuid") and info.st_uid != uid)
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise RuntimeError(
            f"{folder} is a symlink, not a folder, not owned by you or writable by others: refusing "
            f"to keep lock files there (it may have been planted); remove it or set TMPDIR"
        )
    return folder


def open_lock_file(path: Path) -> int:
    """Open (creating, mode 0600) a lock file without following a symlink at ``path``."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        if path.is_symlink():
            raise RuntimeError(f"lock file {path} is a symlink: refusing to follow it; remove it") from exc
        raise


@contextmanager
def dataset_lock(name: str, root: str | os.PathLike | None = None) -> Iterator[None]:
    """Hold an exclusive inter-process lock for dataset ``name`` under ``root`` (blocking).

    PyG and OGB write a dataset's ``processed/`` files in place; two processes that load the
    same fresh dataset at once (a sweep of ``pyg-rbp train`` runs, say) could read a half-written
    file. The lock file lives in a private folder of the system's temporary folder
    (:func:`private_temp_folder`; never through a symlink), keyed by the resolved root and the
    name, so it works for read-only roots too. Without ``fcntl`` (Windows) it is a no-op.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    key = hashlib.sha1(f"{configured_root(root).resolve()}|{name.lower()}".encode()).hexdigest()[:16]
    fd = open_lock_file(private_temp_folder("pyg_rbp-locks") / f"{key}.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

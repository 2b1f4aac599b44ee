"""Reading dataset pickles without running what they contain.

Planetoid ``ind.*`` files are Python pickles and PyG/OGB ``processed/*.pt`` files are torch
pickles: unpickling one runs whatever it names. The rule of this package: **no unverified file is
ever unpickled with a full unpickler**.

- Planetoid raw files are checked against their sha256 where the manifest records one (in
  :func:`~pyg_rbp.data.storage.prepare_dataset_folder`), and are always read with
  :func:`restricted_unpickle`, which resolves only the numpy/scipy/builtin names the format uses
  (``ndarray``, ``dtype``, numpy's array reconstructor, scipy's ``csr_matrix``, ``defaultdict``,
  ``list``) and refuses everything else before it is called.
- Every ``*.pt`` file under a dataset folder is checked by :func:`check_torch_files` before PyG or
  OGB sees the folder: it must load with ``torch.load(weights_only=True)`` and the explicit
  allow-list of PyG's data classes (:func:`allow_pyg_pickles`). A file holding anything else
  raises :class:`UnsafeDataError` naming it; there is no fallback to ``weights_only=False``
  (PyG's own loader has one, which is why its files are checked first). A half-written file
  (disk full, a killed process) is removed with a warning so the loader rebuilds it.
- ``processed/`` folders are never copied from a mirror or a read-only root
  (:func:`~pyg_rbp.data.storage.copy_missing`): they are rebuilt from the verified raw files.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import warnings
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data.data import Data, DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import EdgeStorage, GlobalStorage, NodeStorage

from pyg_rbp.data.errors import UnsafeDataError

_ZIP_MAGIC = b"PK\x03\x04"


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, and nothing else."""
    if encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


def _planetoid_globals() -> dict[tuple[str, str], Any]:
    """The names the Planetoid pickle format uses, resolved to the objects they stand for."""
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, whatever its module today
    scalar = np.float64(0.0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "defaultdict"): defaultdict,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    for module in ("scipy.sparse.csr", "scipy.sparse._csr", "scipy.sparse"):
        allowed[(module, "csr_matrix")] = sp.csr_matrix
    for module in ("__builtin__", "builtins"):
        for name, obj in (("list", list), ("dict", dict), ("set", set), ("int", int), ("float", float)):
            allowed[(module, name)] = obj
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedReader, allowed: dict[tuple[str, str], Any], path: Path):
        super().__init__(file, encoding="latin1")
        self._allowed = allowed
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafeDataError(
                f"{self._path}: refusing to unpickle it: it names {module}.{name}, which the "
                f"Planetoid format never uses (allowed: numpy arrays, scipy csr_matrix, dict/list). "
                f"The file is not a published Planetoid file; delete it and fetch the original."
            ) from None


def restricted_unpickle(path: str | os.PathLike) -> Any:
    """Unpickle a Planetoid ``ind.*`` file, resolving only the names that format uses.

    Raises :class:`UnsafeDataError` naming the file (before anything it names is called) when the
    pickle refers to any other global, or is not a pickle at all.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            return _RestrictedUnpickler(fh, _planetoid_globals(), path).load()
        except UnsafeDataError:
            raise
        except Exception as exc:  # truncated, not a pickle, a disallowed call's arguments
            raise UnsafeDataError(
                f"{path}: not a readable Planetoid pickle ({type(exc).__name__}: {exc}); "
                f"delete it and fetch the original"
            ) from exc


def allow_pyg_pickles() -> None:
    """Let ``torch.load(weights_only=True)`` rebuild the PyG data objects PyG and OGB save.

    These are plain containers (``Data`` and its storages); allow-listing them is what lets the
    loaders stay on ``weights_only=True`` (OGB 1.3.6 calls ``torch.load`` without the argument,
    so it gets torch's default, ``True`` since torch 2.6).
    """
    torch.serialization.add_safe_globals(
        [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage, NodeStorage, EdgeStorage]
    )


def _damaged(path: Path, why: str) -> None:
    warnings.warn(
        f"{path} is damaged ({why}; half-written, e.g. by a full disk or a killed process): "
        f"removed, the loader rebuilds it",
        RuntimeWarning,
        stacklevel=3,
    )
    path.unlink()


def check_torch_file(path: str | os.PathLike) -> bool:
    """Check one torch pickle; True if it is safe to load, False if it was damaged and removed.

    A file in torch's zip format is loaded with ``weights_only=True`` and ``mmap=True`` (the
    tensors are mapped, not read, so the check is cheap); anything outside the allow-list raises
    :class:`UnsafeDataError`. A zip that does not open (truncated) or an empty file is removed.
    """
    path = Path(path)
    allow_pyg_pickles()
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        _damaged(path, "empty")
        return False
    is_zip = head == _ZIP_MAGIC
    if is_zip and not zipfile.is_zipfile(path):
        _damaged(path, "the zip archive does not open")
        return False
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[0])
        raise UnsafeDataError(
            f"{path}: refusing to load it: it holds objects outside the allow-list of PyG data "
            f"classes ({detail.strip()}). PyG and OGB never write such a file: it was planted or "
            f"comes from elsewhere. Delete it (the loader rebuilds processed files from the "
            f"verified raw files)."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        if not is_zip:
            raise UnsafeDataError(
                f"{path}: not a torch file this package can verify ({type(exc).__name__}: {exc}); "
                f"delete it"
            ) from exc
        _damaged(path, f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        return False
    return True


def check_torch_files(folder: str | os.PathLike) -> list[Path]:
    """Check every ``*.pt`` file under ``folder`` (see :func:`check_torch_file`); return the
    files removed as damaged."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in sorted(folder.rglob("*.pt")):
        if path.is_file() and not check_torch_file(path):
            removed.append(path)
    return removed

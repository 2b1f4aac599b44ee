"""MNIST from its original idx files (``<root>/MNIST/raw/*-ubyte.gz``), without torchvision.

The Hopfield experiment needs ten MNIST digits; the offline copies hold only the test set. This
reader parses the big-endian idx format directly, checks the files against the manifest, and
downloads missing files from the public mirrors with plain ``urllib`` only when downloading is
allowed; otherwise it raises a :class:`DataUnavailableError` naming the files and the folder.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from pyg_rbp.data.manifest import entry
from pyg_rbp.data.storage import dataset_lock, prepare_dataset_folder

_PREFIX = {"test": "t10k", "train": "train"}
_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a (gzipped) idx file of unsigned bytes into an array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an idx header ({len(raw)} bytes)")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic not in (_IMAGES_MAGIC, _LABELS_MAGIC):
        raise ValueError(f"{path}: bad idx magic number 0x{magic:08x} (expected unsigned-byte idx1/idx3)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header declares shape {shape} ({expected} bytes) but holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(
    root: str | os.PathLike | None = None, split: str = "test", download: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` ("test": 10,000 or "train": 60,000) as uint8 images ``[N, 28, 28]`` and
    int64 labels ``[N]``, read from ``<root>/MNIST/raw``."""
    if split not in _PREFIX:
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    dataset = entry("mnist")
    prefix = _PREFIX[split]
    files = tuple(f for f in dataset.files if Path(f.path).name.startswith(prefix + "-"))
    with dataset_lock(dataset.name, root):  # two processes seeding one cache take turns
        base = prepare_dataset_folder(dataset, root, download, files=files, needs_write=False)
        raw = base / dataset.folder / "raw"
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"MNIST {split} images have shape {images.shape}, expected [N, 28, 28]")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"MNIST {split}: {images.shape[0]} images but labels of shape {labels.shape}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))

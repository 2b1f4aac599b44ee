"""The patterns a Hopfield memory stores and the corrupted versions it must restore.

Liao et al. (2018) store ten binarised MNIST digits, one per class, and recall them from copies
with half of their "on" pixels switched off. This module provides those patterns (from the MNIST
idx files, or from scikit-learn's bundled 8x8 digits, which need no download) and the two
corruptions the benchmark evaluates: switching "on" pixels off and flipping random bits, both
reproducible from a seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from sklearn.datasets import load_digits
from torch import Tensor

from pyg_rbp.data.mnist import load_mnist

PATTERN_SOURCES = ("mnist", "digits")

DIGITS_THRESHOLD = 4
"""scikit-learn's digits have intensities 0..16; a pixel is "on" when its value exceeds this."""


@dataclass
class Patterns:
    """Binary images to memorise.

    Attributes:
        images: ``[P, H * W]`` float tensor of 0/1 pixels, one row per pattern.
        labels: ``[P]`` class of each pattern.
        shape: ``(H, W)`` of one image.
        source: where they came from (for reports).
    """

    images: Tensor
    labels: Tensor
    shape: tuple[int, int]
    source: str

    @property
    def num_pixels(self) -> int:
        return self.images.size(1)

    def __len__(self) -> int:
        return self.images.size(0)


def _first_per_class(labels: Tensor, per_class: int, num_classes: int) -> Tensor:
    picks = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()[:per_class]
        if idx.numel() < per_class:
            raise ValueError(f"class {c} has only {idx.numel()} images, {per_class} requested")
        picks.append(idx)
    # Order: all first images of classes 0..9, then the second ones, ...
    return torch.stack(picks, dim=1).flatten()


def load_patterns(source: str = "digits", per_class: int = 1, root: str | os.PathLike | None = None,
                  split: str = "test", download: bool | None = None) -> Patterns:
    """The first ``per_class`` images of each digit class, binarised.

    Args:
        source: ``"mnist"`` (28x28, pixel > 0 is on, as in the paper; read from the idx files
            by :func:`pyg_rbp.data.mnist.load_mnist`) or ``"digits"`` (scikit-learn's bundled
            8x8 digits, pixel > :data:`DIGITS_THRESHOLD` of 16 is on; no download).
        per_class: images per class (the paper: 1, i.e. 10 patterns).
        root: data root for MNIST (default ``$PYG_RBP_DATA`` or ``<repo>/datasets``).
        split: MNIST split, ``"test"`` (the offline copy) or ``"train"`` (the reference code's
            choice; downloaded where a network exists).
        download: passed to the MNIST loader.

    Raises:
        ValueError: unknown source or ``per_class < 1``.
    """
    if source not in PATTERN_SOURCES:
        raise ValueError(f"unknown pattern source {source!r}; choose one of {PATTERN_SOURCES}")
    if not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    if source == "mnist":
        images, labels = load_mnist(root=root, split=split, download=download)
        pick = _first_per_class(labels, per_class, 10)
        binary = (images[pick] > 0).to(torch.float32).reshape(len(pick), -1)
        return Patterns(binary, labels[pick], (28, 28), f"MNIST {split} split, first {per_class} per class")
    data, target = load_digits(return_X_y=True)
    images, labels = torch.from_numpy(data), torch.from_numpy(target).long()
    pick = _first_per_class(labels, per_class, 10)
    binary = (images[pick] > DIGITS_THRESHOLD).to(torch.float32)
    return Patterns(binary, labels[pick], (8, 8), f"scikit-learn digits, first {per_class} per class")


def _check_fraction(fraction: float, name: str) -> None:
    if not (isinstance(fraction, (int, float)) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"{name} must be a fraction in [0, 1], got {fraction!r}")


def _check_binary(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 2:
        raise ValueError("images must be a [P, D] tensor")
    if not bool(((images == 0) | (images == 1)).all()):
        raise ValueError("images must be binary (0/1)")


def switch_off(images: Tensor, fraction: float, seed: int | torch.Generator) -> Tensor:
    """Switch off ``floor(fraction * n_on)`` of each image's ``n_on`` "on" pixels, at random.

    The paper's corruption (``fraction = 0.5``). The pixels are drawn from one
    ``torch.Generator`` seeded with ``seed``, image after image, so the same seed gives the same
    corrupted set on every machine.
    """
    _check_fraction(fraction, "fraction")
    _check_binary(images)
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    out = images.clone()
    for p in range(images.size(0)):
        on = torch.nonzero(images[p].cpu() > 0.5).flatten()
        k = int(on.numel() * fraction)
        drop = on[torch.randperm(on.numel(), generator=gen)[:k]]
        out[p, drop.to(images.device)] = 0.0
    return out


def flip_bits(images: Tensor, fraction: float, seed: int | torch.Generator) -> Tensor:
    """Flip ``round(fraction * D)`` randomly chosen pixels of each ``D``-pixel image."""
    _check_fraction(fraction, "fraction")
    _check_binary(images)
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    out = images.clone()
    d = images.size(1)
    k = round(fraction * d)
    for p in range(images.size(0)):
        idx = torch.randperm(d, generator=gen)[:k].to(images.device)
        out[p, idx] = 1.0 - out[p, idx]
    return out


def pixel_errors(output: Tensor, target: Tensor, threshold: float = 0.5) -> Tensor:
    """Per-image fraction of wrong pixels after thresholding ``output`` at ``threshold``."""
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape")
    return ((output >= threshold).to(target.dtype) != target).to(torch.float32).mean(dim=1)

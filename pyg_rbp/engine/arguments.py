"""Checking what a caller passes to the engine: states, counts, numbers, segment ids.

Every check raises a ``ValueError`` or ``TypeError`` that names the argument and the accepted
range, before any work starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Union

import torch
from torch import Tensor

from pyg_rbp.engine.adjoint import State

StateLike = Union[Tensor, Sequence[Tensor]]


def as_state(h: StateLike, what: str) -> tuple[State, bool]:
    if isinstance(h, Tensor):
        return (h,), False
    if isinstance(h, (tuple, list)) and h and all(isinstance(t, Tensor) for t in h):
        return tuple(h), True
    raise TypeError(f"{what} must be a tensor or a non-empty tuple of tensors, got {type(h).__name__}")


def check_int(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_number(name: str, value: Any, *, low: float, high: float = math.inf,
                  low_open: bool = False, high_open: bool = True) -> float:
    """``value`` as a float, or a ValueError naming ``name`` and the accepted range."""
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
            isinstance(value, Tensor) and value.numel() == 1):
        raise ValueError(f"{name} must be a number in {lo}{low:g}, {high:g}{hi}, got "
                         f"{type(value).__name__} {value!r}")
    v = float(value)
    ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not (ok and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return v


def check_segments(segments: Any, h: State) -> tuple[Tensor | None, int]:
    if segments is None:
        return None, 1
    if not isinstance(segments, Tensor) or segments.dim() != 1 or segments.dtype not in (
            torch.int64, torch.int32):
        raise ValueError("segments must be a 1-D integer tensor (a segment id per row of the state)")
    rows = {t.shape[0] if t.dim() else -1 for t in h}
    if rows != {segments.numel()}:
        raise ValueError(f"segments has {segments.numel()} entries; every state tensor must have "
                         f"that many rows (first dimension), got {sorted(rows)}")
    if segments.numel() == 0:
        return None, 1
    if bool(segments.min() < 0):
        raise ValueError("segments must be >= 0")
    segments = segments.to(device=h[0].device, dtype=torch.long)
    return segments, int(segments.max()) + 1

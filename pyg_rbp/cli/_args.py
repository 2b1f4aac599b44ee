"""Argument types shared by the sub-commands, so each flag parses and fails the same way."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def int_list(text: str) -> list[int]:
    """``"10,25,50"`` -> ``[10, 25, 50]``; positive integers only, else an argparse error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


class UsageError(SystemExit):
    """A bad command-line value: ``pyg-rbp`` prints the one-line message and exits with status 2
    (argparse's status for bad arguments), before any work starts and without a traceback.

    ``str(err)`` is the message; ``err.code`` is 2.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = 2


def finite_float(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float within the bounds (``None``: unbounded on that side)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            lo = "(-inf" if low is None else f"{'(' if low_open else '['}{low:g}"
            hi = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected a number in {lo}, {hi}, got {text!r}")
        return value

    parse.__name__ = "number"  # argparse names the type in its message
    return parse


def device(text: str) -> str:
    """An argparse type: a device torch knows (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...)."""
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; expected cpu, cuda, cuda:<index>, mps, ..."
        ) from None
    return text


def check_outputs(command: str, files: dict[str, Any] | None = None,
                  folders: dict[str, Any] | None = None) -> None:
    """Refuse, with a :class:`UsageError`, output paths that cannot be written (checked before any
    work: see :func:`pyg_rbp.results.check_output_file`). ``files``/``folders`` map a flag to its
    path; ``None`` paths are skipped."""
    from pyg_rbp.results import OutputPathError, check_output_file, check_output_folder

    try:
        for flag, path in (files or {}).items():
            if path is not None:
                check_output_file(path, flag)
        for flag, path in (folders or {}).items():
            if path is not None:
                check_output_folder(path, flag)
    except OutputPathError as err:
        raise UsageError(f"pyg-rbp {command}: {err}") from None


ROOT_HELP = ("data root (default: $PYG_RBP_DATA, else <repo>/datasets in a clone, else "
             "~/.cache/pyg_rbp/datasets)")
"""The ``--root`` help every command shares."""

"""Argument types shared by the sub-commands, so each flag parses and fails the same way."""

from __future__ import annotations

import argparse


def int_list(text: str) -> list[int]:
    """``"10,25,50"`` -> ``[10, 25, 50]``; positive integers only, else an argparse error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values

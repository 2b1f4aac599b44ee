"""`pyg-rbp hyperopt` (placeholder until its module lands: it says so and exits non-zero)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hyperopt", help="(not available yet)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise SystemExit("pyg-rbp hyperopt is not available in this build")

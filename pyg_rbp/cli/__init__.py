"""The ``pyg-rbp`` command line: one sub-command per job.

Each sub-command lives in its own module of this package and registers itself through an
``add_parser(subparsers)`` function; heavy imports happen inside the commands, so
``pyg-rbp --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = ("demo", "train", "leaderboard", "hopfield", "hyperopt", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyg-rbp",
        description="Recurrent fixed-point graph networks trained with recurrent back-propagation.",
    )
    from pyg_rbp import __version__

    parser.add_argument("--version", action="version", version=f"pyg-rbp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"pyg_rbp.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from pyg_rbp.cli._args import UsageError

    try:
        return int(args.func(args) or 0)
    except UsageError as err:  # a bad value: one line, status 2, no traceback
        print(err, file=sys.stderr)
        raise
    except KeyboardInterrupt:
        print("interrupted; finished results were written as they completed", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

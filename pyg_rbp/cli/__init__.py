"""The ``pyg-rbp`` command line: one sub-command per job.

Each sub-command lives in its own module of this package and registers itself through an
``add_parser(subparsers)`` function. The options they share and the one error -> exit status
table (:data:`pyg_rbp.cli._args.EXIT_RULES`) live in :mod:`pyg_rbp.cli._args`; :func:`main`
applies that table to every sub-command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pyg_rbp import __version__
from pyg_rbp.cli._args import CommandError, exit_error

COMMANDS = ("demo", "train", "leaderboard", "hopfield", "hyperopt", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyg-rbp",
        description="Recurrent fixed-point graph networks trained with recurrent back-propagation.",
    )
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
    command = " ".join(filter(None, (args.command, getattr(args, "bench", None))))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished results were written as they completed", file=sys.stderr)
        return 130
    except CommandError as err:  # raised by the command with its message and status
        print(err, file=sys.stderr)
        raise
    except Exception as err:  # noqa: BLE001 - mapped by EXIT_RULES, else re-raised as it is
        failure = exit_error(err, command)
        if failure is None:
            raise
        print(failure, file=sys.stderr)  # one line, the status of its rule, no traceback
        raise failure from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

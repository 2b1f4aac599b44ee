"""What every ``pyg-rbp`` sub-command shares: the common options, the argument types, and the one
table that turns an error into an exit status and a one-line message.

The common options (``--device``, ``--threads``, ``--seeds``/``--seed``, ``--json``, ``--fresh``,
``--no-progress``, ``--grad``, ``--max-iter``, ``--backward-iter``, ``--root``) are added by the
``add_*`` functions below, each with one spelling, one meaning and one help text, so that the
sub-commands cannot drift apart. Spellings used before they were unified stay accepted for one
release as deprecated aliases (:data:`DEPRECATED_SPELLINGS`): the alias parses into the new
option and prints a one-line notice to stderr.

:data:`EXIT_RULES` maps an exception class to the exit status and message format of
``pyg-rbp``; :func:`pyg_rbp.cli.main` applies it to every sub-command, so a refused setting, an
unwritable output, a results file of other settings or missing data end the same way everywhere
(one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pyg_rbp.data.errors import ChecksumError, DataUnavailableError, UnsafeDataError
from pyg_rbp.results import (
    CorruptResultsError,
    OutputPathError,
    ResultsFileConflict,
    check_output_file,
    check_output_folder,
)
from pyg_rbp.runtime import set_threads  # noqa: F401  (the commands apply --threads with it)

# --- errors and exit statuses -----------------------------------------------------------------


class CommandError(SystemExit):
    """A sub-command that ends with a one-line message and a non-zero status, no traceback.

    ``str(err)`` is the message; ``err.code`` the exit status. :func:`pyg_rbp.cli.main` prints
    the message to stderr and exits with the status.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CommandError):
    """A bad command-line value or setting: exit status 2 (argparse's status for bad arguments),
    before any work starts and without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 2)


@dataclass(frozen=True)
class ExitRule:
    """How one kind of error ends ``pyg-rbp``: its exit status and its message, a format with
    ``{command}`` (the sub-command, e.g. ``bench solvers``) and ``{err}`` (the error's text)."""

    error: type[BaseException]
    code: int
    message: str = "pyg-rbp {command}: {err}"


EXIT_RULES: tuple[ExitRule, ...] = (
    # refused before (or instead of) the work: fix the input and rerun -> 2
    ExitRule(UsageError, 2, "{err}"),
    ExitRule(OutputPathError, 2),
    ExitRule(CorruptResultsError, 2, "pyg-rbp {command}: {err}; fix or delete it, or pass --fresh "
                                     "to replace it"),
    ExitRule(ResultsFileConflict, 2),
    ExitRule(DataUnavailableError, 2, "pyg-rbp {command}: data unavailable: {err}"),
    ExitRule(ChecksumError, 2),
    ExitRule(UnsafeDataError, 2),
    # the work itself failed -> 1
    ExitRule(CommandError, 1, "{err}"),
)
"""Exception class -> exit status and message, the first matching rule wins (order: subclasses
first). Interrupts (Ctrl-C) exit with 130 after a note that finished results were kept; errors not
in the table are bugs and keep their traceback."""


def exit_error(err: BaseException, command: str) -> CommandError | None:
    """The :class:`CommandError` that ``err`` ends ``pyg-rbp {command}`` with, or ``None`` when
    no rule of :data:`EXIT_RULES` matches (a bug: let it raise)."""
    for rule in EXIT_RULES:
        if isinstance(err, rule.error):
            code = err.code if isinstance(err, CommandError) else rule.code
            return CommandError(rule.message.format(command=command, err=err), code)
    return None


# --- argument types ---------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    """``"10,25,50"`` -> ``[10, 25, 50]``; positive integers only, else an argparse error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_seeds(spec: str, flag: str = "--seeds") -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; ``"3"`` -> [3]; a range ``"0-9"`` -> [0, ..., 9]; ranges and
    single seeds mix (``"0-2,7"``). Distinct non-negative integers, else a :class:`UsageError`."""
    spec = str(spec).strip()
    seeds: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise UsageError(
            f"{flag} must be integers, a comma list or a range like 0-9; got {spec!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UsageError(f"{flag} must list distinct non-negative integers, got {spec!r}")
    return seeds


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


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def device(text: str) -> str:
    """An argparse type: a device torch knows (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...)."""
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
    try:
        for flag, path in (files or {}).items():
            if path is not None:
                check_output_file(path, flag)
        for flag, path in (folders or {}).items():
            if path is not None:
                check_output_folder(path, flag)
    except OutputPathError as err:
        raise UsageError(f"pyg-rbp {command}: {err}") from None


# --- deprecated spellings ---------------------------------------------------------------------

DEPRECATED_SPELLINGS: dict[str, str] = {
    "--grads": "--grad",
    "--modes": "--grad",
    "--quiet": "--no-progress",
    "--steps": "--max-iter",
    "--inner-steps": "--max-iter",
    "--updates": "--max-iter",
    "--truncation": "--backward-iter",
    "-K": "--backward-iter",
    "--target-steps": "--target-max-iter",
    "--target-k": "--target-backward-iter",
}
"""Old spelling -> the one spelling, accepted (with a notice) until the next release."""


def deprecation_notice(old: str, new: str) -> None:
    """The one-line notice a deprecated spelling prints to stderr."""
    print(f"DeprecationWarning: {old} is deprecated, use {new} (the old spelling goes in the "
          "next release)", file=sys.stderr)


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: stores into the new option's ``dest`` and prints a notice."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        deprecation_notice(option_string or self.option_strings[0], self.new)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_deprecated(parser: argparse.ArgumentParser, action: argparse.Action, *old: str) -> None:
    """Accept the ``old`` spellings of the option ``action`` (hidden from ``--help``)."""
    flag = action.nargs == 0
    parser.add_argument(*old, action=_DeprecatedAlias, new=action.option_strings[0],
                        dest=action.dest, nargs=0 if flag else None,
                        const=action.const if flag else None,
                        type=None if flag else action.type, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


# --- the common options -----------------------------------------------------------------------

ROOT_HELP = ("data root (default: $PYG_RBP_DATA, else <repo>/datasets in a clone, else "
             "~/.cache/pyg_rbp/datasets)")
"""The ``--root`` help every command shares."""


def add_root(parser: argparse.ArgumentParser, what: str = "") -> argparse.Action:
    """``--root``: the data root."""
    return parser.add_argument("--root", default=None, help=(what + ROOT_HELP) if what else ROOT_HELP)


def add_device(parser: argparse.ArgumentParser, default: str | None = "cpu") -> argparse.Action:
    """``--device``: a torch device; ``None`` as default means cuda where available, else cpu."""
    shown = "cuda if available, else cpu" if default is None else default
    return parser.add_argument("--device", default=default, type=device,
                               help=f"torch device: cpu, cuda, cuda:1, ... (default: {shown})")


def add_threads(parser: argparse.ArgumentParser, default: int | None = None,
                why: str = "") -> argparse.Action:
    """``--threads``: torch CPU threads; 0 (or unset) leaves torch's default. Benchmarks default to
    1 (their timings are one-thread numbers and the thread count is part of their settings)."""
    shown = "torch's default" if not default else str(default)
    return parser.add_argument("--threads", type=non_negative_int, default=default,
                               help=f"torch CPU threads, 0: torch's default (default: {shown})"
                                    + (f"; {why}" if why else ""))


def add_seeds(parser: argparse.ArgumentParser, default: str | None = None) -> argparse.Action:
    """``--seeds``: which seeds, as a list or range (``0,1,2``, ``0-9``); parse it with
    :func:`parse_seeds`. (``--num-seeds N`` is the count form, ``--seeds 0-{N-1}``.)"""
    return parser.add_argument("--seeds", default=default,
                               help=f"seeds: 0,1,2 or a range 0-9 (default: {default or 0})")


def add_num_seeds(parser: argparse.ArgumentParser, default: int) -> argparse.Action:
    """``--num-seeds N``: the seeds 0..N-1."""
    return parser.add_argument("--num-seeds", type=int, default=default,
                               help=f"number of seeds, 0..N-1 (default: {default}; --seeds picks them)")


def resolve_seeds(seeds: str | None, num_seeds: int | None = None, *,
                  legacy_count: bool = False) -> list[int]:
    """The seeds of ``--seeds`` (a list or range), else ``0..--num-seeds-1``, else ``[0]``.

    ``legacy_count=True`` is for a command whose ``--seeds N`` used to be a count (the
    leaderboard): a bare integer there still means ``0..N-1`` for one release, with a notice to
    use ``--num-seeds N`` (so ``--seeds 10`` on a committed board keeps its ten seeds).
    """
    if seeds is None:
        return list(range(num_seeds)) if num_seeds is not None else [0]
    text = str(seeds).strip()
    if legacy_count and text.isdigit():
        count = int(text)
        print(f"DeprecationWarning: --seeds {count} as a count is deprecated, use --num-seeds {count} "
              f"(or --seeds 0-{count - 1}); --seeds will only list seeds in the next release",
              file=sys.stderr)
        if count < 1:
            raise UsageError(f"--seeds (a count) must be >= 1, got {count}")
        return list(range(count))
    return parse_seeds(text)


def add_seed(parser: argparse.ArgumentParser, what: str = "the run") -> argparse.Action:
    """``--seed``: the one seed of a run that has one."""
    return parser.add_argument("--seed", type=non_negative_int, default=0,
                               help=f"seed of {what} (default: 0)")


def add_json(parser: argparse.ArgumentParser, default: str | None = None,
             what: str = "", resumes: bool = True) -> argparse.Action:
    """``--json``: the results file, written atomically after every finished unit; a rerun with
    the same settings resumes it, one with other settings is refused unless ``--fresh``
    (``resumes=False``: a command that always starts afresh)."""
    text = ("results JSON, written atomically after every finished unit; a rerun with the same "
            "settings resumes it, other settings are refused unless --fresh" if resumes
            else "results JSON, written atomically")
    shown = f" (default: {default})" if default else ""
    return parser.add_argument("--json", default=default,
                               help=text + shown + (f"; {what}" if what else ""))


def add_fresh(parser: argparse.ArgumentParser) -> argparse.Action:
    """``--fresh``: start the results file afresh."""
    return parser.add_argument("--fresh", action="store_true",
                               help="discard the results already in --json and start afresh")


def add_progress(parser: argparse.ArgumentParser) -> argparse.Action:
    """``--no-progress`` (dest ``no_progress``); ``--quiet`` is its deprecated spelling."""
    action = parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_deprecated(parser, action, "--quiet")
    return action


def add_grad(parser: argparse.ArgumentParser, default: Any, help: str,
             type: Callable[[str], Any] | None = None, dest: str = "grad",
             old: Sequence[str] = ()) -> argparse.Action:
    """``--grad``: the gradient mode(s), a comma list; ``--grads`` (and ``old``) its deprecated
    spellings."""
    action = parser.add_argument("--grad", dest=dest, default=default, type=type, help=help)
    add_deprecated(parser, action, "--grads", *old)
    return action


def add_max_iter(parser: argparse.ArgumentParser, default: Any, help: str,
                 type: Callable[[str], Any] = int, dest: str = "max_iter",
                 old: Sequence[str] = ()) -> argparse.Action:
    """``--max-iter``: forward steps ``T``; ``old`` are deprecated spellings it replaces."""
    action = parser.add_argument("--max-iter", dest=dest, type=type, default=default, help=help)
    if old:
        add_deprecated(parser, action, *old)
    return action


def add_backward_iter(parser: argparse.ArgumentParser, default: Any, help: str,
                      type: Callable[[str], Any] = int, dest: str = "backward_iter",
                      old: Sequence[str] = ()) -> argparse.Action:
    """``--backward-iter``: the truncation / backward iterations ``K``."""
    action = parser.add_argument("--backward-iter", dest=dest, type=type, default=default, help=help)
    if old:
        add_deprecated(parser, action, *old)
    return action


# --- applying them ----------------------------------------------------------------------------


def check_device(command: str, name: str | None) -> str:
    """``--device`` resolved (``None``: cuda where available, else cpu); a CUDA device on a machine
    without CUDA is a :class:`UsageError`."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"pyg-rbp {command}: --device {name} requested but CUDA is not available")
    return name

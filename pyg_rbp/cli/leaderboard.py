"""`pyg-rbp leaderboard`: run the models x gradient modes x seeds matrix and render the board.

Thin wrapper over :mod:`pyg_rbp.training.leaderboard`. Resumable: every finished (row, seed)
cell is its own JSON file under ``<results>/cells/`` and is skipped on a rerun; the board
(``benchmarks/LEADERBOARD.md``, ``benchmarks/leaderboard.png``,
``benchmarks/results/leaderboard.json``) is re-rendered after every cell. ``--jobs N`` trains N
cells at once in worker processes (a many-core machine, or several small runs sharing a GPU).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pyg_rbp.cli._args import (
    CommandError,
    UsageError,
    add_device,
    add_num_seeds,
    add_progress,
    add_root,
    add_threads,
    check_device,
    check_outputs,
    resolve_seeds,
    set_threads,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pyg_rbp.training.leaderboard import DEFAULT_DATASETS, PROFILES

    p = sub.add_parser(
        "leaderboard", help="run the leaderboard matrix (resumable) and render benchmarks/LEADERBOARD.md",
        description="Train every leaderboard row for every seed (finished cells are skipped) and render "
                    "the board. Datasets without an offline copy get rows marked as not run.",
    )
    p.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                   help=f"comma list (default: {','.join(DEFAULT_DATASETS)})")
    add_num_seeds(p, default=10)
    p.add_argument("--seeds", default=None,
                   help="the seeds as a range 0-(N-1) (every row runs seeds 0..N-1); a bare count N is "
                        "the deprecated spelling of --num-seeds N")
    p.add_argument("--profile", choices=PROFILES, default="cpu",
                   help="full: the protocols' own budgets for every row; cpu: shortened expensive rows "
                        "(fewer steps/seeds, recorded on the board) (default: cpu)")
    p.add_argument("--protocols", default=None,
                   help="only the rows of these protocols (comma list of paper,public,official)")
    p.add_argument("--results", default="benchmarks/results", help="folder of cells/ and leaderboard.json")
    p.add_argument("--board", default="benchmarks/LEADERBOARD.md", help="markdown board to write")
    add_device(p)
    add_root(p)
    p.add_argument("--render-only", action="store_true", help="only re-render the board from finished cells")
    add_threads(p, why="per worker with --jobs; unset: the cores divided among the workers")
    p.add_argument("--jobs", type=int, default=1,
                   help="cells trained at once, each in its own worker process (default: 1)")
    p.add_argument("--keep-going", action="store_true",
                   help="run the other cells when one fails, and list the failures at the end")
    p.add_argument("--fresh", action="store_true",
                   help="retrain the planned cells and replace their files (other cells are kept)")
    add_progress(p)
    p.set_defaults(func=run)


def num_seeds(args: argparse.Namespace) -> int:
    """The leaderboard's seed count: every row runs seeds 0..N-1 (``--num-seeds N``; ``--seeds N``
    is its deprecated spelling, and ``--seeds 0-9`` is accepted where it lists exactly 0..N-1)."""
    if args.seeds is None:
        count = args.num_seeds
    else:
        seeds = resolve_seeds(args.seeds, legacy_count=True)
        if seeds != list(range(len(seeds))):
            raise UsageError(f"pyg-rbp leaderboard: every row runs seeds 0..N-1, got --seeds {args.seeds}; "
                             "use --num-seeds N")
        count = len(seeds)
    if count < 1:
        raise UsageError(f"pyg-rbp leaderboard: --num-seeds must be >= 1, got {count}")
    return count


def run(args: argparse.Namespace) -> int:
    from pyg_rbp.training import leaderboard as lb

    if args.jobs < 1:
        raise UsageError(f"pyg-rbp leaderboard: --jobs must be >= 1, got {args.jobs}")
    set_threads(args.threads)
    check_device("leaderboard", args.device)
    seeds = num_seeds(args)
    datasets = list(dict.fromkeys(d.strip().lower() for d in args.datasets.split(",") if d.strip()))
    if not datasets:
        raise UsageError("pyg-rbp leaderboard: --datasets is empty")
    try:
        protocols = [x.strip() for x in args.protocols.split(",")] if args.protocols else None
        entries = lb.plan(datasets, seeds=seeds, profile=args.profile, protocols=protocols)
    except ValueError as err:
        raise UsageError(f"pyg-rbp leaderboard: {err}") from None
    command = (f"pyg-rbp leaderboard --datasets {shlex.quote(','.join(datasets))} --num-seeds {seeds} "
               f"--profile {args.profile}")
    for flag, value, default in (("--results", args.results, "benchmarks/results"),
                                 ("--board", args.board, "benchmarks/LEADERBOARD.md")):
        if value != default:  # so that the recorded command writes where this run wrote
            command += f" {flag} {shlex.quote(str(value))}"
    board = Path(args.board)
    png = board.with_suffix(".png").with_name("leaderboard.png")
    outputs = {"--board": args.board, "the board PNG": png,  # all the board writes, checked first
               "the curves PNG": png.with_name("leaderboard_curves.png"),
               "the board JSON": Path(args.results) / "leaderboard.json"}
    check_outputs("leaderboard", files=outputs, folders={"--results": args.results})
    availability: dict[str, bool] = {}

    def render() -> None:
        lb.render(entries, args.results, args.board, command=command, profile=args.profile,
                  device=args.device, root=args.root, availability=availability)

    if not args.render_only:
        try:
            counts = lb.run(entries, args.results, device=args.device, root=args.root,
                            progress=not args.no_progress, on_cell=render, jobs=args.jobs,
                            threads=args.threads or None, keep_going=args.keep_going,
                            fresh=args.fresh)
        except lb.CellFailed as err:
            render()
            raise CommandError(f"pyg-rbp leaderboard: {err}", code=1) from None
        except lb.Terminated as err:  # the workers are stopped; finished cells are on disk
            print(f"pyg-rbp leaderboard: {err}; the workers were stopped, finished cells are saved",
                  file=sys.stderr)
            return 128 + err.signum
        print(f"leaderboard: {counts['run']} cell(s) run, {counts['skipped']} already finished, "
              f"{counts['unavailable']} not run (data unavailable)")
    render()
    print(f"wrote {args.board} and {args.results}/leaderboard.json")
    return 0

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

from pyg_rbp.cli._args import ROOT_HELP, check_outputs, device


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pyg_rbp.training.leaderboard import DEFAULT_DATASETS, PROFILES

    p = sub.add_parser(
        "leaderboard", help="run the leaderboard matrix (resumable) and render benchmarks/LEADERBOARD.md",
        description="Train every leaderboard row for every seed (finished cells are skipped) and render "
                    "the board. Datasets without an offline copy get rows marked as not run.",
    )
    p.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                   help=f"comma list (default: {','.join(DEFAULT_DATASETS)})")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds per row: 0..N-1 (default: 10)")
    p.add_argument("--profile", choices=PROFILES, default="cpu",
                   help="full: the protocols' own budgets for every row; cpu: shortened expensive rows "
                        "(fewer steps/seeds, recorded on the board) (default: cpu)")
    p.add_argument("--protocols", default=None,
                   help="only the rows of these protocols (comma list of paper,public,official)")
    p.add_argument("--results", default="benchmarks/results", help="folder of cells/ and leaderboard.json")
    p.add_argument("--board", default="benchmarks/LEADERBOARD.md", help="markdown board to write")
    p.add_argument("--device", default="cpu", type=device)
    p.add_argument("--root", default=None, help=ROOT_HELP)
    p.add_argument("--render-only", action="store_true", help="only re-render the board from finished cells")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (per worker with --jobs; default: the cores divided among them)")
    p.add_argument("--jobs", type=int, default=1,
                   help="cells trained at once, each in its own worker process (default: 1)")
    p.add_argument("--keep-going", action="store_true",
                   help="run the other cells when one fails, and list the failures at the end")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from pyg_rbp.training import leaderboard as lb

    if args.jobs < 1:
        raise SystemExit(f"pyg-rbp leaderboard: --jobs must be >= 1, got {args.jobs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("pyg-rbp leaderboard: --device cuda requested but CUDA is not available")
    datasets = list(dict.fromkeys(d.strip().lower() for d in args.datasets.split(",") if d.strip()))
    if not datasets:
        raise SystemExit("pyg-rbp leaderboard: --datasets is empty")
    try:
        protocols = [x.strip() for x in args.protocols.split(",")] if args.protocols else None
        entries = lb.plan(datasets, seeds=args.seeds, profile=args.profile, protocols=protocols)
    except ValueError as err:
        raise SystemExit(f"pyg-rbp leaderboard: {err}") from None
    command = (f"pyg-rbp leaderboard --datasets {shlex.quote(','.join(datasets))} --seeds {args.seeds} "
               f"--profile {args.profile}")
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
                            threads=args.threads, keep_going=args.keep_going)
        except lb.CellFailed as err:
            render()
            raise SystemExit(f"pyg-rbp leaderboard: {err}") from None
        except lb.Terminated as err:  # the workers are stopped; finished cells are on disk
            print(f"pyg-rbp leaderboard: {err}; the workers were stopped, finished cells are saved",
                  file=sys.stderr)
            return 128 + err.signum
        print(f"leaderboard: {counts['run']} cell(s) run, {counts['skipped']} already finished, "
              f"{counts['unavailable']} not run (data unavailable)")
    render()
    print(f"wrote {args.board} and {args.results}/leaderboard.json")
    return 0

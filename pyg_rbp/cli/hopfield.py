"""`pyg-rbp hopfield`: the associative-memory benchmark of Liao et al. (2018), one row per mode.

Thin wrapper over :mod:`pyg_rbp.tasks.hopfield.experiment`: trains a Hopfield memory (neurons as
graph nodes, symmetric synapses as edges) with each requested gradient mode, and writes a table
of methods (success rate, pixel error, time per epoch, activation memory), a JSON document
(atomically, after every mode; a rerun skips finished modes, one of other settings is refused
unless ``--fresh``) and a PNG grid of clean / corrupted / recalled images. Unset flags take the
defaults of the pattern source; errors end through the shared exit table
(:data:`pyg_rbp.cli._args.EXIT_RULES`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyg_rbp.cli._args import (
    UsageError,
    add_backward_iter,
    add_device,
    add_fresh,
    add_grad,
    add_json,
    add_max_iter,
    add_progress,
    add_root,
    add_threads,
    check_device,
    check_outputs,
    set_threads,
)
from pyg_rbp.engine import parse_grad_modes
from pyg_rbp.results import CorruptResultsError, OutputPathError, ResultsFileConflict
from pyg_rbp.tasks.hopfield.experiment import HopfieldConfig, run_experiment
from pyg_rbp.tasks.hopfield.report import results_table

# Flags mapping one-to-one onto HopfieldConfig fields: (type, help).
_FLAGS: dict[str, tuple[type, str]] = {
    "per_class": (int, "patterns per digit class (default 1: 10 patterns)"),
    "split": (str, "MNIST split to take the patterns from: test (offline copy) or train"),
    "hidden": (int, "hidden neurons (default: 1024 mnist, 128 digits)"),
    "topology": (str, "complete (the paper; dense fast path) | knn | random | local (sparse path)"),
    "knn_k": (int, "neighbours per neuron of the knn topology"),
    "avg_degree": (float, "expected degree of the random topology"),
    "radius": (float, "local topology: receptive-field radius in the image plane (default 3)"),
    "long_range": (int, "local topology: random long-range synapses per hidden neuron (default 16)"),
    "a": (float, "leak a of h <- (1-a) h + W sigmoid(b h) (default: 0.5 mnist, 1 digits; paper 1)"),
    "b": (float, "sigmoid gain b (default 0.5)"),
    "init_std": (float, "initial weight std (default 1e-3)"),
    "lr": (float, "learning rate (default: 1.5e-3 mnist, 3e-2 digits; paper 1e-3)"),
    "optimizer": (str, "adam (the paper) or sgd (momentum 0.9)"),
    "lr_schedule": (str, "constant (the paper) or cosine (annealed to 0 over the epochs; default)"),
    "epochs": (int, "training epochs, passes over the patterns (default: 3000 mnist, 2000 digits)"),
    "batch_size": (int, "patterns per Adam step (0: all, the default; the paper used 1)"),
    "train_input": (str, "clean (the reference code) or corrupted (fresh random switch-offs; default)"),
    "corrupt": (float, "fraction of on pixels switched off at test and in corrupted training "
                       "(default: 0.5 mnist, 0.25 digits)"),
    "train_corrupt": (float, "fraction switched off in corrupted training (default: --corrupt)"),
    "train_copies": (int, "corrupted copies of each pattern per training step (default 1)"),
    "flip": (float, "fraction of pixels flipped in the bit-flip test (default 0.05)"),
    "bound": (float, "success: pixel error at most this fraction (default 0.01)"),
    "test_seed": (int, "seed of the test corruptions (default 1234)"),
    "seed": (int, "seed of the initial weights and training corruptions (default 0)"),
    "eval_every": (int, "evaluate recall every this many epochs (default epochs/10)"),
    "grad_check_images": (int, "images for the exact-implicit-gradient check (0: skip)"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hopfield", help="associative memory: train a Hopfield network with each gradient mode",
        description="Continuous Hopfield network (neurons = nodes, symmetric synapses = edges) "
                    "trained to restore corrupted digits, once per gradient mode.",
    )
    p.add_argument("--images", default="digits", choices=("mnist", "digits"),
                   help="mnist (the paper: 10 MNIST digits, 28x28) or digits (scikit-learn 8x8, "
                        "no download; the default)")
    add_grad(p, "all", help="gradient modes: a comma list of bptt,tbptt,rbp,cg,neumann or 'all' (default)")
    for name, (typ, text) in _FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=text)
    add_max_iter(p, None, help="forward updates T (default 50)", old=("--updates",))
    add_backward_iter(p, None, help="K: TBPTT steps / RBP, CG, Neumann iterations (default 20)",
                      old=("--truncation",))
    add_device(p)
    add_root(p, "for MNIST: ")
    add_json(p, what="one unit per gradient mode")
    p.add_argument("--png", default=None, help="PNG grid of clean / corrupted / recalled images")
    p.add_argument("--md", default=None, help="markdown table (default: next to --json)")
    add_fresh(p)
    add_threads(p)
    add_progress(p)
    p.set_defaults(func=run)


_CONFIG_FLAGS = (*_FLAGS, "max_iter", "backward_iter")
"""The flags that set a :class:`HopfieldConfig` field of the same name."""


def run(args: argparse.Namespace) -> int:
    try:
        modes = parse_grad_modes(args.grad)
    except ValueError as err:
        raise UsageError(f"pyg-rbp hopfield: --grad: {err}") from None
    device = check_device("hopfield", args.device)
    md_default = str(Path(args.json).with_suffix(".md")) if args.json and not args.md else None
    check_outputs("hopfield", files={"--json": args.json, "--png": args.png, "--md": args.md or md_default})
    values = {name: getattr(args, name) for name in _CONFIG_FLAGS if getattr(args, name) is not None}
    try:
        config = HopfieldConfig(images=args.images, device=device, **values).resolved()
    except ValueError as err:
        raise UsageError(f"pyg-rbp hopfield: {err}") from None
    set_threads(args.threads)  # 0 or unset: torch's default
    try:
        doc = run_experiment(config, modes, json_path=args.json, png_path=args.png, md_path=args.md,
                             data_root=args.root, resume=not args.fresh,
                             progress=not args.no_progress,
                             log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except (ResultsFileConflict, CorruptResultsError, OutputPathError):
        raise  # the exit table's (pyg_rbp.cli._args.EXIT_RULES): status 2, one line
    except ValueError as err:  # a setting the patterns or the topology refuse
        raise UsageError(f"pyg-rbp hopfield: {err}") from None
    print(results_table(doc))
    for path in (args.json, args.png):
        if path:
            print(f"wrote {path}")
    return 0

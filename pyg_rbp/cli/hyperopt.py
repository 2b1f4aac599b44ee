"""`pyg-rbp hyperopt`: tune training hyperparameters by hypergradients through the training run.

Compares gradient modes (BPTT, TBPTT, RBP, Neumann-RBP; CG-RBP on request) on one task and
writes the meta-objective curves (PNG), a JSON file with one row per mode (cosine of the first
hypergradient with BPTT's, final meta objective, time and saved bytes per meta step, accuracies
before and after tuning, final hyperparameters) and a markdown table. Finished modes are kept:
rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
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
    add_seed,
    add_threads,
    check_device,
    check_outputs,
    int_list,
    set_threads,
)
from pyg_rbp.engine import parse_grad_modes
from pyg_rbp.tasks.hyperopt.experiment import ExperimentConfig, run_experiment
from pyg_rbp.tasks.hyperopt.report import render_markdown

DEFAULT_GRADS = "bptt,tbptt,rbp,neumann"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hyperopt",
        help="hyperparameter optimisation by RBP through the training dynamics",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--task", default="mlp-digits", choices=["mlp-mnist", "mlp-digits", "gcn-cora"],
                   help="inner problem (mlp-digits needs no download)")
    add_grad(p, DEFAULT_GRADS,
             help="comma-separated gradient modes (bptt, tbptt, rbp, cg, neumann) or 'all'")
    p.add_argument("--meta-steps", type=int, default=100, help="meta-optimisation steps")
    add_max_iter(p, None, help="forward steps T: inner SGD steps of the training run (task default: 100)",
                 old=("--inner-steps",))
    add_backward_iter(p, None, help="K of TBPTT / Neumann terms / RBP and CG iterations (task default: 50)",
                      old=("--truncation", "-K"))
    p.add_argument("--batch-size", type=int, default=None, help="inner mini-batch size (MLP tasks)")
    p.add_argument("--meta-lr", type=float, default=0.05, help="Adam learning rate of the meta step")
    p.add_argument("--lr-decay-at", type=int, default=None,
                   help="meta step at which the meta learning rate drops x0.1 (default: half)")
    p.add_argument("--meta-split", choices=["train", "val"], default=None,
                   help="loss after the inner run that is minimised (default: train for MLPs, val for GCN)")
    p.add_argument("--minibatch-last-step", action="store_true",
                   help="MLP tasks: the last inner step uses its mini-batch, not the whole training split")
    add_seed(p, "the meta-training episode")
    p.add_argument("--resample-episodes", action="store_true",
                   help="draw a new initialisation and batch order every meta step (seed + step)")
    p.add_argument("--eval-seeds", type=int_list, default=[1000, 1001, 1002],
                   help="fresh episodes on which accuracies before/after tuning are averaged")
    add_json(p, what="one unit per gradient mode")
    p.add_argument("--png", default=None, help="meta-objective curves (PNG)")
    p.add_argument("--md", default=None, help="markdown table (default: the JSON path with .md)")
    add_root(p)
    add_device(p, default=None)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    add_threads(p)
    p.add_argument("--memory-steps", type=int_list, default=None,
                   help="also count saved bytes per mode at these inner-step counts, e.g. 100,400")
    p.add_argument("--cosine-sweep", type=int_list, default=None,
                   help="also measure Neumann(K)/TBPTT(K) cosine with BPTT for these K, e.g. 1,5,10,20,50")
    add_fresh(p)
    add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the experiment; refused settings, results files and missing data end through
    :data:`pyg_rbp.cli._args.EXIT_RULES`."""
    set_threads(args.threads)
    md_default = str(Path(args.json).with_suffix(".md")) if args.json and not args.md else None
    check_outputs("hyperopt", files={"--json": args.json, "--png": args.png, "--md": args.md or md_default})
    device = check_device("hyperopt", args.device)
    try:
        config = ExperimentConfig(
            task=args.task, grads=parse_grad_modes(args.grad), meta_steps=args.meta_steps,
            max_iter=args.max_iter, backward_iter=args.backward_iter, meta_lr=args.meta_lr,
            lr_decay_at=args.lr_decay_at, seed=args.seed, resample=args.resample_episodes,
            eval_seeds=args.eval_seeds, batch_size=args.batch_size, meta_split=args.meta_split,
            final_full_batch=not args.minibatch_last_step, dtype=args.dtype, device=device,
        )
    except ValueError as exc:
        raise UsageError(f"pyg-rbp hyperopt: {exc}") from None
    doc = run_experiment(config, json_path=args.json, png_path=args.png, md_path=args.md,
                         root=args.root, memory_steps=args.memory_steps or (),
                         cosine_sweep=args.cosine_sweep or (), fresh=args.fresh,
                         progress=not args.no_progress)
    print(render_markdown(doc))
    mem = doc.get("memory_scaling")
    if mem:
        steps = mem["max_iter"]
        for grad, ratio in mem["ratio_last_to_first"].items():
            shown = "-" if ratio is None else f"{ratio:.2f}"
            print(f"saved bytes ratio T={steps[-1]} / T={steps[0]} for {grad}: {shown}")
    failed = [r["grad"] for r in doc["results"] if r["status"] != "ok"]
    if failed:
        print(f"modes that stopped early: {', '.join(failed)} (see 'status' in the JSON)")
    return 0

"""`pyg-rbp train`: train a model on a dataset over several seeds and report mean and std.

Thin wrapper over :mod:`pyg_rbp.training`: every flag defaults to what suits the dataset
(:func:`pyg_rbp.training.config.defaults_for`), so ``pyg-rbp train --dataset X`` alone works for
every supported dataset, node- or graph-level. The JSON (``--json``) is rewritten atomically
after every finished seed and a rerun with the same settings skips the seeds already in it.
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import fields
from typing import Any

from pyg_rbp.cli._args import (
    CommandError,
    UsageError,
    add_device,
    add_fresh,
    add_grad,
    add_json,
    add_progress,
    add_root,
    add_seeds,
    add_threads,
    check_device,
    check_outputs,
    finite_float,
    parse_seeds,
    set_threads,
)
from pyg_rbp.data.protocols import KFOLD, NUM_FOLDS
from pyg_rbp.engine import grad_mode_names, parse_grad_modes
from pyg_rbp.results import human_bytes, markdown_table
from pyg_rbp.training import distributed, loaders, runner
from pyg_rbp.training.config import FIXED_POINT_MODELS, TrainConfig, build_config, dataset_task

__all__ = ["add_parser", "configs_from_args", "parse_seeds", "run"]

# Flags that map one-to-one onto TrainConfig fields (type, help).
_FLAGS: dict[str, tuple[type, str]] = {
    "hidden": (int, "hidden width (paper protocol: also the PCA width)"),
    "max_iter": (int, "forward fixed-point steps (at most, with --tol)"),
    "backward_iter": (int, "TBPTT truncation / iterations of the RBP, CG and Neumann backward"),
    "tol": (float, "forward tolerance on the relative residual (0: always max-iter steps)"),
    "damping": (float, "damping beta of h <- (1-beta) h + beta F(h)"),
    "aggr": (str, "neighbour aggregation of the gated cell: add (the paper) or mean"),
    "features": (str, "node features under public/official: raw or row-normalized"),
    "pool": (str, "graph read-out of graph models: mean, add or max"),
    "readout": (str, "fixed-point graph models: pool the fixed point (state) or a per-node MLP of it (mlp)"),
    "dropout": (float, "dropout before/after the fixed point (never inside it)"),
    "alpha": (float, "teleport probability of the ppr model"),
    "kappa": (float, "contraction bound of the implicit cell"),
    "num_layers": (int, "MLP layers (ppr) / GCN / GIN layers"),
    "optimizer": (str, "adam or sgd"),
    "lr": (float, "learning rate"),
    "momentum": (float, "SGD momentum"),
    "weight_decay": (float, "L2 weight decay"),
    "epochs": (int, "training epochs (full-graph steps for node tasks)"),
    "eval_every": (int, "check validation every this many epochs"),
    "patience": (int, "stop after this many epochs without a better validation (0: never)"),
    "batch_size": (int, "graphs per mini-batch (graph tasks); target nodes per mini-batch (node "
                        "tasks with --loader history|neighbor|cluster)"),
    "loader": (str, "node tasks: full (one full-graph step per epoch), history (batches with "
                    "historical fixed points), cluster (Cluster-GCN batches of graph parts) or "
                    "neighbor (PyG's NeighborLoader; sampling extra)"),
    "num_neighbors": (str, "--loader neighbor: neighbours sampled per hop, e.g. 10,10"),
    "num_parts": (int, "--loader cluster: parts the graph is cut into (a batch joins several)"),
    "partition": (str, "--loader history|cluster: how nodes are cut into parts: spectral (few cut "
                       "edges, no METIS; cluster's default), rcm (history's default), random, or "
                       "metis (PyG's ClusterData; needs pyg-lib or a METIS torch-sparse)"),
    "solver": (str, "forward solver of the fixed point: any registered one (iteration, the "
                    "default and the paper's; anderson; broyden)"),
    "val_fraction": (float, "10-fold: fraction of the training folds held out for validation"),
    "step_every": (str, "mini-batch loaders: optimiser step every batch (round) or once per epoch"),
}


# Flags whose values are range-checked as they are parsed (NaN/inf refused; exit status 2).
_CHECKED: dict[str, Any] = {
    "lr": finite_float(0.0, low_open=True),
    "weight_decay": finite_float(0.0),
    "tol": finite_float(0.0),
    "momentum": finite_float(0.0, 1.0, high_open=True),
    "kappa": finite_float(0.0, 1.0, low_open=True, high_open=True),
    "damping": finite_float(0.0, 1.0, low_open=True),
    "dropout": finite_float(0.0, 1.0, high_open=True),
    "alpha": finite_float(0.0, 1.0, low_open=True),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model over seeds: best validation, test, time, memory",
        description="Train a fixed-point model (or a baseline) with early stopping on validation. "
                    "Unset flags take the dataset's defaults.",
    )
    p.add_argument("--dataset", default="cora", help="dataset name (default: cora)")
    p.add_argument("--protocol", default=None,
                   help="paper | public (Planetoid, digits, karate) | official (OGB) | 10-fold (TU sets); "
                        "default per dataset")
    p.add_argument("--model", default=None,
                   help="gated | implicit | ppr | linear-pca | gcn (node) ; gated | implicit | gin (graph)")
    add_grad(p, None,
             help=f"gradient mode(s): {','.join(grad_mode_names())} (any registered mode), "
                  "a comma list or 'all' (the paper's five; default neumann)")
    for name, (typ, text) in _FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=_CHECKED.get(name, typ), default=None,
                       help=text)
    add_seeds(p)
    p.add_argument("--folds", default=None,
                   help="10-fold protocol: the folds to run, 0,1,2 or a range (default: 0-9); "
                        "each fold is one result row, in place of a seed")
    add_device(p)
    add_root(p)
    add_json(p, what="one unit per (mode, seed)")
    add_fresh(p)
    add_threads(p)
    add_progress(p)
    p.add_argument("--world-size", type=int, default=None,
                   help="train data-parallel in this many processes (spawned here; gloo on CPU, "
                        "NCCL on CUDA); under torchrun the group comes from its environment")
    p.set_defaults(func=run)


def configs_from_args(args: argparse.Namespace) -> list:
    """One :class:`TrainConfig` per requested gradient mode (validated, defaults filled)."""
    task = dataset_task(args.dataset.lower())
    known = {f.name for f in fields(TrainConfig)}
    overrides = {k: getattr(args, k) for k in _FLAGS if k in known}
    grads = parse_grad_modes(args.grad) if args.grad else [None]
    probe = build_config(args.dataset.lower(), task, protocol=args.protocol, model=args.model, **overrides)
    if probe.model not in FIXED_POINT_MODELS:
        return [probe]
    return [build_config(args.dataset.lower(), task, protocol=args.protocol, model=args.model,
                         grad=g, **overrides) for g in grads]


def run(args: argparse.Namespace) -> int:
    """Train; with ``--world-size N`` (N > 1) spawn N processes, under torchrun join its group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.world_size is not None and args.world_size < 1:
        raise UsageError(f"pyg-rbp train: --world-size must be >= 1, got {args.world_size}")
    _preflight(args, max(world, args.world_size or 1))  # before any process is spawned
    if world == 1 and (args.world_size or 1) > 1:
        try:
            distributed.spawn(_distributed_worker, args.world_size, (args,), device=args.device,
                  threads=args.threads or 1)
        except distributed.WorkerFailed as err:
            raise CommandError(f"pyg-rbp train: {err}") from None
        return 0
    if world > 1:
        rank, _, device = distributed.init_from_env(args.device)
        args.device = str(device)
        try:
            return _run(args, rank)
        finally:
            distributed.shutdown()
    return _run(args, 0)


def _preflight(args: argparse.Namespace, world: int) -> None:
    """Refuse bad settings and unwritable outputs with one line (exit 2) in the launching
    process, so that N spawned ranks never each fail on them."""
    try:
        configs = configs_from_args(args)
    except ValueError as err:
        raise UsageError(f"pyg-rbp train: {err}") from None
    parse_seeds(_runs_spec(args, configs[0].protocol))
    loader = configs[0].loader
    missing = loaders.missing_requirement(configs[0])
    if missing is not None:
        raise UsageError(f"pyg-rbp train: {missing}")
    if world > 1 and loader == "full":
        raise UsageError("pyg-rbp train: several processes share mini-batches: pass --loader "
                         "history|neighbor|cluster with --world-size / torchrun")
    if int(os.environ.get("RANK", "0")) == 0:
        check_outputs("train", files={"--json": args.json})


def _distributed_worker(args: argparse.Namespace) -> None:
    """One spawned process of ``--world-size N`` (the group is already initialised)."""
    args.device = str(distributed.init_from_env(args.device)[2])
    _run(args, distributed.current_group()[0])


def _run(args: argparse.Namespace, rank: int) -> int:
    """Train and report; only rank 0 prints and writes ``--json``. Refused settings, results
    files and missing data end through :data:`pyg_rbp.cli._args.EXIT_RULES`."""
    set_threads(args.threads)
    try:
        configs = configs_from_args(args)
    except ValueError as err:
        raise UsageError(f"pyg-rbp train: {err}") from None
    seeds = parse_seeds(_runs_spec(args, configs[0].protocol))
    check_device("train", args.device)
    main = rank == 0
    if main:
        check_outputs("train", files={"--json": args.json})  # before any training
    for cfg in configs:
        if main:
            print(cfg.command())
    doc = runner.run_seeds(configs, seeds, device=args.device, root=args.root,
                    json_path=args.json if main else None, progress=main and not args.no_progress,
                    resume=not args.fresh, log=print if main else (lambda _: None),
                    skip=distributed.broadcast_from_main)  # every rank resumes rank 0's finished runs
    if not main:
        return 0
    rows = []
    for s in doc["summary"]:
        rows.append({**s, "test": _pm(s["test_mean"], s["test_std"]), "val": _pm(s["val_mean"], s["val_std"]),
                     "mem": human_bytes(s["saved_bytes"]), "cuda": human_bytes(s["cuda_peak_bytes"]),
                     "n": len(s["seeds"]), "nodes_s": _nodes_per_s(doc["results"], s["grad"]),
                     "diverged": ", ".join(f"seed {k} at {v}" for k, v in s["diverged"].items()) or "-"})
    print(markdown_table(rows, ["dataset", "model", "grad", "metric", "test", "val", "epoch_time_s",
                                "nodes_s", "mem", "cuda", "n", "diverged"],
                         ["dataset", "model", "grad", "metric", "test", "val", "s/epoch", "nodes/s",
                          "saved for backward", "CUDA peak", "seeds", "diverged (step)"]))
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _runs_spec(args: argparse.Namespace, protocol: str) -> str:
    """The seeds to run, or under ``10-fold`` the folds (``--folds``, default all ten)."""
    if protocol == KFOLD:
        if args.seeds is not None:
            raise UsageError("pyg-rbp train: under --protocol 10-fold each run is a fold: "
                             "pass --folds (e.g. --folds 0-9), not --seeds")
        spec = args.folds or f"0-{NUM_FOLDS - 1}"
        folds = parse_seeds(spec, "--folds")
        if max(folds) >= NUM_FOLDS:
            raise UsageError(f"pyg-rbp train: --folds must lie in 0-{NUM_FOLDS - 1}, got {spec!r}")
        return spec
    if args.folds is not None:
        raise UsageError(f"pyg-rbp train: --folds is for --protocol 10-fold (this run: {protocol})")
    return args.seeds or "0"


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std:.4f}"


def _nodes_per_s(results: list, grad: str | None) -> str:
    """Median nodes/s over the seeds of one gradient mode (``-`` where not measured)."""
    values = [r["nodes_per_s"] for r in results if r.get("grad") == grad and r.get("nodes_per_s")]
    return f"{statistics.median(values):.0f}" if values else "-"

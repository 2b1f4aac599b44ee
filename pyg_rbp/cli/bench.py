"""`pyg-rbp bench`: benchmarks that compare the gradient modes with each other and with peers.

``pyg-rbp bench solvers`` measures forward solvers (iteration, Anderson, Broyden) and adjoint
modes (Neumann, RBP, CG, GMRES, phantom) against torchdeq's on the same step functions: steps,
Jacobian products and time to a residual or gradient error (see :mod:`pyg_rbp.bench.solvers`).

``pyg-rbp bench scaling`` measures activation memory and training-step time of every gradient
mode as the number of forward steps ``T`` and the truncation ``K`` grow, beside PyG's
``GatedGraphConv`` and ``torchdeq`` (see :mod:`pyg_rbp.bench.scaling`). It writes JSON
(atomically, after every measured cell, so an interrupted run resumes), a markdown table and a
PNG. Speed and memory targets are printed as ratios measured in the same run.

``pyg-rbp bench graph-size`` holds ``T`` and ``K`` fixed and grows the graph instead (10k to 1M
nodes and real graphs): saved bytes, process peak memory and step time per mode, each
configuration in its own memory-capped subprocess (see :mod:`pyg_rbp.bench.graph_size`).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from pyg_rbp.bench.graph_size import (
    DEFAULT_GRAPHS,
    GRAPH_SIZE_GRADS,
    GraphSizeConfig,
    GraphSizeRun,
    parse_graph,
)
from pyg_rbp.bench.graph_size import write_reports as write_graph_size_reports
from pyg_rbp.bench.peers import PEERS
from pyg_rbp.bench.scaling import ScalingConfig, ScalingRun
from pyg_rbp.bench.scaling import write_reports as write_scaling_reports
from pyg_rbp.bench.solvers import MAP_NAMES, SolversConfig, run_solvers_bench
from pyg_rbp.bench.solvers import write_reports as write_solvers_reports
from pyg_rbp.cli._args import (
    UsageError,
    add_backward_iter,
    add_deprecated,
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
)
from pyg_rbp.engine import GRAD_MODES, parse_grad_modes


def _grads(text: str) -> list[str]:
    try:
        modes = parse_grad_modes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not modes:
        raise argparse.ArgumentTypeError("no gradient mode given")
    return modes


def _peers(text: str) -> list[str]:
    if text.strip().lower() in ("none", ""):
        return []
    if text.strip().lower() == "all":
        return list(PEERS)
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in PEERS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown peers {bad}; choose from {', '.join(PEERS)}, all, none")
    return names


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: memory/time scaling of the gradient modes",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="bench", metavar="BENCHMARK")
    s = bsub.add_parser(
        "scaling", help="memory and step time vs forward steps T and truncation K",
        description="Activation memory and training-step time of bptt, tbptt, rbp, cg and neumann "
                    "(and PyG GatedGraphConv / torchdeq) for each T and K.")
    s.add_argument("--dataset", default="cora", choices=("cora", "random"))
    add_root(s)
    s.add_argument("--nodes", type=int, default=2708, help="random graph: number of nodes")
    s.add_argument("--edges", type=int, default=10556, help="random graph: number of edges")
    s.add_argument("--features", type=int, default=None,
                   help="feature width (default: --hidden; wider features add a linear encoder)")
    s.add_argument("--classes", type=int, default=7, help="random graph: number of classes")
    s.add_argument("--hidden", type=int, default=64, help="state channels of the cell")
    s.add_argument("--aggr", default="mean", choices=("mean", "add"),
                   help="GatedCell aggregation; 'add' (the paper's) is not contractive on Cora at "
                        "init, so Neumann/RBP diverge there (default: mean)")
    add_max_iter(s, [10, 50, 100], help="forward steps T, a comma list, e.g. 10,25,50",
                 type=int_list, old=("--steps",))
    add_backward_iter(s, [5, 20], help="truncations / adjoint iterations K, a comma list, e.g. 5,10,20,50",
                      type=int_list, dest="backward_iters")
    add_grad(s, None, help="'all' or a comma-separated list of modes (default: all)", type=_grads)
    s.add_argument("--peers", type=_peers, default=None,
                   help="'all' (pyg_gatedgraphconv,torchdeq), 'none' or a comma-separated list")
    s.add_argument("--repeats", type=int, default=5, help="timed training steps per cell (median)")
    s.add_argument("--warmup", type=int, default=1, help="untimed training steps per cell")
    s.add_argument("--rounds", type=int, default=3,
                   help="round-robin rounds of the target pass (0: skip the target pass)")
    target_t = s.add_argument("--target-max-iter", type=int, default=100,
                              help="forward steps T of the target ratios")
    add_deprecated(s, target_t, "--target-steps")
    target_k = s.add_argument("--target-backward-iter", type=int, default=20,
                              help="backward iterations K of the target ratios")
    add_deprecated(s, target_k, "--target-k")
    s.add_argument("--no-accuracy", dest="accuracy", action="store_false",
                   help="skip the float64 gradient-accuracy study")
    s.add_argument("--reference-iters", type=int, default=400,
                   help="CG-RBP iterations of the accuracy reference")
    s.add_argument("--forward-tol", type=float, default=1e-4,
                   help="tolerance of the forward-tolerance row (0: no such row)")
    add_device(s)
    add_threads(s, 1, why=_THREADS_WHY)
    add_seed(s, "the weights and the graph")
    add_json(s, what="default scaling_<dataset>.json here; a markdown table and a PNG beside it")
    add_fresh(s)
    s.add_argument("--redo", default="", help="re-measure these parts of a saved run and keep the "
                   "rest: comma-separated grid, targets, accuracy (e.g. when the machine got quieter)")
    add_progress(s)
    s.set_defaults(func=run)
    _add_graph_size(bsub)
    _add_solvers_parser(bsub)
    p.set_defaults(func=_usage(p))


_THREADS_WHY = "timings are one-thread numbers unless set"


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_solvers_parser(bsub: argparse._SubParsersAction) -> None:
    s = bsub.add_parser(
        "solvers", help="forward solvers and adjoint modes vs torchdeq: steps/VJPs/time to accuracy",
        description="Steps and time to relative residual 1e-4/1e-6 per forward solver, Jacobian "
                    "products and time to gradient error 1e-3/1e-4/1e-6 per adjoint mode, and "
                    "the training step at equal gradient accuracy, ours against torchdeq's "
                    "(float64, ratios from one run).")
    s.add_argument("--dataset", default="cora", choices=("cora", "random"))
    add_root(s)
    s.add_argument("--hidden", type=int, default=64, help="state channels (PCA width on cora)")
    s.add_argument("--nodes", type=int, default=2708, help="random graph: number of nodes")
    s.add_argument("--edges", type=int, default=10556, help="random graph: number of edges")
    s.add_argument("--maps", type=_names, default=list(MAP_NAMES),
                   help=f"comma-separated maps (default: all of {', '.join(MAP_NAMES)})")
    s.add_argument("--solvers", type=_names, default=None,
                   help="our forward solvers (default: every registered one)")
    add_grad(s, None, type=_names, dest="modes", old=("--modes",),
             help="our adjoint modes (default: every registered implicit or phantom-type mode)")
    s.add_argument("--train-maps", type=_names, default=["gated_mean", "implicit_k0.99"],
                   help="maps of the training-step comparison")
    s.add_argument("--train-tol", type=float, default=1e-4,
                   help="gradient error of the training-step comparison")
    add_max_iter(s, 2000, help="forward step budget T per solve")
    s.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats")
    s.add_argument("--reference-iters", type=int, default=600, help="GMRES VJPs of the reference")
    add_threads(s, 1, why=_THREADS_WHY)
    add_seed(s, "the weights and the graph")
    add_json(s, what="default solvers_<dataset>.json here; .md and .png beside it")
    add_fresh(s)
    add_progress(s)
    s.set_defaults(func=run_solvers)


def run_solvers(args: argparse.Namespace) -> int:
    try:  # an optional dependency (the bench extra)
        import torchdeq  # noqa: F401
    except ImportError:
        raise UsageError("pyg-rbp bench solvers: needs the torchdeq package "
                         "(pip install -e '.[bench]' from a clone)") from None
    extra = {k: getattr(args, k) for k in ("solvers", "modes") if getattr(args, k) is not None}
    cfg = SolversConfig(dataset=args.dataset, root=args.root, hidden=args.hidden,
                        nodes=args.nodes, edges=args.edges, maps=args.maps,
                        max_iter=args.max_iter, repeats=args.repeats, train_maps=args.train_maps,
                        train_tol=args.train_tol, reference_iters=args.reference_iters,
                        seed=args.seed, threads=args.threads or None, **extra)
    json_path = Path(args.json or f"solvers_{cfg.dataset}.json")
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(f"pyg-rbp bench solvers: {exc}") from None
    check_outputs("bench solvers", files=_outputs(json_path))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", category=UserWarning, module="pyg_rbp")
        result = run_solvers_bench(cfg, json_path, progress=not args.no_progress, fresh=args.fresh)
    md, png = write_solvers_reports(result, json_path)
    for v in result.get("verdicts", []):
        mark = {True: "MET ", False: "MISS", None: "n/a "}[v["pass"]]
        value = "-" if v["value"] is None else f"{v['value']:.3g}"
        print(f"  [{mark}] {v['target']}: {value} (bound {v['bound']:g})")
    print(f"wrote {json_path}, {md} and {png}")
    return 0


def _outputs(json_path: str | Path) -> dict[str, Path]:
    """The files a benchmark writes: the JSON and the markdown and PNG beside it."""
    json_path = Path(json_path)
    return {"--json": json_path, "the markdown table": json_path.with_suffix(".md"),
            "the PNG": json_path.with_suffix(".png")}


def _usage(parser: argparse.ArgumentParser):
    def show(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


def run(args: argparse.Namespace) -> int:
    check_device("bench scaling", args.device)
    cfg = ScalingConfig(
        dataset=args.dataset, root=args.root, nodes=args.nodes, edges=args.edges,
        features=args.features, classes=args.classes, hidden=args.hidden, aggr=args.aggr,
        max_iter=args.max_iter, backward_iters=args.backward_iters,
        grads=args.grad if args.grad is not None else list(GRAD_MODES),
        peers=args.peers if args.peers is not None else ["pyg_gatedgraphconv", "torchdeq"],
        repeats=args.repeats, warmup=args.warmup, rounds=args.rounds,
        target_max_iter=args.target_max_iter, target_backward_iter=args.target_backward_iter,
        accuracy=args.accuracy,
        reference_iters=args.reference_iters, forward_tol=args.forward_tol, device=args.device,
        threads=args.threads or None, seed=args.seed,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(f"pyg-rbp bench scaling: {exc}") from None
    if "torchdeq" in cfg.peers:
        try:  # an optional dependency (the bench extra)
            import torchdeq  # noqa: F401
        except ImportError:
            raise UsageError("pyg-rbp bench scaling: the torchdeq peer needs the torchdeq package "
                             "(pip install -e '.[bench]' from a clone), "
                             "or pass --peers pyg_gatedgraphconv") from None
    json_path = Path(args.json or f"scaling_{cfg.dataset}.json")
    check_outputs("bench scaling", files=_outputs(json_path))
    with warnings.catch_warnings():
        # Convergence warnings are recorded per row (forward residual); CSR beta warnings are noise.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", category=UserWarning, module="pyg_rbp")
        redo = [p.strip() for p in args.redo.split(",") if p.strip()]
        try:
            bench = ScalingRun(cfg, json_path, progress=not args.no_progress, redo=redo,
                               fresh=args.fresh)
        except ValueError as exc:
            raise UsageError(f"pyg-rbp bench scaling: {exc}") from None
        result = bench.run()
    md, png = write_scaling_reports(result, json_path)
    _print_summary(result)
    print(f"wrote {json_path}, {md} and {png}")
    return 0


def _print_summary(result: dict) -> None:
    targets = result.get("targets") or {}
    tm = targets.get("step_time_s") or {}
    if tm:
        print(f"step times at T={targets['max_iter']}, K={targets['backward_iter']} (interleaved): "
              + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in tm.items()))
    for v in targets.get("verdicts", []):
        mark = {True: "PASS", False: "MISS", None: "n/a "}[v["pass"]]
        value = "-" if v["value"] is None else f"{v['value']:.3f}"
        print(f"  [{mark}] {v['target']}: {value} (bound {v['bound']:.3g})")
    acc = result.get("accuracy") or {}
    for row in acc.get("rows", []):
        if row.get("tol"):
            print(f"  forward tol={row['tol']:g}: {row.get('forward_iters')} steps, cosine "
                  f"{row.get('cosine')}, step time {row.get('step_time_s')}")


# --- pyg-rbp bench graph-size ---------------------------------------------------------------


def _graph_list(text: str) -> list[str]:
    names = [g.strip() for g in text.split(",") if g.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no graph given")
    for name in names:
        try:
            parse_graph(name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def _add_graph_size(bsub: argparse._SubParsersAction) -> None:
    g = bsub.add_parser(
        "graph-size", help="memory and step time vs number of nodes (full graph, fixed T and K)",
        description="Full-graph training of bptt, tbptt and neumann at T forward steps on graphs "
                    "of growing size: bytes saved for backward, process peak memory (fresh "
                    "subprocess per configuration, memory-capped), time per step, and where a "
                    "mode runs out of memory. (bench scaling varies T on one graph instead.)")
    g.add_argument("--graphs", type=_graph_list, default=list(DEFAULT_GRAPHS),
                   help="comma-separated: KIND:NODES[:EDGES] with KIND powerlaw or random "
                        "(NODES like 10k, 1m; EDGES default --degree x NODES) or a real graph "
                        "(amazon-computers, amazon-photo, coauthor-cs, coauthor-physics); "
                        f"default {','.join(DEFAULT_GRAPHS)}")
    add_grad(g, list(GRAPH_SIZE_GRADS), type=_grads,
             help="comma-separated gradient modes (default bptt,tbptt,neumann)")
    add_max_iter(g, 100, help="forward steps T (default 100)", old=("--steps",))
    add_backward_iter(g, 20, help="K: tbptt truncation and neumann terms (default 20)")
    g.add_argument("--degree", type=int, default=10, help="synthetic graphs: edges per node (default 10)")
    g.add_argument("--exponent", type=float, default=2.5, help="power-law degree exponent (default 2.5)")
    g.add_argument("--classes", type=int, default=7, help="synthetic graphs: number of classes")
    g.add_argument("--hidden", type=int, default=64, help="state channels (= feature width, default 64)")
    g.add_argument("--aggr", default="mean", choices=("mean", "add"), help="GatedCell aggregation")
    g.add_argument("--repeats", type=int, default=3, help="timed training steps at most (median)")
    g.add_argument("--step-budget-s", type=float, default=60.0, dest="step_budget_s",
                   help="stop repeating once the timed steps took this long (default 60)")
    g.add_argument("--memory-limit-gb", type=float, default=8.0, dest="memory_limit_gb",
                   help="address-space cap of every configuration's subprocess on CPU "
                        "(RLIMIT_AS, GiB, default 8): a mode that needs more fails with a caught "
                        "MemoryError inside its subprocess instead of waking the OOM killer. "
                        "Not applied on CUDA (the device memory is the limit there).")
    g.add_argument("--no-predict", dest="predict", action="store_false",
                   help="skip the T=1/T=2 probe that predicts the unrolled modes' saved bytes")
    g.add_argument("--skip-predicted-oom", action="store_true",
                   help="do not run an unrolled mode whose predicted bytes exceed the limit")
    g.add_argument("--largest-steps", default="", dest="largest_steps",
                   help="comma-separated modes (e.g. bptt) whose largest T in 1..--max-iter that fits "
                        "is found by bisection, one subprocess per try")
    g.add_argument("--largest-steps-graphs", type=_graph_list, default=[], dest="largest_steps_graphs",
                   help="graphs of the --largest-steps search (default: every graph)")
    g.add_argument("--jobs", type=int, default=1, choices=(1, 2),
                   help="configurations run at once (default 1; at most 2)")
    g.add_argument("--timeout-s", type=float, default=3600.0, dest="timeout_s",
                   help="wall-clock limit of one configuration's subprocess (default 3600)")
    add_device(g)
    add_threads(g, 1, why="per subprocess; " + _THREADS_WHY)
    add_seed(g, "the graphs and weights")
    add_root(g, "of the real graphs: ")
    add_json(g, "graph_size.json", what="one unit per configuration; a markdown table and a PNG "
                                        "beside it")
    add_fresh(g)
    add_progress(g)
    g.set_defaults(func=run_graph_size)


def run_graph_size(args: argparse.Namespace) -> int:
    check_device("bench graph-size", args.device)
    cfg = GraphSizeConfig(
        graphs=args.graphs, grads=args.grad, max_iter=args.max_iter, backward_iter=args.backward_iter,
        hidden=args.hidden, degree=args.degree, classes=args.classes, exponent=args.exponent,
        aggr=args.aggr, repeats=args.repeats, step_budget_s=args.step_budget_s,
        memory_limit_gb=args.memory_limit_gb, predict=args.predict,
        skip_predicted_oom=args.skip_predicted_oom, device=args.device,
        threads=args.threads or None, seed=args.seed, root=args.root, jobs=args.jobs,
        timeout_s=args.timeout_s,
    )
    largest = [m.strip().lower() for m in args.largest_steps.split(",") if m.strip()]
    check_outputs("bench graph-size", files=_outputs(args.json))
    try:
        bench = GraphSizeRun(cfg, args.json, largest_steps=largest,
                             largest_steps_graphs=args.largest_steps_graphs, fresh=args.fresh,
                             progress=not args.no_progress)
    except ValueError as exc:  # bad settings, or a results file of other settings
        raise UsageError(f"pyg-rbp bench graph-size: {exc}") from None
    result = bench.run()
    md, png = write_graph_size_reports(result, args.json)
    marks = {True: "PASS", False: "MISS", None: "n/a "}
    for v in result["targets"]:
        value = "-" if v["value"] is None else f"{v['value']:.4g}"
        print(f"  [{marks[v['pass']]}] {v['target']}: {value} ({v['how']})")
    print(f"wrote {args.json}, {md} and {png}")
    return 0

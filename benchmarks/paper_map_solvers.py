"""Does Anderson bring the paper protocol's sum-aggregated gated map on Cora to a fixed point?

The paper's model (GatedCell, sum aggregation, PCA-64 features as the initial state, no input
injection) does not settle under plain iteration: the committed Neumann-RBP runs end at a
relative residual of about 1e-2 after 100 steps. This script measures, cheaply (one seed, no
full paper-protocol rerun), the best relative residual plain iteration, Anderson and Broyden
reach in ``--max-iter`` steps on that map at initialisation and after training seed 0 with
``grad=gmres`` (the paper protocol's exact command otherwise, K = 5 Jacobian products), and
whether that changes the seed's result against the committed Neumann-RBP cell of the same seed
(``benchmarks/results/cells/cora``; ``--grad neumann,gmres`` retrains both).

    python benchmarks/paper_map_solvers.py --json benchmarks/results/solvers_paper_cora.json

Writes JSON and a markdown table next to it. One torch thread; about 40 minutes here.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from pathlib import Path

import torch


def _residuals(model: torch.nn.Module, data, max_iter: int) -> dict[str, dict]:
    """Best relative residual and steps of each solver on the model's fixed-point map."""
    from pyg_rbp.engine import fixed_point

    conv = model.conv
    cell = conv.cell
    x = data.x.float()
    out = {}
    with torch.no_grad():
        inputs = cell.prepare(x, data.edge_index)
        for solver, options in (("iteration", None), ("anderson", {"m": 5}),
                                ("anderson", {"m": 10}), ("broyden", None)):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, st = fixed_point(lambda h: cell.step(h, inputs), x, solver=solver,
                                    solver_options=options, max_iter=max_iter, tol=1e-6,
                                    return_stats=True, track=True)
            trace = st.residual_trace
            name = solver if options is None else f"{solver}(m={options['m']})"
            out[name] = {"best_residual": min(trace), "final_residual": st.residual,
                         "residual_at_100": trace[99] if len(trace) >= 100 else None,
                         "steps": st.forward_iters, "reached_1e-4": min(trace) <= 1e-4,
                         "seconds": time.perf_counter() - t0}
    return out


def _init_model(build, data, seed: int):
    from pyg_rbp.runtime import set_seed
    from pyg_rbp.training.config import build_config

    cfg = build_config("cora", "node", protocol="paper", model="gated", grad="neumann")
    set_seed(seed)
    return build(cfg, data.x.size(1), int(data.y.max()) + 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default="benchmarks/results/solvers_paper_cora.json")
    p.add_argument("--max-iter", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's 2000 steps")
    p.add_argument("--grad", "--grads", dest="grads", default="gmres",
                   help="modes to train, a comma list (default: gmres; --grads is the old spelling)")
    args = p.parse_args()
    torch.set_num_threads(1)

    import pyg_rbp.training.node as node
    from pyg_rbp.data import apply_protocol, load
    from pyg_rbp.results import atomic_write_json, atomic_write_text, environment
    from pyg_rbp.training.config import build_config

    captured: dict[str, torch.nn.Module] = {}
    build = node.build_node_model

    def capture(*a, **k):
        model = build(*a, **k)
        captured["init"] = copy.deepcopy(model)
        captured["model"] = model
        return model

    node.build_node_model = capture
    loaded = load("cora")
    data = apply_protocol(loaded, "paper", args.seed, hidden=64)
    doc: dict = {"env": environment("cpu"), "seed": args.seed, "max_iter": args.max_iter,
                 "runs": {}}
    over = {} if args.epochs is None else {"epochs": args.epochs}
    grads = [g.strip() for g in args.grads.split(",") if g.strip()]
    committed = sorted(Path("benchmarks/results/cells/cora").glob(
        f"paper__gated__neumann__*__seed{args.seed}.json"))
    if committed and args.epochs is None:
        from pyg_rbp.results import read_json

        cell = read_json(committed[0])
        doc["committed_neumann"] = {"file": str(committed[0]), "command": cell["command"],
                                    **{k: cell["result"].get(k) for k in
                                       ("test", "val", "best_epoch", "fixed_point")}}
    doc["residuals_init"] = _residuals(captured.get("init") or _init_model(build, data, args.seed), data,
                                       args.max_iter)
    atomic_write_json(args.json, doc)
    for grad in grads:
        cfg = build_config("cora", "node", protocol="paper", model="gated", grad=grad, **over)
        res = node.train_node(cfg, loaded, data, args.seed, progress=False)
        entry = {"command": cfg.command(), "test": res["test"], "val": res["val"],
                 "best_epoch": res["best_epoch"], "epoch_time_s": res["epoch_time_s"],
                 "diverged": res["diverged"], "fixed_point": res["fixed_point"],
                 "residuals_trained": _residuals(captured["model"], data, args.max_iter)}
        doc["runs"][grad] = entry
        atomic_write_json(args.json, doc)
        print(grad, entry["test"], entry["val"], flush=True)
    lines = ["# The paper protocol's gated map on Cora: forward solvers and GMRES",
             "", f"Seed {args.seed}, `{next(iter(doc['runs'].values()))['command']}`. "
             f"Best relative residual in {args.max_iter} steps of each solver (tol 1e-6):", "",
             "| weights | solver | best residual | residual at step 100 | steps |",
             "|---|---|---|---|---|"]
    tables = [("initialisation", doc["residuals_init"])] + [
        (f"trained ({g})", doc["runs"][g]["residuals_trained"]) for g in doc["runs"]]
    for label, res in tables:
        for solver, r in res.items():
            at100 = "-" if r["residual_at_100"] is None else f"{r['residual_at_100']:.2e}"
            lines.append(f"| {label} | {solver} | {r['best_residual']:.2e} | {at100} | {r['steps']} |")
    lines += ["", "| grad | test | val | best epoch | s / step |", "|---|---|---|---|---|"]
    if "committed_neumann" in doc:
        c = doc["committed_neumann"]
        lines.append(f"| neumann (committed cell) | {100 * c['test']:.1f}% | {100 * c['val']:.1f}% | "
                     f"{c['best_epoch']} | - |")
    for g, e in doc["runs"].items():
        lines.append(f"| {g} | {100 * e['test']:.1f}% | {100 * e['val']:.1f}% | {e['best_epoch']} | "
                     f"{e['epoch_time_s']:.3f} |")
    atomic_write_text(Path(args.json).with_suffix(".md"), "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

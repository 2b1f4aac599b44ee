"""The first gradient of every mode under the paper protocol: why BPTT falls behind there.

The paper protocol (BRIEF.md section 2) trains a sum-aggregated gated GNN whose map is not a
contraction, for 100 steps, with SGD at lr 1e-3. For each dataset and seed (each seed is its own
random split and initialisation) this script builds the exact model of the leaderboard's cell,
runs one training forward and backward per gradient mode from the same initial weights, and
records:

* the gradient norm of the recurrent (GRU) weights and of the output layer;
* whether it is finite (a NaN/inf first or second gradient is where a run diverges);
* the cosine between each mode's recurrent gradient and BPTT's (the exact gradient of the
  100-step unrolled loss), i.e. how far the truncated and implicit modes point elsewhere;
* the recurrent weights' norm after the first SGD step (a jump of orders of magnitude saturates
  the GRU's gates and freezes the recurrent part for the rest of training);
* the forward solve's relative residual (how far the state is from a fixed point).

Run: ``python benchmarks/paper_gradients.py`` (Cora and CiteSeer, seeds 0-9, about 5 minutes
on one CPU thread; ``--datasets``, ``--seeds``, ``--device``). Writes
``benchmarks/results/paper_gradients.{json,md,png}``. Data root: ``--root``, else
``PYG_RBP_DATA``, else ``datasets/``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import warnings
from pathlib import Path
from typing import Any

import torch

from pyg_rbp import ConvergenceWarning
from pyg_rbp.results import (
    atomic_save_figure,
    atomic_write_json,
    atomic_write_text,
    environment,
    markdown_table,
)
from pyg_rbp.runtime import set_threads

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("bptt", "tbptt", "rbp", "cg", "neumann")


def _norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors])


def paper_configs(dataset: str) -> dict[str, Any]:
    """The leaderboard's paper-protocol configs of the gated model on ``dataset``, by gradient mode."""
    from pyg_rbp.training import leaderboard

    return {e.config.grad: e.config for e in leaderboard.plan([dataset], 10, "full", protocols=["paper"])
            if e.config.model == "gated"}


def first_gradients(configs: dict[str, Any], seed: int, loaded: Any,
                    device: torch.device) -> list[dict[str, Any]]:
    """One row per mode: the first training gradient of the paper cell of ``configs`` at ``seed``."""
    from pyg_rbp.data import apply_protocol
    from pyg_rbp.runtime import set_seed
    from pyg_rbp.training.models import build_node_model, fixed_point_stats
    from pyg_rbp.training.objective import loss_fn

    base = configs["bptt"]
    dataset = base.dataset
    data = apply_protocol(loaded, base.protocol, seed, hidden=base.hidden, features=base.features).to(device)
    x, mask = data.x.float(), data.train_mask
    rows, reference, initial = [], None, None
    for mode in MODES:
        cfg = configs[mode]
        set_seed(seed)  # as train_node does: the same initial weights for every mode
        model = build_node_model(cfg, x.size(1), loaded.num_classes).to(device)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if initial is None:
            initial = state
        elif any(not torch.equal(initial[k], v) for k, v in state.items()):
            raise RuntimeError(f"{dataset} seed {seed}: {mode} starts from other weights than bptt")
        recurrent = [p for n, p in model.named_parameters() if ".cell." in n]
        readout = [p for n, p in model.named_parameters() if ".cell." not in n]
        if not recurrent or not readout:
            raise RuntimeError("expected the gated model's recurrent cell and a read-out layer")
        loss = loss_fn(loaded.metric, model(x, data.edge_index)[mask], data.y[mask])
        loss.backward()
        grad_rec = [p.grad for p in recurrent]
        grad_out = [p.grad for p in readout]
        finite = all(bool(torch.isfinite(g).all()) for g in grad_rec + grad_out)
        flat = _flat(grad_rec)
        if mode == "bptt":
            reference = flat
        assert reference is not None
        cosine = (float(torch.nn.functional.cosine_similarity(flat, reference, dim=0))
                  if finite and bool(torch.isfinite(reference).all()) else None)
        # the recurrent weights after one step of the protocol's SGD (momentum has no history yet)
        after = _norm([p.detach() - cfg.lr * (g + cfg.weight_decay * p.detach())
                       for p, g in zip(recurrent, grad_rec)]) if finite else None
        stats = fixed_point_stats(model) or {}
        rows.append({
            "dataset": dataset, "seed": seed, "grad": mode, "loss": float(loss.detach()),
            "grad_norm_recurrent": _norm(grad_rec), "grad_norm_readout": _norm(grad_out),
            "finite": finite, "cosine_with_bptt": cosine,
            "recurrent_norm_before": _norm([p.detach() for p in recurrent]),
            "recurrent_norm_after_step": after, "forward_residual": stats.get("residual"),
        })
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and mode: median and maximum first-gradient norm, median cosine with BPTT."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for mode in MODES:
            rs = [r for r in rows if r["dataset"] == dataset and r["grad"] == mode]
            norms = [r["grad_norm_recurrent"] for r in rs if r["finite"]]
            cos = [r["cosine_with_bptt"] for r in rs if r["cosine_with_bptt"] is not None]
            with_after = [r for r in rs if r["recurrent_norm_after_step"] is not None]
            after = [r["recurrent_norm_after_step"] for r in with_after]
            out.append({
                "dataset": dataset, "grad": mode, "seeds": len(rs),
                "median_grad_norm": statistics.median(norms) if norms else None,
                "max_grad_norm": max(norms) if norms else None,
                "seeds_over_1e3": sum(n > 1e3 for n in norms),
                "non_finite": sum(not r["finite"] for r in rs),
                "median_cosine_with_bptt": statistics.median(cos) if cos else None,
                "median_recurrent_norm_after_step": statistics.median(after) if after else None,
                # over the same seeds as the norm after the step, so the two medians compare
                "recurrent_norm_before": (statistics.median(r["recurrent_norm_before"] for r in with_after)
                                          if with_after else None),
            })
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for i, mode in enumerate(MODES):
            rs = [r for r in rows if r["dataset"] == dataset and r["grad"] == mode]
            ys = [r["grad_norm_recurrent"] if r["finite"] else float("nan") for r in rs]
            ax.scatter([i + 0.06 * (k - len(rs) / 2) for k in range(len(rs))], ys, s=14, label=mode)
        ax.set_yscale("log")
        ax.set_xticks(range(len(MODES)), MODES)
        ax.set_ylabel("first gradient norm (GRU weights)")
        ax.set_title(f"{dataset}, paper protocol: one point per seed")
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from pyg_rbp.data import load

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="cora,citeseer")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", default=None, help="data root (default: PYG_RBP_DATA, else datasets/)")
    parser.add_argument("--out", default=str(RESULTS / "paper_gradients"),
                        help="output path without extension ('' to skip writing)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = torch.device(args.device)
    # the paper's gated map is not a contraction: unsettled states are the subject here
    warnings.simplefilter("ignore", ConvergenceWarning)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(datasets) * args.seeds, desc="paper gradients") as bar:
        for dataset in datasets:
            loaded, configs = load(dataset, root=args.root), paper_configs(dataset)
            for seed in range(args.seeds):
                rows += first_gradients(configs, seed, loaded, device)
                bar.update()
    summary = summarize(rows)
    result = {"benchmark": "paper_gradients", "device": str(device), "threads": args.threads,
              "environment": environment(device), "summary": summary, "rows": rows}
    if args.out:
        atomic_write_json(args.out + ".json", result)
        png = plot(rows, Path(args.out + ".png"))
        table = markdown_table(
            summary,
            ["dataset", "grad", "seeds", "median_grad_norm", "max_grad_norm", "seeds_over_1e3", "non_finite",
             "median_cosine_with_bptt", "recurrent_norm_before", "median_recurrent_norm_after_step"],
            ["dataset", "grad", "seeds", "median ‖g‖ (GRU)", "max ‖g‖", "seeds with ‖g‖ > 1e3",
             "non-finite", "median cos(g, g_BPTT)", "‖W‖ at init", "median ‖W‖ after step 1"],
            digits=3,
        )
        per_seed = markdown_table(
            rows, ["dataset", "seed", "grad", "grad_norm_recurrent", "cosine_with_bptt",
                   "recurrent_norm_after_step", "forward_residual"],
            ["dataset", "seed", "grad", "‖g‖ (GRU)", "cos with BPTT", "‖W‖ after step 1", "forward residual"],
            digits=4)
        atomic_write_text(args.out + ".md", (
            "# The first gradient of every mode under the paper protocol\n\n"
            f"`python benchmarks/paper_gradients.py --datasets {','.join(datasets)} --seeds {args.seeds}` "
            f"({device}, {args.threads} thread(s)). Each seed's model is the leaderboard's paper cell "
            "(gated GNN, 100 steps, K = 5, SGD lr 1e-3) at its initial weights, the same for every "
            "mode; ‖g‖ is the norm of the first training gradient of the GRU weights, cos its cosine "
            "with BPTT's, ‖W‖ the GRU weights' norm before and after the first SGD step.\n\n"
            + table + f"\n\n![first gradients]({png.name})\n\n## Per seed\n\n" + per_seed + "\n"))
    def num(value: float | None) -> str:  # None: every seed of the mode was non-finite
        return "-" if value is None else f"{value:.3g}"

    for s in summary:
        print(f"{s['dataset']:9s} {s['grad']:8s} median ‖g‖ {num(s['median_grad_norm'])}  max "
              f"{num(s['max_grad_norm'])}  >1e3: {s['seeds_over_1e3']}/{s['seeds']}  cos(BPTT) "
              f"{s['median_cosine_with_bptt']}", flush=True)
    return result


if __name__ == "__main__":
    main()

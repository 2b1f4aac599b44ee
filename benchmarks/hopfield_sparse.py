"""Hopfield memory on sparse graphs: MNIST retrieval and time per step against the synapses.

Trains the ten-digit MNIST memory (784 + 1024 + 784 neurons, Neumann-RBP) on each sparse
topology of :data:`pyg_rbp.tasks.hopfield.sparse.DEFAULT_POINTS` (local receptive fields of a
given radius plus 16 random long-range synapses per hidden neuron), times one forward step of
each against the fully connected network in one interleaved run, and writes the curve of
retrieval against the number of synapses to ``benchmarks/results/hopfield_sparse.{json,md,png}``
(per-point training runs, resumable, under ``benchmarks/results/hopfield_sparse/``).

Run: ``python benchmarks/hopfield_sparse.py`` (one thread; ``--radii 2,3,5`` for a subset).

``--prune`` runs the prune-and-retrain study instead (:mod:`pyg_rbp.tasks.hopfield.prune`): a
dense memory is trained, pruned by magnitude to each ``--fractions`` of its synapses and retrained;
it writes ``benchmarks/results/hopfield_prune.{json,md,png}`` (resumable; the dense weights in
``hopfield_prune_dense.pt``, not committed).
"""

from __future__ import annotations

import argparse

from pyg_rbp.runtime import set_threads
from pyg_rbp.tasks.hopfield.prune import DEFAULT_FRACTIONS, PRUNE_TRAINING, run_prune_study
from pyg_rbp.tasks.hopfield.sparse import DEFAULT_POINTS, SPARSE_TRAINING, run_sparse_study


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--radii", default=None, help="comma list of receptive-field radii (default: all points)")
    p.add_argument("--epochs", type=int, default=SPARSE_TRAINING["epochs"])
    p.add_argument("--lr", type=float, default=SPARSE_TRAINING["lr"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--prune", action="store_true", help="the prune-and-retrain study instead")
    p.add_argument("--fractions", default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
                   help="--prune: fractions of the complete graph's synapses to keep")
    p.add_argument("--dense-epochs", type=int, default=PRUNE_TRAINING["dense_epochs"])
    p.add_argument("--retrain-epochs", type=int, default=PRUNE_TRAINING["retrain_epochs"])
    p.add_argument("--fresh", action="store_true", help="--prune: start the results file afresh")
    args = p.parse_args()
    set_threads(args.threads)
    if args.prune:
        settings = dict(PRUNE_TRAINING, dense_epochs=args.dense_epochs, retrain_epochs=args.retrain_epochs)
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
        doc = run_prune_study(args.out, fractions, settings=settings, fresh=args.fresh,
                              progress=not args.no_progress)
        print(doc["verdict"])
        return
    points = list(DEFAULT_POINTS)
    if args.radii:
        wanted = {float(r) for r in args.radii.split(",")}
        points = [q for q in points if q.get("radius") in wanted]
    doc = run_sparse_study(args.out, points, training={"epochs": args.epochs, "lr": args.lr},
                           progress=not args.no_progress)
    print(doc["verdict"])


if __name__ == "__main__":
    main()

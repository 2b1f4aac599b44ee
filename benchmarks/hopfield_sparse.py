"""Hopfield memory on sparse graphs: MNIST retrieval and time per step against the synapses.

Trains the ten-digit MNIST memory (784 + 1024 + 784 neurons, Neumann-RBP) on each sparse
topology of :data:`pyg_rbp.tasks.hopfield.sparse.DEFAULT_POINTS` (local receptive fields of a
given radius plus 16 random long-range synapses per hidden neuron), times one forward step of
each against the fully connected network in one interleaved run, and writes the curve of
retrieval against the number of synapses to ``benchmarks/results/hopfield_sparse.{json,md,png}``
(per-point training runs, resumable, under ``benchmarks/results/hopfield_sparse/``).

Run: ``python benchmarks/hopfield_sparse.py`` (one thread; ``--radii 2,3,5`` for a subset).
"""

from __future__ import annotations

import argparse

import torch

from pyg_rbp.tasks.hopfield.sparse import DEFAULT_POINTS, SPARSE_TRAINING, run_sparse_study


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--radii", default=None, help="comma list of receptive-field radii (default: all points)")
    p.add_argument("--epochs", type=int, default=SPARSE_TRAINING["epochs"])
    p.add_argument("--lr", type=float, default=SPARSE_TRAINING["lr"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    points = list(DEFAULT_POINTS)
    if args.radii:
        wanted = {float(r) for r in args.radii.split(",")}
        points = [q for q in points if q.get("radius") in wanted]
    doc = run_sparse_study(args.out, points, training={"epochs": args.epochs, "lr": args.lr},
                           progress=not args.no_progress)
    print(doc["verdict"])


if __name__ == "__main__":
    main()

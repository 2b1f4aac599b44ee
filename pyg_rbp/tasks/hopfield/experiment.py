"""The Hopfield benchmark: train one memory per gradient mode and compare their recall.

Runs the protocol of Liao et al. (2018, section 4.1;
:data:`~pyg_rbp.tasks.hopfield.config.PAPER_SETTING`) for every
requested gradient mode from the same initial weights, and records for each: retrieval from the
paper's corruption (a fraction of the "on" pixels switched off, fixed seed) and from random bit
flips, time per epoch, activation memory, the energy along the recall trajectory, and the
diagnostics that explain a failure (forward residual, spectral radius of the step's Jacobian,
backward residual, agreement with the exact implicit gradient).

Results are written after every mode (atomic JSON, a markdown table, a PNG), and a rerun with
the same configuration skips the modes already finished, so a long run loses nothing
(:class:`pyg_rbp.results.ResumableResults`).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pyg_rbp.engine import GRAD_MODES, IMPLICIT_MODES, grad_mode_names, normalize_grad_mode
from pyg_rbp.numerics import flush_denormals
from pyg_rbp.profiling import WeightAwareSavedBytes, WeightTensors
from pyg_rbp.results import ResultsFileConflict, ResumableResults, atomic_write_text, environment
from pyg_rbp.tasks.hopfield.config import RENAMED, HopfieldConfig, paper_deviations
from pyg_rbp.tasks.hopfield.data import Patterns, flip_bits, load_patterns, switch_off
from pyg_rbp.tasks.hopfield.graphs import build_topology
from pyg_rbp.tasks.hopfield.memory import (
    HopfieldMemory,
    allowed_wrong_pixels,
    evaluate_retrieval,
    fixed_point_diagnostics,
    gradient_agreement,
    recall_loss,
    train_memory,
)
from pyg_rbp.tasks.hopfield.report import plot_grid, results_table

WEIGHT_BUILDERS = ("weight_matrix", "dense_blocks", "sparse_graph")
"""The :class:`~pyg_rbp.nn.HopfieldCell` methods that build weight tensors from the synapses
once per solve (the dense matrix or its blocks, the sparse layout): what they build, and what is
saved while they run, is weight memory every mode holds, not activations."""


def weight_tensors(model: HopfieldMemory) -> WeightTensors:
    """The :class:`~pyg_rbp.profiling.WeightTensors` of a memory: its parameters, buffers and
    the weight tensors its cell builds (:data:`WEIGHT_BUILDERS`)."""
    return WeightTensors(model, [(model.cell, name) for name in WEIGHT_BUILDERS])


def measure_saved_bytes(model: HopfieldMemory, inputs: Tensor, clean: Tensor) -> dict[str, int]:
    """Bytes saved for backward by one training forward: total and activations only."""
    model.train()
    with weight_tensors(model) as weights, WeightAwareSavedBytes(weights) as mem:
        loss = recall_loss(model(inputs), clean)
    del loss
    return {"saved_bytes": mem.bytes - mem.weight_bytes, "saved_bytes_total": mem.bytes}


def _bits(images: Tensor) -> list[str]:
    return ["".join("1" if v else "0" for v in row.tolist()) for row in (images > 0.5)]


def _energy_summary(energies: Tensor) -> dict[str, Any]:
    """``[T + 1, P]`` energies -> per-image trajectories and whether each never rose."""
    e = energies.double().cpu()
    rises = (e[1:] - e[:-1]) > 1e-6 * e.abs().max().clamp_min(1.0)
    return {
        "per_image": e.transpose(0, 1).tolist(),
        "initial": e[0].tolist(),
        "final": e[-1].tolist(),
        "non_increasing_fraction": float((~rises.any(dim=0)).double().mean()),
    }


def run_mode(cfg: HopfieldConfig, grad: str, patterns: Patterns, tests: dict[str, Tensor],
             cell_source: Any, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate one gradient mode; return its results row."""
    device = torch.device(cfg.device)
    clean = patterns.images.to(device)
    torch.manual_seed(cfg.seed)
    model = HopfieldMemory(patterns.num_pixels, cfg.hidden, cell_source, grad=grad,
                           max_iter=cfg.max_iter, backward_iter=cfg.backward_iter, a=cfg.a, b=cfg.b,
                           init_std=cfg.init_std).to(device)
    model.cell.reset_parameters()  # same initial weights for every mode (seeded above)
    off = tests["off"].to(device)

    bar = None
    if progress:
        bar = tqdm(total=cfg.epochs, desc=f"hopfield {grad}", leave=False)

    def on_epoch(epoch: int, info: dict[str, Any]) -> None:
        if bar is not None:
            post = {"loss": f"{info['loss']:.4f}"}
            if "success" in info:
                post["success"] = f"{info['success']:.2f}"
            bar.set_postfix(post)
            bar.update(1)

    eval_every = cfg.eval_every or max(1, cfg.epochs // 10)
    t0 = time.perf_counter()
    train = train_memory(model, clean, cfg.epochs, lr=cfg.lr, lr_schedule=cfg.lr_schedule,
                         optimizer=cfg.optimizer,
                         batch_size=cfg.batch_size,
                         train_input=cfg.train_input, corrupt=cfg.train_corrupt, seed=cfg.seed + 1,
                         copies=cfg.train_copies,
                         eval_images=off, eval_every=eval_every, bound=cfg.bound, progress=on_epoch)
    train_time = time.perf_counter() - t0
    if bar is not None:
        bar.close()

    row: dict[str, Any] = {"grad": grad}
    results = {name: evaluate_retrieval(model, clean, inp, cfg.bound) for name, inp in
               (("off", off), ("flip", tests["flip"].to(device)), ("clean", clean))}
    row["success_rate"] = results["off"]["success_rate"]
    row["pixel_error"] = results["off"]["pixel_error"]
    row["per_image_error"] = results["off"]["per_image_error"]
    for name in ("flip", "clean"):
        row[f"success_rate_{name}"] = results[name]["success_rate"]
        row[f"pixel_error_{name}"] = results[name]["pixel_error"]
    row["epoch_time_s"] = statistics.median(train.epoch_time_s) if train.epoch_time_s else None
    row["train_time_s"] = train_time
    train_in = clean if cfg.train_input == "clean" else switch_off(clean, cfg.train_corrupt, cfg.seed + 2)
    row.update(measure_saved_bytes(model, train_in, clean))
    row["epochs_done"] = train.epochs_done
    row["diverged"] = train.diverged
    row["final_train_loss"] = train.loss[-1] if train.loss else None

    diag_test = fixed_point_diagnostics(model, off)
    diag_train = fixed_point_diagnostics(model, train_in)
    row["forward_residual"] = diag_test["forward_residual"]
    row["spectral_radius"] = diag_test["spectral_radius"]
    row["train_forward_residual"] = diag_train["forward_residual"]
    row["train_spectral_radius"] = diag_train["spectral_radius"]

    row["backward_residual"] = None
    if grad in IMPLICIT_MODES:
        model.conv.track = True
        try:
            model.zero_grad(set_to_none=True)
            recall_loss(model(train_in), clean).backward()
            row["backward_residual"] = model.conv.stats.backward_residual
        except Exception as err:  # a diverging adjoint is a result here, not a crash
            row["backward_residual"] = None
            row["backward_error"] = str(err)
        finally:
            model.conv.track = False
            model.zero_grad(set_to_none=True)
    if cfg.grad_check_images:
        try:
            agree = gradient_agreement(model, train_in, clean, max_images=cfg.grad_check_images)
        except Exception as err:
            agree = {"cosine": None, "relative_error": None, "error": str(err)}
        row["gradient_cosine"] = agree["cosine"]
        row["gradient_relative_error"] = agree["relative_error"]
    row["energy"] = _energy_summary(model.energy_trajectory(off))
    row["history"] = {
        "loss": train.loss,
        "forward_residual": train.residual,
        "evals": [{"epoch": e, "success_rate": s, "pixel_error": p} for e, s, p in train.evals],
    }
    row["retrieved"] = _bits(results["off"]["retrieved"])
    log(f"[hopfield] {grad}: success {row['success_rate']:.2f}, pixel error {row['pixel_error']:.4f}, "
        f"{row['epoch_time_s'] or float('nan'):.3f} s/epoch, residual {row['forward_residual']}, "
        f"spectral radius {row['spectral_radius']}")
    return row


_MACHINE_KEYS = ("device_name", "torch_threads")
"""What must match for timings to share one file."""


def _output_paths(json_path: str | os.PathLike | None, png_path: str | os.PathLike | None,
                  md_path: str | os.PathLike | None) -> tuple[Path | None, Path | None, Path | None]:
    j = Path(json_path) if json_path else None
    md = Path(md_path) if md_path else (j.with_suffix(".md") if j else None)
    return j, (Path(png_path) if png_path else None), md


def _check_same_machine(store: ResumableResults, now: dict[str, Any]) -> None:
    """One file, one machine: the epoch times of its modes are compared side by side, so a file
    holding results of another device or thread count is refused (unless started afresh)."""
    before = {k: (store.extra.get("environment") or {}).get(k) for k in _MACHINE_KEYS}
    here = {k: now[k] for k in _MACHINE_KEYS}
    if store.units and before != here:
        raise ResultsFileConflict(f"{store.path} was measured on {before}, this run is on {here}; "
                                  "use another --json, or --fresh to measure every mode here")


def run_experiment(config: HopfieldConfig, grads: Sequence[str] | str = GRAD_MODES, *,
                   json_path: str | os.PathLike | None = None, png_path: str | os.PathLike | None = None,
                   md_path: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
                   resume: bool = True, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark for ``grads``; write JSON / markdown / PNG after every mode.

    Resuming follows :class:`~pyg_rbp.results.ResumableResults`: with ``resume`` and an
    existing ``json_path`` written by the same configuration on the same machine setting
    (device, thread count), every finished mode in it is kept and not rerun; a file of another
    configuration or machine raises :class:`~pyg_rbp.results.ResultsFileConflict` (a
    ``ValueError``; pass ``resume=False`` to start it afresh). Every write is atomic.
    """
    cfg = config.resolved()
    if isinstance(grads, str):
        grads = [grads]
    modes = list(dict.fromkeys(normalize_grad_mode(g) for g in grads))
    if not modes:
        raise ValueError("no gradient mode requested")
    jpath, ppath, mdpath = _output_paths(json_path, png_path, md_path)

    patterns = load_patterns(cfg.images, cfg.per_class, root=data_root, split=cfg.split)
    tests = {"off": switch_off(patterns.images, cfg.corrupt, cfg.test_seed),
             "flip": flip_bits(patterns.images, cfg.flip, cfg.test_seed + 1)}
    environment_now = {**environment(cfg.device), "torch_threads": torch.get_num_threads()}
    doc: dict[str, Any] = {
        "task": "hopfield",
        "patterns": {"source": patterns.source, "shape": list(patterns.shape), "count": len(patterns),
                     "labels": patterns.labels.tolist(), "clean": _bits(patterns.images),
                     "corrupted": _bits(tests["off"]), "flipped": _bits(tests["flip"])},
        "metrics": {
            "success_rate": "fraction of images recalled with at most "
                            f"{allowed_wrong_pixels(patterns.num_pixels, cfg.bound)} wrong pixels "
                            f"(bound={cfg.bound} of the {patterns.num_pixels} pixels, at least one) "
                            "after thresholding the output neurons at 0.5",
            "pixel_error": "fraction of the image's pixels that are wrong, averaged over images",
            "test": f"{cfg.corrupt:.0%} of each image's on pixels switched off (seed {cfg.test_seed}); "
                    f"*_flip: {cfg.flip:.0%} of all pixels flipped (seed {cfg.test_seed + 1})",
            "saved_bytes": "bytes saved for backward by one training forward, without the weights "
                           "(parameter vector, N x N matrix) that every mode holds; "
                           "saved_bytes_total includes them",
            "epoch_time_s": "median wall time of a training epoch (all patterns once); on the CPU "
                            "with subnormal floats flushed to zero (pyg_rbp.numerics)",
        },
        "deviations_from_paper": paper_deviations(cfg),
        "environment": environment_now,
    }
    store = ResumableResults(jpath, cfg.identity(), key=lambda r: r["grad"], fresh=not resume,
                             defaults=cfg.predates(), settings_field="config", units_field="results",
                             renamed=RENAMED)
    _check_same_machine(store, environment_now)
    store.units = [r for r in store.units if r.get("grad") in grad_mode_names()]
    store.extra.update(doc)
    done = store.keys()

    def write() -> None:
        order = {m: i for i, m in enumerate(grad_mode_names())}
        store.units.sort(key=lambda r: order.get(r["grad"], 99))
        store.write()
        if mdpath is not None:
            atomic_write_text(mdpath, results_table(store.document()))
        if ppath is not None and store.units:
            plot_grid(store.document(), ppath)

    todo = [m for m in modes if m not in done]
    if done & set(modes):
        log(f"[hopfield] reusing finished modes from {jpath}: {sorted(done & set(modes))}")
    cell_source: Any = None
    if todo:
        t0 = time.perf_counter()
        edge_index = build_topology(cfg.topology, patterns.num_pixels, patterns.shape, cfg.hidden,
                                    k=cfg.knn_k, avg_degree=cfg.avg_degree, seed=cfg.seed,
                                    radius=cfg.radius, long_range=cfg.long_range)
        probe = HopfieldMemory(patterns.num_pixels, cfg.hidden, edge_index, a=cfg.a, b=cfg.b,
                               init_std=cfg.init_std)
        cell_source = probe.cell.to(torch.device(cfg.device))
        del edge_index
        log(f"[hopfield] {probe.cell} built in {time.perf_counter() - t0:.1f} s")
    for mode in todo:
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        # Subnormal gradients (tiny initial weights, 50-step BPTT) would dominate CPU timings.
        with flush_denormals(cfg.device == "cpu") as flushed:
            row = run_mode(cfg, mode, patterns, tests, cell_source, progress=progress, log=log)
        row["flush_denormals"] = flushed
        row["load_average_at_start"] = list(load) if load else None
        store.units.append(row)
        write()
    if not todo:
        write()
    return store.document()
